"""Attention-pattern scores: how much each head attends where a head type should.

Every score takes attention patterns ``(batch, head, query, key)`` (one layer) or
``(layer, batch, head, query, key)`` and returns a score per head, averaged over the
batch: previous-token, duplicate-token, induction, first-token, fixed-offset,
attention between named positions, subword merge, syntactic relations, attention to
multiple-choice options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.cache import n_cached_layers, resolve_positions, take_positions
from utils.core.positions import check_positions

Span = tuple[int, int]


# ---------------------------------------------------------------------------
# Positional scores
# ---------------------------------------------------------------------------


def first_token_score(pattern: Tensor) -> Tensor:
    """Mean attention on position 0 from every later query, per head.

    Query 0 can only attend to itself and is left out. With a BOS token in position 0
    this measures an *attention sink*: a head that parks its attention on the first
    token whatever the content, so that it writes (almost) nothing.
    """
    check_pattern(pattern, square=False)
    if pattern.shape[-2] < 2:
        raise ValueError("the first-token score needs at least two query positions")
    return pattern[:, :, 1:, 0].mean(dim=(0, 2))


def fixed_offset_score(pattern: Tensor, offset: int) -> Tensor:
    """Mean attention from query ``i`` to key ``i - offset`` over ``i >= offset``, per head.

    ``offset=1`` is :func:`utils.scores.patterns.previous_token_score`; larger offsets find
    positional heads that look a fixed number of tokens back. Measure it on text without
    repeats (random tokens) so that content cannot explain the attention.
    """
    check_pattern(pattern, square=False)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int, got {type(offset).__name__}")
    if not 1 <= offset < pattern.shape[-1] or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            f"offset must lie in [1, {pattern.shape[-1] - 1}] for a square pattern of "
            f"{pattern.shape[-1]} positions, got {offset} and shape {tuple(pattern.shape)}"
        )
    return pattern.diagonal(offset=-offset, dim1=-2, dim2=-1).mean(dim=(0, 2))


# ---------------------------------------------------------------------------
# Attention between known positions
# ---------------------------------------------------------------------------


def attention_between(pattern: Tensor, query_pos: Tensor, key_pos: Tensor) -> Tensor:
    """Attention from ``query_pos[b]`` to ``key_pos[b]``, averaged over the batch, per head.

    Args:
        pattern: ``(batch, n_heads, query_pos, key_pos)``.
        query_pos: ``LongTensor[batch]``.
        key_pos: ``LongTensor[batch]``, or ``LongTensor[batch, k]`` to sum the attention
            over ``k`` keys per item (e.g. all earlier pieces of a word).

    Returns:
        ``Tensor[n_heads]``.
    """
    check_pattern(pattern, square=False)
    batch, _, n_queries, n_keys = pattern.shape
    query_pos = check_positions("query_pos", query_pos, batch, n_queries)
    key_pos = check_positions("key_pos", key_pos, batch, n_keys)
    if query_pos.ndim != 1:
        raise ValueError(f"query_pos must have shape ({batch},), got {tuple(query_pos.shape)}")
    rows = torch.arange(batch, device=pattern.device)
    at_query = pattern[rows, :, query_pos.to(pattern.device), :]  # (batch, n_heads, key_pos)
    keys = key_pos.to(pattern.device)
    if keys.ndim == 1:
        keys = keys[:, None]
    gathered = at_query.gather(-1, keys[:, None, :].expand(-1, at_query.shape[1], -1))
    return gathered.sum(dim=-1).mean(dim=0)


def attention_received(pattern: Tensor, key_pos: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean attention that the positions after ``key_pos[b]`` pay to it, per head.

    Every query ``q`` with ``key_pos[b] < q < lengths[b]`` counts once; the mean is
    taken over those queries, then over the batch.

    Args:
        pattern: ``(batch, n_heads, query_pos, key_pos)`` (square).
        key_pos: ``LongTensor[batch]``, the attended position of each item.
        lengths: real lengths of right-padded prompts; ``None`` uses every position.
    """
    check_pattern(pattern, square=False)
    batch, _, n_queries, n_keys = pattern.shape
    key_pos = check_positions("key_pos", key_pos, batch, n_keys)
    if key_pos.ndim != 1:
        raise ValueError(f"key_pos must have shape ({batch},), got {tuple(key_pos.shape)}")
    if lengths is None:
        lengths = torch.full((batch,), n_queries)
    lengths = check_positions("lengths", lengths - 1, batch, n_queries) + 1
    if bool((key_pos >= lengths - 1).any()):
        raise ValueError("each key position needs at least one later query inside the prompt")
    rows = torch.arange(batch, device=pattern.device)
    to_key = pattern[rows, :, :, key_pos.to(pattern.device)]  # (batch, n_heads, query_pos)
    queries = torch.arange(n_queries, device=pattern.device)
    counted = (queries[None, :] > key_pos[:, None].to(pattern.device)) & (
        queries[None, :] < lengths[:, None].to(pattern.device)
    )
    weights = counted.to(pattern.dtype) / counted.sum(dim=-1, keepdim=True)
    return (to_key * weights[:, None, :]).sum(dim=-1).mean(dim=0)


