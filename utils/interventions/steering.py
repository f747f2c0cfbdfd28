"""Steering: adding a direction to the residual stream or to chosen heads for several
strengths at once, the direct effect of projecting a direction out of heads, and
generation under hooks.

The hooks are those of :mod:`utils.interventions.hooks`; every sweep runs its variants
in one batch through :func:`utils.interventions.runner.run_variants`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.dla import layer_head_writes
from utils.core.heads import Head, by_layer, check_heads
from utils.core.hooks import HookList
from utils.core.metrics import PerPromptMetric
from utils.core.positions import check_positions
from utils.interventions.hooks import (
    add_to_heads_hooks,
    add_to_residual_hooks,
    check_directions,
    unit_for_layer,
)
from utils.interventions.runner import run_variants

__all__ = ["generate_with_hooks", "head_addition_sweep", "removed_direct_effect", "steering_sweep"]


def _stack(values: dict[str, Tensor]) -> Tensor:
    return torch.stack([value.detach().cpu() for value in values.values()])


def steering_sweep(
    model: Any,
    tokens: Tensor,
    layer: int,
    direction: Tensor,
    alphas: Sequence[float],
    metric: PerPromptMetric,
    *,
    start_pos: int = 1,
) -> Tensor:
    """``metric`` after adding ``alpha * direction`` to the residual stream entering
    ``layer`` (at every position from ``start_pos`` on), for every alpha at once.

    All alphas run as variants of one batched forward pass, so keep
    ``len(alphas) * batch`` moderate: the full logits of that batch are held in memory.

    Args:
        metric: logits ``(batch, pos, d_vocab)`` -> one value or one row per prompt,
            ``(batch, ...)``, e.g. a :func:`utils.data.sentiment.sentiment_score` closure.

    Returns:
        ``(len(alphas), batch, ...)``.
    """
    if len(alphas) == 0:
        raise ValueError("alphas is empty")
    variants = {
        str(index): (lambda rows, alpha=float(alpha): add_to_residual_hooks(
            model, layer, direction, alpha, start_pos=start_pos, rows=rows))
        for index, alpha in enumerate(alphas)
    }
    return _stack(run_variants(model, tokens, variants, readout=_per_prompt(metric, tokens.shape[0])))


def _per_prompt(metric: PerPromptMetric, batch: int):
    def readout(logits: Tensor) -> Tensor:
        values = metric(logits)
        if not isinstance(values, Tensor) or values.ndim == 0 or values.shape[0] != batch:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(
                f"metric must return one value (or one row) per prompt, a leading dimension of "
                f"{batch}, got {shape}"
            )
        return values

    return readout


def head_addition_sweep(
    model: Any,
    tokens: Tensor,
    head_sets: Sequence[Iterable[Head]],
    z_directions: Tensor,
    metric: PerPromptMetric,
    *,
    scale: float = 1.0,
    positions: Tensor | None = None,
) -> Tensor:
    """``metric`` after adding ``scale * z_directions`` to each set of heads in turn.

    Every set is one variant (a set may hold one head or several); all variants run in
    one batched forward pass (see :func:`utils.interventions.hooks.add_to_heads_hooks`,
    also for what a post-attention norm does to the addition).

    Args:
        positions: ``LongTensor[batch]``, change only this position of each prompt;
            ``None`` changes every position.

    Returns:
        ``(len(head_sets), batch, ...)``.
    """
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty")
    sets = [check_heads(model, heads) for heads in head_sets]
    variants = {
        str(index): (lambda rows, heads=heads: add_to_heads_hooks(
            model, heads, z_directions, scale, positions=positions, rows=rows))
        for index, heads in enumerate(sets)
    }
    return _stack(run_variants(model, tokens, variants, readout=_per_prompt(metric, tokens.shape[0])))


def removed_direct_effect(
    model: Any,
    cache: Any,
    heads: Iterable[Head],
    directions: Tensor,
    readout: Tensor,
    positions: Tensor | None = None,
) -> Tensor:
    """Per prompt, the direct logit contribution of what
    :func:`utils.interventions.hooks.project_out_of_heads_hooks` would remove, read along
    ``readout`` with the final norm's scale of the (clean) cached run held fixed (the
    frozen final norm of direct logit attribution).

    If nothing downstream reacted, projecting the direction out would lower the
    readout by exactly this much; the difference from the measured change is the
    indirect effect (compensation when it has the opposite sign). On a model with a
    post-attention norm the head's write is read after that norm, frozen at the cached
    run (:func:`utils.attribution.dla.head_writes`), which is what the projection hook
    removes. The cache needs ``hook_z`` of the heads' layers (and, to skip recomputing
    it, ``blocks.{l}.ln1_post.hook_scale``) and ``ln_final.hook_scale``.

    Args:
        positions: ``LongTensor[batch]``, where to read; ``None`` reads the last position.

    Returns:
        ``(batch,)``.
    """
    checked = check_heads(model, heads)
    if not isinstance(readout, Tensor) or readout.shape != (model.cfg.d_model,):
        raise ValueError(f"readout must be a tensor of shape ({model.cfg.d_model},)")
    check_directions(model, directions)
    scale_all = cache[get_act_name("scale")]  # (batch, pos, 1)
    batch, n_pos = scale_all.shape[:2]
    if positions is None:
        positions = torch.full((batch,), n_pos - 1, dtype=torch.long)
    at = check_positions("positions", positions, batch, n_pos).to(scale_all.device)
    items = torch.arange(batch, device=scale_all.device)
    scale = scale_all[items, at, 0]
    total = torch.zeros_like(scale)
    for layer, indices in by_layer(model, checked).items():
        unit = unit_for_layer(directions, layer).to(scale.device)
        # Every head's write at the positions, post-attention norm included (frozen at
        # the cached run), as direct logit attribution reads it: (batch, n_heads, d_model).
        written = layer_head_writes(model, cache, layer, at[:, None])[:, 0].to(scale.device)
        for head in indices:
            total = total + (written[:, head] @ unit) * (unit @ readout.to(scale.device))
    return total / scale


def generate_with_hooks(model: Any, tokens: Tensor, n_tokens: int, fwd_hooks: HookList = ()) -> list[str]:
    """Greedy continuation of each prompt, ``n_tokens`` long, with the hooks active at
    every step (TransformerLens's ``generate``).

    The key/value cache is off, so every step runs the whole sequence again and a hook
    that acts by position (``add_to_residual_hooks(..., start_pos=1)``) sees the same
    positions as in a plain forward pass, generated tokens included. With the cache,
    each step would show the hooks only the newest token, at local position 0.
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        generated = model.generate(
            tokens, max_new_tokens=n_tokens, do_sample=False, stop_at_eos=False, verbose=False,
            use_past_kv_cache=False, return_type="tokens",
        )
    return [model.tokenizer.decode(row[tokens.shape[1]:]) for row in generated]
