"""The exercise checks of chapter 12 (utils.course.checks.directional): the reference passes,
realistic wrong solutions fail, a stub's NotImplementedError propagates."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from utils.course.checks import CheckFailed
from utils.course.checks.directional import (
    check_add_direction_hook,
    check_mean_difference,
    check_project_out_of_head,
    check_projection_accuracy,
)
from utils.analysis.directions import mean_difference, projection_accuracy


def stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("Exercise: write this part, then run the check below")


# --- the mean difference ----------------------------------------------------------


def negative_minus_positive(activations: Tensor, labels: Tensor) -> Tensor:
    return activations[labels == 0].mean(0) - activations[labels == 1].mean(0)


def divided_by_the_whole_batch(activations: Tensor, labels: Tensor) -> Tensor:
    weights = labels.float().reshape(-1, *[1] * (activations.ndim - 1))
    n = activations.shape[0]
    return (activations * weights).sum(0) / n - (activations * (1 - weights)).sum(0) / n


def test_mean_difference_reference_passes(capsys):
    check_mean_difference(mean_difference)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [negative_minus_positive, divided_by_the_whole_batch])
def test_mean_difference_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="mean difference"):
        check_mean_difference(wrong)


def test_mean_difference_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_mean_difference(stub)


# --- projection accuracy ------------------------------------------------------------


def _projections(train, train_labels, test, direction):
    train_proj, test_proj = train @ direction, test @ direction
    positive = train_proj[train_labels == 1].mean()
    negative = train_proj[train_labels == 0].mean()
    return test_proj, positive, negative


def plain_accuracy(train, train_labels, test, test_labels, direction):
    test_proj, positive, negative = _projections(train, train_labels, test, direction)
    side = 1.0 if positive >= negative else -1.0
    predicted = side * test_proj > side * (positive + negative) / 2
    return (predicted == test_labels.bool()).float().mean()  # not balanced


def not_oriented(train, train_labels, test, test_labels, direction):
    test_proj, positive, negative = _projections(train, train_labels, test, direction)
    predicted = test_proj > (positive + negative) / 2  # assumes class 1 lies above
    pos = test_labels == 1
    return (predicted[pos].float().mean() + (~predicted[~pos]).float().mean()) / 2


def threshold_from_test(train, train_labels, test, test_labels, direction):
    return projection_accuracy(test, test_labels, test, test_labels, direction)


def test_projection_accuracy_reference_passes(capsys):
    check_projection_accuracy(projection_accuracy)
    assert "all 5 cases match" in capsys.readouterr().out


def test_projection_accuracy_accepts_a_float():
    check_projection_accuracy(lambda *args: float(projection_accuracy(*args)))


@pytest.mark.parametrize("wrong", [plain_accuracy, not_oriented, threshold_from_test])
def test_projection_accuracy_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="projection accuracy"):
        check_projection_accuracy(wrong)


def test_projection_accuracy_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_projection_accuracy(stub)


# --- the steering hook ----------------------------------------------------------------


def right_in_place(direction: Tensor, alpha: float, start_pos: int = 1) -> Callable:
    def hook(resid, hook):  # edits in place, returns nothing: also fine for TL
        resid[:, start_pos:] += alpha * direction

    return hook


def every_position(direction: Tensor, alpha: float, start_pos: int = 1) -> Callable:
    def hook(resid, hook):
        return resid + alpha * direction  # BOS too

    return hook


def unit_direction(direction: Tensor, alpha: float, start_pos: int = 1) -> Callable:
    def hook(resid, hook):
        resid = resid.clone()
        resid[:, start_pos:] += alpha * direction / direction.norm()
        return resid

    return hook


def only_at_start(direction: Tensor, alpha: float, start_pos: int = 1) -> Callable:
    def hook(resid, hook):
        resid = resid.clone()
        resid[:, start_pos] += alpha * direction
        return resid

    return hook


def test_add_direction_right_solution_passes(capsys):
    check_add_direction_hook(right_in_place)
    assert "all 6 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [every_position, unit_direction, only_at_start])
def test_add_direction_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="steering hook"):
        check_add_direction_hook(wrong)


def test_add_direction_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_add_direction_hook(stub)


# --- projecting a direction out of a head ---------------------------------------------


def right_projection(attn_out, z, W_O, direction):
    unit = direction / direction.norm()
    return attn_out - ((z @ W_O) @ unit)[..., None] * unit


def whole_layer(attn_out, z, W_O, direction):
    unit = direction / direction.norm()
    # removes what the other heads write along the direction too
    return attn_out - (attn_out @ unit)[..., None] * unit


def not_normalised(attn_out, z, W_O, direction):
    return attn_out - ((z @ W_O) @ direction)[..., None] * direction


def test_project_out_right_solution_passes(capsys):
    check_project_out_of_head(right_projection)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [whole_layer, not_normalised])
def test_project_out_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="projecting a direction out"):
        check_project_out_of_head(wrong)


def test_project_out_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_project_out_of_head(stub)
