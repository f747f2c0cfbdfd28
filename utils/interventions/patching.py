"""Activation patching of heads and of the residual stream, exact and by attribution.

Positions follow :mod:`utils.core.positions`: where to patch in each prompt is a
``LongTensor[batch]`` (``LongTensor[batch, k]`` for several positions per prompt), e.g.
``ioi.positions["S2"]``; ``None`` patches every position.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.cache import take_positions
from utils.core.heads import Head, check_heads
from utils.core.metrics import Metric, metric_value
from utils.core.positions import check_positions
from utils.interventions.engine import (
    CachedRun,
    _check_layers,
    _metric_per_copy,
    cache_run,
    copy_chunks,
    position_index,
    replace_heads_sweep,
    run_from_layer,
)

Direction = Literal["denoise", "noise"]


DIRECTIONS = ("denoise", "noise")


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def _check_tokens(clean_tokens: Tensor, corrupted_tokens: Tensor) -> None:
    for name, tokens in (("clean_tokens", clean_tokens), ("corrupted_tokens", corrupted_tokens)):
        if not isinstance(tokens, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}"
            )
        if tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(
                f"{name} must be integer token ids of shape (batch, pos), got "
                f"{tokens.dtype} of shape {tuple(tokens.shape)}"
            )
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(
            f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
            f"{tuple(corrupted_tokens.shape)} must have the same shape: patching copies "
            "activations position by position"
        )


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}: use 'denoise' or 'noise'")


def _base_and_source(clean: Tensor, corrupted: Tensor, direction: str) -> tuple[Tensor, Tensor]:
    _check_tokens(clean, corrupted)
    _check_direction(direction)
    return (corrupted, clean) if direction == "denoise" else (clean, corrupted)


# ---------------------------------------------------------------------------
# Public patching functions
# ---------------------------------------------------------------------------


def head_patching_sweep(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Tensor | None = None,
    last_position_only: bool = False,
) -> Tensor:
    """Exact activation patching of every head's output (``hook_z``), fast.

    For each head, the base run (corrupted for ``"denoise"``, clean for ``"noise"``)
    gets that head's output copied from the other run, and ``metric(logits)`` is
    recorded. Equal to TransformerLens's patching loop
    (``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``) up to float noise.

    Args:
        clean_tokens, corrupted_tokens: ``(batch, pos)`` of the same shape.
        metric: logits ``(batch, pos, d_vocab)`` -> scalar tensor.
        layers: sweep only these layers; all by default.
        positions: patch only at each prompt's positions (position-specific
            patching): ``LongTensor[batch]``, e.g. ``ioi.positions["END"]``, or
            ``LongTensor[batch, k]``; every position by default.
        last_position_only: the metric reads only the last position's logits (as
            ``utils.core.metrics.logit_diff`` does): only that position is unembedded and the
            metric receives logits of shape ``(batch, 1, d_vocab)``. Same results,
            about a third less work.

    Returns:
        ``Tensor[n_layers, n_heads]`` (``len(layers)`` rows if ``layers`` is given),
        the metric after patching.

    Raises:
        ValueError: token shapes differ, unknown direction, a metric that does not
            return a scalar, layers or positions out of range.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    base = cache_run(model, base_tokens)
    metric_value(metric, base.logits)
    source = cache_run(model, source_tokens)
    return replace_heads_sweep(
        model, base, source.z, metric, layers=layers, positions=positions,
        last_position_only=last_position_only,
    )


