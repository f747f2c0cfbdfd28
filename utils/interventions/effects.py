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

**Post-attention norms** (Gemma 2 and 3, :mod:`utils.core.norms`). There a head's
write passes through its layer's post-attention RMSNorm before the residual stream, so
the change of the write is not ``change of z @ W_O``. The same ``final_norm`` choice
applies to that norm: ``"recomputed"`` re-normalises the layer's output with the
chosen heads changed and the layer's other heads at their clean values (the change of
``hook_attn_out`` such a layer would really write); ``"frozen"`` keeps the clean run's
post-norm scale, so the change is ``change of z @ W_O * g / s`` and direct effects add
up (and equal differences of direct logit attribution). ``post_norm=`` chooses for the
post-attention norms separately (e.g. frozen post-norms with a recomputed final norm).
See :func:`write_change`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.dla import frozen_final_norm, head_direct_logit_attribution, head_writes
from utils.core.heads import Head, by_layer, check_heads
from utils.core.hooks import final_resid_name
from utils.core.metrics import Metric, metric_value
from utils.core.models import attention_weight
from utils.core.norms import apply_post_norm, post_attention_norm, post_norm_factor, post_norm_scale_name
from utils.interventions.hooks import replace_heads_hooks

__all__ = [
    "FINAL_NORMS",
    "BackupAnalysis",
    "FinalNorm",
    "HeadEffects",
    "backup_analysis",
    "compensation_parts",
    "direct_effects",
    "head_effects",
    "write_change",
    "write_change_names",
]

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


def write_change_names(model: Any, layers: Iterable[int]) -> list[str]:
    """The hooks :func:`write_change` reads from both caches for heads in ``layers``."""
    names = set()
    for layer in layers:
        names.add(get_act_name("z", layer))
        if post_attention_norm(model, layer) is not None:
            names.add(post_norm_scale_name(layer))
    return sorted(names)


def write_change(
    model: Any, clean_cache: Any, new_cache: Any, heads: Iterable[Head], *, final_norm: FinalNorm = "recomputed"
) -> Tensor:
    """How much the residual stream receives differently from ``heads`` when their
    ``hook_z`` changes from ``clean_cache``'s values to ``new_cache``'s, every other
    head of their layers kept at its clean value: ``(batch, pos, d_model)``.

    Without post-attention norms this is ``sum over heads of (z_new - z_clean) @ W_O``.
    With them (Gemma 2 and 3) it passes through each layer's norm: recomputed
    (``final_norm="recomputed"``: the layer's clean output plus the change,
    re-normalised, minus the clean one) or frozen at the clean run's scale
    (``"frozen"``: the change times ``g / s``, linear in the change, so the changes of
    single heads add up to that of the heads together).

    Args:
        clean_cache, new_cache: hold :func:`write_change_names` of the heads' layers.
    """
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
    delta: Tensor | float = 0.0
    for layer, indices in by_layer(model, heads).items():
        name = get_act_name("z", layer)
        clean_z, new_z = clean_cache[name], new_cache[name]
        W_O = attention_weight(model, "W_O", layer).to(clean_z.device, clean_z.dtype)
        if post_attention_norm(model, layer) is not None and final_norm == "recomputed":
            # The layer's output with the chosen heads changed, from every head's z (not
            # clean output + change: with every head zeroed, that leaves rounding noise
            # the norm would blow up to full size).
            mixed = clean_z.clone()
            mixed[:, :, indices] = new_z[:, :, indices].to(mixed.device, mixed.dtype)
            b_O = attention_weight(model, "b_O", layer)
            outputs = [torch.einsum("bphd,hdm->bpm", z, W_O) for z in (mixed, clean_z)]
            if b_O is not None:
                outputs = [out + b_O.to(out.device, out.dtype) for out in outputs]
            written = apply_post_norm(model, layer, outputs[0]) - apply_post_norm(model, layer, outputs[1])
        else:
            change = new_z[:, :, indices].to(clean_z.device) - clean_z[:, :, indices]
            written = torch.einsum("bpkd,kdm->bpm", change, W_O[indices])
            factor = post_norm_factor(model, clean_cache, layer)
            if factor is not None:  # frozen at the clean run's scale
                written = written * factor.to(written.device, written.dtype)
        delta = delta + written
    if not isinstance(delta, Tensor):
        raise ValueError("no heads given")
    return delta


