"""The hooks of every intervention on heads and on the residual stream.

Four kinds, each a function returning a hook list (``[(hook_name, hook)]``):

* :func:`replace_heads_hooks` - replace chosen heads' outputs (``hook_z``) by given
  values: zeros, a mean or a resample (:func:`utils.interventions.ablation.ablation_values`),
  or another run's activations (:func:`source_values`). Ablation and patching are this.
* :func:`add_to_residual_hooks` and :func:`add_to_heads_hooks` - add a vector.
* :func:`project_out_of_heads_hooks` - remove a direction from chosen heads' writes.
* :func:`attention_knockout_hooks`, :func:`local_window_hooks` and
  :func:`equalize_attention_hooks` - change where heads attend.

Every builder takes ``rows``, a ``LongTensor`` of batch rows to act on (``None``: every
row), so that batched variants of a run (:mod:`utils.interventions.runner`) each get
their own rows. Every builder reads the weights it needs once, when it is built; no
hook reads ``model.W_O`` (the bridge rebuilds it on every access).

On models with post-attention norms (Gemma 2 and 3, :mod:`utils.core.norms`),
replacing or adding to ``z`` acts before the norm, which the model then recomputes;
projecting a direction out acts on the head's write after the norm (see each builder).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import Head, by_layer, check_layer
from utils.core.hooks import HookList
from utils.core.models import attention_weight
from utils.core.norms import post_norm_gain, post_norm_scale_name

__all__ = [
    "add_to_heads_hooks",
    "add_to_residual_hooks",
    "attention_knockout_hooks",
    "check_directions",
    "equalize_attention_hooks",
    "local_window_hooks",
    "project_out_of_heads_hooks",
    "replace_heads_hooks",
    "residual_hook_name",
    "source_values",
    "unit_for_layer",
]


def _check_rows(rows: Tensor | Sequence[int] | None) -> Tensor | None:
    if rows is None:
        return None
    rows = torch.as_tensor(rows)
    if rows.dtype not in (torch.int32, torch.int64) or rows.ndim != 1 or rows.numel() == 0:
        raise ValueError("rows must be a non-empty 1-D LongTensor of batch rows")
    return rows.long()


def _rows_of(rows: Tensor | None, batch: int, device: Any) -> Tensor:
    if rows is None:
        return torch.arange(batch, device=device)
    if int(rows.max()) >= batch:
        raise ValueError(f"rows up to {int(rows.max())} given for a batch of {batch}")
    return rows.to(device)


def _check_where(positions: Tensor | None, n_rows: int | None) -> Tensor | None:
    """Per-row positions for a hook: ``None`` (every position) or ``LongTensor[rows]``."""
    if positions is None:
        return None
    if not isinstance(positions, Tensor) or positions.dtype not in (torch.int32, torch.int64):
        raise TypeError("positions must be a LongTensor with one position per row, or None")
    if positions.ndim != 1 or (n_rows is not None and positions.shape[0] != n_rows):
        raise ValueError(
            f"positions must have shape ({n_rows if n_rows is not None else 'batch'},), one "
            f"position per row, got {tuple(positions.shape)}"
        )
    return positions.long()


# ---------------------------------------------------------------------------
# Replacing head outputs
# ---------------------------------------------------------------------------


def source_values(model: Any, tokens: Tensor) -> list[Tensor]:
    """Every layer's ``hook_z`` on ``tokens``: the values that patching copies from a
    source run (e.g. the corrupted prompts), one ``(batch, pos, n_heads, d_head)`` tensor
    per layer, for :func:`replace_heads_hooks`."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    return [cache[name] for name in names]


