"""Direct, indirect and total effect of replacing heads (the survey's Figure 5), and
what the other heads do when some are ablated (backup heads).

The chosen heads' outputs are changed from their values on the clean run to a
replacement: zeros, a mean or a resample (:func:`utils.interventions.ablation.ablation_values`),
or a source run's activations (:func:`utils.interventions.hooks.source_values`). The
*total* effect lets every later layer react to the change. The *direct* effect adds
the change of the heads' writes only to the final residual stream, so it reaches the
logits through no other component. The *indirect* effect is what the later components
add on top: total minus direct.

**The final norm.** Adding the change to the final residual stream also changes the
final norm's scale. ``final_norm="recomputed"`` lets the model recompute it (the
direct effect is then a real forward pass of the edited residual stream);
``final_norm="frozen"`` keeps the clean run's scale, as direct logit attribution
(:mod:`utils.attribution.dla`) does, so that direct effects of different heads add up.
The two differ when a head's write is large compared with the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.dla import head_direct_logit_attribution
from utils.core.heads import Head, by_layer, check_heads
from utils.core.metrics import Metric, metric_value
from utils.interventions.hooks import add_to_residual_hooks, replace_heads_hooks

__all__ = ["FINAL_NORMS", "BackupAnalysis", "FinalNorm", "HeadEffects", "backup_analysis", "head_effects"]

FinalNorm = Literal["recomputed", "frozen"]
FINAL_NORMS = ("recomputed", "frozen")


@dataclass(frozen=True)
class HeadEffects:
    """Changes of a metric caused by replacing heads' outputs (replacement - clean)."""

    clean: float
    total: float
    direct: float
    indirect: float
    final_norm: str = "recomputed"


@dataclass(frozen=True)
class _Runs:
    clean_logits: Tensor
    clean_cache: Any
    total_logits: Tensor
    total_cache: Any
    direct_logits: Tensor


def _replacement_runs(
    model: Any,
    tokens: Tensor,
    heads: Sequence[Head],
    values: Sequence[Tensor],
    final_norm: str,
    extra_names: Sequence[str] = (),
) -> _Runs:
    """The clean run, the run with ``heads`` replaced, and the clean run with only the
    change of the heads' writes added to the final residual stream."""
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    grouped = by_layer(model, heads)
    names = sorted({get_act_name("z", layer) for layer in grouped} | set(extra_names) | {get_act_name("scale")})
    W_O = model.W_O  # read once: the bridge rebuilds it on every access
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=replace_heads_hooks(model, heads, values)):
            total_logits, total_cache = model.run_with_cache(tokens, names_filter=names)
        delta = 0.0
        for layer, indices in grouped.items():
            name = get_act_name("z", layer)
            change = total_cache[name][:, :, indices] - clean_cache[name][:, :, indices]
            delta = delta + torch.einsum("bpkd,kdm->bpm", change, W_O[layer, indices].to(change.device))
        hooks = add_to_residual_hooks(model, model.cfg.n_layers, delta)
        if final_norm == "frozen":
            clean_scale = clean_cache[get_act_name("scale")]
            hooks.append((get_act_name("scale"), lambda scale, hook: clean_scale))
        direct_logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return _Runs(clean_logits, clean_cache, total_logits, total_cache, direct_logits)


def head_effects(
    model: Any,
    tokens: Tensor,
    heads: Iterable[Head],
    metric: Metric,
    values: Sequence[Tensor],
    *,
    final_norm: FinalNorm = "recomputed",
) -> HeadEffects:
    """Total, direct and indirect effect on ``metric`` of replacing ``heads`` (together)
    by ``values``.

    Args:
        tokens: ``(batch, pos)``.
        heads: one head or several, replaced together.
        metric: logits -> scalar tensor.
        values: one replacement per layer (see the module docstring).
        final_norm: ``"recomputed"`` or ``"frozen"`` (see the module docstring).
    """
    runs = _replacement_runs(model, tokens, check_heads(model, heads), values, final_norm)
    clean = float(metric_value(metric, runs.clean_logits))
    total = float(metric_value(metric, runs.total_logits)) - clean
    direct = float(metric_value(metric, runs.direct_logits)) - clean
    return HeadEffects(clean=clean, total=total, direct=direct, indirect=total - direct, final_norm=final_norm)