def _replacement_runs(
    model: Any,
    tokens: Tensor,
    heads: Sequence[Head],
    values: Sequence[Tensor],
    final_norm: str,
    extra_names: Sequence[str] = (),
    post_norm: str | None = None,
) -> _Runs:
    """The clean run, the run with ``heads`` replaced, and the clean run with only the
    change of the heads' writes added to the final residual stream."""
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
    if post_norm is not None and post_norm not in FINAL_NORMS:
        raise ValueError(f"post_norm must be None or one of {FINAL_NORMS}, got {post_norm!r}")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    grouped = by_layer(model, heads)
    names = sorted(set(write_change_names(model, grouped)) | set(extra_names) | {get_act_name("scale")})
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(tokens, names_filter=names)
        with model.hooks(fwd_hooks=replace_heads_hooks(model, heads, values)):
            total_logits, total_cache = model.run_with_cache(tokens, names_filter=names)
        post = final_norm if post_norm is None else post_norm
        delta = write_change(model, clean_cache, total_cache, heads, final_norm=post)
        hooks = [(final_resid_name(model), lambda resid, hook: resid + delta)]
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
    post_norm: FinalNorm | None = None,
) -> HeadEffects:
    """Total, direct and indirect effect on ``metric`` of replacing ``heads`` (together)
    by ``values``.

    Args:
        tokens: ``(batch, pos)``.
        heads: one head or several, replaced together.
        metric: logits -> scalar tensor.
        values: one replacement per layer (see the module docstring).
        final_norm: ``"recomputed"`` or ``"frozen"``, for the final norm and, on models
            that have them, the heads' post-attention norms (see the module docstring).
        post_norm: the same choice for the post-attention norms alone; ``None`` follows
            ``final_norm``. No effect on models without post-attention norms.
    """
    runs = _replacement_runs(model, tokens, check_heads(model, heads), values, final_norm, post_norm=post_norm)
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
    #: The ablated run's logits at the last position, ``(batch, 1, d_vocab)`` (e.g. for
    #: a per-prompt metric).
    ablated_logits: Tensor | None = field(default=None, repr=False, compare=False)

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
        moves only through the final norm's scale. With no ablated head, every head."""
        mask = torch.zeros(self.dla_clean.shape, dtype=torch.bool)
        mask[min((layer for layer, _ in self.heads), default=-1) + 1 :] = True
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
    every_layer += [  # direct logit attribution reads the post-attention norms' scales
        post_norm_scale_name(layer)
        for layer in range(model.cfg.n_layers)
        if post_attention_norm(model, layer) is not None
    ]
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
        ablated_logits=runs.total_logits[:, -1:],
    )