def head_position_patching_sweep(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    heads: Sequence[Head],
    *,
    direction: Direction = "denoise",
    last_position_only: bool = False,
) -> Tensor:
    """Patch each of ``heads`` at one position at a time: where does a head act?

    For every head and every position ``p``, the head's output is copied from the other
    run at position ``p`` only. All positions of one head share a batched pass that
    starts at the head's layer; positions where the head's output is the same in both
    runs (before the first token that differs) are not run.

    Returns:
        ``Tensor[len(heads), pos]``, the metric after patching.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    heads = check_heads(model, heads)
    base = cache_run(model, base_tokens)
    source = cache_run(model, source_tokens)
    base_value = float(metric_value(metric, base.logits))
    n_pos, batch = base_tokens.shape[1], base.batch
    results = torch.full((len(heads), n_pos), base_value)
    with torch.no_grad():
        for row, (layer, head) in enumerate(heads):
            base_z, source_z = base.z[layer][:, :, head], source.z[layer][:, :, head]
            differing = [p for p in range(n_pos) if not torch.equal(base_z[:, p], source_z[:, p])]
            if not differing:
                continue

            for chunk in copy_chunks(model, differing, base, last_position_only=last_position_only):

                def patch(z: Tensor, hook: Any, head: int = head, source_z: Tensor = source_z,
                          chunk: list[int] = chunk) -> Tensor:
                    z = z.contiguous()  # so that the view below shares z's memory
                    stacked = z.view(len(chunk), batch, *z.shape[1:])
                    for copy, position in enumerate(chunk):
                        stacked[copy][:, position, head] = source_z[:, position]
                    return z

                resid = base.resid_pre[layer].repeat(len(chunk), 1, 1)
                logits = run_from_layer(
                    model, base, layer, resid, fwd_hooks=[(get_act_name("z", layer), patch)],
                    last_position_only=last_position_only,
                )
                for position, value in zip(chunk, _metric_per_copy(metric, logits, batch)):
                    results[row, position] = value
    return results


def head_patching_per_prompt(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Callable[[Tensor], Tensor],
    heads: Sequence[Head],
    *,
    direction: Direction = "denoise",
    last_position_only: bool = False,
    runs: tuple[CachedRun, CachedRun] | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """Exact patching of each of ``heads`` alone (all positions, or one position per
    prompt), one value per prompt.

    Like :func:`head_patching_sweep` restricted to ``heads``, but ``metric`` is a
    per-prompt metric (logits ``(batch, pos, d_vocab)`` -> ``(batch,)``, e.g. a
    :func:`utils.core.metrics.logit_diffs` closure), so that the result can carry a
    bootstrap interval over prompts. The heads of one layer share a batched pass that
    resumes the cached base run at that layer.

    Args:
        runs: ``(cache_run(model, clean_tokens), cache_run(model, corrupted_tokens))``,
            to reuse the two runs over several calls (both directions); by default
            they are run here.
        positions: ``LongTensor[batch]``, one position per prompt: patch each head there
            only (where a map says it acts), instead of at every position.

    Returns:
        ``Tensor[len(heads), batch]``, the metric of each prompt after patching each head.

    Raises:
        ValueError: token shapes differ, unknown direction, a head out of range, or a
            metric that does not return one value per prompt.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    heads = check_heads(model, heads)
    if runs is None:
        runs = (cache_run(model, clean_tokens), cache_run(model, corrupted_tokens))
    if len(runs) != 2 or not all(isinstance(r, CachedRun) for r in runs):
        raise TypeError("runs must be (cache_run(clean_tokens), cache_run(corrupted_tokens))")
    if not (torch.equal(runs[0].tokens, clean_tokens) and torch.equal(runs[1].tokens, corrupted_tokens)):
        raise ValueError("runs were cached on other tokens than clean_tokens and corrupted_tokens")
    base, source = runs[::-1] if direction == "denoise" else runs
    batch = base.batch
    if positions is not None:
        positions = check_positions("positions", positions, batch, base.tokens.shape[1])
        if positions.ndim != 1:
            raise ValueError(f"positions must have shape ({batch},): one position per prompt")
    prompt_rows = torch.arange(batch)
    probe = metric(base.logits[:, -1:] if last_position_only else base.logits)
    if not isinstance(probe, Tensor) or tuple(probe.shape) != (batch,):
        raise ValueError(
            f"metric must return one value per prompt, shape ({batch},), got "
            f"{tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__}"
        )
    results = torch.zeros(len(heads), batch)
    by_layer_rows: dict[int, list[int]] = {}
    for row, (layer, _) in enumerate(heads):
        by_layer_rows.setdefault(layer, []).append(row)
    with torch.no_grad():
        for layer, rows in by_layer_rows.items():
            for chunk in copy_chunks(model, rows, base, last_position_only=last_position_only):

                def patch(z: Tensor, hook: Any, chunk: list[int] = chunk, layer: int = layer) -> Tensor:
                    z = z.contiguous()  # so that the view below shares z's memory
                    stacked = z.view(len(chunk), batch, *z.shape[1:])
                    for copy, row in enumerate(chunk):
                        head = heads[row].head
                        if positions is None:
                            stacked[copy][:, :, head] = source.z[layer][:, :, head]
                        else:
                            stacked[copy][prompt_rows, positions, head] = source.z[layer][prompt_rows, positions, head]
                    return z

                resid = base.resid_pre[layer].repeat(len(chunk), 1, 1)
                logits = run_from_layer(
                    model, base, layer, resid, fwd_hooks=[(get_act_name("z", layer), patch)],
                    last_position_only=last_position_only,
                )
                for copy, row in enumerate(chunk):
                    results[row] = metric(logits[copy * batch : (copy + 1) * batch]).float().cpu()
    return results