@dataclass(frozen=True)
class BackupAnalysis:
    """What happens to the metric and to every head's direct contribution when a set
    of heads is ablated together.

    ``predicted`` is the naive additive prediction: the clean metric plus the *direct*
    effect of the ablation, as if no other component reacted. ``compensation = ablated -
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
    #: The ablated run's activations named in ``backup_analysis(..., keep=...)`` (every
    #: layer's), e.g. its attention patterns; ``hook_z`` and the final norm's scale are
    #: always there.
    ablated_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def compensation(self) -> float:
        return self.ablated - self.predicted

    @property
    def dla_change(self) -> Tensor:
        """``dla_ablated - dla_clean`` of every head but the ablated ones."""
        change = self.dla_ablated - self.dla_clean
        for layer, head in self.heads:
            change[layer, head] = 0.0  # only the heads left running can take over
        return change

    @property
    def downstream(self) -> Tensor:
        """``BoolTensor[n_layers, n_heads]``: the heads in layers after the first
        ablated one, the only heads whose outputs the ablation can change (the
        ablated heads themselves excepted). Earlier heads, and the other heads of the
        first ablated layer, compute exactly what they did; their direct contribution
        moves only through the final norm's scale."""
        mask = torch.zeros(self.dla_clean.shape, dtype=torch.bool)
        mask[min(layer for layer, _ in self.heads) + 1 :] = True
        for layer, head in self.heads:
            mask[layer, head] = False
        return mask

    @property
    def downstream_change(self) -> Tensor:
        """:attr:`dla_change` of the :attr:`downstream` heads, 0 elsewhere: the heads
        that can have reacted to the ablation (backup heads, or heads that stop
        suppressing what the ablated heads wrote)."""
        return torch.where(self.downstream, self.dla_change, torch.zeros_like(self.dla_clean))


def backup_analysis(
    model: Any,
    tokens: Tensor,
    metric: Metric,
    directions: Tensor,
    heads: Iterable[Head],
    values: Sequence[Tensor],
    *,
    final_norm: FinalNorm = "recomputed",
    keep: Sequence[str] = (),
) -> BackupAnalysis:
    """Ablate ``heads`` together and compare every head's direct logit attribution
    (along ``directions``, ``(batch, d_model)``) before and after.

    Args:
        values: replacements from :func:`utils.interventions.ablation.ablation_values`.
        final_norm: how ``predicted`` treats the final norm (see the module docstring).
        keep: per-layer activations to keep, from every layer, in the result's
            ``ablated_cache`` (e.g. ``("pattern",)``, to see where the remaining heads
            attend once the others are gone).
    """
    heads = tuple(check_heads(model, heads))
    if isinstance(keep, str):
        raise TypeError('keep must be a sequence of activation names such as ("pattern",), not one string')
    every_layer = [get_act_name(name, layer) for name in ("z", *keep) for layer in range(model.cfg.n_layers)]
    runs = _replacement_runs(model, tokens, heads, values, final_norm, extra_names=every_layer)
    with torch.no_grad():
        dla_clean = head_direct_logit_attribution(model, runs.clean_cache, directions).cpu()
        dla_ablated = head_direct_logit_attribution(model, runs.total_cache, directions).cpu()
    return BackupAnalysis(
        heads=heads,
        clean=float(metric_value(metric, runs.clean_logits)),
        ablated=float(metric_value(metric, runs.total_logits)),
        predicted=float(metric_value(metric, runs.direct_logits)),
        dla_clean=dla_clean,
        dla_ablated=dla_ablated,
        ablated_cache=runs.total_cache,
    )
