"""The checks of the interpretive exercises: a prediction is compared with the run and
reported (never raised when wrong), a judgement is checked against its key (raised when
wrong, without giving the key away); both reject an answer that is not an option and let
the student stub's ``NotImplementedError`` through."""

from __future__ import annotations

import pytest

from utils.course.checks import CheckFailed
from utils.course.checks.background import (
    LATE_HEADS_OPTIONS,
    check_late_heads_prediction,
    late_heads_outcome,
)
from utils.course.checks.interpretive import check_choice, check_prediction

OPTIONS = {"a": "it rises", "b": "it falls"}
FEEDBACK = {"a": "a rise would not tell the two stories apart."}


def stub():
    raise NotImplementedError("Exercise: write this part, then run the check below")


def test_a_prediction_is_reported_right_or_wrong(capsys):
    assert check_prediction(lambda: "b", OPTIONS, "b", exercise="x", explanation="because") is True
    assert "came true" in capsys.readouterr().out
    assert check_prediction(lambda: " A ", OPTIONS, "b", exercise="x", explanation="because") is False
    out = capsys.readouterr().out
    assert "not what happened" in out and "it falls" in out and "because" in out


@pytest.mark.parametrize("answer", ["z", 1, None, ""])
def test_an_answer_that_is_not_an_option_fails(answer):
    with pytest.raises(CheckFailed, match="return one of 'a', 'b'"):
        check_prediction(lambda: answer, OPTIONS, "a", exercise="x", explanation="")
    with pytest.raises(CheckFailed, match="return one of 'a', 'b'"):
        check_choice(lambda: answer, OPTIONS, "b", exercise="x", explanation="", feedback=FEEDBACK)


def test_a_wrong_judgement_fails_with_its_feedback_and_not_the_key():
    with pytest.raises(CheckFailed) as failure:
        check_choice(lambda: "a", OPTIONS, "b", exercise="x", explanation="the key", feedback=FEEDBACK)
    assert "would not tell the two stories apart" in str(failure.value)
    assert "'b'" not in str(failure.value) and "it falls" not in str(failure.value)
    check_choice(lambda: "b", OPTIONS, "b", exercise="x", explanation="the key", feedback=FEEDBACK)


def test_the_chapter_must_give_valid_keys_and_feedback():
    with pytest.raises(ValueError, match="observed outcome"):
        check_prediction(lambda: "a", OPTIONS, "c", exercise="x", explanation="")
    with pytest.raises(ValueError, match="correct key"):
        check_choice(lambda: "a", OPTIONS, "c", exercise="x", explanation="", feedback=FEEDBACK)
    with pytest.raises(ValueError, match="no feedback"):
        check_choice(lambda: "b", OPTIONS, "a", exercise="x", explanation="", feedback=FEEDBACK)


def test_the_stub_gets_through():
    with pytest.raises(NotImplementedError):
        check_prediction(stub, OPTIONS, "a", exercise="x", explanation="")
    with pytest.raises(NotImplementedError):
        check_choice(stub, OPTIONS, "b", exercise="x", explanation="", feedback=FEEDBACK)


@pytest.mark.parametrize("ratio, key", [(0.95, "a"), (0.81, "a"), (0.8, "b"), (0.32, "b"), (0.0, "c"), (-0.53, "c")])
def test_late_heads_outcomes(ratio, key):
    assert late_heads_outcome(ratio) == key and key in LATE_HEADS_OPTIONS


def test_the_late_heads_check_runs_the_experiment(any_model, capsys):
    tokens = any_model.to_tokens("When Mary and John went to the store, John gave a drink to")
    mary, john = any_model.to_single_token(" Mary"), any_model.to_single_token(" John")

    def metric(logits):
        return (logits[0, -1, mary] - logits[0, -1, john]).item()

    results = {key: check_late_heads_prediction(lambda key=key: key, any_model, tokens, metric, n_late=2)
               for key in LATE_HEADS_OPTIONS}
    assert sum(results.values()) == 1  # exactly one outcome is what the run gave
    assert "zeroing the late heads" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_late"):
        check_late_heads_prediction(lambda: "a", any_model, tokens, metric, n_late=0)
    with pytest.raises(NotImplementedError):
        check_late_heads_prediction(stub, any_model, tokens, metric, n_late=2)


def test_the_steering_control_check():
    from utils.course.checks.directional import STEERING_CONTROL_OPTIONS, check_steering_control

    check_steering_control(lambda: "b")
    for wrong in set(STEERING_CONTROL_OPTIONS) - {"b"}:
        with pytest.raises(CheckFailed, match="Try again"):
            check_steering_control(lambda wrong=wrong: wrong)
    with pytest.raises(NotImplementedError):
        check_steering_control(stub)


def test_the_name_mover_falsifier_check():
    from utils.course.checks.in_context_identification import FALSIFIER_OPTIONS, check_name_mover_falsifier

    check_name_mover_falsifier(lambda: "a")
    for wrong in set(FALSIFIER_OPTIONS) - {"a"}:
        with pytest.raises(CheckFailed, match="Try again"):
            check_name_mover_falsifier(lambda wrong=wrong: wrong)
    with pytest.raises(NotImplementedError):
        check_name_mover_falsifier(stub)
