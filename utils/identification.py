"""Scores for the heads of the In-Context Identification stage (survey section 3.3).

Like the scores of :mod:`utils.metrics`, every per-head score here takes ``pattern``,
one layer's attention pattern ``(batch, n_heads, query_pos, key_pos)``, and returns
``Tensor[n_heads]``, so :func:`utils.metrics.head_scores` applies it to every layer of
a cache. The module adds:

* positional scores: attention to the first token (the "attention sink") and to a
  fixed offset;
* :func:`attention_between` and :func:`attention_received`, the attention paid from
  known positions to known positions (a verb to its subject, the end of an IOI prompt to
  the indirect object, later tokens to a rare word);
* :func:`relation_accuracy` and :func:`positional_baseline_accuracy`, the
  dependency-relation accuracy of Voita et al. (2019) and its positional baseline;
* :func:`subword_merge_score`, attention from the last piece of a split word to its
  earlier pieces, minus the same-distance attention of whole words;
* :func:`attention_rows` and :func:`retrieval_scores`, the retrieval score (survey
  Eq. 4) on long prompts without caching whole attention patterns;
* :func:`classify_movers`, to split heads that attend to a token into movers and
  negative movers (picking and naming heads is :mod:`utils.heads`);
* :func:`attention_and_dla_filter` and :func:`single_position_cache`, to cache only
  what attention scores and direct logit attribution need, and to attribute one
  position without multiplying out all the others;
* :func:`compare_ablation`, ablating chosen heads beside random heads of equal number;
* :func:`plot_score_and_pattern`, a head score over all heads beside the attention
  pattern of the best head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from utils.heads import random_heads
from utils.hooks import check_heads, mean_ablation_hooks, pattern_hook_name, zero_ablation_hooks
from utils.metrics import check_pattern, retrieval_score
from utils.plotting import attention_pattern_plot, layer_head_heatmap

Head = tuple[int, int]
Span = tuple[int, int]

__all__ = [
    "first_token_score",
    "fixed_offset_score",
    "attention_between",
    "attention_received",
    "relation_accuracy",
    "positional_baseline_accuracy",
    "subword_merge_score",
    "attention_rows",
    "retrieval_scores",
    "classify_movers",
    "attention_and_dla_filter",
    "single_position_cache",
    "AblationComparison",
    "compare_ablation",
    "plot_score_and_pattern",
]


def _as_positions(name: str, positions: Any, batch: int, upper: int) -> Tensor:
    """Validate ``(batch,)`` or ``(batch, k)`` integer positions in ``[0, upper)``."""
    if not isinstance(positions, Tensor) or positions.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be a LongTensor, got {type(positions).__name__}")
    if positions.ndim not in (1, 2) or positions.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) or ({batch}, k), got {tuple(positions.shape)}")
    if positions.numel() and (bool((positions < 0).any()) or bool((positions >= upper).any())):
        raise ValueError(f"{name} has positions outside [0, {upper - 1}]")
    return positions.long()


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

    ``offset=1`` is :func:`utils.metrics.previous_token_score`; larger offsets find
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
    query_pos = _as_positions("query_pos", query_pos, batch, n_queries)
    key_pos = _as_positions("key_pos", key_pos, batch, n_keys)
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
    key_pos = _as_positions("key_pos", key_pos, batch, n_keys)
    if key_pos.ndim != 1:
        raise ValueError(f"key_pos must have shape ({batch},), got {tuple(key_pos.shape)}")
    if lengths is None:
        lengths = torch.full((batch,), n_queries)
    lengths = _as_positions("lengths", lengths - 1, batch, n_queries) + 1
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
    dependent_pos = _as_positions("dependent_pos", dependent_pos, batch, n_queries)
    head_pos = _as_positions("head_pos", head_pos, batch, n_keys)
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
            (e.g. from :func:`utils.identification_data.word_spans`).

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


# ---------------------------------------------------------------------------
# Retrieval on long prompts
# ---------------------------------------------------------------------------


def attention_rows(
    model: Any,
    tokens: Tensor,
    query_pos: Tensor,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
) -> tuple[Tensor, Tensor]:
    """Run the model once and keep each layer's attention from chosen queries only.

    A full cache of a long prompt holds ``n_layers x n_heads x pos^2`` attention
    weights; the retrieval score needs only a few query rows of them.

    Args:
        tokens: ``(batch, pos)``.
        query_pos: ``LongTensor[batch, n_queries]``.
        fwd_hooks: further hooks (e.g. ablations) to run with.

    Returns:
        ``(logits, rows)`` with rows of shape ``(n_layers, batch, n_heads, n_queries, pos)``.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor")
    query_pos = _as_positions("query_pos", query_pos, tokens.shape[0], tokens.shape[1])
    if query_pos.ndim != 2:
        raise ValueError(f"query_pos must have shape ({tokens.shape[0]}, n_queries)")
    kept: dict[int, Tensor] = {}

    def make(layer: int):
        def keep(pattern: Tensor, hook: Any) -> None:
            index = query_pos.to(pattern.device)[:, None, :, None].expand(
                -1, pattern.shape[1], -1, pattern.shape[-1]
            )
            kept[layer] = pattern.gather(2, index).detach()

        return keep

    hooks = [(pattern_hook_name(layer), make(layer)) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + hooks)
    return logits, torch.stack([kept[layer] for layer in range(model.cfg.n_layers)])


