"""Steering: adding a direction to the residual stream or to chosen heads for several
strengths at once, the direct effect of projecting a direction out of heads, and
generation under hooks.

The hooks are those of :mod:`utils.interventions.hooks`. A residual sweep caches the
clean run once and resumes it at the steered layer (:mod:`utils.interventions.engine`);
a head sweep runs its variants in one batch through
:func:`utils.interventions.runner.run_variants`.
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
from utils.interventions.engine import cache_run, copy_chunks, run_from_layer
from utils.interventions.runner import PrefixRun, forward_logits, run_prefix_variants, run_variants

__all__ = [
    "greedy_continuations",
    "head_addition_sweep",
    "removed_direct_effect",
    "steering_sweep",
]


def _stack(values: dict[str, Tensor]) -> Tensor:
    return torch.stack([value.detach().cpu() for value in values.values()])


def steering_sweep(
    model: Any,
    tokens: Tensor,
    layer: int,
    directions: Tensor,
    alphas: Sequence[float] | Sequence[Sequence[float]],
    metric: PerPromptMetric,
    *,
    start_pos: int = 1,
    last_position_only: bool = False,
) -> Tensor | list[Tensor]:
    """``metric`` after adding ``alpha * direction`` to the residual stream entering
    ``layer`` (at every position from ``start_pos`` on), for every alpha, and for one
    direction or several at once (each with its own alphas).

    Adding to the residual stream entering ``layer`` leaves every earlier block as in
    the clean run, so the clean run is cached once (:func:`utils.interventions.engine.cache_run`)
    and every (direction, alpha) copy resumes at ``layer``
    (:func:`utils.interventions.engine.run_from_layer`), in as few batched runs as the
    logits budget allows (:func:`utils.interventions.engine.copy_chunks`). The values are
    those of a plain forward pass with
    :func:`utils.interventions.hooks.add_to_residual_hooks`, up to float rounding.

    Args:
        directions: ``(d_model,)``, or ``(n_directions, d_model)`` for several.
        alphas: one sequence of strengths used for every direction, or (with several
            directions) one sequence per direction (their lengths may differ).
        metric: logits ``(batch, pos, d_vocab)`` -> one value or one row per prompt,
            ``(batch, ...)``, e.g. a :func:`utils.data.sentiment.sentiment_score` closure.
        last_position_only: unembed only the last position (the metric then gets
            ``(batch, 1, d_vocab)``): much cheaper with a large vocabulary, for a metric
            that reads the last position only.

    Returns:
        For one ``(d_model,)`` direction, ``(len(alphas), batch, ...)``; for
        ``(n_directions, d_model)``, one such tensor per direction.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be an int in [0, {model.cfg.n_layers - 1}], got {layer!r}")
    if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
        raise ValueError(f"start_pos must be a non-negative int, got {start_pos!r}")
    if not isinstance(directions, Tensor) or directions.shape[-1] != model.cfg.d_model or directions.ndim not in (1, 2):
        raise ValueError(f"directions must be (d_model,) or (n_directions, d_model) with d_model={model.cfg.d_model}")
    rows = directions[None] if directions.ndim == 1 else directions
    if len(rows) == 0:
        raise ValueError("directions is empty")
    alphas = list(alphas)
    if alphas and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in alphas):
        per_direction = [[float(a) for a in alphas]] * len(rows)
    elif directions.ndim == 2 and alphas and all(isinstance(row, Sequence) for row in alphas):
        per_direction = [[float(a) for a in row] for row in alphas]
    else:
        per_direction = []
    if not per_direction or len(per_direction) != len(rows) or any(len(row) == 0 for row in per_direction):
        raise ValueError("alphas must be a non-empty sequence of numbers, or (with several directions) "
                         "one non-empty sequence per direction")
    run = cache_run(model, tokens, last_position_only=last_position_only)
    base = run.resid_pre[layer]  # (batch, pos, d_model)
    copies = [(d, alpha) for d, row in enumerate(per_direction) for alpha in row]
    readout = _per_prompt(metric, run.batch)
    values: list[Tensor] = []
    with torch.no_grad():
        for chunk in copy_chunks(model, copies, run, last_position_only=last_position_only):
            resid = base.repeat(len(chunk), 1, 1)
            for c, (d, alpha) in enumerate(chunk):
                shift = alpha * rows[d].to(resid.device, resid.dtype)
                resid[c * run.batch : (c + 1) * run.batch, start_pos:] += shift
            logits = run_from_layer(model, run, layer, resid, last_position_only=last_position_only)
            values += [readout(part).detach().cpu() for part in logits.split(run.batch, dim=0)]
    out, start = [], 0
    for row in per_direction:
        out.append(torch.stack(values[start : start + len(row)]))
        start += len(row)
    return out[0] if directions.ndim == 1 else out


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
    last_position_only: bool = False,
) -> Tensor:
    """``metric`` after adding ``scale * z_directions`` to each set of heads in turn.

    Every set is one variant (a set may hold one head or several); all variants run in
    one batched forward pass (see :func:`utils.interventions.hooks.add_to_heads_hooks`,
    also for what a post-attention norm does to the addition). With ``positions``, the
    positions before the earliest changed one are computed once and shared by every
    variant (:class:`utils.interventions.runner.PrefixRun`): adding at the last position
    only runs the last token per variant.

    Args:
        positions: ``LongTensor[batch]``, change only this position of each prompt;
            ``None`` changes every position. The metric then gets the logits from the
            earliest of these positions on (all of them with ``last_position_only``,
            only the last), since the earlier ones are not recomputed.
        last_position_only: as in :func:`steering_sweep`.

    Returns:
        ``(len(head_sets), batch, ...)``.
    """
    if len(head_sets) == 0:
        raise ValueError("head_sets is empty")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    sets = [check_heads(model, heads) for heads in head_sets]
    readout = _per_prompt(metric, tokens.shape[0])
    prefix = None
    if positions is not None:
        at = check_positions("positions", positions, tokens.shape[0], tokens.shape[1])
        if int(at.min()) >= 1:
            # Nothing before the first changed position moves: compute it once.
            prefix = PrefixRun(model, tokens, int(at.min()))
            if prefix.uses_cache:  # the runs then start at prefix_len, and so do the hooks' positions
                positions = at - prefix.prefix_len
    variants = {
        str(index): (lambda rows, heads=heads: add_to_heads_hooks(
            model, heads, z_directions, scale, positions=positions, rows=rows))
        for index, heads in enumerate(sets)
    }
    if prefix is not None:
        return _stack(run_prefix_variants(model, prefix, variants, readout=readout,
                                          last_position_only=last_position_only))
    return _stack(run_variants(model, tokens, variants, readout=readout, last_position_only=last_position_only))


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


