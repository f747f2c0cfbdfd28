"""Adding and removing directions: steering the residual stream or chosen heads with a
vector, projecting a direction out of heads, and greedy continuation under hooks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import Head, check_heads, check_layer
from utils.core.hooks import HookList
from utils.core.metrics import Metric


def add_to_residual_hooks(
    model: Any,
    layer: int,
    vector: Tensor,
    *,
    positions: Sequence[int] | None = None,
    scale: float = 1.0,
) -> HookList:
    """Add ``scale * vector`` to the residual stream entering block ``layer``.

    ``layer == n_layers`` adds it after the last block, just before the final norm.

    Args:
        vector: ``(d_model,)``.
        positions: add only at these positions; ``None`` adds at every position.
    """
    check_layer(model, layer, allow_end=True)
    if not isinstance(vector, Tensor) or vector.shape != (model.cfg.d_model,):
        raise ValueError(f"vector must be a tensor of shape ({model.cfg.d_model},)")
    name = (
        get_act_name("resid_pre", layer)
        if layer < model.cfg.n_layers
        else get_act_name("resid_post", model.cfg.n_layers - 1)
    )

    def hook(resid: Tensor, hook: Any) -> Tensor:
        addition = scale * vector.to(resid.device, resid.dtype)
        if positions is None:
            resid = resid + addition
        else:
            resid = resid.clone()
            resid[:, list(positions)] += addition
        return resid

    return [(name, hook)]


# ---------------------------------------------------------------------------
# Directional addition
# ---------------------------------------------------------------------------


def _as_scale(scale: float | Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        if scale.ndim > 1:
            raise ValueError("scale must be a number or a 1-D tensor with one value per prompt")
        return scale.float()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a number or a tensor, got {type(scale).__name__}")
    return torch.tensor(float(scale))


def _broadcast_scale(scale: Tensor, batch: int, like: Tensor) -> Tensor:
    if scale.ndim == 1 and scale.shape[0] != batch:
        raise ValueError(f"scale has {scale.shape[0]} values for a batch of {batch} prompts")
    return scale.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def add_direction_hooks(
    model: Any,
    layer: int,
    direction: Tensor,
    scale: float | Tensor = 1.0,
    *,
    start_pos: int = 1,
) -> HookList:
    """Add ``scale * direction`` to the residual stream entering block ``layer``.

    The vector is added at every position from ``start_pos`` on, whatever the prompt's
    length (so the hooks also serve token-by-token generation). The default
    ``start_pos=1`` leaves the BOS position alone: it carries no content of the prompt,
    and many models use it as an attention sink.

    Args:
        direction: ``(d_model,)``.
        scale: a number, or ``(batch,)`` with one value per prompt.
    """
    check_layer(model, layer, allow_end=True)
    if not isinstance(direction, Tensor) or direction.shape != (model.cfg.d_model,):
        raise ValueError(f"direction must be a tensor of shape ({model.cfg.d_model},)")
    if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
        raise ValueError(f"start_pos must be a non-negative int, got {start_pos!r}")
    factor = _as_scale(scale)
    name = (
        get_act_name("resid_pre", layer)
        if layer < model.cfg.n_layers
        else get_act_name("resid_post", model.cfg.n_layers - 1)
    )

    def hook(resid: Tensor, hook: Any) -> Tensor:
        shift = _broadcast_scale(factor, resid.shape[0], resid) * direction.to(resid.device, resid.dtype)
        resid = resid.clone()
        resid[:, start_pos:] += shift
        return resid

    return [(name, hook)]


def _per_copy(values: Tensor, copies: int, batch: int) -> Tensor:
    if values.ndim == 0 or values.shape[0] != copies * batch:
        raise ValueError(
            f"metric must return one value (or one row) per prompt, i.e. a leading dimension of "
            f"{copies * batch}, got shape {tuple(values.shape)}"
        )
    return values.detach().cpu().reshape(copies, batch, *values.shape[1:])


def steering_sweep(
    model: Any,
    tokens: Tensor,
    layer: int,
    direction: Tensor,
    alphas: Sequence[float],
    metric: Metric,
    *,
    start_pos: int = 1,
) -> Tensor:
    """``metric`` after adding ``alpha * direction`` at ``layer``, for every alpha at once.

    The prompts are repeated once per alpha and run in a single batched forward pass
    (one call costs far less than several small ones on a CPU), so keep
    ``len(alphas) * batch`` moderate: the full logits of that batch are held in memory.

    Args:
        metric: maps logits ``(n, pos, d_vocab)`` to one value or one row per prompt,
            ``(n, ...)``, e.g. a :func:`utils.data.sentiment.sentiment_score` closure.

    Returns:
        ``(len(alphas), batch, ...)``.
    """
    if len(alphas) == 0:
        raise ValueError("alphas is empty")
    batch = tokens.shape[0]
    scale = torch.tensor([float(a) for a in alphas]).repeat_interleave(batch)
    hooks = add_direction_hooks(model, layer, direction, scale, start_pos=start_pos)
    with torch.no_grad():
        values = metric(model.run_with_hooks(tokens.repeat(len(alphas), 1), fwd_hooks=hooks))
    return _per_copy(values, len(alphas), batch)


def add_to_heads_hooks(
    model: Any,
    heads: Iterable[Head],
    z_directions: Tensor,
    scale: float | Tensor = 1.0,
    *,
    pos: int | None = -1,
) -> HookList:
    """Add ``scale * z_directions[l, h]`` to the chosen heads' ``z`` (before ``W_O``).

    A head can only write inside the span of its ``W_O``, so a head-level direction is
    given in the head's own ``z`` space, e.g. its mean difference from
    :func:`head_output_differences`; the head's write then moves by
    ``scale * z_directions[l, h] @ W_O[l, h]`` and nothing else changes.

    Args:
        z_directions: ``(n_layers, n_heads, d_head)``.
        scale: a number, or ``(batch,)`` with one value per prompt.
        pos: the position to change; ``None`` changes every position.
    """
    checked = check_heads(model, heads)
    expected = (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    if not isinstance(z_directions, Tensor) or tuple(z_directions.shape) != expected:
        raise ValueError(f"z_directions must be a tensor of shape {expected}")
    factor = _as_scale(scale)
    by_layer: dict[int, list[int]] = {}
    for layer, head in checked:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            shift = z_directions[layer, head_indices].to(z.device, z.dtype)  # (k, d_head)
            scaled = _broadcast_scale(factor, z.shape[0], z[:, 0]) * shift  # (batch, k, d_head)
            z = z.clone()
            if pos is None:
                z[:, :, head_indices] += scaled[:, None]
            else:
                z[:, pos, head_indices] += scaled
            return z

        return hook

    return [(get_act_name("z", layer), make(layer, indices)) for layer, indices in by_layer.items()]


def head_addition_sweep(
    model: Any,
    tokens: Tensor,
    head_sets: Sequence[Iterable[Head]],
    z_directions: Tensor,
    metric: Metric,
    *,
    scale: float = 1.0,
    pos: int | None = -1,
) -> Tensor:
    """``metric`` after adding ``scale * z_directions`` to each set of heads in turn.

    Every set is one experiment (a set may hold one head or several); all experiments
    run in a single batched forward pass, copy ``i`` of the prompts editing only the
    heads of ``head_sets[i]`` (see :func:`add_to_heads_hooks`).

    Returns:
        ``(len(head_sets), batch, ...)``.
    """
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty")
    batch, copies = tokens.shape[0], len(head_sets)
    scale_of_head: dict[Head, Tensor] = {}
    for index, heads in enumerate(head_sets):
        for head in check_heads(model, heads):
            per_prompt = scale_of_head.setdefault(head, torch.zeros(copies * batch))
            per_prompt[index * batch : (index + 1) * batch] = scale
    hooks: HookList = []
    for head, per_prompt in scale_of_head.items():
        hooks += add_to_heads_hooks(model, [head], z_directions, per_prompt, pos=pos)
    with torch.no_grad():
        values = metric(model.run_with_hooks(tokens.repeat(copies, 1), fwd_hooks=hooks))
    return _per_copy(values, copies, batch)


# ---------------------------------------------------------------------------
# Directional subtraction
# ---------------------------------------------------------------------------


def project_out_of_heads_hooks(model: Any, heads: Iterable[Head], directions: Tensor) -> HookList:
    """Remove the component along a direction from the chosen heads' outputs.

    For each chosen head, with ``o = z[:, :, h] @ W_O[l, h]`` its write into the
    residual stream and ``u`` the unit direction, ``(o . u) u`` is subtracted from the
    attention layer's output (``hook_attn_out``). The head keeps everything it writes
    orthogonally to ``u``; no other head is touched. The head's ``z`` is read in the
    same forward pass, so the projection follows whatever earlier interventions did.

    Args:
        directions: ``(d_model,)`` for one direction everywhere, or
            ``(n_layers, d_model)`` / ``(n_layers + 1, d_model)`` where row ``l`` is
            used for the heads of layer ``l`` (e.g. from :func:`residual_directions`).
    """
    checked = check_heads(model, heads)
    _check_directions(model, directions)
    by_layer: dict[int, list[int]] = {}
    for layer, head in checked:
        by_layer.setdefault(layer, []).append(head)
    hooks: HookList = []
    for layer, head_indices in by_layer.items():
        hooks += _projection_hooks(model, layer, head_indices, _unit_for_layer(directions, layer))
    return hooks


def _check_directions(model: Any, directions: Tensor) -> None:
    d_model, n_layers = model.cfg.d_model, model.cfg.n_layers
    if not isinstance(directions, Tensor) or directions.shape[-1] != d_model or directions.ndim not in (1, 2):
        raise ValueError(f"directions must be (d_model,) or (n_layers, d_model) with d_model={d_model}")
    if directions.ndim == 2 and directions.shape[0] < n_layers:
        raise ValueError(f"directions has {directions.shape[0]} rows; need one per layer ({n_layers})")


def _unit_for_layer(directions: Tensor, layer: int) -> Tensor:
    row = directions if directions.ndim == 1 else directions[layer]
    norm = float(row.norm())
    if norm == 0.0:
        raise ValueError(f"the direction for layer {layer} is zero")
    return row / norm


def removed_direct_effect(
    model: Any, cache: Any, heads: Iterable[Head], directions: Tensor, readout: Tensor, pos: int = -1
) -> Tensor:
    """Per prompt, the direct logit contribution of what :func:`project_out_of_heads_hooks`
    would remove, read along ``readout`` at ``pos`` with the final norm's scale of the
    (clean) cached run held fixed, as direct logit attribution does.

    If nothing downstream reacted, projecting the direction out would lower the
    readout by exactly this much; the difference from the measured change is the
    indirect effect (compensation when it has the opposite sign).

    Returns:
        ``(batch,)``.
    """
    checked = check_heads(model, heads)
    if not isinstance(readout, Tensor) or readout.shape != (model.cfg.d_model,):
        raise ValueError(f"readout must be a tensor of shape ({model.cfg.d_model},)")
    _check_directions(model, directions)
    scale = cache[get_act_name("scale")][:, pos, 0]
    total = torch.zeros_like(scale)
    for layer, head in checked:
        unit = _unit_for_layer(directions, layer).to(scale.device)
        written = cache[get_act_name("z", layer)][:, pos, head] @ model.W_O[layer, head].to(scale.device)
        total = total + (written @ unit) * (unit @ readout.to(scale.device))
    return total / scale


def _projection_hooks(model: Any, layer: int, head_indices: list[int], unit: Tensor) -> HookList:
    captured: dict[str, Tensor] = {}

    def capture(z: Tensor, hook: Any) -> None:
        captured["z"] = z

    def subtract(out: Tensor, hook: Any) -> Tensor:
        z = captured.pop("z")[:, :, head_indices]  # (batch, pos, k, d_head)
        W_O = model.W_O[layer, head_indices].to(z.device, z.dtype)  # (k, d_head, d_model)
        u = unit.to(out.device, out.dtype)
        along = torch.einsum("bpkd,kdm,m->bp", z, W_O, u)
        return out - along[..., None] * u

    return [(get_act_name("z", layer), capture), (get_act_name("attn_out", layer), subtract)]


def greedy_continuation(model: Any, tokens: Tensor, n_tokens: int, fwd_hooks: HookList = ()) -> list[str]:
    """Greedy continuation of each prompt, ``n_tokens`` long, with the hooks active."""
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    generated = tokens
    with torch.no_grad():
        for _ in range(n_tokens):
            logits = model.run_with_hooks(generated, fwd_hooks=list(fwd_hooks))
            next_tokens = logits[:, -1].argmax(-1, keepdim=True).to(generated.device)
            generated = torch.cat([generated, next_tokens], dim=1)
    return [model.tokenizer.decode(row[tokens.shape[1]:]) for row in generated]
