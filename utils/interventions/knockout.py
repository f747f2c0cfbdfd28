"""Attention knockout scans: block the last position's attention to groups of key
positions in windows of layers, every window of every group in one batched run.

The hooks themselves are :func:`utils.interventions.hooks.attention_knockout_hooks`;
the batching is :class:`utils.interventions.runner.PrefixRun`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from utils.core.hooks import HookList
from utils.core.positions import check_positions
from utils.interventions.hooks import attention_knockout_hooks
from utils.interventions.runner import PrefixRun, Variants, rows_per_run


def layer_windows(n_layers: int, window: int, centres: Sequence[int] | None = None) -> list[list[int]]:
    """Windows of ``window`` consecutive layers centred on each of ``centres`` (default:
    every layer), shifted inwards where they would cross the first or last layer."""
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= n_layers:
        raise ValueError(f"window must be an int in [1, {n_layers}], got {window!r}")
    centre_list = list(range(n_layers)) if centres is None else list(centres)
    if not centre_list:
        raise ValueError("no centres given")
    bad = [c for c in centre_list if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_layers]
    if bad:
        raise ValueError(f"centres {bad} are not layers of a {n_layers}-layer model")
    half = window // 2
    windows = []
    for centre in centre_list:
        start = max(0, min(centre - half, n_layers - window))
        windows.append(list(range(start, start + window)))
    return windows


def knockout_window_scan(
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    key_groups: Mapping[str, Tensor],
    window: int,
    *,
    centres: Sequence[int] | None = None,
    end_positions: Tensor | None = None,
) -> dict[str, Tensor]:
    """Relative change of the answer's probability when the edges from the last position
    to a group of key positions are blocked in a window of layers, for each window.

    Prompts that end at the same position run together (cut to their real length, so a
    right-padded batch gives the same numbers as separate runs); each (prompt, group,
    window) is one row of the batch, with one unblocked row per prompt for its clean
    probability. The positions before the last are computed once
    (:class:`~utils.interventions.runner.PrefixRun`): blocking the last position's
    edges cannot change them.

    Args:
        tokens: ``(batch, pos)``, right-padded where prompts differ in length.
        answer_ids: ``(batch,)``.
        key_groups: per group name, a ``BoolTensor[batch, pos]`` marking the key
            positions to block in each prompt, e.g. ``{"subject": facts.subject_mask}``.
        centres: layers the windows are centred on; default every layer.
        end_positions: ``LongTensor[batch]``, each prompt's last real token (the query
            whose edges are blocked); default the last column.

    Returns:
        ``{group: Tensor[batch, n_windows]}`` with ``(p_blocked - p_clean) / p_clean``;
        -1 means the answer's probability fell to zero.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a (batch, pos) tensor, got {getattr(tokens, 'shape', tokens)}")
    n_prompts, n_pos = tokens.shape
    if n_prompts == 0:
        raise ValueError("no prompts given")
    if not isinstance(answer_ids, Tensor) or answer_ids.shape != (n_prompts,):
        raise ValueError(f"answer_ids must be a tensor of shape ({n_prompts},)")
    if bool((answer_ids < 0).any()) or bool((answer_ids >= model.cfg.d_vocab).any()):
        raise ValueError(f"answer ids must lie in the vocabulary 0..{model.cfg.d_vocab - 1}")
    if end_positions is None:
        end_positions = torch.full((n_prompts,), n_pos - 1, dtype=torch.long)
    end = check_positions("end_positions", end_positions, n_prompts, n_pos)
    if end.ndim != 1 or bool((end < 1).any()):
        raise ValueError(f"end_positions must have shape ({n_prompts},) with every end after BOS")
    if not key_groups:
        raise ValueError("key_groups is empty")
    keys: dict[str, list[list[int]]] = {}
    for name, mask in key_groups.items():
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != tokens.shape:
            raise ValueError(f"key group {name!r} must be a BoolTensor of shape {tuple(tokens.shape)}, like tokens")
        keys[name] = [row.nonzero().flatten().tolist() for row in mask.cpu()]
        late = [i for i, row in enumerate(keys[name]) if row and max(row) > int(end[i])]
        if late:
            raise ValueError(f"key group {name!r} has positions after the end of prompt {late[0]}: not visible from its query")
    windows = layer_windows(model.cfg.n_layers, window, centres)
    jobs = [(name, layers) for name in key_groups for layers in windows]
    rows_per_prompt = len(jobs) + 1  # the last row of each prompt is left unblocked
    result = {name: torch.zeros(n_prompts, len(windows)) for name in key_groups}
    def build_hooks(indices: list[int], stacked: Variants) -> HookList:
        # One variant per (group, window), then the unblocked one.
        hooks: HookList = []
        for slot, index in enumerate(indices):
            for layer in range(model.cfg.n_layers):
                for name in key_groups:
                    rows = [
                        int(stacked.rows(job)[slot])
                        for job, (group, layers) in enumerate(jobs)
                        if group == name and layer in layers
                    ]
                    if rows:
                        hooks += attention_knockout_hooks(model, [layer], keys[name][index], rows=rows)
        return hooks

    for indices, change in _answer_changes(model, tokens, answer_ids, end, rows_per_prompt, build_hooks):
        for g, name in enumerate(key_groups):
            result[name][indices] = change[:, g * len(windows):(g + 1) * len(windows)]
    return result