def attribution_patching_sweep(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Tensor | None = None,
) -> Tensor:
    """Attribution patching: the linear approximation of :func:`head_patching_sweep`.

    With ``g`` the gradient of the metric with respect to ``hook_z`` on the base run,
    patching head ``h`` is estimated as
    ``metric(base) + sum over batch, positions and d_head of (z_source - z_base) * g``.
    One forward and backward pass on the base run and one forward pass on the source
    run serve every head (Nanda, 2023; Syed et al., 2023). Same arguments, same
    units and same errors as :func:`head_patching_sweep`.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    layers = _check_layers(model, layers)
    if positions is not None:
        positions = check_positions("positions", positions, base_tokens.shape[0], base_tokens.shape[1])
    with torch.no_grad():
        _, source_cache = model.run_with_cache(
            source_tokens, names_filter=[get_act_name("z", layer) for layer in layers]
        )
    kept: dict[int, Tensor] = {}

    def detach_input(resid: Tensor, hook: Any) -> Tensor:
        # Gradients are needed for activations only: starting the graph here skips the
        # weights' gradients whatever their requires_grad flags.
        return resid.detach().requires_grad_(True)

    def make_keep(layer: int) -> Callable[..., Tensor]:
        def keep(z: Tensor, hook: Any) -> Tensor:
            # Returned so that the rest of the run reads this very tensor: a hook that
            # returns None may leave the graph running through a different view.
            kept[layer] = z
            return z

        return keep

    hooks = [(get_act_name("resid_pre", 0), detach_input)]
    hooks += [(get_act_name("z", layer), make_keep(layer)) for layer in layers]
    with torch.enable_grad():
        logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)
        value = metric_value(metric, logits)
        if not value.requires_grad:
            raise ValueError("the metric is not differentiable with respect to the logits")
        grads = torch.autograd.grad(value, [kept[layer] for layer in layers], allow_unused=True)
    results = torch.zeros(len(layers), model.cfg.n_heads)
    for row, (layer, grad) in enumerate(zip(layers, grads)):
        if grad is None:  # the metric does not depend on this layer's heads
            grad = torch.zeros_like(kept[layer])
        delta = source_cache[get_act_name("z", layer)] - kept[layer].detach()
        per_position = (delta * grad).sum(dim=-1)  # (batch, pos, n_heads)
        if positions is not None:
            per_position = take_positions(per_position, positions)  # (batch[, k], n_heads)
        results[row] = per_position.sum(dim=tuple(range(per_position.ndim - 1))).cpu()
    return results + float(value.detach())


def residual_patching_sweep(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Tensor | Mapping[str, Tensor] | None = None,
    last_position_only: bool = False,
    per_prompt: bool = False,
) -> Tensor:
    """Patch the residual stream entering block ``l`` at one position per prompt, for
    every layer ``l`` and every column of ``positions``, and record ``metric(logits)``.

    Fast like :func:`head_patching_sweep`: for each layer, all columns share one
    batched run of the remaining blocks; columns where the two runs' residual streams
    are identical are not run at all. ``last_position_only`` as in
    :func:`head_patching_sweep`.

    Args:
        positions: the columns, each one position per prompt: ``LongTensor[batch]``
            (one column), ``LongTensor[batch, k]`` (``k`` columns) or a dict of
            ``LongTensor[batch]`` such as ``{"S2": ioi.positions["S2"], "END":
            ioi.positions["END"]}`` (one column per entry, in its order). By default
            every position ``0 .. pos - 1`` is a column.
        per_prompt: ``metric`` returns one value per prompt, ``(batch,)`` (a
            :data:`~utils.core.metrics.PerPromptMetric`), and so does the result: the
            held-out check of a map's cells, with a bootstrap interval over prompts.

    Returns:
        ``Tensor[len(layers), n_columns]`` (all layers and positions by default), or
        ``Tensor[len(layers), n_columns, batch]`` with ``per_prompt``.

    Raises:
        ValueError: as :func:`head_patching_sweep`; with ``per_prompt``, a metric that
            does not return one value per prompt.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    layers = _check_layers(model, layers)
    n_batch, n_pos = base_tokens.shape
    where = _residual_columns(positions, n_batch, n_pos)
    base = cache_run(model, base_tokens)
    with torch.no_grad():
        _, source_cache = model.run_with_cache(
            source_tokens, names_filter=[get_act_name("resid_pre", layer) for layer in layers]
        )
        batch = base.batch
        if per_prompt:
            base_values = _per_prompt_values(metric, base.logits, batch)
            results = base_values.repeat(len(layers), len(where), 1)
        else:
            base_value = float(metric_value(metric, base.logits))
            results = torch.full((len(layers), len(where)), base_value)
        for row, layer in enumerate(layers):
            source = source_cache[get_act_name("resid_pre", layer)]
            # Where the two runs' residual streams are identical (tokens that agree and
            # everything before them), patching changes nothing: skip those copies.
            differing = [
                (column, position)
                for column, position in enumerate(where)
                if not torch.equal(take_positions(base.resid_pre[layer], position), take_positions(source, position))
            ]
            for chunk in copy_chunks(model, differing, base, last_position_only=last_position_only):
                resid = base.resid_pre[layer].repeat(len(chunk), 1, 1)
                for copy, (_, position) in enumerate(chunk):
                    rows, columns = position_index(position, batch, n_pos, device=resid.device)
                    resid[copy * batch : (copy + 1) * batch][rows, columns] = source[rows, columns]
                logits = run_from_layer(
                    model, base, layer, resid, last_position_only=last_position_only
                )
                if per_prompt:
                    values = [_per_prompt_values(metric, part, batch) for part in logits.split(batch, dim=0)]
                else:
                    values = _metric_per_copy(metric, logits, batch)
                for (column, _), value in zip(chunk, values):
                    results[row, column] = value
    return results


