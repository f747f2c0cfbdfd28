"""Attention knockout: block a query from attending to chosen key positions, and
equalise attention, in batched variants of a run.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import Head, check_heads, check_layer
from utils.core.hooks import HookList
from utils.core.positions import check_positions


def _check_positions(name: str, positions: Sequence[int]) -> list[int]:
    checked = list(positions)
    if not checked:
        raise ValueError(f"{name} is empty")
    for position in checked:
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"{name} must hold ints, got {position!r}")
    return checked


class PrefixRun:
    """Run many hooked variants of one batch while computing a shared prefix only once.

    Attention is causal, so an intervention that only touches queries at positions
    ``>= prefix_len`` (blocking edges from the last position, changing what late queries
    attend to) leaves every earlier position exactly as in the clean run. The keys and
    values of the prefix are computed once; each call runs only the remaining positions.
    Hooks must therefore not change positions ``< prefix_len``; the hooks of this module
    handle runs whose queries start after position 0.

    If the loaded model cannot run from cached keys and values, every call runs the whole
    prompt instead (same result, slower).

    Args:
        tokens: ``(batch, pos)``.
        prefix_len: number of leading positions to compute once, ``1 <= prefix_len < pos``.
        repeat: run each prompt this many times per call (rows ``b * repeat + r``), e.g.
            one row per knockout window.
    """

    def __init__(self, model: Any, tokens: Tensor, prefix_len: int, *, repeat: int = 1) -> None:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, pos), got {getattr(tokens, 'shape', tokens)}")
        if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or not 1 <= prefix_len < tokens.shape[1]:
            raise ValueError(f"prefix_len must be an int in [1, {tokens.shape[1] - 1}], got {prefix_len!r}")
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be a positive int, got {repeat!r}")
        self.model, self.prefix_len, self.repeat = model, prefix_len, repeat
        self.tokens = tokens.repeat_interleave(repeat, dim=0)
        self._prefix_cache = None
        try:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
            model(tokens[:, :prefix_len], past_key_values=cache)
            if cache.get_seq_length() == prefix_len:
                if repeat > 1:
                    cache.batch_repeat_interleave(repeat)
                self._prefix_cache = cache
        except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
            self._prefix_cache = None

    @property
    def uses_cache(self) -> bool:
        """Whether calls reuse the prefix's keys and values."""
        return self._prefix_cache is not None

    def __call__(self, fwd_hooks: HookList = ()) -> Tensor:
        """Logits of the positions from ``prefix_len`` on: ``(batch * repeat, pos - prefix_len, d_vocab)``."""
        if self._prefix_cache is None:
            logits = self.model.run_with_hooks(self.tokens, fwd_hooks=list(fwd_hooks))
            return logits[:, self.prefix_len :]
        cache = copy.deepcopy(self._prefix_cache)  # a forward pass appends to the cache
        return self.model.run_with_hooks(
            self.tokens[:, self.prefix_len :], past_key_values=cache, fwd_hooks=list(fwd_hooks)
        )


