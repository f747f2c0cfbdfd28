"""Hand-made attention patterns whose scores are known, shared by the score tests."""

from typing import Callable

import torch


def one_hot_pattern(
    batch: int, n_heads: int, seq: int, key_of_query: Callable[[int, int], int]
) -> torch.Tensor:
    """Head ``h`` puts all attention from query ``i`` on key ``key_of_query(h, i)``
    (clamped to the causal range ``[0, i]``): ``(batch, n_heads, seq, seq)``."""
    pattern = torch.zeros(batch, n_heads, seq, seq)
    for h in range(n_heads):
        for i in range(seq):
            pattern[:, h, i, max(0, min(i, key_of_query(h, i)))] = 1.0
    return pattern


def uniform_pattern(batch: int, n_heads: int, seq: int) -> torch.Tensor:
    """Every head attends uniformly to all earlier positions (and itself)."""
    causal = torch.tril(torch.ones(seq, seq))
    return (causal / causal.sum(-1, keepdim=True)).expand(batch, n_heads, seq, seq).clone()
