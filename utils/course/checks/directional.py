"""Checks for the exercises of chapter 12 (Directional addition and subtraction).

Each ``check_*`` function takes the learner's function, compares it with the course's
reference in :mod:`utils.interventions.steering` on random and edge-case inputs, prints one line when
every case matches and raises :class:`utils.course.checks.CheckFailed` otherwise. No check
needs the model: the hooks are tried on random activations, and the hook factories of
:mod:`utils.interventions.steering` get a stand-in that carries only the sizes they read.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import Tensor

from utils.course.checks import Case, Hook, check_against_reference, run_hook
from utils.course.checks.interpretive import check_choice
from utils.interventions.hooks import add_to_residual_hooks, project_out_of_heads_hooks
from utils.analysis.directions import mean_difference, projection_accuracy

__all__ = [
    "check_mean_difference",
    "check_projection_accuracy",
    "check_add_direction_hook",
    "check_project_out_of_head",
    "STEERING_CONTROL_OPTIONS",
    "check_steering_control",
]




def _stand_in(**sizes: Any) -> SimpleNamespace:
    """A one-layer stand-in for a model: ``cfg`` holds ``sizes`` and ``n_layers=1``;
    a ``W_O`` keyword becomes the ``W_O`` attribute instead."""
    weights = sizes.pop("W_O", None)
    cfg = SimpleNamespace(n_layers=1, **sizes)
    return SimpleNamespace(cfg=cfg, W_O=weights)


def _labels(*values: int) -> Tensor:
    """A long tensor of 0/1 class labels."""
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------
# Exercise: the mean-difference direction
# ---------------------------------------------------------------------------


def check_mean_difference(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(activations, labels)`` (batch along dimension 0, labels 0/1) against
    :func:`utils.analysis.directions.mean_difference`."""
    generator = torch.Generator().manual_seed(30)

    def acts(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    cases = [
        Case(
            "8 activations of size 5, balanced classes",
            (acts(8, 5), _labels(0, 1).repeat(4)),
        ),
        Case(
            "unbalanced: five of class 1, two of class 0",
            (acts(7, 6), _labels(1, 1, 0, 1, 1, 0, 1)),
        ),
        Case(
            "one row per layer: activations (batch, layers, d_model)",
            (acts(6, 3, 4), _labels(0, 0, 1, 0, 1, 1)),
        ),
        Case("a single prompt of class 1", (acts(4, 3), _labels(0, 0, 1, 0))),
        Case("one number per prompt (a score)", (acts(5), _labels(1, 0, 0, 1, 0))),
    ]
    check_against_reference(fn, mean_difference, cases, exercise="mean difference")


# ---------------------------------------------------------------------------
# Exercise: projection accuracy
# ---------------------------------------------------------------------------


def _two_classes(
    generator: torch.Generator,
    axis: Tensor,
    n_positive: int,
    n_negative: int,
    *,
    gap: float,
    shift: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Gaussian activations, class 1 around ``+gap/2 * axis`` and class 0 around
    ``-gap/2 * axis``, everything moved by ``shift * axis``; rows shuffled."""
    d = axis.shape[0]
    noise = torch.randn(n_positive + n_negative, d, generator=generator)
    side = torch.cat([torch.full((n_positive,), 0.5), torch.full((n_negative,), -0.5)])
    activations = noise + (side * gap + shift)[:, None] * axis
    labels = torch.cat([torch.ones(n_positive), torch.zeros(n_negative)]).long()
    order = torch.randperm(n_positive + n_negative, generator=generator)
    return activations[order], labels[order]


def check_projection_accuracy(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], "Tensor | float"],
) -> None:
    """Check ``fn(train_activations, train_labels, test_activations, test_labels,
    direction)``, the held-out balanced accuracy of classifying by the projection on
    ``direction`` (activations ``(batch, d)``, direction ``(d,)``), against
    :func:`utils.analysis.directions.projection_accuracy`. A 0-d tensor or a float is accepted."""
    generator = torch.Generator().manual_seed(31)
    d = 6
    axis = torch.zeros(d)
    axis[0] = 1.0
    tilted = axis + 0.3 * torch.randn(d, generator=generator)

    def data(
        n_pos: int, n_neg: int, gap: float, shift: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        return _two_classes(generator, axis, n_pos, n_neg, gap=gap, shift=shift)

    def case(name: str, train: tuple, test: tuple, direction: Tensor) -> Case:
        return Case(name, (*train, *test, direction))

    cases = [
        case(
            "overlapping classes, balanced",
            data(20, 20, 2.0), data(20, 20, 2.0), tilted,
        ),
        case(
            "unbalanced test set: 24 of class 1, 6 of class 0",
            data(20, 20, 2.0), data(24, 6, 1.5), tilted,
        ),
        case(
            "the direction points from class 1 to class 0",
            data(15, 15, 3.0), data(15, 15, 2.0), -tilted,
        ),
        case(
            "test set shifted along the direction (threshold from train)",
            data(20, 20, 3.0), data(12, 12, 3.0, shift=1.0), axis,
        ),
        case("well separated classes", data(10, 10, 8.0), data(10, 10, 8.0), axis * 3),
    ]
    check_against_reference(
        fn,
        lambda *args: float(projection_accuracy(*args)),
        cases,
        exercise="projection accuracy",
    )


# ---------------------------------------------------------------------------
# Exercise: a hook that adds a direction to the residual stream
# ---------------------------------------------------------------------------


def check_add_direction_hook(fn: Callable[..., Hook]) -> None:
    """Check ``fn(direction, alpha, start_pos)``, a factory of residual-stream hooks
    that add ``alpha * direction`` at every position from ``start_pos`` on, against
    :func:`utils.interventions.hooks.add_to_residual_hooks`. Each case applies both hooks to the same
    random residual stream ``(batch, pos, d_model)``."""
    generator = torch.Generator().manual_seed(32)
    d_model = 16

    def reference(direction: Tensor, alpha: float, start_pos: int) -> Hook:
        model = _stand_in(d_model=d_model)
        hooks = add_to_residual_hooks(model, 0, direction, alpha, start_pos=start_pos)
        return hooks[0][1]

    def apply(
        factory: Callable[..., Hook],
        resid: Tensor,
        direction: Tensor,
        alpha: float,
        start: int,
    ) -> Tensor:
        return run_hook(factory(direction, alpha, start), resid)

    def resid(batch: int, n_pos: int) -> Tensor:
        return torch.randn(batch, n_pos, d_model, generator=generator)

    def direction() -> Tensor:
        return torch.randn(d_model, generator=generator) * 3

    cases = [
        Case(
            "alpha 0.5 from position 1 (BOS untouched)",
            (resid(2, 6), direction(), 0.5, 1),
        ),
        Case("negative alpha, -0.2", (resid(2, 6), direction(), -0.2, 1)),
        Case("start_pos 0: every position", (resid(3, 4), direction(), 1.0, 0)),
        Case("start_pos 3", (resid(2, 6), direction(), 2.0, 3)),
        Case("alpha 0 changes nothing", (resid(2, 5), direction(), 0.0, 1)),
        Case(
            "a one-token prompt (BOS only) is left alone",
            (resid(2, 1), direction(), 1.0, 1),
        ),
    ]
    check_against_reference(
        lambda *args: apply(fn, *args),
        lambda *args: apply(reference, *args),
        cases,
        exercise="steering hook",
    )


# ---------------------------------------------------------------------------
# Exercise: projecting a direction out of one head's output
# ---------------------------------------------------------------------------


def check_project_out_of_head(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
) -> None:
    """Check ``fn(attn_out, z, W_O, direction)``: the attention layer's output
    ``(batch, pos, d_model)`` minus the component along ``direction`` of what one head
    writes (``z @ W_O``, with ``z`` of shape ``(batch, pos, d_head)`` and ``W_O`` of
    shape ``(d_head, d_model)``), against
    :func:`utils.interventions.steering.project_out_of_heads_hooks`.

    ``attn_out`` holds the head's own write plus other heads' writes, so subtracting the
    component of the whole layer output is caught.
    """
    generator = torch.Generator().manual_seed(33)
    d_head, d_model = 4, 12

    def reference(
        attn_out: Tensor, z: Tensor, W_O: Tensor, direction: Tensor
    ) -> Tensor:
        model = _stand_in(n_heads=1, d_model=d_model, W_O=W_O[None, None])
        hooks = project_out_of_heads_hooks(model, [(0, 0)], direction)
        (_, capture), (_, subtract) = hooks  # on hook_z, then on hook_attn_out
        capture(z[:, :, None], hook=None)
        return subtract(attn_out, hook=None)

    def inputs(batch: int, n_pos: int) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.randn(batch, n_pos, d_head, generator=generator)
        W_O = torch.randn(d_head, d_model, generator=generator)
        others = torch.randn(batch, n_pos, d_model, generator=generator)
        return z @ W_O + others, z, W_O

    def random_direction() -> Tensor:
        return torch.randn(d_model, generator=generator)

    attn_out, z, W_O = inputs(2, 5)
    # a direction the head cannot write along: orthogonal to every row of W_O
    raw = random_direction()
    basis, _ = torch.linalg.qr(W_O.T)  # (d_model, d_head), orthonormal columns
    blind = raw - basis @ (basis.T @ raw)
    unit = random_direction()
    unit = unit / unit.norm()
    cases = [
        Case("a random unit direction", (*inputs(2, 5), unit)),
        Case(
            "a direction that is not of unit length (norm 7)",
            (*inputs(2, 5), unit * 7),
        ),
        Case("batch of 1, one position", (*inputs(1, 1), random_direction())),
        Case(
            "a direction the head never writes along: nothing changes",
            (attn_out, z, W_O, blind),
        ),
        Case("the direction of W_O's first row", (attn_out, z, W_O, W_O[0].clone())),
    ]
    check_against_reference(
        fn, reference, cases, exercise="projecting a direction out of a head"
    )


# ---------------------------------------------------------------------------
# Interpretive exercise: the control that makes a steering result mean something
# ---------------------------------------------------------------------------

#: The experiments a learner chooses from.
STEERING_CONTROL_OPTIONS = {
    "a": "add the same direction with a larger alpha, and see the score move further",
    "b": "add random directions of the same norm at the same layer, and compare their shifts with its shift",
    "c": "add the direction at another layer, and see the score move there too",
    "d": "repeat the experiment on twice as many reviews",
}
_STEERING_FEEDBACK = {
    "a": "a dose-response curve shows that the shift grows with the edit, not that it needs this "
    "direction: any vector pushed harder might move the score further too.",
    "c": "another layer changes where the vector is added, not what it is; a shift there would "
    "still not tell the direction's meaning from its size.",
    "d": "more reviews narrow the interval around the shift, but both explanations predict the "
    "same shift, so neither gains.",
}


def check_steering_control(fn: Callable[[], str]) -> None:
    """Check ``fn()``, the key of :data:`STEERING_CONTROL_OPTIONS` naming the experiment
    that separates "the direction means sentiment" from "any vector of that size moves the
    score" (:func:`utils.course.checks.interpretive.check_choice`)."""
    check_choice(
        fn,
        STEERING_CONTROL_OPTIONS,
        "b",
        exercise="the steering control",
        explanation=(
            "random directions of the same norm at the same layer are edits of the same size "
            "without the meaning; if the sentiment direction moves the score far more than all "
            "of them, size alone does not explain it. The next cell draws twenty of them."
        ),
        feedback=_STEERING_FEEDBACK,
    )