def greedy_continuations(model: Any, tokens: Tensor, n_tokens: int, fwd_hooks: HookList = ()) -> list[str]:
    """Greedy continuation of each prompt, ``n_tokens`` long, with the hooks active at
    every step: the tokens TransformerLens's ``generate`` (``do_sample=False``, no
    key/value cache) would produce under the same hooks, computed more cheaply.

    Each step runs the whole sequence again with the hooks active, so a hook that acts
    by position (``add_to_residual_hooks(..., start_pos=1)``) sees the same positions as
    in a plain forward pass, generated tokens included (with a key/value cache it would
    see only the newest token, at local position 0). Each step unembeds only the last
    position (``logits_to_keep=1``): with a large vocabulary (Gemma 3's 262,144 tokens)
    the full logits of every step are most of the work. Every row continues its own
    prompt; ``tokens`` must not be padded.
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    hooks = list(fwd_hooks)
    sequence = tokens
    with torch.no_grad():
        for _ in range(n_tokens):
            logits = forward_logits(model, sequence, hooks, last_position_only=True)
            chosen = logits[:, -1].argmax(-1).to(sequence.device, sequence.dtype)
            sequence = torch.cat([sequence, chosen[:, None]], dim=1)
    return [model.tokenizer.decode(row[tokens.shape[1]:]) for row in sequence]
