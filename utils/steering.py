"""Directional addition and subtraction: find a direction from mean activation
differences, add it to the residual stream or to heads, and project it out of heads.

The survey (Zheng et al., 2024, section 4.1) calls these two *modification-based*
methods: unlike ablation they keep most of an activation and change it only along one
direction. The direction here is a *mean difference* between two classes of prompts
(positive minus negative reviews, Tigges et al., 2023); adding a multiple of it steers
the model (Turner et al., 2023; Li et al., 2023), projecting it out asks whether the
information it carries is needed, and which other components make up for its loss.

Conventions: ``labels`` are 0/1 tensors (1 = the class the direction points to);
``(layer, head)`` pairs are checked against the model; every hook factory returns a
list of ``(hook_name, hook_function)`` pairs, like :mod:`utils.hooks`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from utils.datasets import SentimentDataset
from utils.hooks import HookList, check_heads, check_layer, z_hook_name
from utils.lens import residual_stack

Head = tuple[int, int]
Metric = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_reviews_by_adjective(
    dataset: SentimentDataset, *, seed: int = 0
) -> tuple[SentimentDataset, SentimentDataset]:
    """Split ToyMovieReview prompts into train and test sets that share no adjective.

    Duplicate prompts are dropped first. Within each class the distinct adjectives are
    shuffled (seeded) and halved; a prompt goes to the split that owns its adjective.
    A direction built on the train split and tested on the other one must therefore
    generalise to sentiment words it has never seen.

    Raises:
        ValueError: a class has fewer than two distinct adjectives, so it cannot be split.
    """
    if not isinstance(dataset, SentimentDataset):
        raise TypeError(f"expected a SentimentDataset, got {type(dataset).__name__}")
    first_index: dict[str, int] = {}
    for index, prompt in enumerate(dataset.prompts):
        first_index.setdefault(prompt, index)
    keep = sorted(first_index.values())
    adjectives = dataset.tokens[keep, dataset.adjective_pos]
    labels = dataset.labels[keep]
    rng = random.Random(seed)
    train_adjectives: set[int] = set()
    for label in (0, 1):
        distinct = sorted(set(adjectives[labels == label].tolist()))
        if len(distinct) < 2:
            raise ValueError(
                f"class {label} has {len(distinct)} distinct adjective(s); need at least 2 to split"
            )
        rng.shuffle(distinct)
        train_adjectives.update(distinct[: len(distinct) // 2])
    in_train = [adjective in train_adjectives for adjective in adjectives.tolist()]
    train_rows = [row for row, flag in zip(keep, in_train) if flag]
    test_rows = [row for row, flag in zip(keep, in_train) if not flag]
    return _subset(dataset, train_rows), _subset(dataset, test_rows)


def _subset(dataset: SentimentDataset, rows: Sequence[int]) -> SentimentDataset:
    return replace(
        dataset,
        prompts=[dataset.prompts[row] for row in rows],
        tokens=dataset.tokens[list(rows)],
        labels=dataset.labels[list(rows)],
    )


# ---------------------------------------------------------------------------
# Directions
# ---------------------------------------------------------------------------


def _check_labels(labels: Tensor, batch: int) -> Tensor:
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise TypeError("labels must be a 1-D tensor of 0/1 class labels")
    if labels.shape[0] != batch:
        raise ValueError(f"{labels.shape[0]} labels for a batch of {batch} activations")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(labels.tolist()))}")
    if not bool((labels == 1).any()) or not bool((labels == 0).any()):
        raise ValueError("both classes (0 and 1) must be present in labels")
    return labels.bool()


def mean_difference(activations: Tensor, labels: Tensor, *, batch_dim: int = 0) -> Tensor:
    """Mean of the class-1 activations minus mean of the class-0 activations.

    Args:
        activations: any tensor with the batch along ``batch_dim``.
        labels: ``(batch,)`` of 0/1.

    Returns:
        ``activations`` with the batch dimension removed.
    """
    if not isinstance(activations, Tensor):
        raise TypeError(f"activations must be a tensor, got {type(activations).__name__}")
    moved = activations.movedim(batch_dim, 0)
    positive = _check_labels(labels, moved.shape[0]).to(moved.device)
    return moved[positive].mean(0) - moved[~positive].mean(0)


def residual_directions(model: Any, cache: Any, labels: Tensor, pos: int = -1) -> Tensor:
    """The mean-difference direction of the residual stream at ``pos``, at every depth.

    Returns:
        ``(n_layers + 1, d_model)``: row ``l`` is the residual entering block ``l``, the
        last row the residual after the last block (see :func:`utils.lens.residual_stack`).
    """
    return mean_difference(residual_stack(model, cache, pos), labels, batch_dim=1)


def head_output_differences(model: Any, cache: Any, labels: Tensor, pos: int = -1) -> Tensor:
    """Each head's mean-difference direction in its own ``z`` space at ``pos``.

    Returns:
        ``(n_layers, n_heads, d_head)``. Row ``[l, h] @ W_O[l, h]`` is how differently
        the head writes into the residual stream for the two classes.
    """
    rows = [
        mean_difference(cache[z_hook_name(layer)][:, pos], labels)
        for layer in range(model.cfg.n_layers)
    ]
    return torch.stack(rows)


def sentiment_logit_direction(model: Any, positive_ids: Tensor, negative_ids: Tensor) -> Tensor:
    """Unembedding direction of the sentiment score, ``(d_model,)``.

    The dot product of the final normalised residual with it equals
    :func:`utils.datasets.sentiment_score` (mean positive minus mean negative verdict
    logit), up to the unembedding bias.
    """
    for name, ids in (("positive_ids", positive_ids), ("negative_ids", negative_ids)):
        if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of token ids")
        if bool((ids < 0).any()) or bool((ids >= model.cfg.d_vocab).any()):
            raise ValueError(f"{name} has ids outside the vocabulary (size {model.cfg.d_vocab})")
    W_U = model.W_U
    return W_U[:, positive_ids.to(W_U.device)].mean(1) - W_U[:, negative_ids.to(W_U.device)].mean(1)


def random_directions_like(direction: Tensor, n: int = 1, *, seed: int = 0) -> Tensor:
    """``n`` random directions with the norm of ``direction`` (a control), ``(n, d)``.

    Drawn from an isotropic Gaussian with a seeded generator, so they are reproducible
    and, in high dimension, nearly orthogonal to ``direction``.
    """
    if not isinstance(direction, Tensor) or direction.ndim != 1:
        raise ValueError("direction must be a 1-D tensor")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(n, direction.shape[0], generator=generator)
    draws = draws / draws.norm(dim=-1, keepdim=True) * direction.norm().cpu()
    return draws.to(direction.device, direction.dtype)


def _oriented_projections(
    train_activations: Tensor,
    train_labels: Tensor,
    test_activations: Tensor,
    test_labels: Tensor,
    directions: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Test projections, the train threshold, and the two test-class masks, with the
    projections' sign flipped where needed so that train class 1 lies above class 0."""
    for name, acts in (("train_activations", train_activations), ("test_activations", test_activations)):
        if not isinstance(acts, Tensor) or acts.ndim < 2:
            raise ValueError(f"{name} must be a tensor of shape (..., batch, d)")
    size = directions.shape[-1]
    if size != train_activations.shape[-1] or size != test_activations.shape[-1]:
        raise ValueError(
            f"directions have size {directions.shape[-1]} but activations have "
            f"{train_activations.shape[-1]} (train) and {test_activations.shape[-1]} (test)"
        )
    train_pos = _check_labels(train_labels, train_activations.shape[-2])
    test_pos = _check_labels(test_labels, test_activations.shape[-2])
    train_proj = torch.einsum("...bd,...d->...b", train_activations, directions)
    test_proj = torch.einsum("...bd,...d->...b", test_activations, directions)
    mean_positive, mean_negative = train_proj[..., train_pos].mean(-1), train_proj[..., ~train_pos].mean(-1)
    side = torch.where(mean_positive >= mean_negative, 1.0, -1.0)
    threshold = side * (mean_positive + mean_negative) / 2
    return test_proj * side[..., None], threshold, test_pos, ~test_pos


