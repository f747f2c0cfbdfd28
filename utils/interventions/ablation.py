"""Ablating heads: zero, mean and resample ablation.

Ablation replaces a head's output (``hook_z``) with a value that carries no information
about the prompt at hand:

* **zero**: zeros. Simple, but the head then writes something it never writes in
  normal use, so later layers may see an off-distribution input.
* **mean**: the head's mean output over a reference batch (per position when the
  prompts share a template). Removes what varies between prompts, keeps the rest.
* **resample**: the head's output on *another* prompt of the same task, so every
  ablated value is one the head really produces (Chan et al., 2022, "causal
  scrubbing"; Heimersheim and Nanda, 2024).

Prompts of several templates of one length share positions but not what stands at
them: ``groups=`` (e.g. each prompt's template index) matches the replacement to the
prompt's group, the mean over the reference prompts of the same template, or a
reference prompt of the same template to resample from.

:func:`ablation_values` builds the replacement for every layer. The hooks that apply it
are :func:`utils.interventions.hooks.replace_heads_hooks` (any set of heads, together);
:func:`head_ablation_sweep` ablates each head on its own, on the fast engine;
:func:`compare_ablation` compares chosen heads with a layer-matched null of 20 random sets;
:func:`ablate_head_sets` gives a per-prompt metric with each of many sets ablated (a
head set and its layer-matched null), resuming a cached run at each set's first layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import Head, check_heads, layer_matched_random_heads
from utils.core.metrics import Metric, metric_value
from utils.interventions.engine import (
    CachedRun,
    cache_run,
    check_logit_positions,
    copy_chunks,
    replace_heads_sweep,
    run_from_layer,
)
from utils.interventions.hooks import replace_heads_hooks

AblationMethod = Literal["zero", "mean", "resample"]


ABLATION_METHODS = ("zero", "mean", "resample")


def derangement(n: int, seed: int = 0) -> Tensor:
    """A seeded random permutation of ``range(n)`` that moves every index (``n >= 2``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"a derangement needs n >= 2 items, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    # One cycle through a random order: prompt order[i] takes from prompt order[i + 1].
    order = torch.randperm(n, generator=generator)
    permutation = torch.empty(n, dtype=torch.long)
    permutation[order] = order.roll(-1)
    return permutation


def mean_over_prompts(z: Tensor) -> Tensor:
    """Mean ablation's value: the activations ``z`` (``(batch, pos, ...)``, e.g. a
    layer's ``hook_z``) averaged over the prompts, per position: ``(1, pos, ...)``."""
    if not isinstance(z, Tensor) or z.ndim < 2:
        raise ValueError("z must be a (batch, pos, ...) tensor of activations")
    return z.mean(dim=0, keepdim=True)


def ablation_values(
    model: Any,
    tokens: Tensor,
    method: AblationMethod,
    *,
    reference_tokens: Tensor | None = None,
    seed: int = 0,
    reference_cache: Any | None = None,
    groups: Tensor | None = None,
    reference_groups: Tensor | None = None,
) -> list[Tensor]:
    """Per layer, what an ablated head's output (``hook_z``) is replaced with.

    Args:
        tokens: ``(batch, pos)``, the prompts whose heads will be ablated.
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference_tokens: prompts of the same task for ``"mean"`` (any batch size, same
            length: the mean is taken per position) and ``"resample"`` (same shape as
            ``tokens``); ``tokens`` itself by default. When resampling from ``tokens``
            itself, prompt ``b`` gets the activations of another prompt (a seeded
            derangement of the batch).
        reference_cache: a cache of the reference prompts' run that holds every layer's
            ``hook_z``, when the chapter has one already: it saves a forward pass.
        groups: ``LongTensor[batch]``, one group id per prompt (e.g. its template's
            index), to match the replacement to the prompt's group: ``"mean"`` then
            averages position ``p`` over the reference prompts of the prompt's own group
            only, and ``"resample"`` gives each prompt the activations of a reference
            prompt of its own group (a seeded derangement within each group when the
            reference is ``tokens`` itself, a seeded shuffle within each group
            otherwise). ``None`` (the default) pools every reference prompt.
        reference_groups: ``LongTensor[n_reference]``, the reference prompts' group ids;
            required with ``groups`` when ``reference_tokens`` is given (``groups``
            itself otherwise). Resampling needs as many reference prompts as prompts in
            every group.

    Returns:
        One tensor per layer, broadcastable to ``(batch, pos, n_heads, d_head)``; with
        ``groups``, mean ablation's values hold one row per prompt, ``(batch, pos, ...)``.

    Raises:
        ValueError: an unknown method, tokens of the wrong shape or length, group ids of
            the wrong length or type, ``reference_groups`` without ``groups`` (or missing
            with ``reference_tokens``), a group with no reference prompt, or (resample) a
            group whose reference prompts are too few or, from ``tokens`` itself, a
            group of one prompt.
    """
    if method not in ABLATION_METHODS:
        raise ValueError(f"unknown ablation method {method!r}: use one of {ABLATION_METHODS}")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    n_layers, n_heads, d_head = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head
    if method == "zero":
        zeros = torch.zeros(1, 1, n_heads, d_head, device=tokens.device)
        return [zeros for _ in range(n_layers)]
    reference = tokens if reference_tokens is None else reference_tokens
    if not isinstance(reference, Tensor) or reference.ndim != 2:
        raise ValueError("reference_tokens must be a (batch, pos) tensor of token ids")
    if reference.shape[1] != tokens.shape[1]:
        raise ValueError(
            f"reference prompts have {reference.shape[1]} tokens but the prompts have "
            f"{tokens.shape[1]}; they must share one template length"
        )
    if method == "resample" and reference.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"resampling needs as many reference prompts as prompts ({tokens.shape[0]}), "
            f"got {reference.shape[0]}"
        )
    group_of, reference_group_of = _check_groups(
        tokens, reference, groups, reference_groups, reference_tokens is None, method
    )
    names = [get_act_name("z", layer) for layer in range(n_layers)]
    if reference_cache is not None:
        missing = [name for name in names if name not in reference_cache]
        if missing:
            raise ValueError(f"reference_cache lacks {missing[0]} (and {len(missing) - 1} more hook_z)")
        if reference_cache[names[0]].shape[:2] != reference.shape:
            raise ValueError("reference_cache does not come from a run on the reference prompts")
        cache = reference_cache
    else:
        with torch.no_grad():
            try:  # only the activations are needed: unembed as little as possible
                _, cache = model.run_with_cache(reference, names_filter=names, logits_to_keep=1)
            except TypeError:  # a model that does not take logits_to_keep
                _, cache = model.run_with_cache(reference, names_filter=names)
    if group_of is not None:
        return _grouped_values(cache, names, method, group_of, reference_group_of, reference_tokens is None, seed)
    if method == "mean":
        return [mean_over_prompts(cache[name]) for name in names]
    if reference_tokens is None:
        order = derangement(tokens.shape[0], seed)
    else:
        order = torch.randperm(tokens.shape[0], generator=torch.Generator().manual_seed(seed))
    return [cache[name][order.to(cache[name].device)] for name in names]