def knockout_heads(
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    key_mask: Tensor,
    head_sets: Mapping[str, Sequence[tuple[int, int]]],
    *,
    end_positions: Tensor | None = None,
) -> dict[str, Tensor]:
    """Head-specific attention knockout: the relative change of the answer's probability
    when only the heads of a set lose their edges from the last position to
    ``key_mask``'s positions (every other head attends as before), for each set.

    The control for calling heads "subject heads": blocking the subject in the
    candidate heads should hurt, blocking it in layer-matched random heads
    (:func:`utils.core.heads.layer_matched_random_heads`) should not. Batched like
    :func:`knockout_window_scan`: one row per (prompt, set) plus one unblocked row per
    prompt, prompts grouped by their end, the prefix computed once.

    Args:
        tokens: ``(batch, pos)``, right-padded where prompts differ in length.
        answer_ids: ``(batch,)``.
        key_mask: ``BoolTensor[batch, pos]``, the keys to block in each prompt.
        head_sets: per name, the ``(layer, head)`` pairs whose edges are blocked.
        end_positions: ``LongTensor[batch]``, each prompt's last real token; default the
            last column.

    Returns:
        ``{name: Tensor[batch]}`` with ``(p_blocked - p_clean) / p_clean``.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a (batch, pos) tensor, got {getattr(tokens, 'shape', tokens)}")
    n_prompts, n_pos = tokens.shape
    if n_prompts == 0:
        raise ValueError("no prompts given")
    if not isinstance(answer_ids, Tensor) or answer_ids.shape != (n_prompts,):
        raise ValueError(f"answer_ids must be a tensor of shape ({n_prompts},)")
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool or key_mask.shape != tokens.shape:
        raise ValueError(f"key_mask must be a BoolTensor of shape {tuple(tokens.shape)}, like tokens")
    if not head_sets:
        raise ValueError("head_sets is empty")
    sets: dict[str, dict[int, list[int]]] = {}
    for name, heads in head_sets.items():
        heads = list(heads)
        if not heads:
            raise ValueError(f"head set {name!r} is empty")
        per_layer: dict[int, list[int]] = {}
        for layer, head in heads:
            if not 0 <= int(layer) < model.cfg.n_layers or not 0 <= int(head) < model.cfg.n_heads:
                raise ValueError(f"head set {name!r}: ({layer}, {head}) is not a head of this model")
            per_layer.setdefault(int(layer), []).append(int(head))
        sets[name] = per_layer
    if end_positions is None:
        end_positions = torch.full((n_prompts,), n_pos - 1, dtype=torch.long)
    end = check_positions("end_positions", end_positions, n_prompts, n_pos)
    if end.ndim != 1 or bool((end < 1).any()):
        raise ValueError(f"end_positions must have shape ({n_prompts},) with every end after BOS")
    keys = [row.nonzero().flatten().tolist() for row in key_mask.cpu()]
    for i, row in enumerate(keys):
        if not row:
            raise ValueError(f"key_mask marks no position in prompt {i}")
        if max(row) > int(end[i]):
            raise ValueError(f"key_mask has positions after the end of prompt {i}: not visible from its query")
    names = list(sets)
    rows_per_prompt = len(names) + 1
    result = {name: torch.zeros(n_prompts) for name in names}
    def build_hooks(indices: list[int], stacked: Variants) -> HookList:
        hooks: HookList = []
        for slot, index in enumerate(indices):
            for v, name in enumerate(names):
                row = [int(stacked.rows(v)[slot])]
                for layer, heads in sets[name].items():
                    hooks += attention_knockout_hooks(model, [layer], keys[index], rows=row, heads=heads)
        return hooks

    for indices, change in _answer_changes(model, tokens, answer_ids, end, rows_per_prompt, build_hooks):
        for v, name in enumerate(names):
            result[name][indices] = change[:, v]
    return result


def _answer_changes(
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    end: Tensor,
    rows_per_prompt: int,
    build_hooks: Callable[[list[int], Variants], HookList],
) -> Iterator[tuple[list[int], Tensor]]:
    """Run knockout variants and yield ``(indices, change)`` per batch of prompts.

    Prompts that end at one position run together, as many per forward pass as the logits
    budget allows, each as ``rows_per_prompt`` stacked copies: the variants whose hooks
    ``build_hooks(indices, stacked)`` returns (variant ``v`` of prompt ``slot`` is row
    ``stacked.rows(v)[slot]``), and a last copy left unblocked. ``change`` is
    ``(len(indices), rows_per_prompt - 1)``: the relative change of the answer's
    probability at the end position in each variant against the unblocked copy.
    """
    groups: dict[int, list[int]] = {}
    for index, last in enumerate(end.tolist()):
        groups.setdefault(last, []).append(index)
    per_run = rows_per_run(model, 1, rows_per_item=rows_per_prompt)
    for last, same_end in groups.items():
        for start in range(0, len(same_end), per_run):
            indices = same_end[start : start + per_run]
            stacked = Variants(len(indices), rows_per_prompt)
            hooks = build_hooks(indices, stacked)
            run = PrefixRun(model, tokens[indices, : last + 1], last, copies=rows_per_prompt)
            final = run(hooks, last_position_only=True)[:, -1].softmax(dim=-1)  # (rows, d_vocab)
            answers = stacked.stack(answer_ids[indices]).to(final.device)
            probabilities = final[torch.arange(final.shape[0], device=final.device), answers]
            probabilities = stacked.split(probabilities.cpu()).T  # (prompts, variants)
            yield indices, (probabilities[:, :-1] - probabilities[:, -1:]) / probabilities[:, -1:]