def replace_heads_hooks(
    model: Any,
    heads: Iterable[Head],
    values: Sequence[Tensor],
    *,
    positions: Tensor | None = None,
    rows: Tensor | Sequence[int] | None = None,
) -> HookList:
    """Replace the chosen heads' outputs (``hook_z``) by ``values``, all heads together.

    Args:
        values: one tensor per layer, broadcastable to ``(batch, pos, n_heads, d_head)``
            of the rows acted on: zeros ``(1, 1, H, D)``, a per-position mean
            ``(1, pos, H, D)``, a resample or a source run ``(batch, pos, H, D)``.
        positions: ``LongTensor[rows]``, replace only at this position of each row
            (e.g. the last token); ``None`` replaces every position.
        rows: act only on these batch rows; ``None`` acts on every row.
    """
    grouped = by_layer(model, heads)
    if len(values) != model.cfg.n_layers:
        raise ValueError(f"values needs one entry per layer ({model.cfg.n_layers}), got {len(values)}")
    row_index = _check_rows(rows)
    where = _check_where(positions, None if row_index is None else row_index.shape[0])

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        layer_values = values[layer]

        def hook(z: Tensor, hook: Any) -> Tensor:
            targets = _rows_of(row_index, z.shape[0], z.device)
            selected = z[targets]  # (rows, pos, n_heads, d_head), a copy
            value = layer_values
            if value.ndim != 4 or value.shape[-2:] != selected.shape[-2:]:
                raise ValueError(
                    f"values for layer {layer} have shape {tuple(value.shape)}; expected "
                    f"(batch or 1, pos or 1, {selected.shape[-2]}, {selected.shape[-1]})"
                )
            # Under a PrefixRun only the last positions are computed: align the
            # per-position values (and the positions) to the end of the prompt.
            offset = value.shape[1] - selected.shape[1] if value.shape[1] > 1 else 0
            if offset < 0 or (offset > 0 and where is None):
                raise ValueError(
                    f"values for layer {layer} cover {value.shape[1]} positions but the prompts "
                    f"have {selected.shape[1]}; per-position values need prompts of one length"
                )
            value = value[:, offset:]
            if value.shape[0] not in (1, selected.shape[0]):
                raise ValueError(
                    f"values for layer {layer} hold {value.shape[0]} prompts for {selected.shape[0]} "
                    "rows; clean and source prompts must have the same batch size"
                )
            replacement = value.to(z.device, z.dtype).expand_as(selected)
            if where is None:
                selected[:, :, head_indices] = replacement[:, :, head_indices]
            else:
                items = torch.arange(selected.shape[0], device=z.device)
                at = where.to(z.device) - offset
                if bool((at < 0).any()) or bool((at >= selected.shape[1]).any()):
                    raise ValueError(f"positions outside the {selected.shape[1]} positions this run computes")
                for index in head_indices:
                    selected[items, at, index] = replacement[items, at, index]
            z[targets] = selected
            return z

        return hook

    return [(get_act_name("z", layer), make(layer, indices)) for layer, indices in grouped.items()]


# ---------------------------------------------------------------------------
# Adding a vector
# ---------------------------------------------------------------------------


def residual_hook_name(model: Any, layer: int) -> str:
    """The residual stream entering block ``layer``; ``layer == n_layers`` is the stream
    after the last block, just before the final norm."""
    check_layer(model, layer, allow_end=True)
    if layer < model.cfg.n_layers:
        return get_act_name("resid_pre", layer)
    return get_act_name("resid_post", model.cfg.n_layers - 1)