def _group_ids(name: str, ids: Any, size: int) -> Tensor:
    if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be a 1-D integer tensor (one group id per prompt), got {ids!r:.80}")
    if ids.shape[0] != size:
        raise ValueError(f"{name} holds {ids.shape[0]} group ids for {size} prompts; give one per prompt")
    return ids.long().cpu()


def _check_groups(
    tokens: Tensor,
    reference: Tensor,
    groups: Tensor | None,
    reference_groups: Tensor | None,
    from_tokens: bool,
    method: str,
) -> tuple[Tensor | None, Tensor | None]:
    """The prompts' and the reference prompts' group ids, checked (``None, None``
    without ``groups``)."""
    if groups is None:
        if reference_groups is not None:
            raise ValueError("reference_groups needs groups, the prompts' own group ids")
        return None, None
    group_of = _group_ids("groups", groups, tokens.shape[0])
    if reference_groups is None:
        if not from_tokens:
            raise ValueError("with reference_tokens and groups, give reference_groups too (one id per reference prompt)")
        reference_group_of = group_of
    else:
        reference_group_of = _group_ids("reference_groups", reference_groups, reference.shape[0])
    for group in group_of.unique().tolist():
        wanted = int((group_of == group).sum())
        available = int((reference_group_of == group).sum())
        if available == 0:
            raise ValueError(f"group {group} has no reference prompt")
        if method == "resample":
            if available != wanted:
                raise ValueError(
                    f"resampling within groups needs as many reference prompts as prompts in each "
                    f"group: group {group} has {wanted} prompts and {available} reference prompts"
                )
            if from_tokens and wanted < 2:
                raise ValueError(f"group {group} has a single prompt: it has no other prompt to resample from")
    return group_of, reference_group_of