def attention_knockout_hooks(
    model: Any,
    layers: Iterable[int],
    key_positions: Sequence[int],
    *,
    query_pos: int = -1,
    rows: Sequence[int] | None = None,
) -> HookList:
    """Block the attention edges from ``query_pos`` to ``key_positions`` in ``layers``.

    The attention *scores* of those edges are set to ``-inf`` before the softmax, in
    every head, so each blocked query distributes its attention over the remaining keys
    (rows stay normalised) - the knockout of Geva et al. (2023).

    Args:
        rows: block only these batch rows; ``None`` blocks every row. This lets one
            batched forward pass hold several different knockouts.
    """
    layer_list = sorted({check_layer(model, layer) for layer in layers})
    if not layer_list:
        raise ValueError("no layers given")
    keys = _check_positions("key_positions", key_positions)
    if isinstance(query_pos, bool) or not isinstance(query_pos, int):
        raise TypeError(f"query_pos must be an int, got {query_pos!r}")
    row_list = None if rows is None else _check_positions("rows", rows)

    def hook(scores: Tensor, hook: Any) -> Tensor:
        n_queries, n_keys = scores.shape[-2:]
        # With cached keys and values of a prefix (PrefixRun), the queries are the last
        # n_queries of n_keys positions.
        offset = n_keys - n_queries
        query = query_pos if query_pos >= 0 else n_keys + query_pos
        if not offset <= query < n_keys:
            raise ValueError(
                f"query position {query_pos} is not computed in this run (positions {offset}..{n_keys - 1})"
            )
        bad = [k for k in keys if not 0 <= k <= query]
        if bad:
            raise ValueError(f"key positions {bad} are not visible from query position {query}")
        which = slice(None) if row_list is None else row_list
        blocked = scores[which]
        blocked[:, :, query - offset, keys] = float("-inf")
        scores[which] = blocked
        return scores

    return [(get_act_name("attn_scores", layer), hook) for layer in layer_list]


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
    probability. The positions before the last are computed once (:class:`PrefixRun`):
    blocking the last position's edges cannot change them.

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
    groups: dict[int, list[int]] = {}
    for index, last in enumerate(end.tolist()):
        groups.setdefault(last, []).append(index)
    for last, indices in groups.items():
        hooks: HookList = []
        for slot, index in enumerate(indices):
            for layer in range(model.cfg.n_layers):
                for name in key_groups:
                    rows = [
                        slot * rows_per_prompt + job
                        for job, (group, layers) in enumerate(jobs)
                        if group == name and layer in layers
                    ]
                    if rows:
                        hooks += attention_knockout_hooks(model, [layer], keys[name][index], rows=rows)
        run = PrefixRun(model, tokens[indices, : last + 1], last, repeat=rows_per_prompt)
        final = run(hooks)[:, -1].softmax(dim=-1)  # (rows, d_vocab)
        answers = answer_ids[indices].repeat_interleave(rows_per_prompt).to(final.device)
        probabilities = final[torch.arange(final.shape[0], device=final.device), answers]
        probabilities = probabilities.reshape(len(indices), rows_per_prompt).cpu()
        change = (probabilities[:, :-1] - probabilities[:, -1:]) / probabilities[:, -1:]
        for g, name in enumerate(key_groups):
            result[name][indices] = change[:, g * len(windows):(g + 1) * len(windows)]
    return result