def retrieval_scores(rows: Tensor, target_pos: Tensor) -> Tensor:
    """The retrieval score (survey Eq. 4) of every head over several copy steps.

    Each (prompt, step) pair counts as one retrieval: the head scores when its
    strongest attention from the step's query lands on ``target_pos``, the token of the
    context being copied. This is :func:`utils.metrics.retrieval_score` applied to the
    rows kept by :func:`attention_rows`.

    Args:
        rows: ``(n_layers, batch, n_heads, n_queries, pos)``.
        target_pos: ``LongTensor[batch, n_queries]``.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    if not isinstance(rows, Tensor) or rows.ndim != 5:
        raise ValueError("rows must have shape (n_layers, batch, n_heads, n_queries, pos)")
    n_layers, batch, n_heads, n_queries, n_keys = rows.shape
    target_pos = _as_positions("target_pos", target_pos, batch, n_keys)
    if target_pos.shape != (batch, n_queries):
        raise ValueError(f"target_pos must have shape ({batch}, {n_queries}), got {tuple(target_pos.shape)}")
    flat_targets = target_pos.reshape(-1)
    zeros = torch.zeros_like(flat_targets)
    scores = []
    for layer in range(n_layers):
        # one (prompt, step) pair per row, with its single query row at index 0
        pattern = rows[layer].permute(0, 2, 1, 3).reshape(batch * n_queries, n_heads, 1, n_keys)
        scores.append(retrieval_score(pattern, zeros, flat_targets))
    return torch.stack(scores)


# ---------------------------------------------------------------------------
# Choosing heads
# ---------------------------------------------------------------------------


def classify_movers(
    attention: Tensor, dla: Tensor, *, min_attention: float, min_dla: float
) -> dict[str, list[Head]]:
    """Split heads that attend to a token into movers and negative movers.

    A *mover* attends to the token (attention at least ``min_attention``) and pushes
    its logit up (direct logit attribution at least ``min_dla``); a *negative mover*
    attends to it just as much but pushes it down (at most ``-min_dla``). This is how
    Wang et al. (2022) told name movers from negative name movers.

    Args:
        attention: ``Tensor[n_layers, n_heads]``, attention to the token.
        dla: ``Tensor[n_layers, n_heads]``, direct logit attribution to it.

    Returns:
        ``{"movers": [...], "negative movers": [...]}``, each sorted by ``|dla|``.
    """
    if not isinstance(attention, Tensor) or not isinstance(dla, Tensor):
        raise TypeError("attention and dla must be tensors")
    if attention.shape != dla.shape or attention.ndim != 2:
        raise ValueError(
            f"attention and dla must be (n_layers, n_heads) of one shape, got "
            f"{tuple(attention.shape)} and {tuple(dla.shape)}"
        )
    if min_attention < 0 or min_dla < 0:
        raise ValueError("min_attention and min_dla must be non-negative")
    n_heads = attention.shape[1]
    attends = attention >= min_attention
    groups = {"movers": attends & (dla >= min_dla), "negative movers": attends & (dla <= -min_dla)}
    result = {}
    for name, mask in groups.items():
        indices = mask.flatten().nonzero().flatten()
        order = dla.flatten()[indices].abs().argsort(descending=True)
        result[name] = [divmod(int(i), n_heads) for i in indices[order]]
    return result


# ---------------------------------------------------------------------------
# Lean caches
# ---------------------------------------------------------------------------


def attention_and_dla_filter(name: str) -> bool:
    """``names_filter`` for ``run_with_cache`` that keeps attention patterns, head
    outputs (``hook_z``) and the final norm's scale: what attention scores, mean
    ablation and :func:`utils.lens.head_direct_logit_attribution` read."""
    return name.endswith("attn.hook_pattern") or name.endswith("attn.hook_z") or name == "ln_final.hook_scale"


def single_position_cache(cache: Any, pos: int) -> dict[str, Tensor]:
    """The ``hook_z`` entries and the final-norm scale of a cache at one position.

    The result keeps a position axis of length 1, so
    ``head_direct_logit_attribution(model, single_position_cache(cache, -1), directions, pos=0)``
    gives the same numbers as attributing position -1 of the full cache, without
    computing every head's output at every other position.
    """
    n_layers = 0
    while f"blocks.{n_layers}.attn.hook_z" in cache:
        n_layers += 1
    if n_layers == 0 or "ln_final.hook_scale" not in cache:
        raise ValueError("the cache needs blocks.{l}.attn.hook_z and ln_final.hook_scale entries")
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise TypeError(f"pos must be an int, got {type(pos).__name__}")
    n_pos = cache["blocks.0.attn.hook_z"].shape[1]
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"pos {pos} is outside a prompt of {n_pos} positions")
    index = pos % n_pos
    kept = {
        f"blocks.{layer}.attn.hook_z": cache[f"blocks.{layer}.attn.hook_z"][:, index : index + 1]
        for layer in range(n_layers)
    }
    kept["ln_final.hook_scale"] = cache["ln_final.hook_scale"][:, index : index + 1]
    return kept


# ---------------------------------------------------------------------------
# Ablation against a random baseline
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AblationComparison:
    """A metric with no ablation, with the chosen heads ablated, and with each of several
    random sets of as many heads ablated."""

    clean: float
    chosen: float
    random: tuple[float, ...]
    chosen_heads: tuple[Head, ...]
    random_sets: tuple[tuple[Head, ...], ...]

    @property
    def chosen_drop(self) -> float:
        """How much ablating the chosen heads lowers the metric."""
        return self.clean - self.chosen

    @property
    def random_drop(self) -> float:
        """How much ablating random heads lowers the metric, averaged over the draws."""
        return self.clean - sum(self.random) / len(self.random)


def compare_ablation(
    model: Any,
    tokens: Tensor,
    chosen: Sequence[Head],
    metric: Callable[[Tensor], float],
    *,
    means: dict[int, Tensor] | None = None,
    n_random: int = 3,
    seed: int = 0,
    clean_logits: Tensor | None = None,
) -> AblationComparison:
    """Ablate ``chosen`` heads, then ``n_random`` seeded random sets of as many heads.

    Random sets never contain a chosen head. Heads are zero-ablated, or mean-ablated
    when ``means`` (from :func:`utils.hooks.head_means`) is given.

    Args:
        metric: maps logits ``(batch, pos, d_vocab)`` to a number, higher = better.
        clean_logits: logits of the run without ablation, if already computed.
    """
    chosen = check_heads(model, chosen)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be a positive int, got {n_random!r}")

    def hooks(heads: Sequence[Head]) -> list:
        return (
            zero_ablation_hooks(model, heads) if means is None else mean_ablation_hooks(model, heads, means)
        )

    with torch.no_grad():
        if clean_logits is None:
            clean_logits = model(tokens)
        clean = float(metric(clean_logits))
        ablated = float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks(chosen))))
        random_sets, random_values = [], []
        for draw in range(n_random):
            heads = random_heads(model, len(chosen), seed=seed + draw, exclude=chosen)
            random_sets.append(tuple(heads))
            random_values.append(float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks(heads)))))
    return AblationComparison(
        clean=clean,
        chosen=ablated,
        random=tuple(random_values),
        chosen_heads=tuple(chosen),
        random_sets=tuple(random_sets),
    )


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------


def plot_score_and_pattern(
    scores: Tensor,
    pattern: Tensor,
    tokens: Sequence[str],
    *,
    score_title: str,
    pattern_title: str,
    colorbar_label: str = "score",
    highlight: Sequence[Head] = (),
):
    """A layer x head map of a score beside one head's attention pattern on one prompt.

    Args:
        scores: ``(n_layers, n_heads)``.
        pattern: ``(query_pos, key_pos)`` of the head to show.
        tokens: the prompt's tokens as strings.

    Returns:
        The matplotlib figure (two axes).
    """
    import matplotlib.pyplot as plt

    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError("scores must be a (n_layers, n_heads) tensor")
    side = 1.5 + 0.3 * len(tokens)
    figure, axes = plt.subplots(
        1,
        2,
        figsize=(5.5 + side, max(5.5, side * 0.85)),
        gridspec_kw={"width_ratios": [1, max(1.2, side / 5)]},
    )
    layer_head_heatmap(
        scores, title=score_title, colorbar_label=colorbar_label, highlight=highlight, ax=axes[0]
    )
    attention_pattern_plot(pattern, tokens, title=pattern_title, ax=axes[1])
    figure.tight_layout()
    return figure
