"""The survey's two equation-defined scores: the retrieval score (Eq. 4, Wu et al.,
2024) and the negative attention score (Eq. 5, Yu et al., 2024), with the attention
rows they read.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.positions import check_positions
from utils.scores.patterns import _one_per_prompt, check_pattern

# ---------------------------------------------------------------------------
# Retrieval on long prompts
# ---------------------------------------------------------------------------


def attention_rows(
    model: Any,
    tokens: Tensor,
    query_pos: Tensor,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    last_positions: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the model once and keep each layer's attention from chosen queries only.

    A full cache of a long prompt holds ``n_layers x n_heads x pos^2`` attention
    weights; the retrieval score needs only a few query rows of them.

    Args:
        tokens: ``(batch, pos)``.
        query_pos: ``LongTensor[batch, n_queries]``.
        fwd_hooks: further hooks (e.g. ablations) to run with.
        last_positions: unembed only the last this many positions (HF's
            ``logits_to_keep``), e.g. the answer of a long prompt: on a large vocabulary
            the unembedding of every position costs more than the blocks. ``None``:
            every position.

    Returns:
        ``(logits, rows)`` with rows of shape ``(n_layers, batch, n_heads, n_queries, pos)``
        and logits of shape ``(batch, pos, d_vocab)`` (``(batch, last_positions,
        d_vocab)`` with ``last_positions``).
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor")
    if last_positions is not None and (
        isinstance(last_positions, bool)
        or not isinstance(last_positions, int)
        or not 1 <= last_positions <= tokens.shape[1]
    ):
        raise ValueError(f"last_positions must be None or an int in [1, {tokens.shape[1]}], got {last_positions!r}")
    query_pos = check_positions("query_pos", query_pos, tokens.shape[0], tokens.shape[1])
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

    hooks = [(get_act_name("pattern", layer), make(layer)) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        if last_positions is None:
            logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + hooks)
        else:
            try:
                logits = model.run_with_hooks(
                    tokens, fwd_hooks=list(fwd_hooks) + hooks, logits_to_keep=last_positions
                )
            except TypeError:  # a model that does not take logits_to_keep
                logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + hooks)
            logits = logits[:, -last_positions:]
    return logits, torch.stack([kept[layer] for layer in range(model.cfg.n_layers)])


def attention_rows_after_prefix(
    model: Any,
    prefix: Any,
    query_pos: Tensor,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
) -> tuple[Tensor, Tensor]:
    """:func:`attention_rows` on the positions after a prefix whose keys and values are
    computed already: a :class:`utils.interventions.runner.PrefixRun`, which the same
    prompts' later runs (:func:`utils.interventions.runner.run_prefix_variants`) can
    reuse, so that a long prompt is read once for its scores and its ablations.

    Args:
        prefix: ``PrefixRun(model, tokens, prefix_len)`` of one copy.
        query_pos: ``LongTensor[batch, n_queries]``, absolute positions, each at least
            ``prefix.prefix_len``.
        fwd_hooks: further hooks; they see only the positions after the prefix.

    Returns:
        ``(logits, rows)``: the logits of the positions after the prefix,
        ``(batch, pos - prefix_len, d_vocab)``, and the rows of every key,
        ``(n_layers, batch, n_heads, n_queries, pos)``, as :func:`attention_rows`.

    Raises:
        ValueError: ``prefix`` is not a PrefixRun of one copy, or a query inside the
            prefix or outside the prompts.
    """
    from utils.interventions.runner import PrefixRun  # the scores do not need the engine otherwise

    if not isinstance(prefix, PrefixRun) or prefix.variants.n != 1:
        raise ValueError(f"prefix must be a PrefixRun of one copy, got {type(prefix).__name__}")
    batch, n_pos = prefix.tokens.shape
    query_pos = check_positions("query_pos", query_pos, batch, n_pos)
    if query_pos.ndim != 2:
        raise ValueError(f"query_pos must have shape ({batch}, n_queries)")
    if bool((query_pos < prefix.prefix_len).any()):
        raise ValueError(f"every query must come after the prefix (position >= {prefix.prefix_len})")
    kept: dict[int, Tensor] = {}

    def make(layer: int):
        def keep(pattern: Tensor, hook: Any) -> None:
            # the queries computed are the last pattern.shape[2] positions (all of them
            # when the model cannot run from cached keys and values)
            relative = query_pos - (n_pos - pattern.shape[2])
            index = relative.to(pattern.device)[:, None, :, None].expand(
                -1, pattern.shape[1], -1, pattern.shape[-1]
            )
            kept[layer] = pattern.gather(2, index).detach()

        return keep

    hooks = [(get_act_name("pattern", layer), make(layer)) for layer in range(model.cfg.n_layers)]
    logits = prefix(list(fwd_hooks) + hooks)
    return logits, torch.stack([kept[layer] for layer in range(model.cfg.n_layers)])


def retrieval_scores(rows: Tensor, target_pos: Tensor) -> Tensor:
    """The retrieval score (survey Eq. 4) of every head over several copy steps.

    Each (prompt, step) pair counts as one retrieval: the head scores when its
    strongest attention from the step's query lands on ``target_pos``, the token of the
    context being copied. This is :func:`utils.scores.retrieval.retrieval_score` applied to the
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
    target_pos = check_positions("target_pos", target_pos, batch, n_keys)
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


NAS_EPSILON = 1e-9


def retrieval_score(pattern: Tensor, query_pos: Tensor, target_pos: Tensor) -> Tensor:
    """The retrieval score (survey Eq. 4), per head.

    The fraction of batch items ``b`` for which the key a head attends to most from
    query position ``query_pos[b]`` is ``target_pos[b]``, the token to be copied.
    """
    check_pattern(pattern, square=False)
    batch, _, n_queries, n_keys = pattern.shape
    query_pos = _one_per_prompt("query_pos", query_pos, batch, n_queries)
    target_pos = _one_per_prompt("target_pos", target_pos, batch, n_keys)
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
    yes_pos = _one_per_prompt("yes_pos", yes_pos, batch, n_keys)
    no_pos = _one_per_prompt("no_pos", no_pos, batch, n_keys)
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
