"""Ablating heads: zero, mean and resample ablation, and what the other heads do then.

Ablation replaces a head's output (``hook_z``) with a value that carries no information
about the prompt at hand:

* **zero**: zeros. Simple, but the head then writes something it never writes in
  normal use, so later layers may see an off-distribution input.
* **mean**: the head's mean output over a reference batch (per position when the
  prompts share a template). Removes what varies between prompts, keeps the rest.
* **resample**: the head's output on *another* prompt of the same task, so every
  ablated value is one the head really produces (Chan et al., 2022, "causal
  scrubbing"; Heimersheim and Nanda, 2024).

:func:`ablation_values` builds the replacement for every layer; one head at a time
(:func:`head_ablation_effects`, on the fast engine of :mod:`utils.patching`) or several
heads together (:func:`ablation_hooks`). :func:`backup_analysis` ablates a set of heads
and measures how the remaining heads' direct contributions change: heads that
contribute more once others are gone are *backup* heads (Wang et al., 2022).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

import torch
from torch import Tensor

from utils.effects import HeadEffects
from utils.hooks import check_heads, z_hook_name
from utils.lens import head_direct_logit_attribution
from utils.patching import Metric, cache_run, metric_value, replace_heads_sweep

Head = tuple[int, int]
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


def ablation_values(
    model: Any,
    tokens: Tensor,
    method: AblationMethod,
    *,
    reference_tokens: Tensor | None = None,
    seed: int = 0,
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

    Returns:
        One tensor per layer, broadcastable to ``(batch, pos, n_heads, d_head)``.
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
    names = [z_hook_name(layer) for layer in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(reference, names_filter=names)
    if method == "mean":
        return [cache[name].mean(dim=0, keepdim=True) for name in names]
    if reference_tokens is None:
        order = derangement(tokens.shape[0], seed)
    else:
        order = torch.randperm(tokens.shape[0], generator=torch.Generator().manual_seed(seed))
    return [cache[name][order.to(cache[name].device)] for name in names]


def head_ablation_effects(
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

    Uses the fast engine of :mod:`utils.patching`: the unablated run is cached once and
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


def ablation_hooks(
    model: Any, heads: Iterable[Head], values: Sequence[Tensor]
) -> list[tuple[str, Callable[..., Tensor]]]:
    """Hooks that replace the chosen heads' outputs by ``values`` (from
    :func:`ablation_values`) together, at every position."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, head in check_heads(model, heads):
        grouped[layer].append(head)
    if len(values) != model.cfg.n_layers:
        raise ValueError(
            f"values needs one entry per layer ({model.cfg.n_layers}), got {len(values)}"
        )

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            replacement = values[layer].to(z.device, z.dtype).expand_as(z)
            z[:, :, head_indices] = replacement[:, :, head_indices]
            return z

        return hook

    return [(z_hook_name(layer), make(layer, indices)) for layer, indices in grouped.items()]


def ablation_head_effects(
    model: Any,
    tokens: Tensor,
    layer: int,
    head: int,
    metric: Metric,
    values: Sequence[Tensor],
) -> HeadEffects:
    """Total, direct and indirect effect (the survey's Figure 5) of ablating one head
    with ``values`` from :func:`ablation_values`.

    Like :func:`utils.effects.head_effects`, which covers zero ablation and patching
    from corrupted prompts, but for any replacement: the direct effect adds the change
    of the head's output to the final residual stream only; indirect = total - direct.
    """
    check_heads(model, [(layer, head)])
    name = z_hook_name(layer)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(tokens, names_filter=[name])
        clean_z = cache[name][:, :, head]
        new_z = values[layer].to(clean_z.device, clean_z.dtype).expand_as(cache[name])[:, :, head]
        total_logits = model.run_with_hooks(
            tokens, fwd_hooks=ablation_hooks(model, [(layer, head)], values)
        )
        delta = (new_z - clean_z) @ model.W_O[layer, head]
        direct_logits = model.run_with_hooks(
            tokens, fwd_hooks=[(last, lambda resid, hook: resid + delta)]
        )
    clean = float(metric_value(metric, clean_logits))
    total = float(metric_value(metric, total_logits)) - clean
    direct = float(metric_value(metric, direct_logits)) - clean
    return HeadEffects(clean=clean, total=total, direct=direct, indirect=total - direct)


@dataclass(frozen=True)
class BackupAnalysis:
    """What happens to the metric and to every head's direct contribution when a set
    of heads is ablated together.

    ``predicted`` is the naive additive prediction: the clean metric plus the *direct*
    effect of the ablation (the ablated heads' change of output added to the final
    residual stream only), as if no other component reacted. ``compensation = ablated -
    predicted`` is then the indirect effect of the ablation: what the rest of the model
    made up for (or made worse); ``dla_change = dla_ablated - dla_clean`` shows which
    of the remaining heads did it.
    """

    heads: tuple[Head, ...]
    clean: float
    ablated: float
    predicted: float
    dla_clean: Tensor
    dla_ablated: Tensor

    @property
    def compensation(self) -> float:
        return self.ablated - self.predicted

    @property
    def dla_change(self) -> Tensor:
        change = self.dla_ablated - self.dla_clean
        for layer, head in self.heads:
            change[layer, head] = 0.0  # only the heads left running can take over
        return change


def backup_analysis(
    model: Any,
    tokens: Tensor,
    metric: Metric,
    directions: Tensor,
    heads: Iterable[Head],
    values: Sequence[Tensor],
) -> BackupAnalysis:
    """Ablate ``heads`` together and compare every head's direct logit attribution
    (along ``directions``, ``(batch, d_model)``) before and after.

    Args:
        values: replacements from :func:`ablation_values`.
    """
    heads = tuple(check_heads(model, heads))
    n_layers = model.cfg.n_layers
    names = [z_hook_name(layer) for layer in range(n_layers)] + ["ln_final.hook_scale"]
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=ablation_hooks(model, heads, values)):
            ablated_logits, ablated_cache = model.run_with_cache(tokens, names_filter=names)
        delta = 0.0
        for layer, head in heads:
            name = z_hook_name(layer)
            change = ablated_cache[name][:, :, head] - clean_cache[name][:, :, head]
            delta = delta + change @ model.W_O[layer, head]
        direct_logits = model.run_with_hooks(
            tokens, fwd_hooks=[(last, lambda resid, hook: resid + delta)]
        )
        dla_clean = head_direct_logit_attribution(model, clean_cache, directions).cpu()
        dla_ablated = head_direct_logit_attribution(model, ablated_cache, directions).cpu()
    return BackupAnalysis(
        heads=heads,
        clean=float(metric_value(metric, clean_logits)),
        ablated=float(metric_value(metric, ablated_logits)),
        predicted=float(metric_value(metric, direct_logits)),
        dla_clean=dla_clean,
        dla_ablated=dla_ablated,
    )