def relation_accuracy(
    pattern: Tensor, dependent_pos: Tensor, head_pos: Tensor, *, skip_first: int = 1
) -> Tensor:
    """How often a head's strongest attention from a word lands on its syntactic partner.

    The dependency score of Voita et al. (2019): for each item, take the key that the
    head attends to most from ``dependent_pos[b]`` and check whether it is
    ``head_pos[b]``. The first ``skip_first`` keys (the BOS token, where many heads park
    their attention) are left out of the arg-max.

    Returns:
        ``Tensor[n_heads]``, the fraction of items that are right.
    """
    check_pattern(pattern, square=False)
    batch, _, n_queries, n_keys = pattern.shape
    dependent_pos = check_positions("dependent_pos", dependent_pos, batch, n_queries)
    head_pos = check_positions("head_pos", head_pos, batch, n_keys)
    if dependent_pos.ndim != 1 or head_pos.ndim != 1:
        raise ValueError("dependent_pos and head_pos must both have shape (batch,)")
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be a non-negative int, got {skip_first!r}")
    if bool((head_pos < skip_first).any()):
        raise ValueError(f"head_pos must not point into the first {skip_first} skipped keys")
    rows = torch.arange(batch, device=pattern.device)
    at_query = pattern[rows, :, dependent_pos.to(pattern.device), skip_first:]
    best = at_query.argmax(dim=-1) + skip_first  # (batch, n_heads)
    return (best == head_pos.to(pattern.device)[:, None]).float().mean(dim=0)


def positional_baseline_accuracy(dependent_pos: Tensor, head_pos: Tensor) -> float:
    """Accuracy of always guessing the most frequent relative offset of a relation.

    The baseline of Voita et al. (2019): a head that attends to a fixed offset reaches
    at most this accuracy, so a syntactic head must beat it.
    """
    if not isinstance(dependent_pos, Tensor) or not isinstance(head_pos, Tensor):
        raise TypeError("dependent_pos and head_pos must be tensors")
    if dependent_pos.shape != head_pos.shape or dependent_pos.ndim != 1 or not dependent_pos.numel():
        raise ValueError(
            f"dependent_pos and head_pos must be non-empty 1-D tensors of one shape, got "
            f"{tuple(dependent_pos.shape)} and {tuple(head_pos.shape)}"
        )
    offsets = (dependent_pos - head_pos).tolist()
    return max(offsets.count(o) for o in set(offsets)) / len(offsets)