def compensation_parts(
    model: Any,
    tokens: Tensor,
    heads: Iterable[Head],
    values: Sequence[Tensor],
    answer_ids: Tensor,
    wrong_ids: Tensor,
) -> dict[str, Tensor]:
    """Per prompt, the change of the logit difference ``logit(answer) - logit(wrong)``
    at the last position when ``heads`` are replaced by ``values`` together, split into
    parts that add up to it:

    * ``"ablated_heads"``: the change of the ablated heads' own writes,
    * ``"other_heads"``: the change of every other head's write,
    * ``"mlps"``: the change of the MLPs' outputs,

    each read through the final norm frozen at the clean run's scale (direct logit
    attribution, :func:`utils.attribution.dla.frozen_final_norm`), so that these parts
    are linear and add up to the frozen-norm change of the final residual stream;
    ``"norm"``, the actual change minus that frozen-norm change (what the change of the
    final norm's scale adds); and ``"residual"``, the actual change minus the four parts
    (embeddings and biases do not change, so only rounding error is left). ``"clean"``,
    ``"ablated"`` and ``"total"`` (ablated - clean) are the logit differences themselves.

    The sum of ``"other_heads"``, ``"mlps"`` and ``"norm"`` is the *compensation* of
    :class:`BackupAnalysis` (frozen-norm prediction): what the rest of the model changes.
    Two forward passes, unembedding the last position only.

    Returns:
        ``{name: Tensor[batch]}`` for the names above.
    """
    heads = check_heads(model, heads)
    if not heads:
        raise ValueError("no heads given")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    if answer_ids.shape != (tokens.shape[0],) or wrong_ids.shape != (tokens.shape[0],):
        raise ValueError(f"answer_ids and wrong_ids need one id per prompt ({tokens.shape[0]})")
    n_layers = model.cfg.n_layers
    names = [get_act_name(kind, layer) for kind in ("z", "mlp_out") for layer in range(n_layers)]
    names += [post_norm_scale_name(layer) for layer in range(n_layers) if post_attention_norm(model, layer) is not None]
    names += [get_act_name("scale"), final_resid_name(model)]
    directions = (model.W_U[:, answer_ids] - model.W_U[:, wrong_ids]).T  # (batch, d_model)

    def run(hooks: Sequence[Any]) -> tuple[Tensor, Any]:
        with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
            try:
                logits, cache = model.run_with_cache(tokens, names_filter=names, logits_to_keep=1)
            except TypeError:  # a model that does not take logits_to_keep
                logits, cache = model.run_with_cache(tokens, names_filter=names)
        last = logits[:, -1]
        rows = torch.arange(tokens.shape[0], device=last.device)
        diff = last[rows, answer_ids.to(last.device)] - last[rows, wrong_ids.to(last.device)]
        return diff.float().cpu(), cache

    clean, clean_cache = run([])
    ablated, ablated_cache = run(replace_heads_hooks(model, heads, values))
    dirs = directions.to(clean_cache[get_act_name("scale")].device)
    head_change = frozen_final_norm(
        clean_cache, head_writes(model, ablated_cache, None, directions=dirs)
        - head_writes(model, clean_cache, None, directions=dirs)
    ).float().cpu()  # (batch, n_layers, n_heads)
    chosen = torch.zeros(head_change.shape[1:], dtype=torch.bool)
    for layer, head in heads:
        chosen[layer, head] = True
    mlp_change = torch.stack(
        [ablated_cache[get_act_name("mlp_out", l)][:, -1] - clean_cache[get_act_name("mlp_out", l)][:, -1]
         for l in range(n_layers)], dim=1)  # (batch, n_layers, d_model)
    mlps = frozen_final_norm(clean_cache, mlp_change, directions=dirs).float().cpu().sum(dim=1)
    final = final_resid_name(model)
    frozen_total = frozen_final_norm(
        clean_cache, (ablated_cache[final] - clean_cache[final])[:, -1], directions=dirs
    ).float().cpu()
    parts = {
        "ablated_heads": head_change[:, chosen].sum(dim=1),
        "other_heads": head_change[:, ~chosen].sum(dim=1),
        "mlps": mlps,
        "norm": (ablated - clean) - frozen_total,
    }
    total = ablated - clean
    return {
        "clean": clean,
        "ablated": ablated,
        "total": total,
        **parts,
        "residual": total - sum(parts.values()),
    }


def direct_effects(
    model: Any,
    clean_cache: Any,
    head_sets: Sequence[Iterable[Head]],
    values: Sequence[Tensor],
    directions: Tensor,
) -> Tensor:
    """Per prompt, the direct effect on a logit direction at the last position of
    replacing each set of heads in ``head_sets`` by ``values``: the change of the
    heads' writes (:func:`write_change`, post-attention norms frozen) read through the
    final norm frozen at the clean run's scale, as direct logit attribution reads it.
    No forward pass: everything comes from ``clean_cache``.

    Args:
        clean_cache: the clean run's cache with :func:`write_change_names` of the heads'
            layers and ``ln_final.hook_scale``.
        head_sets: e.g. ``[[head] for head in heads]`` for one head at a time.
        directions: ``(batch, d_model)``, e.g. from
            :func:`utils.attribution.dla.logit_difference_direction`.

    Returns:
        ``Tensor[batch, len(head_sets)]``.
    """
    if not head_sets:
        raise ValueError("no head sets given")
    columns = []
    for heads in head_sets:
        heads = check_heads(model, heads)
        new = {}
        for layer in by_layer(model, heads):
            name = get_act_name("z", layer)
            if name not in clean_cache:
                raise ValueError(f"clean_cache lacks {name}")
            new[name] = values[layer].to(clean_cache[name].device, clean_cache[name].dtype).expand_as(clean_cache[name])
        delta = write_change(model, clean_cache, new, heads, final_norm="frozen")[:, -1]
        columns.append(frozen_final_norm(clean_cache, delta, directions=directions.to(delta.device)).float().cpu())
    return torch.stack(columns, dim=1)
