"""Repeated random tokens: the sequences on which induction and duplicate-token heads
are scored.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def repeated_random_tokens(
    model: Any,
    n_prompts: int,
    period: int,
    *,
    n_repeats: int = 2,
    seed: int = 0,
    prepend_bos: bool = True,
) -> Tensor:
    """Random token blocks repeated ``n_repeats`` times, the standard induction probe.

    Token ``i`` equals token ``i - period`` inside the repeated part. With
    ``prepend_bos`` the BOS token comes first, so score the patterns with
    ``head_scores(..., drop_first=1)``.

    Returns:
        ``(n_prompts, [1 +] period * n_repeats)`` token ids.
    """
    if n_prompts < 1 or period < 2 or n_repeats < 2:
        raise ValueError("need n_prompts >= 1, period >= 2 and n_repeats >= 2")
    generator = torch.Generator().manual_seed(seed)
    special = set(model.tokenizer.all_special_ids)
    low, high = min(1000, model.cfg.d_vocab // 4), model.cfg.d_vocab
    block = torch.randint(low, high, (n_prompts, period), generator=generator)
    for special_id in special:
        block[block == special_id] = low
    tokens = block.repeat(1, n_repeats)
    if prepend_bos:
        bos = model.tokenizer.bos_token_id
        if bos is None:
            raise ValueError("this tokenizer has no BOS token; pass prepend_bos=False")
        tokens = torch.cat([torch.full((n_prompts, 1), bos), tokens], dim=1)
    return tokens