def subword_merge_score(pattern: Tensor, spans: Sequence[Sequence[Span]]) -> Tensor:
    """Attention from the last piece of each split word to its earlier pieces, per head,
    minus what whole words pay to the same number of preceding tokens.

    A previous-token head attends one step back whether or not the token before belongs
    to the same word; subtracting the baseline keeps only the attention that *follows
    word boundaries*. For a word of ``n`` pieces the baseline is the mean attention of
    single-token words to their ``n - 1`` preceding tokens.

    Args:
        pattern: ``(batch, n_heads, pos, pos)``.
        spans: per batch item, the words as inclusive ``(first, last)`` token positions
            (e.g. from :func:`utils.data.syntax.word_spans`).

    Returns:
        ``Tensor[n_heads]``: mean merge attention minus mean baseline over split words.
    """
    check_pattern(pattern, square=False)
    batch, n_heads, n_pos, _ = pattern.shape
    if len(spans) != batch:
        raise ValueError(f"{len(spans)} span lists for a batch of {batch}")
    merged, single_positions = [], []
    for item, item_spans in enumerate(spans):
        for first, last in item_spans:
            if not 0 <= first <= last < n_pos:
                raise ValueError(f"span {(first, last)} is outside the {n_pos} positions")
            if last > first:
                merged.append((item, first, last))
            else:
                single_positions.append((item, first))
    if not merged:
        raise ValueError("no word is split into several pieces; nothing to merge")
    scores = []
    for item, first, last in merged:
        n_back = last - first
        merge = pattern[item, :, last, first:last].sum(dim=-1)
        baseline_rows = [
            pattern[i, :, q, q - n_back : q].sum(dim=-1) for i, q in single_positions if q - n_back >= 1
        ]
        if not baseline_rows:
            raise ValueError(f"no single-token word has {n_back} preceding tokens for the baseline")
        scores.append(merge - torch.stack(baseline_rows).mean(dim=0))
    return torch.stack(scores).mean(dim=0)


@dataclass
class OptionAttention:
    """Where heads look among the options of multiple-choice prompts, from one query position.

    ``mass`` is the attention the query gives to all option positions together;
    ``entropy`` is the entropy of that attention renormalised over the options, divided
    by ``ln(n_options)`` so that 1 means an even spread and 0 a single option;
    ``distribution`` is the renormalised attention averaged over prompts. These three are
    ``(n_layers, n_heads[, n_options])`` means over prompts. ``favourite`` is
    ``(batch, n_layers, n_heads)``: the option each head attends to most in each prompt.
    """

    mass: Tensor
    entropy: Tensor
    distribution: Tensor
    favourite: Tensor


def option_attention(
    cache: Any, option_positions: Tensor, *, query_positions: Tensor | None = None
) -> OptionAttention:
    """Summarise every head's attention from ``query_positions`` over the option positions.

    Args:
        cache: holds ``blocks.{l}.attn.hook_pattern`` for every layer.
        option_positions: ``LongTensor[batch, n_options]``, e.g. the letters A-D.
        query_positions: ``LongTensor[batch]``; ``None`` for the last position of every prompt.
    """
    if not isinstance(option_positions, Tensor) or option_positions.ndim != 2 or option_positions.shape[1] < 2:
        raise ValueError("option_positions must be a LongTensor of shape (batch, n_options >= 2)")
    n_layers = n_cached_layers(cache, "pattern")
    if n_layers == 0:
        raise ValueError("the cache holds no blocks.{l}.attn.hook_pattern entries")
    first = cache[get_act_name("pattern", 0)]
    batch, n_queries = first.shape[0], first.shape[2]
    if option_positions.shape[0] != batch:
        raise ValueError(f"{option_positions.shape[0]} rows of option positions for a batch of {batch}")
    queries = _one_per_prompt(
        "query_positions", resolve_positions(query_positions, batch, n_queries), batch, n_queries
    )
    layers = [
        take_positions(cache[get_act_name("pattern", layer)].transpose(1, 2), queries)  # (batch, head, key)
        for layer in range(n_layers)
    ]
    attention = torch.stack(layers, dim=1)  # (batch, layer, head, key)
    n_keys = attention.shape[-1]
    if bool((option_positions < 0).any()) or bool((option_positions >= n_keys).any()):
        raise ValueError(f"option positions must lie in [0, {n_keys - 1}]")
    index = option_positions.to(attention.device)[:, None, None, :].expand(*attention.shape[:3], -1)
    on_options = attention.gather(-1, index)  # (batch, layer, head, option)
    mass = on_options.sum(-1)
    spread = on_options / mass.clamp(min=1e-12)[..., None]
    entropy = -(spread * torch.log(spread.clamp(min=1e-12))).sum(-1) / torch.log(torch.tensor(float(spread.shape[-1])))
    return OptionAttention(
        mass=mass.mean(0),
        entropy=entropy.mean(0),
        distribution=spread.mean(0),
        favourite=spread.argmax(-1),
    )


