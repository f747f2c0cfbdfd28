"""Direct, indirect and total effect of replacing heads (the survey's Figure 5), and
what the other heads do when some are ablated (backup heads).

The head's output is changed from its value on the clean run to a replacement. The
*total* effect lets every later layer react to the change. The *direct* effect adds the
change only to the final residual stream, so it reaches the logits through no other
component. The *indirect* effect is what the later components add on top: total minus
direct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.dla import head_direct_logit_attribution
from utils.core.heads import Head, check_heads
from utils.core.metrics import Metric, metric_value
from utils.interventions.ablation import ablation_hooks


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

    Like :func:`utils.interventions.effects.head_effects`, which covers zero ablation and patching
    from corrupted prompts, but for any replacement: the direct effect adds the change
    of the head's output to the final residual stream only; indirect = total - direct.
    """
    check_heads(model, [(layer, head)])
    name = get_act_name("z", layer)
    last = get_act_name("resid_post", model.cfg.n_layers - 1)
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
    names = [get_act_name("z", layer) for layer in range(n_layers)] + [get_act_name("scale")]
    last = get_act_name("resid_post", n_layers - 1)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=ablation_hooks(model, heads, values)):
            ablated_logits, ablated_cache = model.run_with_cache(tokens, names_filter=names)
        delta = 0.0
        for layer, head in heads:
            name = get_act_name("z", layer)
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


@dataclass(frozen=True)
class HeadEffects:
    """Changes of a metric caused by replacing one head's output (replacement - clean)."""

    clean: float
    total: float
    direct: float
    indirect: float


def head_effects(
    model: Any,
    clean_tokens: Tensor,
    layer: int,
    head: int,
    metric: Callable[[Tensor], Tensor],
    *,
    corrupted_tokens: Tensor | None = None,
) -> HeadEffects:
    """Direct, indirect and total effect of ``(layer, head)`` on ``metric(logits)``.

    Args:
        clean_tokens: ``(batch, pos)``.
        metric: maps logits to a scalar tensor, e.g. a ``logit_diff`` closure.
        corrupted_tokens: the replacement is the head's output on these tokens (same
            shape as ``clean_tokens``); ``None`` zero-ablates the head instead.
    """
    check_heads(model, [(layer, head)])
    name = get_act_name("z", layer)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=[name])
        clean_z = clean_cache[name][:, :, head]
        if corrupted_tokens is None:
            new_z = torch.zeros_like(clean_z)
        else:
            if corrupted_tokens.shape != clean_tokens.shape:
                raise ValueError(
                    f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                    f"{tuple(corrupted_tokens.shape)} must have the same shape"
                )
            _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=[name])
            new_z = corrupted_cache[name][:, :, head]

        def replace(z: Tensor, hook: Any) -> Tensor:
            z[:, :, head] = new_z
            return z

        total_logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(name, replace)])
        delta = (new_z - clean_z) @ model.W_O[layer, head]
        last = get_act_name("resid_post", model.cfg.n_layers - 1)
        direct_logits = model.run_with_hooks(
            clean_tokens, fwd_hooks=[(last, lambda resid, hook: resid + delta)]
        )
    clean = float(metric(clean_logits))
    total = float(metric(total_logits)) - clean
    direct = float(metric(direct_logits)) - clean
    return HeadEffects(clean=clean, total=total, direct=direct, indirect=total - direct)
