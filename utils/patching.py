"""Activation patching of heads and of the residual stream: exact, fast and by attribution.

Patching runs the model on one input (the *base* run) while copying one activation from
a run on another input (the *source* run) and measures a metric on the logits
(Heimersheim and Nanda, 2024). With clean and corrupted prompts:

* ``direction="denoise"``: base = corrupted, source = clean. A large change means the
  activation is *sufficient* to restore (part of) the clean behaviour.
* ``direction="noise"``: base = clean, source = corrupted. A large change means the
  activation is *necessary* for the clean behaviour.

Every function returns the raw metric after patching, in the metric's own units;
:func:`normalise_patching` maps it so that 0 is the corrupted run and 1 the clean run.

The exact patching here is fast because it reuses work. The base run is computed once;
for layer ``L`` the residual stream entering block ``L`` is taken from it, copied once
per head, and only blocks ``L`` to the last are run, copy ``i`` patching head ``i``. The
result equals the naive loop (one full forward pass per head,
:func:`naive_head_patching_effects`) up to floating-point noise.
:func:`attribution_patching_effects` replaces the patched runs by a first-order Taylor
expansion around the base run (Nanda, 2023; Syed et al., 2023): one forward and one
backward pass for all heads at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from utils.heads import top_heads
from utils.hooks import check_heads, check_layer, z_hook_name

Metric = Callable[[Tensor], Tensor]
Direction = Literal["denoise", "noise"]
DIRECTIONS = ("denoise", "noise")


def resid_pre_hook_name(layer: int) -> str:
    """Name of the hook holding the residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


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


def _check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.cfg.n_layers))
    checked = [check_layer(model, layer) for layer in layers]
    if not checked:
        raise ValueError("layers is empty")
    return checked


def _check_positions(positions: Sequence[int] | None, n_pos: int) -> list[int] | None:
    if positions is None:
        return None
    checked = []
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"positions must be ints, got {position!r}")
        if not -n_pos <= position < n_pos:
            raise ValueError(f"position {position} is out of range for prompts of {n_pos} tokens")
        checked.append(position % n_pos)
    if not checked:
        raise ValueError("positions is empty; pass None to patch every position")
    return checked


def metric_value(metric: Metric, logits: Tensor) -> Tensor:
    """``metric(logits)``, checked to be a scalar tensor.

    Raises:
        ValueError: the metric returns anything but a single number, e.g. one value per
            prompt (average it over the batch first).
    """
    value = metric(logits)
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    if not isinstance(value, Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"metric must return a scalar tensor, got {shape}; average per-prompt values "
            "over the batch (e.g. with .mean())"
        )
    return value


# ---------------------------------------------------------------------------
# The engine: resume a cached run at block L with a batch of edited copies
# ---------------------------------------------------------------------------


@dataclass
class CachedRun:
    """What a run leaves behind for resuming it at any block.

    ``resid_pre[l]`` is the residual stream entering block ``l``, ``z[l]`` every head's
    output there (``(batch, pos, n_heads, d_head)``), ``block_inputs[l]`` the other
    arguments the block received (attention mask, rotary embeddings, ...).
    """

    tokens: Tensor
    logits: Tensor
    resid_pre: list[Tensor]
    z: list[Tensor]
    block_inputs: list[tuple[tuple, dict]]

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])


def cache_run(model: Any, tokens: Tensor) -> CachedRun:
    """Run ``tokens`` once and keep what :func:`run_from_layer` needs to resume the run."""
    n_layers = model.cfg.n_layers
    block_inputs: list[tuple[tuple, dict]] = [((), {})] * n_layers
    handles = []

    def make_capture(layer: int) -> Callable[..., None]:
        def capture(module: Any, args: tuple, kwargs: dict) -> None:
            block_inputs[layer] = (args, kwargs)

        return capture

    names = [resid_pre_hook_name(layer) for layer in range(n_layers)]
    names += [z_hook_name(layer) for layer in range(n_layers)]
    try:
        for layer in range(n_layers):
            handles.append(
                model.blocks[layer].register_forward_pre_hook(make_capture(layer), with_kwargs=True)
            )
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter=names)
    finally:
        for handle in handles:
            handle.remove()
    return CachedRun(
        tokens=tokens,
        logits=logits,
        resid_pre=[cache[resid_pre_hook_name(layer)] for layer in range(n_layers)],
        z=[cache[z_hook_name(layer)] for layer in range(n_layers)],
        block_inputs=block_inputs,
    )


