"""Checks for the interpretive exercises: a multiple-choice prediction or judgement.

Two kinds, which differ in what the right answer depends on:

- :func:`check_prediction` - *predict, then run*. The learner predicts an outcome before
  the cell that measures it; the right option is read from the run on the loaded model,
  so it may differ between models. The check says whether the prediction came true and
  why, and never fails on a wrong prediction (on a model the course does not know, the
  instructor's own prediction may be wrong, and the chapter must still run to the end).
- :func:`check_choice` - *what would falsify this claim?*, *which control?*. The right
  option follows from the logic of the experiment, not from the model, so the check
  fails on a wrong answer, naming it and explaining the right one.

Both fail on an answer that is not one of the options, and let a stub's
``NotImplementedError`` through unchanged (the student notebooks' placeholder).
"""

from __future__ import annotations

from typing import Callable, Mapping

from utils.course.checks import CheckFailed, describe

__all__ = ["check_prediction", "check_choice"]


def _answer(fn: Callable[[], str], options: Mapping[str, str], exercise: str) -> str:
    if not options:
        raise ValueError(f"{exercise}: no options given")
    answer = fn()
    if isinstance(answer, str):
        answer = answer.strip().lower()
    if answer not in options:
        listed = ", ".join(f"{key!r}" for key in options)
        raise CheckFailed(f"{exercise}: return one of {listed}, got {describe(answer)}")
    return answer


def check_prediction(
    fn: Callable[[], str],
    options: Mapping[str, str],
    observed: str,
    *,
    exercise: str,
    explanation: str,
) -> bool:
    """Compare a predicted outcome, ``fn()``, with the one the run observed.

    Args:
        fn: returns the key of the predicted option (case and spaces are ignored).
        options: key -> the outcome it stands for.
        observed: the key of the outcome the run measured on the loaded model.
        exercise: the exercise's name, for messages.
        explanation: why the run came out as it did; printed in either case.

    Returns:
        Whether the prediction came true. A wrong prediction is reported, not raised.

    Raises:
        CheckFailed: the answer is not one of the options.
        ValueError: ``observed`` is not one of the options (a bug in the chapter).
    """
    if observed not in options:
        raise ValueError(f"{exercise}: the observed outcome {observed!r} is not one of the options")
    answer = _answer(fn, options, exercise)
    right = answer == observed
    verdict = "✓ your prediction came true" if right else "✗ not what happened"
    print(f"{exercise}: you predicted {answer!r} ({options[answer]}); the run gives "
          f"{observed!r} ({options[observed]}). {verdict}.")
    print(f"  {explanation}")
    return right


def check_choice(
    fn: Callable[[], str],
    options: Mapping[str, str],
    correct: str,
    *,
    exercise: str,
    explanation: str,
    feedback: Mapping[str, str],
) -> None:
    """Check a judgement whose right answer follows from the experiment's logic.

    Args:
        fn: returns the key of the chosen option (case and spaces are ignored).
        options: key -> the option's text.
        correct: the key of the right option.
        exercise: the exercise's name, for messages.
        explanation: why that option is right; printed on success.
        feedback: for every wrong option, why it falls short; a wrong answer's failure
            message gives its feedback and not the right key, so the learner can try again.

    Raises:
        CheckFailed: the answer is not an option, or not the right one.
        ValueError: ``correct`` is not one of the options (a bug in the chapter).
    """
    if correct not in options:
        raise ValueError(f"{exercise}: the correct key {correct!r} is not one of the options")
    missing = [key for key in options if key != correct and key not in feedback]
    if missing:
        raise ValueError(f"{exercise}: no feedback for the wrong option(s) {missing}")
    answer = _answer(fn, options, exercise)
    if answer != correct:
        raise CheckFailed(f"{exercise}: not {answer!r} ({options[answer]}): {feedback[answer]} Try again.")
    print(f"✓ {exercise}: {correct!r} - {explanation}")
