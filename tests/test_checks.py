"""The shared machinery of the exercise checks (utils.course.checks)."""

import pytest
import torch

from utils.course.checks import Case, CheckFailed, check_against_reference, compare_values


def reference_mean(values: torch.Tensor) -> torch.Tensor:
    return values.mean(dim=0)


CASES = [
    Case("random 3x4", (torch.arange(12.0).reshape(3, 4),)),
    Case("one row", (torch.ones(1, 4),)),
]


def test_correct_function_passes_and_says_so(capsys):
    check_against_reference(lambda v: v.sum(0) / v.shape[0], reference_mean, CASES, exercise="mean")
    assert "mean: all 2 cases match" in capsys.readouterr().out


def test_wrong_values_name_the_case_and_the_first_difference():
    with pytest.raises(CheckFailed, match=r"case 'random 3x4'.*index \(0,\): expected 4, got 12"):
        check_against_reference(lambda v: v.sum(0), reference_mean, CASES, exercise="mean")


def test_wrong_shape_and_wrong_type_are_explained():
    with pytest.raises(CheckFailed, match=r"expected shape \(4,\), got shape \(3,\)"):
        check_against_reference(lambda v: v.mean(1), reference_mean, CASES, exercise="mean")
    with pytest.raises(CheckFailed, match="expected a tensor, got list"):
        check_against_reference(lambda v: v.mean(0).tolist(), reference_mean, CASES, exercise="m")


def test_learner_exceptions_become_failures_but_stubs_propagate():
    def crashes(values):
        return values[10]

    with pytest.raises(CheckFailed, match="raised IndexError"):
        check_against_reference(crashes, reference_mean, CASES, exercise="mean")

    def stub(values):
        raise NotImplementedError("Exercise: write this part")

    with pytest.raises(NotImplementedError):
        check_against_reference(stub, reference_mean, CASES, exercise="mean")
    with pytest.raises(TypeError, match="pass your function"):
        check_against_reference(reference_mean(CASES[0].args[0]), reference_mean, CASES, exercise="m")
    with pytest.raises(ValueError, match="at least one case"):
        check_against_reference(reference_mean, reference_mean, [], exercise="mean")


def test_inputs_are_copied_so_in_place_edits_cannot_fool_the_check():
    def edits_input(values):
        values.zero_()
        return values.mean(0)

    with pytest.raises(CheckFailed):
        check_against_reference(edits_input, reference_mean, CASES, exercise="mean")
    # The reference still saw the original input for the next case.
    assert torch.equal(CASES[0].args[0], torch.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize(
    "expected, got, problem",
    [
        (1.0, 1.0 + 1e-7, None),
        (1.0, 1.1, "expected 1, got 1.1"),
        (1.0, torch.tensor(1.0), None),
        (2, "2", "expected a number"),
        ([(0, 1), (2, 3)], [(0, 1), (2, 4)], "output[1][1]: expected 3, got 4"),
        ({"a": 1.0}, {"b": 1.0}, "keys"),
        ({"a": torch.zeros(2)}, {"a": torch.ones(2)}, "output['a']"),
        ("subject", "relation", "expected 'subject'"),
        (True, False, "expected True"),
    ],
)
def test_compare_values(expected, got, problem):
    result = compare_values(expected, got)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result