def _is_kv_cache(value: Any) -> bool:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover - transformers always ships it
        return False
    return isinstance(value, Cache)


def _repeat_batch(value: Any, batch: int, copies: int) -> Any:
    """Repeat every per-prompt tensor (first dim ``batch``) ``copies`` times along dim 0."""
    if _is_kv_cache(value):
        return None  # a key/value cache would make the resumed blocks attend to stale keys
    if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.ndim - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat_batch(item, batch, copies) for item in value)
    return value


def run_from_layer(
    model: Any,
    run: CachedRun,
    layer: int,
    resid: Tensor,
    *,
    fwd_hooks: Sequence[tuple[str, Callable[..., Any]]] = (),
    last_position_only: bool = False,
) -> Tensor:
    """Resume ``run`` at block ``layer`` from the residual ``resid`` and return the logits.

    ``resid`` stacks ``copies`` edited versions of the run's residual stream:
    ``(copies * batch, pos, d_model)``, copy ``c`` in rows ``c * batch`` to
    ``(c + 1) * batch``. Blocks before ``layer`` are not run at all.

    Args:
        last_position_only: unembed only the last position (logits of shape
            ``(copies * batch, 1, d_vocab)``), which saves much of the work when the
            metric reads nothing else.
    """
    check_layer(model, layer)
    expected = run.resid_pre[layer].shape
    if resid.ndim != 3 or resid.shape[0] % run.batch or resid.shape[1:] != expected[1:]:
        raise ValueError(
            f"resid must stack copies of the run's residual {tuple(expected)}, "
            f"got {tuple(resid.shape)}"
        )
    copies = resid.shape[0] // run.batch
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for current in range(layer, model.cfg.n_layers):
            args, kwargs = run.block_inputs[current]
            kwargs = {key: _repeat_batch(value, run.batch, copies) for key, value in kwargs.items()}
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            if args:
                rest = tuple(_repeat_batch(value, run.batch, copies) for value in args[1:])
                out = model.blocks[current](resid, *rest, **kwargs)
            else:
                kwargs["hidden_states"] = resid
                out = model.blocks[current](**kwargs)
            resid = out[0] if isinstance(out, tuple) else out
        if last_position_only:
            resid = resid[:, -1:]
        return model.unembed(model.ln_final(resid))


def _metric_per_copy(metric: Metric, logits: Tensor, batch: int) -> list[float]:
    return [float(metric_value(metric, chunk)) for chunk in logits.split(batch, dim=0)]


def replace_heads_sweep(
    model: Any,
    run: CachedRun,
    replacement_z: Sequence[Tensor],
    metric: Metric,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    last_position_only: bool = False,
) -> Tensor:
    """For every head, ``metric`` on ``run`` with that head's output replaced.

    The engine behind exact patching and per-head ablation.

    Args:
        run: the base run, from :func:`cache_run`.
        replacement_z: per layer, the value to write into ``hook_z``, broadcastable to
            ``(batch, pos, n_heads, d_head)`` (a source run's ``z``, zeros, a mean, ...).
        layers: the layers to sweep; all by default.
        positions: replace only at these positions; all by default.
        last_position_only: see :func:`head_patching_effects`.

    Returns:
        ``Tensor[len(layers), n_heads]``.
    """
    layers = _check_layers(model, layers)
    n_heads, batch, n_pos = model.cfg.n_heads, run.batch, run.tokens.shape[1]
    where = _check_positions(positions, n_pos)
    where = slice(None) if where is None else where
    if len(replacement_z) != model.cfg.n_layers:
        raise ValueError(
            f"replacement_z needs one entry per layer ({model.cfg.n_layers}), "
            f"got {len(replacement_z)}"
        )
    results = torch.zeros(len(layers), n_heads)
    with torch.no_grad():
        for row, layer in enumerate(layers):
            base_z = run.z[layer]
            new = replacement_z[layer].to(base_z.device, base_z.dtype).expand_as(base_z)

            def patch(z: Tensor, hook: Any, new: Tensor = new) -> Tensor:
                z = z.contiguous()  # so that the view below shares z's memory
                stacked = z.view(n_heads, batch, *z.shape[1:])
                for head in range(n_heads):
                    # stacked[head] is a view, so this writes into z itself
                    stacked[head][:, where, head] = new[:, where, head]
                return z

            resid = run.resid_pre[layer].repeat(n_heads, 1, 1)
            logits = run_from_layer(
                model, run, layer, resid, fwd_hooks=[(z_hook_name(layer), patch)],
                last_position_only=last_position_only,
            )
            results[row] = torch.tensor(_metric_per_copy(metric, logits, batch))
    return results