def _as_scale(scale: float | Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        if scale.ndim > 1:
            raise ValueError("scale must be a number or a 1-D tensor with one value per row")
        return scale.float()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number or a tensor, got {type(scale).__name__}")
    return torch.tensor(float(scale))


def _row_scale(scale: Tensor, n_rows: int, like: Tensor) -> Tensor:
    if scale.ndim == 1 and scale.shape[0] != n_rows:
        raise ValueError(f"scale has {scale.shape[0]} values for {n_rows} rows")
    return scale.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def add_to_residual_hooks(
    model: Any,
    layer: int,
    vector: Tensor,
    scale: float | Tensor = 1.0,
    *,
    start_pos: int = 0,
    positions: Tensor | None = None,
    rows: Tensor | Sequence[int] | None = None,
) -> HookList:
    """Add ``scale * vector`` to the residual stream entering block ``layer``
    (``layer == n_layers``: after the last block).

    By default the vector is added at every position from ``start_pos`` on, whatever
    the prompt's length, so the hooks also serve token-by-token generation;
    ``start_pos=1`` leaves the BOS position alone (it carries no content and many
    models use it as an attention sink).

    Args:
        vector: ``(d_model,)``.
        scale: a number, or one value per row acted on.
        positions: ``LongTensor[rows]``, add only at this position of each row.
        rows: act only on these batch rows; ``None`` acts on every row.
    """
    name = residual_hook_name(model, layer)
    if not isinstance(vector, Tensor) or vector.shape != (model.cfg.d_model,):
        raise ValueError(f"vector must be a tensor of shape ({model.cfg.d_model},)")
    if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
        raise ValueError(f"start_pos must be a non-negative int, got {start_pos!r}")
    factor = _as_scale(scale)
    row_index = _check_rows(rows)
    where = _check_where(positions, None if row_index is None else row_index.shape[0])

    def hook(resid: Tensor, hook: Any) -> Tensor:
        targets = _rows_of(row_index, resid.shape[0], resid.device)
        shift = _row_scale(factor, targets.shape[0], resid[targets, 0]) * vector.to(resid.device, resid.dtype)
        resid = resid.clone()
        if where is None:
            resid[targets, start_pos:] += shift[:, None]
        else:
            resid[targets, where.to(resid.device)] += shift
        return resid

    return [(name, hook)]


def add_to_heads_hooks(
    model: Any,
    heads: Iterable[Head],
    z_directions: Tensor,
    scale: float | Tensor = 1.0,
    *,
    positions: Tensor | None = None,
    rows: Tensor | Sequence[int] | None = None,
) -> HookList:
    """Add ``scale * z_directions[l, h]`` to the chosen heads' ``z`` (before ``W_O``).

    A head can only write inside the span of its ``W_O``, so a head-level direction is
    given in the head's own ``z`` space (e.g. its mean difference from
    :func:`utils.analysis.directions.head_output_differences`); the head's write then
    moves by ``scale * z_directions[l, h] @ W_O[l, h]`` and nothing else changes.

    On a model with a post-attention norm (Gemma 2 and 3, :mod:`utils.core.norms`) the
    addition is made where the head computes it, before that norm, and the norm is
    recomputed, as for any change of ``z``: what reaches the residual stream is the
    shift times the norm's gain over its *new* scale, and the layer's other heads are
    rescaled by the ratio of the old scale to the new one. The intervention is then a
    change of the head's output as the model would see it, not an exact addition to
    the residual stream (for that, use :func:`add_to_residual_hooks`).

    Args:
        z_directions: ``(n_layers, n_heads, d_head)``.
        scale: a number, or one value per row acted on.
        positions: ``LongTensor[rows]``, change only this position of each row;
            ``None`` changes every position.
        rows: act only on these batch rows; ``None`` acts on every row.
    """
    grouped = by_layer(model, heads)
    expected = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    if not isinstance(z_directions, Tensor) or tuple(z_directions.shape) != expected:
        raise ValueError(f"z_directions must be a tensor of shape {expected}")
    factor = _as_scale(scale)
    row_index = _check_rows(rows)
    where = _check_where(positions, None if row_index is None else row_index.shape[0])

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        shift = z_directions[layer, head_indices]  # (k, d_head)

        def hook(z: Tensor, hook: Any) -> Tensor:
            targets = _rows_of(row_index, z.shape[0], z.device)
            scaled = _row_scale(factor, targets.shape[0], z[targets, 0]) * shift.to(z.device, z.dtype)
            z = z.clone()
            if where is None:
                for column, index in enumerate(head_indices):
                    z[targets, :, index] += scaled[:, column][:, None]
            else:
                at = where.to(z.device)
                for column, index in enumerate(head_indices):
                    z[targets, at, index] += scaled[:, column]
            return z

        return hook

    return [(get_act_name("z", layer), make(layer, indices)) for layer, indices in grouped.items()]


# ---------------------------------------------------------------------------
# Projecting a direction out
# ---------------------------------------------------------------------------


def check_directions(model: Any, directions: Tensor) -> None:
    """``directions`` is ``(d_model,)`` or one row per layer, ``(n_layers[+1], d_model)``."""
    d_model, n_layers = model.cfg.d_model, model.cfg.n_layers
    if not isinstance(directions, Tensor) or directions.shape[-1] != d_model or directions.ndim not in (1, 2):
        raise ValueError(f"directions must be (d_model,) or (n_layers, d_model) with d_model={d_model}")
    if directions.ndim == 2 and directions.shape[0] < n_layers:
        raise ValueError(f"directions has {directions.shape[0]} rows; need one per layer ({n_layers})")


def unit_for_layer(directions: Tensor, layer: int) -> Tensor:
    """The unit vector of ``directions`` used at ``layer`` (its row ``layer`` if 2-D)."""
    row = directions if directions.ndim == 1 else directions[layer]
    norm = float(row.norm())
    if norm == 0.0:
        raise ValueError(f"the direction for layer {layer} is zero")
    return row / norm


def project_out_of_heads_hooks(
    model: Any, heads: Iterable[Head], directions: Tensor, *, rows: Tensor | Sequence[int] | None = None
) -> HookList:
    """Remove the component along a direction from the chosen heads' writes.

    For each chosen head, with ``o = z[:, :, h] @ W_O[l, h]`` its write into the
    residual stream and ``u`` the unit direction, ``(o . u) u`` is subtracted from the
    attention layer's output (``hook_attn_out``). The head keeps everything it writes
    orthogonally to ``u``; no other head is touched. The head's ``z`` is read in the
    same forward pass, so the projection follows whatever earlier interventions did.

    On a model with a post-attention norm (Gemma 2 and 3, :mod:`utils.core.norms`)
    ``hook_attn_out`` is the norm's output, and the head's write into the residual
    stream is ``o = z @ W_O * g / s`` with the norm's gain ``g`` and its scale ``s``
    *in the same pass* (``ln1_post.hook_scale``, read there). The projection is taken
    of that write and subtracted after the norm, so exactly ``(o . u) u`` leaves the
    residual stream (what :func:`utils.interventions.steering.removed_direct_effect`
    reads) and the norm's scale is not recomputed: removing a direction before the
    norm would let it rescale the layer's whole output.

    Args:
        directions: ``(d_model,)`` for one direction everywhere, or
            ``(n_layers, d_model)`` / ``(n_layers + 1, d_model)`` where row ``l`` is
            used for the heads of layer ``l``.
        rows: act only on these batch rows; ``None`` acts on every row.
    """
    grouped = by_layer(model, heads)
    check_directions(model, directions)
    row_index = _check_rows(rows)
    hooks: HookList = []
    for layer, head_indices in grouped.items():
        W_O = attention_weight(model, "W_O", layer)  # (n_heads, d_head, d_model)
        unit = unit_for_layer(directions, layer).to(W_O.device, W_O.dtype)
        gain = post_norm_gain(model, layer)
        # What each head writes along u per unit of z (before the post-norm's scale): (k, d_head).
        along_u = unit if gain is None else unit * gain.to(unit.device, unit.dtype)
        readout = torch.einsum("kdm,m->kd", W_O[head_indices], along_u)
        captured: dict[str, Tensor] = {}

        def capture(z: Tensor, hook: Any, captured: dict = captured) -> None:
            captured["z"] = z

        def capture_scale(scale: Tensor, hook: Any, captured: dict = captured) -> None:
            captured["scale"] = scale

        def subtract(
            out: Tensor, hook: Any, captured: dict = captured, head_indices: list[int] = head_indices,
            readout: Tensor = readout, unit: Tensor = unit,
        ) -> Tensor:
            z = captured.pop("z")[:, :, head_indices]  # (batch, pos, k, d_head)
            along = torch.einsum("bpkd,kd->bp", z, readout.to(z.device, z.dtype))
            if "scale" in captured:
                along = along / captured.pop("scale")[..., 0].to(along.device, along.dtype)
            removal = along[..., None] * unit.to(out.device, out.dtype)
            if row_index is None:
                return out - removal
            targets = _rows_of(row_index, out.shape[0], out.device)
            out = out.clone()
            out[targets] -= removal[targets]
            return out

        hooks.append((get_act_name("z", layer), capture))
        if gain is not None:
            hooks.append((post_norm_scale_name(layer), capture_scale))
        hooks.append((get_act_name("attn_out", layer), subtract))
    return hooks


# ---------------------------------------------------------------------------
# Changing where heads attend
# ---------------------------------------------------------------------------


def attention_knockout_hooks(
    model: Any,
    layers: Iterable[int],
    key_positions: Sequence[int],
    *,
    query_pos: int = -1,
    rows: Tensor | Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> HookList:
    """Block the attention edges from ``query_pos`` to ``key_positions`` in ``layers``.

    The attention *scores* of those edges are set to ``-inf`` before the softmax, in
    every head (or only in ``heads``), so each blocked query distributes its attention
    over the remaining keys (rows stay normalised) - the knockout of Geva et al. (2023).

    Args:
        key_positions: the key positions to block, the same for every row acted on.
        rows: block only these batch rows; ``None`` blocks every row.
        heads: query-head indices to block in each of ``layers``; ``None`` blocks all
            (a head-specific knockout passes one layer and that layer's heads).
    """
    layer_list = sorted({check_layer(model, layer) for layer in layers})
    if not layer_list:
        raise ValueError("no layers given")
    keys = list(key_positions)
    if not keys:
        raise ValueError("key_positions is empty")
    if any(isinstance(k, bool) or not isinstance(k, int) for k in keys):
        raise TypeError(f"key_positions must hold ints, got {keys!r}")
    if isinstance(query_pos, bool) or not isinstance(query_pos, int):
        raise TypeError(f"query_pos must be an int, got {query_pos!r}")
    row_index = _check_rows(rows)
    if heads is None:
        head_index: list[int] | slice = slice(None)
    else:
        head_index = sorted(set(heads))
        if not head_index or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < model.cfg.n_heads
                                 for h in head_index):
            raise ValueError(f"heads must be a non-empty list of head indices in [0, {model.cfg.n_heads}), got {heads!r}")

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
        targets = _rows_of(row_index, scores.shape[0], scores.device)
        blocked = scores[targets]
        chosen = blocked[:, head_index]
        chosen[:, :, query - offset, keys] = float("-inf")
        blocked[:, head_index] = chosen
        scores[targets] = blocked
        return scores

    return [(get_act_name("attn_scores", layer), hook) for layer in layer_list]


def local_window_hooks(
    model: Any,
    heads: Iterable[Head],
    window: int,
    *,
    rows: Tensor | Sequence[int] | None = None,
    keep_first: bool = True,
) -> HookList:
    """Restrict the chosen heads to a local window: every query computed in the run may
    attend only to the keys less than ``window`` positions back (``query - key <
    window``), and to the first token (BOS) when ``keep_first``.

    The scores of the other keys are set to ``-inf`` before the softmax, so each row is
    renormalised over the keys left: the head behaves as if its key-value cache had been
    truncated to the window (the compression that RazorAttention, Tang et al. 2024,
    applies to all but the retrieval heads). Under a
    :class:`~utils.interventions.runner.PrefixRun` only the positions after the prefix
    are computed, so only they are restricted.

    Args:
        heads: ``(layer, head)`` pairs (query heads).
        window: the number of most recent keys each query keeps (itself included), ``>= 1``.
        rows: restrict only these batch rows; ``None`` restricts every row.
        keep_first: keep key 0 (the attention sink) visible from every query.
    """
    grouped = by_layer(model, heads)
    if not grouped:
        raise ValueError("no heads given")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    row_index = _check_rows(rows)

    def make(head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(scores: Tensor, hook: Any) -> Tensor:
            n_queries, n_keys = scores.shape[-2:]
            device = scores.device
            queries = torch.arange(n_keys - n_queries, n_keys, device=device)  # after a prefix, the last ones
            keys = torch.arange(n_keys, device=device)
            far = keys[None, :] <= queries[:, None] - window  # (query, key)
            if keep_first:
                far[:, 0] = False
            targets = _rows_of(row_index, scores.shape[0], device)
            index = torch.tensor(head_indices, device=device)
            selected = scores[targets[:, None], index[None, :]]  # a copy: (rows, k, query, key)
            scores[targets[:, None], index[None, :]] = selected.masked_fill(far, float("-inf"))
            return scores

        return hook

    return [(get_act_name("attn_scores", layer), make(indices)) for layer, indices in grouped.items()]


def equalize_attention_hooks(
    model: Any,
    heads: Iterable[Head],
    first_positions: Tensor,
    second_positions: Tensor,
    *,
    rows: Tensor | Sequence[int] | None = None,
) -> HookList:
    """Make the chosen heads attend equally to two key positions per prompt.

    For every query at or after the later of the two keys, the attention to
    ``first_positions[i]`` and ``second_positions[i]`` is replaced by their mean, so the
    row still sums to one and the head no longer prefers either key. Used on the "Yes"
    and "No" of a yes/no instruction, it removes exactly the preference that the
    negative attention score (survey Eq. 5) measures.

    Args:
        first_positions, second_positions: ``LongTensor``, one entry per row acted on.
        rows: change only these batch rows; ``None`` changes every row.
    """
    grouped = by_layer(model, heads)
    for name, positions in (("first_positions", first_positions), ("second_positions", second_positions)):
        if not isinstance(positions, Tensor) or positions.ndim != 1 or positions.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a 1-D LongTensor")
    if first_positions.shape != second_positions.shape:
        raise ValueError("first_positions and second_positions must have the same length")
    if bool((first_positions == second_positions).any()):
        raise ValueError("the two positions must differ in every prompt")
    row_index = _check_rows(rows)
    if row_index is not None and row_index.shape[0] != first_positions.shape[0]:
        raise ValueError(f"{first_positions.shape[0]} positions given for {row_index.shape[0]} rows")
    start = torch.maximum(first_positions, second_positions)

    def make(head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(pattern: Tensor, hook: Any) -> Tensor:
            batch, _, n_queries, n_keys = pattern.shape
            if row_index is None and first_positions.shape[0] != batch:
                raise ValueError(f"{first_positions.shape[0]} positions given for a batch of {batch}")
            if int(start.max()) >= n_keys:
                raise ValueError(f"positions beyond the prompt length {n_keys}")
            device = pattern.device
            targets = _rows_of(row_index, batch, device)
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