def equalize_attention_hooks(
    model: Any,
    heads: Iterable[Head],
    first_positions: Tensor,
    second_positions: Tensor,
    *,
    rows: Sequence[int] | None = None,
) -> HookList:
    """Make the chosen heads attend equally to two key positions per prompt.

    For every query at or after the later of the two keys, the attention to
    ``first_positions[i]`` and ``second_positions[i]`` is replaced by their mean, so the
    row still sums to one and the head no longer prefers either key. Used on the "Yes"
    and "No" of a yes/no instruction, it removes exactly the preference that the
    negative attention score (survey Eq. 5) measures.

    Args:
        first_positions, second_positions: ``LongTensor``, one entry per batch row, or
            one per entry of ``rows`` when it is given.
        rows: change only these batch rows; ``None`` changes every row.
    """
    grouped: dict[int, list[int]] = {}
    for layer, head in check_heads(model, heads):
        grouped.setdefault(layer, []).append(head)
    for name, positions in (("first_positions", first_positions), ("second_positions", second_positions)):
        if not isinstance(positions, Tensor) or positions.ndim != 1 or positions.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a 1-D LongTensor")
    if first_positions.shape != second_positions.shape:
        raise ValueError("first_positions and second_positions must have the same length")
    if bool((first_positions == second_positions).any()):
        raise ValueError("the two positions must differ in every prompt")
    row_list = None if rows is None else _check_positions("rows", rows)
    if row_list is not None and len(row_list) != first_positions.shape[0]:
        raise ValueError(f"{first_positions.shape[0]} positions given for {len(row_list)} rows")
    start = torch.maximum(first_positions, second_positions)

    def make(head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(pattern: Tensor, hook: Any) -> Tensor:
            batch, _, n_queries, n_keys = pattern.shape
            if row_list is None and first_positions.shape[0] != batch:
                raise ValueError(f"{first_positions.shape[0]} positions given for a batch of {batch}")
            if int(start.max()) >= n_keys:
                raise ValueError(f"positions beyond the prompt length {n_keys}")
            device = pattern.device
            targets = torch.arange(batch, device=device) if row_list is None else torch.tensor(row_list, device=device)
            head_index = torch.tensor(head_indices, device=device)
            selected = pattern[targets[:, None], head_index[None, :]]  # a copy: (rows, k, q, key)
            items = torch.arange(targets.shape[0], device=device)
            first, second = first_positions.to(device), second_positions.to(device)
            to_first = selected[items, :, :, first]  # (rows, k, q)
            to_second = selected[items, :, :, second]
            mean = (to_first + to_second) / 2
            # Queries are the last n_queries positions (fewer than n_keys under PrefixRun).
            query_positions = torch.arange(n_keys - n_queries, n_keys, device=device)
            after = (query_positions[None, :] >= start.to(device)[:, None])[:, None, :]
            selected[items, :, :, first] = torch.where(after, mean, to_first)
            selected[items, :, :, second] = torch.where(after, mean, to_second)
            pattern[targets[:, None], head_index[None, :]] = selected
            return pattern

        return hook

    return [(get_act_name("pattern", layer), make(indices)) for layer, indices in grouped.items()]


def last_position_mean_ablation_hooks(
    model: Any, heads: Iterable[Head], cache: Any, *, rows: Sequence[int] | None = None
) -> HookList:
    """Replace the chosen heads' outputs at the **last** position by their mean over the
    batch in ``cache`` (a run on the same prompts); earlier positions are left alone.

    This removes what the heads contribute to the prediction at the last position while
    keeping the typical size of their output. Because nothing before the last position
    changes, the hooks can run under :class:`PrefixRun` with ``prefix_len = pos - 1``.

    Args:
        cache: holds ``blocks.{l}.attn.hook_z`` for the layers of ``heads``.
        rows: change only these batch rows; ``None`` changes every row.
    """
    row_list = None if rows is None else _check_positions("rows", rows)
    grouped: dict[int, list[int]] = {}
    for layer, head in check_heads(model, heads):
        grouped.setdefault(layer, []).append(head)
    means = {}
    for layer in grouped:
        name = get_act_name("z", layer)
        if name not in cache:
            raise ValueError(f"the cache lacks {name}")
        means[layer] = cache[name][:, -1].mean(0)  # (n_heads, d_head)

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            which = torch.arange(z.shape[0]) if row_list is None else torch.tensor(row_list)
            heads_index = torch.tensor(head_indices)
            z[which[:, None], -1, heads_index[None, :]] = means[layer][head_indices].to(z.device, z.dtype)
            return z

        return hook

    return [(get_act_name("z", layer), make(layer, indices)) for layer, indices in grouped.items()]


def run_variants(
    model: Any,
    tokens: Tensor,
    prefix_len: int,
    variants: Mapping[str, Callable[[list[int]], HookList]],
    *,
    variants_per_run: int | None = None,
) -> dict[str, Tensor]:
    """Run several interventions on the same prompts, batched, sharing one prefix.

    Each variant is a function that receives the batch rows assigned to it and returns
    hooks acting on those rows only (e.g. ``lambda rows: equalize_attention_hooks(...,
    rows=rows)``). The prompts are repeated once per variant (row ``b * n + v`` is prompt
    ``b`` under variant ``v``) and run under :class:`PrefixRun`, so the hooks must not
    change positions ``< prefix_len``. Few large runs are much faster on a CPU than many
    small ones.

    Args:
        tokens: ``(batch, pos)``.
        variants: name -> hook builder.
        variants_per_run: at most this many variants per forward pass (bounds memory:
            each pass holds ``batch * variants * (pos - prefix_len)`` rows of logits);
            ``None`` runs them all at once.

    Returns:
        ``{name: Tensor[batch, d_vocab]}``, the logits at the last position.
    """
    if not variants:
        raise ValueError("no variants given")
    names = list(variants)
    size = len(names) if variants_per_run is None else variants_per_run
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"variants_per_run must be a positive int, got {variants_per_run!r}")
    batch = tokens.shape[0]
    result: dict[str, Tensor] = {}
    for start in range(0, len(names), size):
        chunk = names[start : start + size]
        hooks: HookList = []
        for v, name in enumerate(chunk):
            hooks += list(variants[name]([b * len(chunk) + v for b in range(batch)]))
        final = PrefixRun(model, tokens, prefix_len, repeat=len(chunk))(hooks)[:, -1]
        final = final.reshape(batch, len(chunk), -1)
        for v, name in enumerate(chunk):
            result[name] = final[:, v]
    return result
