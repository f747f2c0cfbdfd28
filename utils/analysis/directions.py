"""Directions in activation space: mean differences between two classes, projections,
their accuracy and effect size, and random controls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from utils.attribution.lens import residual_stack
from utils.core.cache import resolve_positions, take_positions

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


def residual_directions(model: Any, cache: Any, labels: Tensor, positions: Tensor | None = None) -> Tensor:
    """The mean-difference direction of the residual stream at ``positions``, at every depth.

    Args:
        positions: ``LongTensor[batch]``; ``None`` for the last position of every prompt.

    Returns:
        ``(n_layers + 1, d_model)``: row ``l`` is the residual entering block ``l``, the
        last row the residual after the last block (see :func:`utils.attribution.lens.residual_stack`).
    """
    return mean_difference(residual_stack(model, cache, positions), labels, batch_dim=1)


def head_output_differences(model: Any, cache: Any, labels: Tensor, positions: Tensor | None = None) -> Tensor:
    """Each head's mean-difference direction in its own ``z`` space at ``positions``.

    Args:
        cache: an ``ActivationCache`` holding ``hook_z`` of every layer.
        positions: ``LongTensor[batch]``; ``None`` for the last position of every prompt.

    Returns:
        ``(n_layers, n_heads, d_head)``. Row ``[l, h] @ W_O[l, h]`` is how differently
        the head writes into the residual stream for the two classes.
    """
    z = cache.stack_activation("z").transpose(0, 1)  # (batch, layer, pos, head, d_head)
    index = resolve_positions(positions, z.shape[0], z.shape[2])
    if index.ndim != 1:
        raise ValueError(f"positions must have shape ({z.shape[0]},): one position per prompt")
    return mean_difference(take_positions(z.transpose(1, 2), index), labels)


def sentiment_logit_direction(model: Any, positive_ids: Tensor, negative_ids: Tensor) -> Tensor:
    """Unembedding direction of the sentiment score, ``(d_model,)``.

    The dot product of the final normalised residual with it equals
    :func:`utils.data.sentiment.sentiment_score` (mean positive minus mean negative verdict
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