def _grouped_values(
    cache: Any,
    names: Sequence[str],
    method: str,
    group_of: Tensor,
    reference_group_of: Tensor,
    from_tokens: bool,
    seed: int,
) -> list[Tensor]:
    """Mean or resample values matched to each prompt's group (see :func:`ablation_values`)."""
    if method == "mean":
        results = []
        for name in names:
            z = cache[name]
            value = torch.empty((group_of.shape[0],) + tuple(z.shape[1:]), dtype=z.dtype, device=z.device)
            for group in group_of.unique().tolist():
                members = (reference_group_of == group).nonzero().flatten().to(z.device)
                value[(group_of == group).to(z.device)] = z[members].mean(dim=0)
            results.append(value)
        return results
    # resample: prompt i of group g takes from the k-th reference prompt of group g
    order = torch.empty(group_of.shape[0], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    for group in group_of.unique().tolist():
        prompts = (group_of == group).nonzero().flatten()
        sources = (reference_group_of == group).nonzero().flatten()
        if from_tokens:
            shuffle = derangement(len(prompts), seed + int(group))
        else:
            shuffle = torch.randperm(len(sources), generator=generator)
        order[prompts] = sources[shuffle]
    return [cache[name][order.to(cache[name].device)] for name in names]


def head_ablation_sweep(
    model: Any,
    tokens: Tensor,
    metric: Metric,
    *,
    method: AblationMethod = "mean",
    reference_tokens: Tensor | None = None,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    last_position_only: bool = False,
    values: Sequence[Tensor] | None = None,
) -> Tensor:
    """``metric`` after ablating each head on its own (at every position).

    Uses the fast engine of :mod:`utils.interventions.patching`: the unablated run is cached once and
    each layer's heads share one batched run of the remaining blocks.

    Args:
        values: replacements already built by :func:`ablation_values` for these
            ``tokens``; ``method``, ``reference_tokens`` and ``seed`` build them otherwise.

    Returns:
        ``Tensor[n_layers, n_heads]`` (``len(layers)`` rows), the metric after ablation.
    """
    if values is None:
        values = ablation_values(
            model, tokens, method, reference_tokens=reference_tokens, seed=seed
        )
    run = cache_run(model, tokens)
    metric_value(metric, run.logits)
    return replace_heads_sweep(
        model, run, values, metric, layers=layers, last_position_only=last_position_only
    )


def ablate_head_sets(
    model: Any,
    run: CachedRun,
    head_sets: Sequence[Sequence[Head]],
    values: Sequence[Tensor],
    metric: Callable[[Tensor], Tensor],
    *,
    positions: Tensor | None = None,
    last_position_only: bool = False,
    logit_positions: Tensor | None = None,
) -> Tensor:
    """A per-prompt ``metric`` with each of ``head_sets`` ablated, one set at a time (the
    heads of a set together), e.g. chosen heads and their layer-matched random draws.

    Ablating heads of layers ``>= L`` changes nothing before block ``L``, so each set
    resumes the cached clean run at its first layer (:func:`run_from_layer`); sets that
    share that layer (layer-matched draws do) run together as stacked copies, in as few
    resumed runs as the logits budget allows. The same as
    ``metric(model.run_with_hooks(run.tokens, fwd_hooks=replace_heads_hooks(model, heads,
    values, positions=positions)))`` per set, up to float rounding.

    Args:
        run: the clean run, from :func:`utils.interventions.engine.cache_run`.
        head_sets: the sets to ablate; an empty set gives the clean run's metric.
        values: one replacement per layer, from :func:`ablation_values`.
        metric: logits ``(batch, pos, d_vocab)`` -> one value per prompt, ``(batch,)``.
        positions: replace only at one position per prompt, ``LongTensor[batch]``.
        last_position_only: unembed only the last position (``metric`` then gets
            ``(batch, 1, d_vocab)``): much less work on a large vocabulary when the metric
            reads nothing else.
        logit_positions: ``LongTensor[batch, k]``, unembed only these positions of each
            prompt (``metric`` then gets ``(batch, k, d_vocab)``), for a metric that reads
            a few positions that differ between prompts; ``run`` must hold every
            position's logits.

    Returns:
        ``Tensor[len(head_sets), batch]``.
    """
    if not isinstance(run, CachedRun):
        raise TypeError(f"run must be a CachedRun from cache_run, got {type(run).__name__}")
    logit_positions = check_logit_positions(run, logit_positions, last_position_only)
    if logit_positions is not None and run.logits.shape[1] != run.tokens.shape[1]:
        raise ValueError("logit_positions needs a run with every position's logits (cache_run without last_position_only)")
    if isinstance(head_sets, (str, bytes)) or not isinstance(head_sets, Sequence) or not head_sets:
        raise ValueError("head_sets must be a non-empty sequence of head sets")
    checked = [check_heads(model, heads) if len(heads) else [] for heads in head_sets]
    batch = run.batch

    def per_prompt(logits: Tensor) -> Tensor:
        value = metric(logits)
        if not isinstance(value, Tensor) or value.shape != (batch,):
            raise ValueError(
                f"metric must return one value per prompt, shape ({batch},), got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
            )
        return value.detach().float().cpu()

    results: list[Tensor | None] = [None] * len(checked)
    by_first_layer: dict[int, list[int]] = {}
    for index, heads in enumerate(checked):
        if heads:
            by_first_layer.setdefault(min(layer for layer, _ in heads), []).append(index)
        elif logit_positions is not None:
            rows = torch.arange(batch, device=run.logits.device)[:, None]
            results[index] = per_prompt(run.logits[rows, logit_positions.to(run.logits.device)])
        else:
            results[index] = per_prompt(run.logits[:, -1:] if last_position_only else run.logits)
    with torch.no_grad():
        for layer, indices in sorted(by_first_layer.items()):
            n_out = None if logit_positions is None else int(logit_positions.shape[1])
            for chunk in copy_chunks(model, indices, run, last_position_only=last_position_only, n_positions=n_out):
                hooks = []
                for copy, index in enumerate(chunk):
                    rows = torch.arange(copy * batch, (copy + 1) * batch)
                    hooks += replace_heads_hooks(model, checked[index], values, positions=positions, rows=rows)
                resid = run.resid_pre[layer].repeat(len(chunk), 1, 1)
                logits = run_from_layer(
                    model, run, layer, resid, fwd_hooks=hooks, last_position_only=last_position_only,
                    logit_positions=logit_positions,
                )
                for index, copy_logits in zip(chunk, logits.split(batch, dim=0)):
                    results[index] = per_prompt(copy_logits)
    return torch.stack(results)


# ---------------------------------------------------------------------------
# Ablation against a random baseline
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AblationComparison:
    """A per-prompt metric clean, with the chosen heads ablated, and with each of a
    layer-matched null of random head sets ablated: the evidence of a head-level causal
    claim (effect with its interval, and where the chosen heads fall in the null)."""

    clean: Tensor
    chosen: Tensor
    null: Tensor
    chosen_heads: tuple[Head, ...]
    null_sets: tuple[tuple[Head, ...], ...]

    @property
    def drops(self) -> Tensor:
        """How much ablating the chosen heads lowers the metric, per prompt: the samples
        of the effect's bootstrap interval."""
        return self.clean - self.chosen

    @property
    def null_drops(self) -> Tensor:
        """How much each random set lowers the metric, averaged over prompts: one value
        per draw."""
        return self.clean.mean() - self.null.mean(dim=1)

    @property
    def percentile(self) -> float:
        """The share of random draws whose mean drop is smaller than the chosen heads'
        (1.0: the chosen heads beat every draw). A negative effect is ranked the same
        way, so a claim of a rise reads ``1 - percentile``."""
        return float((self.null_drops < self.drops.mean()).float().mean())


def chosen_and_null_sets(
    model: Any, chosen: Sequence[Head], *, n_draws: int, seed: int, exclude: Sequence[Head]
) -> tuple[list[Head], list[tuple[Head, ...]]]:
    """The checked ``chosen`` heads and ``n_draws`` layer-matched random sets (seeds
    ``seed .. seed + n_draws - 1``, never a chosen head or one of ``exclude``): the two
    sides of :func:`compare_ablation` and its last-position variant.

    Raises:
        ValueError: ``n_draws < 1``, no chosen heads, or a head out of range.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
    if not len(chosen):
        raise ValueError("chosen must hold at least one head")
    chosen = check_heads(model, chosen)
    draws = [
        tuple(layer_matched_random_heads(model, chosen, seed=seed + draw, exclude=exclude))
        for draw in range(n_draws)
    ]
    return chosen, draws


def compare_ablation(
    model: Any,
    run: CachedRun,
    chosen: Sequence[Head],
    values: Sequence[Tensor],
    metric: Callable[[Tensor], Tensor],
    *,
    n_draws: int = 20,
    seed: int = 0,
    exclude: Sequence[Head] = (),
    positions: Tensor | None = None,
    last_position_only: bool = False,
    logit_positions: Tensor | None = None,
) -> AblationComparison:
    """Ablate the ``chosen`` heads together, then each of ``n_draws`` layer-matched random
    sets (:func:`utils.core.heads.layer_matched_random_heads`, seeds ``seed ..
    seed + n_draws - 1``, never a chosen head or one of ``exclude``), all on the fast
    engine (:func:`ablate_head_sets`, one call).

    The course's standard for a head-level causal claim asks for this null with at least
    20 draws; select ``chosen`` on other prompts than ``run``'s, and pass mean or
    resample ``values`` (zero ablation breaks heads for reasons unrelated to the task).

    Args:
        run: the clean run of the evaluation prompts, from :func:`cache_run`.
        values: one replacement per layer, from :func:`ablation_values`.
        metric: logits -> one value per prompt ``(batch,)``, higher = better.
        exclude: heads kept out of the draws (heads the chapter gives another role).
        positions, last_position_only, logit_positions: as for :func:`ablate_head_sets`.

    Raises:
        ValueError: no chosen heads, a head out of range, or ``n_draws < 1``.
    """
    chosen, draws = chosen_and_null_sets(model, chosen, n_draws=n_draws, seed=seed, exclude=exclude)
    results = ablate_head_sets(
        model, run, [[], chosen, *draws], values, metric,
        positions=positions, last_position_only=last_position_only, logit_positions=logit_positions,
    )
    return AblationComparison(
        clean=results[0],
        chosen=results[1],
        null=results[2:],
        chosen_heads=tuple(chosen),
        null_sets=tuple(draws),
    )


# ---------------------------------------------------------------------------
# A cheap screen: the linear estimate of every head's ablation
# ---------------------------------------------------------------------------


def ablation_attribution(
    model: Any,
    tokens: Tensor,
    metric: Metric,
    values: dict[str, Sequence[Tensor]],
) -> dict[str, Tensor]:
    """The linear (attribution) estimate of :func:`head_ablation_sweep` for several
    replacements at once: for each entry of ``values`` (e.g. ``{"mean": ..., "zero": ...}``,
    each from :func:`ablation_values`), ``metric(clean) + sum over prompts, positions and
    d_head of (value - z) * dmetric/dz`` for every head.

    One forward and one backward pass on ``tokens`` serve every head and every
    replacement (the gradient does not depend on the replacement), so it screens all
    heads for the price of about three forward passes. It is exact for a metric linear
    in ``z`` and misses whatever is not (later layers reacting non-linearly): confirm
    the heads it selects with an exact ablation. Only the last position is unembedded,
    so ``metric`` must read logits of shape ``(batch, 1, d_vocab)``.

    Returns:
        ``{name: Tensor[n_layers, n_heads]}``, the estimated metric after ablation, and
        ``"clean"``, the metric of the unablated run (a 0-dim tensor).
    """
    if not isinstance(values, dict) or not values or "clean" in values:
        raise ValueError('values must be a non-empty dict such as {"mean": ablation_values(...)}, without a "clean" key')
    n_layers = model.cfg.n_layers
    for name, per_layer in values.items():
        if len(per_layer) != n_layers:
            raise ValueError(f"values[{name!r}] needs one entry per layer ({n_layers}), got {len(per_layer)}")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    kept: dict[int, Tensor] = {}

    def detach_input(resid: Tensor, hook: Any) -> Tensor:
        return resid.detach().requires_grad_(True)

    def make_keep(layer: int) -> Any:
        def keep(z: Tensor, hook: Any) -> Tensor:
            kept[layer] = z
            return z

        return keep

    hooks = [(get_act_name("resid_pre", 0), detach_input)]
    hooks += [(get_act_name("z", layer), make_keep(layer)) for layer in range(n_layers)]
    with torch.enable_grad():
        try:
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks, logits_to_keep=1)
        except TypeError:  # a model that does not take logits_to_keep
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        value = metric_value(metric, logits[:, -1:])
        if not value.requires_grad:
            raise ValueError("the metric is not differentiable with respect to the logits")
        grads = torch.autograd.grad(value, [kept[layer] for layer in range(n_layers)], allow_unused=True)
    results = {"clean": value.detach().float().cpu()}
    for name, per_layer in values.items():
        estimate = torch.zeros(n_layers, model.cfg.n_heads)
        for layer, grad in enumerate(grads):
            if grad is None:
                continue
            z = kept[layer].detach()
            delta = per_layer[layer].to(z.device, z.dtype).expand_as(z) - z
            estimate[layer] = (delta * grad).sum(dim=(0, 1, 3)).cpu()
        results[name] = estimate + float(value.detach())
    return results
