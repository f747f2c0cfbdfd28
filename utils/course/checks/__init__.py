"""Automatic checks for the exercises of the chapters.

Each exercise asks the learner to write a function that the course already has in
``utils`` (the *reference*). Its check calls both on the same inputs - random ones and
edge cases - and either prints one line saying that every case matched, or raises
:class:`CheckFailed` naming the case, what was expected and what came back.

The checks of each chapter live in a module of this package named after the chapter
(``utils.course.checks.background`` for chapter 00, ...). They share the machinery below:
:class:`Case` describes one input, :func:`check_against_reference` runs the cases.

A stub that raises :class:`NotImplementedError` (the student notebooks' placeholder) is
not a failure of the check: the error propagates unchanged, so the notebook shows that
the exercise is still to do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "CheckFailed",
    "Case",
    "Hook",
    "check_against_reference",
    "compare_values",
    "describe",
    "run_hook",
]

#: A TransformerLens hook: ``hook(activation, hook=...)`` returns the new activation,
#: or ``None`` after editing it in place.
Hook = Callable[..., "Tensor | None"]


class CheckFailed(AssertionError):
    """The learner's function disagrees with the reference on one case."""


@dataclass(frozen=True)
class Case:
    """One input of a check: a name the learner can read, positional and keyword args."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def run_hook(hook: Hook, activation: Tensor) -> Tensor:
    """Call ``hook`` on ``activation`` as TransformerLens does: a hook that returns
    ``None`` keeps its input (edited in place, or not at all)."""
    out = hook(activation, hook=None)
    return activation if out is None else out


def describe(value: Any) -> str:
    """A short description of a value for failure messages: shapes, not whole tensors."""
    if isinstance(value, Tensor):
        if value.numel() <= 6:
            return f"tensor {[round(float(v), 4) for v in value.flatten()]} of shape {tuple(value.shape)}"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of length {len(value)}"
    return repr(value)


def compare_values(
    expected: Any, got: Any, *, atol: float = 1e-5, rtol: float = 1e-4, where: str = "output"
) -> str | None:
    """``None`` if ``got`` matches ``expected``, else a sentence saying how it differs.

    Tensors must have the same shape and agree to ``atol + rtol * |expected|`` elementwise
    (the message gives the first differing index); numbers likewise; lists, tuples and
    dicts are compared item by item; anything else with ``==``.
    """
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return f"{where}: expected a tensor, got {type(got).__name__} ({describe(got)})"
        if tuple(got.shape) != tuple(expected.shape):
            return (
                f"{where}: expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
            )
        expected_f, got_f = expected.detach().double().cpu(), got.detach().double().cpu()
        close = torch.isclose(got_f, expected_f, atol=atol, rtol=rtol, equal_nan=True)
        if bool(close.all()):
            return None
        index = tuple(int(i) for i in (~close).nonzero()[0])
        return (
            f"{where}: {int((~close).sum())} of {close.numel()} values differ; first at index "
            f"{index}: expected {float(expected_f[index]):.6g}, got {float(got_f[index]):.6g}"
        )
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected else f"{where}: expected {expected!r}, got {describe(got)}"
    if isinstance(expected, (int, float)):
        if isinstance(got, Tensor) and got.numel() == 1:
            got = float(got)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{where}: expected a number, got {describe(got)}"
        if abs(float(got) - float(expected)) <= atol + rtol * abs(float(expected)):
            return None
        return f"{where}: expected {float(expected):.6g}, got {float(got):.6g}"
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return f"{where}: expected {describe(expected)}, got {describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = compare_values(e, g, atol=atol, rtol=rtol, where=f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            keys = sorted(map(str, expected))
            return f"{where}: expected a dict with keys {keys}, got {describe(got)}"
        for key in expected:
            problem = compare_values(
                expected[key], got[key], atol=atol, rtol=rtol, where=f"{where}[{key!r}]"
            )
            if problem:
                return problem
        return None
    return None if got == expected else f"{where}: expected {describe(expected)}, got {describe(got)}"


def check_against_reference(
    learner: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    *,
    exercise: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Run ``learner`` and ``reference`` on every case and compare the results.

    Each call gets its own deep copy of the inputs, so a function that edits its input
    in place cannot change what the other sees.

    Raises:
        CheckFailed: on the first case where the results differ, or where the learner's
            function raises anything but :class:`NotImplementedError`.
        NotImplementedError: the learner's function is still the stub.
        TypeError: ``learner`` is not callable.
    """
    if not callable(learner):
        raise TypeError(f"{exercise}: pass your function itself, got {describe(learner)}")
    if not cases:
        raise ValueError("a check needs at least one case")
    for case in cases:
        expected = reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        try:
            got = learner(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        except NotImplementedError:
            raise
        except Exception as error:  # the learner's bug, reported with the case
            raise CheckFailed(
                f"{exercise}: on case '{case.name}' your function raised "
                f"{type(error).__name__}: {error}"
            ) from error
        problem = compare_values(expected, got, atol=atol, rtol=rtol)
        if problem:
            raise CheckFailed(f"{exercise}: on case '{case.name}', {problem}")
    matched = "the case matches" if len(cases) == 1 else f"all {len(cases)} cases match"
    print(f"\N{CHECK MARK} {exercise}: {matched} the reference")