def _per_prompt_values(metric: Callable[[Tensor], Tensor], logits: Tensor, batch: int) -> Tensor:
    """``metric(logits)`` checked to give one value per prompt, as a float CPU tensor."""
    values = metric(logits)
    if not isinstance(values, Tensor) or tuple(values.shape) != (batch,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"with per_prompt=True the metric must return one value per prompt, shape ({batch},), got {shape}")
    return values.detach().float().cpu()


def _residual_columns(positions: Tensor | Mapping[str, Tensor] | None, batch: int, n_pos: int) -> list[Tensor]:
    """The columns of :func:`residual_patching_sweep`, each a ``LongTensor[batch]``."""
    if positions is None:
        return [torch.full((batch,), position, dtype=torch.long) for position in range(n_pos)]
    if isinstance(positions, Mapping):
        if not positions:
            raise ValueError("positions is empty; pass None to patch every position")
        columns = []
        for name, value in positions.items():
            checked = check_positions(f"positions[{name!r}]", value, batch, n_pos)
            if checked.ndim != 1:
                raise ValueError(f"positions[{name!r}] must have shape ({batch},): one position per prompt")
            columns.append(checked)
        return columns
    checked = check_positions("positions", positions, batch, n_pos)
    if checked.ndim == 1:
        return [checked]
    if checked.shape[1] == 0:
        raise ValueError("positions has no columns; pass None to patch every position")
    return list(checked.T.contiguous())


def patching_baselines(
    model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor, metric: Metric
) -> tuple[float, float]:
    """``(metric on the clean run, metric on the corrupted run)``."""
    _check_tokens(clean_tokens, corrupted_tokens)
    with torch.no_grad():
        clean = float(metric_value(metric, model(clean_tokens)))
        corrupted = float(metric_value(metric, model(corrupted_tokens)))
    return clean, corrupted


def normalise_patching(values: Tensor, clean_value: float, corrupted_value: float) -> Tensor:
    """Rescale patched metric values so that 0 is the corrupted run and 1 the clean run.

    Raises:
        ValueError: the clean and corrupted values are (nearly) equal, so the two runs
            do not differ on this metric and no scale exists.
    """
    clean_value, corrupted_value = float(clean_value), float(corrupted_value)
    gap = clean_value - corrupted_value
    if abs(gap) < 1e-6 * max(1.0, abs(clean_value)):
        raise ValueError(
            f"clean ({clean_value:.4g}) and corrupted ({corrupted_value:.4g}) metric values are "
            "equal: the corruption does not change the metric, so it cannot be normalised"
        )
    return (values - corrupted_value) / gap