# ---------------------------------------------------------------------------
# Public patching functions
# ---------------------------------------------------------------------------


def head_patching_effects(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    last_position_only: bool = False,
) -> Tensor:
    """Exact activation patching of every head's output (``hook_z``), fast.

    For each head, the base run (corrupted for ``"denoise"``, clean for ``"noise"``)
    gets that head's output copied from the other run, and ``metric(logits)`` is
    recorded. Equal to :func:`naive_head_patching_effects` up to float noise.

    Args:
        clean_tokens, corrupted_tokens: ``(batch, pos)`` of the same shape.
        metric: logits ``(batch, pos, d_vocab)`` -> scalar tensor.
        layers: sweep only these layers; all by default.
        positions: patch only these positions (position-specific patching); all by
            default.
        last_position_only: the metric reads only the last position's logits (as
            ``utils.metrics.logit_diff`` does): only that position is unembedded and the
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


def head_position_patching_effects(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    heads: Sequence[tuple[int, int]],
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

            def patch(z: Tensor, hook: Any, head: int = head, source_z: Tensor = source_z,
                      differing: list[int] = differing) -> Tensor:
                z = z.contiguous()  # so that the view below shares z's memory
                stacked = z.view(len(differing), batch, *z.shape[1:])
                for copy, position in enumerate(differing):
                    stacked[copy][:, position, head] = source_z[:, position]
                return z

            resid = base.resid_pre[layer].repeat(len(differing), 1, 1)
            logits = run_from_layer(
                model, base, layer, resid, fwd_hooks=[(z_hook_name(layer), patch)],
                last_position_only=last_position_only,
            )
            for position, value in zip(differing, _metric_per_copy(metric, logits, batch)):
                results[row, position] = value
    return results


def naive_head_patching_effects(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
) -> Tensor:
    """Reference implementation of :func:`head_patching_effects`: one full forward pass
    per head with a hook replacing that head's ``hook_z`` (as
    ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` does). Slow; for
    checks and benchmarks."""
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    layers = _check_layers(model, layers)
    where = _check_positions(positions, base_tokens.shape[1])
    results = torch.zeros(len(layers), model.cfg.n_heads)
    with torch.no_grad():
        metric_value(metric, model(base_tokens))
        _, source_cache = model.run_with_cache(
            source_tokens, names_filter=[z_hook_name(layer) for layer in layers]
        )
        for row, layer in enumerate(layers):
            for head in range(model.cfg.n_heads):
                hook = head_patch_hook(source_cache[z_hook_name(layer)], head, where)
                logits = model.run_with_hooks(base_tokens, fwd_hooks=[(z_hook_name(layer), hook)])
                results[row, head] = float(metric_value(metric, logits))
    return results


def head_patch_hook(
    source_z: Tensor, head: int, positions: Sequence[int] | None = None
) -> Callable[..., Tensor]:
    """A ``hook_z`` hook that copies one head's output from ``source_z`` (the same
    layer's ``hook_z`` on the source run) at ``positions`` (all positions for ``None``)."""
    where = slice(None) if positions is None else list(positions)

    def hook(z: Tensor, hook: Any) -> Tensor:
        z[:, where, head] = source_z[:, where, head].to(z.device)
        return z

    return hook


def attribution_patching_effects(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
) -> Tensor:
    """Attribution patching: the linear approximation of :func:`head_patching_effects`.

    With ``g`` the gradient of the metric with respect to ``hook_z`` on the base run,
    patching head ``h`` is estimated as
    ``metric(base) + sum over batch, positions and d_head of (z_source - z_base) * g``.
    One forward and backward pass on the base run and one forward pass on the source
    run serve every head (Nanda, 2023; Syed et al., 2023). Same arguments, same
    units and same errors as :func:`head_patching_effects`.
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    layers = _check_layers(model, layers)
    where = _check_positions(positions, base_tokens.shape[1])
    with torch.no_grad():
        _, source_cache = model.run_with_cache(
            source_tokens, names_filter=[z_hook_name(layer) for layer in layers]
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

    hooks = [(resid_pre_hook_name(0), detach_input)]
    hooks += [(z_hook_name(layer), make_keep(layer)) for layer in layers]
    with torch.enable_grad():
        logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)
        value = metric_value(metric, logits)
        if not value.requires_grad:
            raise ValueError("the metric is not differentiable with respect to the logits")
        grads = torch.autograd.grad(value, [kept[layer] for layer in layers], allow_unused=True)
    results = torch.zeros(len(layers), model.cfg.n_heads)
    mask = torch.zeros(base_tokens.shape[1], dtype=torch.bool)
    mask[slice(None) if where is None else where] = True
    for row, (layer, grad) in enumerate(zip(layers, grads)):
        if grad is None:  # the metric does not depend on this layer's heads
            grad = torch.zeros_like(kept[layer])
        delta = source_cache[z_hook_name(layer)] - kept[layer].detach()
        per_position = (delta * grad).sum(dim=-1)  # (batch, pos, n_heads)
        results[row] = per_position[:, mask.to(per_position.device)].sum(dim=(0, 1)).cpu()
    return results + float(value.detach())


def residual_patching_effects(
    model: Any,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    direction: Direction = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    last_position_only: bool = False,
) -> Tensor:
    """Patch the residual stream entering block ``l`` at position ``p``, for every
    ``(l, p)``, and record ``metric(logits)``.

    Fast like :func:`head_patching_effects`: for each layer, all positions share one
    batched run of the remaining blocks; positions where the two runs' residual streams
    are identical are not run at all. ``last_position_only`` as in
    :func:`head_patching_effects`.

    Returns:
        ``Tensor[len(layers), len(positions)]`` (all layers and positions by default).
    """
    base_tokens, source_tokens = _base_and_source(clean_tokens, corrupted_tokens, direction)
    layers = _check_layers(model, layers)
    n_pos = base_tokens.shape[1]
    where = _check_positions(positions, n_pos) or list(range(n_pos))
    base = cache_run(model, base_tokens)
    with torch.no_grad():
        _, source_cache = model.run_with_cache(
            source_tokens, names_filter=[resid_pre_hook_name(layer) for layer in layers]
        )
        base_value = float(metric_value(metric, base.logits))
        results = torch.full((len(layers), len(where)), base_value)
        batch = base.batch
        for row, layer in enumerate(layers):
            source = source_cache[resid_pre_hook_name(layer)]
            # Where the two runs' residual streams are identical (tokens that agree and
            # everything before them), patching changes nothing: skip those copies.
            differing = [
                (column, position)
                for column, position in enumerate(where)
                if not torch.equal(base.resid_pre[layer][:, position], source[:, position])
            ]
            if not differing:
                continue
            resid = base.resid_pre[layer].repeat(len(differing), 1, 1)
            for copy, (_, position) in enumerate(differing):
                resid[copy * batch : (copy + 1) * batch, position] = source[:, position]
            logits = run_from_layer(
                model, base, layer, resid, last_position_only=last_position_only
            )
            values = _metric_per_copy(metric, logits, batch)
            for (column, _), value in zip(differing, values):
                results[row, column] = value
    return results


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


# ---------------------------------------------------------------------------
# Comparing two maps of heads
# ---------------------------------------------------------------------------


def _ranks(values: Tensor) -> Tensor:
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[values.argsort()] = torch.arange(values.numel(), dtype=torch.float64)
    return ranks


@dataclass(frozen=True)
class RankingAgreement:
    """How far two per-head maps agree: Spearman rank correlation over all heads, and
    how many of the top ``k`` heads (by absolute value) the two maps share."""

    spearman: float
    top_k_overlap: int
    k: int


def ranking_agreement(a: Tensor, b: Tensor, k: int = 10) -> RankingAgreement:
    """Spearman correlation of ``a`` and ``b`` over all heads and the overlap of their
    top ``k`` heads ranked by absolute value (pass effects, i.e. values minus a
    baseline, so that the size of a change is what counts)."""
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    ranks_a, ranks_b = _ranks(a.detach().flatten().cpu()), _ranks(b.detach().flatten().cpu())
    spearman = float(torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1])
    overlap = len(set(top_heads(a.abs(), k)) & set(top_heads(b.abs(), k)))
    return RankingAgreement(spearman=spearman, top_k_overlap=overlap, k=k)