def projection_accuracy(
    train_activations: Tensor,
    train_labels: Tensor,
    test_activations: Tensor,
    test_labels: Tensor,
    directions: Tensor,
) -> Tensor:
    """Held-out balanced accuracy of classifying by the projection on a direction.

    The threshold is the midpoint between the two classes' mean projections on the
    train set; a test prompt is called class 1 when its projection lies on the side of
    the threshold where the train class-1 mean lies. The balanced accuracy (mean of
    the two per-class accuracies) is 0.5 at chance even when the classes differ in size.

    Args:
        train_activations, test_activations: ``(..., batch, d)``; the leading dimensions
            (e.g. layers) are evaluated independently.
        directions: ``(..., d)``, one per leading index.

    Returns:
        ``(...)`` accuracies in [0, 1].
    """
    projections, threshold, positive, negative = _oriented_projections(
        train_activations, train_labels, test_activations, test_labels, directions
    )
    predicted = projections > threshold[..., None]
    return (predicted[..., positive].float().mean(-1) + (~predicted[..., negative]).float().mean(-1)) / 2


def projection_effect_size(
    train_activations: Tensor,
    train_labels: Tensor,
    test_activations: Tensor,
    test_labels: Tensor,
    directions: Tensor,
) -> Tensor:
    """Held-out separation of the two classes along a direction, in pooled standard deviations.

    Cohen's d of the test projections (class 1 minus class 0, divided by the pooled
    within-class standard deviation), with the sign oriented on the train set. Unlike
    accuracy it does not saturate at 1, so it still tells a good direction from a lucky
    one when both classify perfectly. Each test class needs at least two prompts.
    Shapes as in :func:`projection_accuracy`.
    """
    projections, _, positive, negative = _oriented_projections(
        train_activations, train_labels, test_activations, test_labels, directions
    )
    n_positive, n_negative = int(positive.sum()), int(negative.sum())
    if min(n_positive, n_negative) < 2:
        raise ValueError("each test class needs at least two prompts to estimate its spread")
    first, second = projections[..., positive], projections[..., negative]
    within = first.var(-1) * (n_positive - 1) + second.var(-1) * (n_negative - 1)
    pooled = (within / (n_positive + n_negative - 2)).sqrt()
    return (first.mean(-1) - second.mean(-1)) / pooled


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
        f"blocks.{layer}.hook_resid_pre"
        if layer < model.cfg.n_layers
        else f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
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
            ``(n, ...)``, e.g. a :func:`utils.datasets.sentiment_score` closure.

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

    return [(z_hook_name(layer), make(layer, indices)) for layer, indices in by_layer.items()]


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
    scale = cache["ln_final.hook_scale"][:, pos, 0]
    total = torch.zeros_like(scale)
    for layer, head in checked:
        unit = _unit_for_layer(directions, layer).to(scale.device)
        written = cache[z_hook_name(layer)][:, pos, head] @ model.W_O[layer, head].to(scale.device)
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

    return [(z_hook_name(layer), capture), (f"blocks.{layer}.hook_attn_out", subtract)]


