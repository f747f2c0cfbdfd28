"""Repeated random tokens: the sequences on which induction and duplicate-token heads
are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from utils.core.positions import last_positions, same_position
from utils.data.base import PromptSet, check_count
from utils.data.tokens import with_bos


@dataclass(kw_only=True)
class RepeatedTokens(PromptSet):
    """A random block of ``period`` tokens repeated ``n_repeats`` times after BOS.

    Token ``i`` equals token ``i - period`` inside the repeated part;
    ``positions["repeat"]`` is the first position of the second block and
    ``positions["END"]`` the last position, where the continuation of the pattern,
    ``answer_ids`` (the block's first token), is due. ``prompts`` are the decoded
    blocks, for display only: random ids need not survive a round trip through text.
    """

    period: int
    n_repeats: int


def repeated_random_tokens(
    model: Any,
    n_prompts: int,
    period: int,
    *,
    n_repeats: int = 2,
    seed: int = 0,
) -> RepeatedTokens:
    """Random token blocks repeated ``n_repeats`` times, the standard induction probe.

    The BOS token comes first, so score the patterns with ``head_scores(...,
    drop_first=1)``. Special tokens are never drawn. Deterministic for a given ``seed``.

    Returns:
        a :class:`RepeatedTokens` whose ``tokens`` are ``(n_prompts, 1 + period * n_repeats)``.

    Raises:
        ValueError: ``n_prompts < 1``, ``period < 2`` or ``n_repeats < 2``.
    """
    check_count("n_prompts", n_prompts)
    check_count("period", period, 2)
    check_count("n_repeats", n_repeats, 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    special = set(model.tokenizer.all_special_ids)
    low, high = min(1000, model.cfg.d_vocab // 4), model.cfg.d_vocab
    block = torch.randint(low, high, (n_prompts, period), generator=generator)
    for special_id in special:
        block[block == special_id] = low
    tokens = torch.tensor([with_bos(model, row) for row in block.repeat(1, n_repeats).tolist()], dtype=torch.long)
    return RepeatedTokens(
        prompts=[model.tokenizer.decode(row) for row in block.tolist()],
        tokens=tokens,
        answer_ids=block[:, 0].clone(),
        positions={
            "repeat": same_position(n_prompts, 1 + period),
            "END": last_positions(tokens),
        },
        period=period,
        n_repeats=n_repeats,
    )
