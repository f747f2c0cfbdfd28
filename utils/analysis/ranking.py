"""Comparing two rankings of heads: Spearman correlation and top-k overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from utils.core.heads import top_heads

# ---------------------------------------------------------------------------
# Comparing two maps of heads
# ---------------------------------------------------------------------------


def _ranks(values: Tensor) -> Tensor:
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[values.argsort()] = torch.arange(values.numel(), dtype=torch.float64)
    return ranks


@dataclass(frozen=True)
class RankingAgreement:
    """How far two per-head maps agree: Spearman rank correlation over all heads, and
    how many of the top ``k`` heads (by absolute value) the two maps share."""

    spearman: float
    top_k_overlap: int
    k: int


def ranking_agreement(a: Tensor, b: Tensor, k: int = 10) -> RankingAgreement:
    """Spearman correlation of ``a`` and ``b`` over all heads and the overlap of their
    top ``k`` heads ranked by absolute value (pass effects, i.e. values minus a
    baseline, so that the size of a change is what counts)."""
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    ranks_a, ranks_b = _ranks(a.detach().flatten().cpu()), _ranks(b.detach().flatten().cpu())
    spearman = float(torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1])
    overlap = len(set(top_heads(a.abs(), k)) & set(top_heads(b.abs(), k)))
    return RankingAgreement(spearman=spearman, top_k_overlap=overlap, k=k)
