"""Metrics on logits and attention-head scores.

Every head score takes ``pattern``, the attention pattern of one layer with shape
``(batch, n_heads, query_pos, key_pos)``, and returns one score per head,
``Tensor[n_heads]``, averaged over the batch. ``head_scores`` applies a score to every
layer of a cache and stacks the result into ``Tensor[n_layers, n_heads]``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

NAS_EPSILON = 1e-9


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


def _check_positions(name: str, positions: Tensor, batch: int, n_keys: int) -> Tensor:
    if not isinstance(positions, Tensor) or positions.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be a LongTensor of shape (batch,)")
    if positions.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(positions.shape)}")
    if bool((positions < 0).any()) or bool((positions >= n_keys).any()):
        raise ValueError(f"{name} has positions outside [0, {n_keys - 1}]: {positions.tolist()}")
    return positions.long()


def _check_period(period: int, seq_len: int, minimum: int) -> None:
    if isinstance(period, bool) or not isinstance(period, int):
        raise TypeError(f"period must be an int, got {type(period).__name__}")
    if not minimum <= period < seq_len:
        raise ValueError(
            f"period must lie in [{minimum}, {seq_len - 1}] for a sequence of {seq_len} "
            f"positions, got {period}"
        )


def logit_diff(logits: Tensor, correct_ids: Tensor, incorrect_ids: Tensor) -> Tensor:
    """Mean over the batch of logit(correct) - logit(incorrect) at the last position.

    Args:
        logits: ``(batch, pos, d_vocab)``.
        correct_ids, incorrect_ids: token ids, ``(batch,)``.

    Returns:
        A scalar tensor (differentiable, so it serves attribution patching too).
    """
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(
            "logits must have shape (batch, pos, d_vocab), got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    batch = logits.shape[0]
    for name, ids in (("correct_ids", correct_ids), ("incorrect_ids", incorrect_ids)):
        if not isinstance(ids, Tensor) or ids.shape != (batch,):
            raise ValueError(f"{name} must be a tensor of shape ({batch},)")
    last = logits[:, -1, :]
    rows = torch.arange(batch, device=logits.device)
    correct = last[rows, correct_ids.to(logits.device)]
    incorrect = last[rows, incorrect_ids.to(logits.device)]
    return (correct - incorrect).mean()


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


def retrieval_score(pattern: Tensor, query_pos: Tensor, target_pos: Tensor) -> Tensor:
    """The retrieval score (survey Eq. 4), per head.

    The fraction of batch items ``b`` for which the key a head attends to most from
    query position ``query_pos[b]`` is ``target_pos[b]``, the token to be copied.
    """
    check_pattern(pattern, square=False)
    batch, _, n_queries, n_keys = pattern.shape
    query_pos = _check_positions("query_pos", query_pos, batch, n_queries)
    target_pos = _check_positions("target_pos", target_pos, batch, n_keys)
    rows = torch.arange(batch, device=pattern.device)
    at_query = pattern[rows, :, query_pos.to(pattern.device), :]  # (batch, n_heads, key_pos)
    top_key = at_query.argmax(dim=-1)
    return (top_key == target_pos.to(pattern.device)[:, None]).float().mean(dim=0)


def negative_attention_score(pattern: Tensor, yes_pos: Tensor, no_pos: Tensor) -> Tensor:
    """The negative attention score NAS (survey Eq. 5), per head.

    For each batch item, with ``t_yes = yes_pos[b]`` and ``t_no = no_pos[b]`` the
    positions of the "Yes" and "No" tokens in the prompt::

        NAS = sum_{i >= max(t_yes, t_no)} (A[i, t_yes] + A[i, t_no])
                                          * ln((A[i, t_no] + eps) / (A[i, t_yes] + eps))

    with ``eps = 1e-9``, then averaged over the batch. A large positive score means the
    head attends to the prompt's "No" much more than to its "Yes".
    """
    check_pattern(pattern, square=False)
    batch, n_heads, n_queries, n_keys = pattern.shape
    yes_pos = _check_positions("yes_pos", yes_pos, batch, n_keys)
    no_pos = _check_positions("no_pos", no_pos, batch, n_keys)
    if bool((yes_pos == no_pos).any()):
        raise ValueError("yes_pos and no_pos must differ in every batch item")
    rows = torch.arange(batch, device=pattern.device)
    to_yes = pattern[rows, :, :, yes_pos.to(pattern.device)]  # (batch, n_heads, query_pos)
    to_no = pattern[rows, :, :, no_pos.to(pattern.device)]
    terms = (to_yes + to_no) * torch.log((to_no + NAS_EPSILON) / (to_yes + NAS_EPSILON))
    start = torch.maximum(yes_pos, no_pos).to(pattern.device)
    queries = torch.arange(n_queries, device=pattern.device)
    counted = (queries[None, :] >= start[:, None]).to(terms.dtype)  # (batch, query_pos)
    return (terms * counted[:, None, :]).sum(dim=-1).mean(dim=0)


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
        n_layers = 0
        while f"blocks.{n_layers}.attn.hook_pattern" in cache:
            n_layers += 1
    if n_layers == 0:
        raise ValueError("the cache holds no blocks.{l}.attn.hook_pattern entries")
    rows = []
    for layer in range(n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        rows.append(score(pattern[..., drop_first:, drop_first:], *args))
    return torch.stack(rows)


def loss_per_position(logits: Tensor, tokens: Tensor) -> Tensor:
    """Next-token cross-entropy at each position, ``(batch, pos - 1)``.

    Entry ``[b, i]`` is the loss of predicting ``tokens[b, i + 1]`` from position ``i``.
    """
    if logits.ndim != 3 or tokens.ndim != 2 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits (batch, pos, vocab) and tokens (batch, pos) disagree: "
            f"{tuple(logits.shape)} vs {tuple(tokens.shape)}"
        )
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    targets = tokens[:, 1:].to(logits.device)
    return -log_probs.gather(-1, targets[..., None]).squeeze(-1)