# ---------------------------------------------------------------------------
# Who carries the signal
# ---------------------------------------------------------------------------


def direct_contributions(model: Any, cache: Any, direction: Tensor, pos: int = -1) -> dict[str, Tensor]:
    """Per prompt, each head's and each MLP's direct contribution along ``direction``.

    Outputs at ``pos`` are divided by the final norm's scale of the same run, so with
    ``direction`` from :func:`sentiment_logit_direction` the values are in logits and,
    with the embedding and the biases, add up to the sentiment score. The cache needs
    ``hook_z`` and ``hook_mlp_out`` of every layer and ``ln_final.hook_scale``.

    Returns:
        ``{"heads": (batch, n_layers, n_heads), "mlp": (batch, n_layers)}``.
    """
    if not isinstance(direction, Tensor) or direction.shape != (model.cfg.d_model,):
        raise ValueError(f"direction must be a tensor of shape ({model.cfg.d_model},)")
    scale = cache["ln_final.hook_scale"][:, pos]  # (batch, 1)
    direction = direction.to(scale.device)
    heads, mlps = [], []
    for layer in range(model.cfg.n_layers):
        z = cache[z_hook_name(layer)][:, pos]  # (batch, n_heads, d_head)
        written = torch.einsum("bhd,hdm,m->bh", z, model.W_O[layer].to(z.device), direction)
        heads.append(written / scale)
        mlp = cache[f"blocks.{layer}.hook_mlp_out"][:, pos] @ direction
        mlps.append(mlp / scale[:, 0])
    return {"heads": torch.stack(heads, dim=1), "mlp": torch.stack(mlps, dim=1)}


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