def check_pattern(pattern: Tensor, *, square: bool = True) -> None:
    """Raise a clear error unless ``pattern`` is ``(batch, n_heads, query_pos, key_pos)``
    (with as many query as key positions when ``square``)."""
    if not isinstance(pattern, Tensor):
        raise TypeError(f"pattern must be a torch.Tensor, got {type(pattern).__name__}")
    if pattern.ndim != 4:
        raise ValueError(
            "pattern must have shape (batch, n_heads, query_pos, key_pos), "
            f"got {pattern.ndim} dimensions {tuple(pattern.shape)}"
        )
    if square and pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            f"this score needs as many query as key positions, got {tuple(pattern.shape)}"
        )


def _one_per_prompt(name: str, positions: Tensor, batch: int, n_keys: int) -> Tensor:
    """``positions`` checked to be a ``LongTensor[batch]`` with values in ``[0, n_keys)``."""
    positions = check_positions(name, positions, batch, n_keys)
    if positions.ndim != 1:
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(positions.shape)}")
    return positions


def _check_period(period: int, seq_len: int, minimum: int) -> None:
    if isinstance(period, bool) or not isinstance(period, int):
        raise TypeError(f"period must be an int, got {type(period).__name__}")
    if not minimum <= period < seq_len:
        raise ValueError(
            f"period must lie in [{minimum}, {seq_len - 1}] for a sequence of {seq_len} "
            f"positions, got {period}"
        )


def previous_token_score(pattern: Tensor) -> Tensor:
    """Mean attention from query ``i`` to key ``i-1`` over ``i >= 1``, per head."""
    check_pattern(pattern)
    _check_period(1, pattern.shape[-1], minimum=1)
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))


def duplicate_token_score(pattern: Tensor, period: int) -> Tensor:
    """Attention to the previous copy of the current token, per head.

    For a sequence made of a block repeated with period ``period`` (token ``i`` equals
    token ``i-period``): mean attention from query ``i`` to key ``i-period`` over
    ``i >= period``.
    """
    check_pattern(pattern)
    _check_period(period, pattern.shape[-1], minimum=1)
    return pattern.diagonal(offset=-period, dim1=-2, dim2=-1).mean(dim=(0, 2))


def induction_score(pattern: Tensor, period: int) -> Tensor:
    """Attention to the token *after* the previous copy of the current token, per head.

    Same sequences as :func:`duplicate_token_score`: mean attention from query ``i`` to
    key ``i-period+1`` over ``i >= period``.
    """
    check_pattern(pattern)
    _check_period(period, pattern.shape[-1], minimum=2)
    # diagonal(offset=-(period-1)) starts at query period-1; the score starts at period.
    return pattern.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2))


def head_scores(
    cache: "dict[str, Tensor] | object",
    score: Callable[..., Tensor],
    *args: object,
    n_layers: int | None = None,
    drop_first: int = 0,
) -> Tensor:
    """Apply a per-head score to every layer's pattern in a cache.

    Args:
        cache: an ``ActivationCache`` (or dict) holding ``blocks.{l}.attn.hook_pattern``.
        score: one of this module's scores, e.g. :func:`induction_score`.
        *args: passed to ``score`` after the pattern (e.g. the period).
        n_layers: how many layers to score; by default every layer in the cache.
        drop_first: drop this many leading positions (queries and keys) first, e.g. 1 to
            leave out a BOS token that is not part of the repeated sequence.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    if isinstance(drop_first, bool) or not isinstance(drop_first, int) or drop_first < 0:
        raise ValueError(f"drop_first must be a non-negative int, got {drop_first!r}")
    if n_layers is None:
        n_layers = n_cached_layers(cache, "pattern")
    if n_layers == 0:
        raise ValueError("the cache holds no blocks.{l}.attn.hook_pattern entries")
    rows = []
    for layer in range(n_layers):
        pattern = cache[get_act_name("pattern", layer)]
        rows.append(score(pattern[..., drop_first:, drop_first:], *args))
    return torch.stack(rows)
