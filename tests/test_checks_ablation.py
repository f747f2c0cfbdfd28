"""The exercise checks of chapter 11 (utils.course.checks.ablation): the reference passes,
realistic wrong solutions fail, a stub's NotImplementedError propagates."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from utils.interventions.effects import head_effects
from utils.interventions.ablation import derangement
from utils.course.checks import CheckFailed
from utils.course.checks.ablation import (
    check_derangement,
    check_direct_effect,
    check_mean_ablation_hook,
)
from transformer_lens.utilities import get_act_name


def stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("Exercise: write this part, then run the check below")


# --- the mean-ablation hook -----------------------------------------------------


def reference_hook(reference_z: Tensor, heads: list[int]) -> Callable:
    """A plain hand-written hook, another route than the check's."""
    mean = reference_z.mean(dim=0)

    def hook(z, hook):
        z[:, :, heads] = mean[:, heads]
        return z

    return hook


def mean_over_positions_too(reference_z: Tensor, heads: list[int]) -> Callable:
    mean = reference_z.mean(dim=(0, 1))  # (n_heads, d_head): loses the positions

    def hook(z, hook):
        z[:, :, heads] = mean[heads]
        return z

    return hook


def mean_of_the_prompts_themselves(reference_z: Tensor, heads: list[int]) -> Callable:
    def hook(z, hook):
        z[:, :, heads] = z.mean(dim=0, keepdim=True)[:, :, heads]  # not the reference
        return z

    return hook


def every_head(reference_z: Tensor, heads: list[int]) -> Callable:
    mean = reference_z.mean(dim=0)

    def hook(z, hook):
        z[:] = mean
        return z

    return hook


def test_mean_hook_reference_passes(capsys):
    check_mean_ablation_hook(reference_hook)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong", [mean_over_positions_too, mean_of_the_prompts_themselves, every_head]
)
def test_mean_hook_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="mean-ablation hook"):
        check_mean_ablation_hook(wrong)


def test_mean_hook_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_mean_ablation_hook(stub)


# --- the derangement --------------------------------------------------------------


def by_rejection(n: int, seed: int = 0) -> Tensor:
    """Another correct answer: draw permutations until one moves every index."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        permutation = torch.randperm(n, generator=generator)
        if (permutation != torch.arange(n)).all():
            return permutation


def plain_permutation(n: int, seed: int = 0) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def shift_by_one(n: int, seed: int = 0) -> Tensor:
    return torch.arange(n).roll(1)  # a derangement, but always the same one


def unseeded(n: int, seed: int = 0) -> Tensor:
    while True:
        permutation = torch.randperm(n)  # the global generator: not reproducible
        if (permutation != torch.arange(n)).all():
            return permutation


@pytest.mark.parametrize("right", [derangement, by_rejection])
def test_derangement_right_solutions_pass(right, capsys):
    check_derangement(right)
    assert "all 4 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, problem",
    [
        (plain_permutation, "moves every index"),
        (shift_by_one, "different seeds"),
        (unseeded, "same seed"),
        (lambda n, seed=0: by_rejection(n, seed).tolist(), "integer"),
    ],
    ids=["plain permutation", "always the same", "ignores the seed", "a list"],
)
def test_derangement_wrong_solutions_fail(wrong, problem):
    with pytest.raises(CheckFailed, match=problem):
        check_derangement(wrong)


def test_derangement_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_derangement(stub)


# --- the direct effect (needs a model) ---------------------------------------------


def direct_reference(model, tokens, layer, head, metric, values):
    return head_effects(model, tokens, [(layer, head)], metric, values).direct


def total_effect(model, tokens, layer, head, metric, values):
    return head_effects(model, tokens, [(layer, head)], metric, values).total


def _delta(model, tokens, layer, head, values):
    name = get_act_name("z", layer)
    logits, cache = model.run_with_cache(tokens, names_filter=[name])
    clean_z = cache[name][:, :, head]
    new_z = values[layer].expand_as(cache[name])[:, :, head]
    return logits, (new_z - clean_z) @ model.W_O[layer, head]


def reversed_change(model, tokens, layer, head, metric, values):
    logits, delta = _delta(model, tokens, layer, head, values)
    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    hooks = [(final, lambda resid, hook: resid - delta)]  # clean minus ablated
    return float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks)) - metric(logits))


def added_at_the_heads_layer(model, tokens, layer, head, metric, values):
    logits, delta = _delta(model, tokens, layer, head, values)
    hooks = [(get_act_name("resid_post", layer), lambda resid, hook: resid + delta)]
    return float(metric(model.run_with_hooks(tokens, fwd_hooks=hooks)) - metric(logits))


def test_direct_effect_reference_passes(any_model, capsys):
    check_direct_effect(direct_reference, any_model)
    assert "all 2 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong", [total_effect, reversed_change, added_at_the_heads_layer]
)
def test_direct_effect_wrong_solutions_fail(any_model, wrong):
    with pytest.raises(CheckFailed, match="direct effect"):
        check_direct_effect(wrong, any_model)


def test_direct_effect_stub_propagates(gpt2_random):
    with pytest.raises(NotImplementedError):
        check_direct_effect(stub, gpt2_random)


def test_falsifier_accepts_the_forbidden_result(capsys):
    from utils.course.checks.ablation import check_falsifier

    check_falsifier(lambda: "a")
    check_falsifier(lambda: " A ")
    assert "falsifier: 'a'" in capsys.readouterr().out


@pytest.mark.parametrize("answer", ["b", "c", "d"])
def test_falsifier_rejects_results_the_claim_allows(answer):
    from utils.course.checks.ablation import check_falsifier

    with pytest.raises(CheckFailed, match="falsifier"):
        check_falsifier(lambda: answer)


def test_falsifier_rejects_non_answers():
    from utils.course.checks.ablation import check_falsifier

    for answer in ("e", 1, None):
        with pytest.raises(CheckFailed, match="one of"):
            check_falsifier(lambda answer=answer: answer)


def test_falsification_verdict():
    from utils.course.checks.ablation import falsification_verdict

    assert "not falsified" in falsification_verdict(0.5, [0.1, 0.2, 0.6])
    assert "is falsified" in falsification_verdict(0.5, [0.6, 0.7, 0.1])
    with pytest.raises(ValueError):
        falsification_verdict(0.5, [])


# --- the interpretive exercise: the IOI name movers on acronyms -------------------


def _comparison(drops: list[float], null_drops: list[float]):
    """An AblationComparison whose drops and null drops are the given ones."""
    from utils.interventions.ablation import AblationComparison

    drops_t = torch.tensor(drops)
    clean = torch.full_like(drops_t, 5.0)
    null = torch.stack([torch.full_like(drops_t, 5.0 - d) for d in null_drops])
    return AblationComparison(
        clean=clean, chosen=clean - drops_t, null=null,
        chosen_heads=((1, 0),), null_sets=tuple(((1, k),) for k in range(len(null_drops))),
    )


@pytest.mark.parametrize(
    "mean_drop, ci_low, percentile, key",
    [(2.0, 1.5, 1.0, "a"), (2.0, 1.5, 0.95, "a"), (2.0, 1.5, 0.9, "b"),
     (0.3, -0.1, 1.0, "b"), (0.0, -0.5, 0.0, "c"), (-0.4, -0.9, 0.0, "c")],
)
def test_mover_transfer_outcome(mean_drop, ci_low, percentile, key):
    from utils.course.checks.ablation import mover_transfer_outcome

    assert mover_transfer_outcome(mean_drop, ci_low, percentile) == key


def test_mover_prediction_reports_and_never_raises_on_a_wrong_guess(capsys):
    from utils.course.checks.ablation import check_mover_prediction

    strong = _comparison([2.0, 2.2, 1.8, 2.1] * 8, [0.1 * k for k in range(20)])
    assert check_mover_prediction(lambda: "a", strong) is True
    assert "came true" in capsys.readouterr().out
    assert check_mover_prediction(lambda: " C ", strong) is False
    assert "not what happened" in capsys.readouterr().out
    weak = _comparison([0.5, -0.3, 0.4, 0.1] * 8, [0.5] * 10 + [0.0] * 10)
    assert check_mover_prediction(lambda: "b", weak) is True
    none = _comparison([-0.5, 0.2, -0.3, 0.0] * 8, [0.0] * 20)
    assert check_mover_prediction(lambda: "c", none) is True


def test_mover_prediction_rejects_non_answers_and_lets_the_stub_through():
    from utils.course.checks.ablation import check_mover_prediction

    result = _comparison([1.0] * 32, [0.0] * 20)
    with pytest.raises(CheckFailed, match="name movers on acronyms"):
        check_mover_prediction(lambda: "d", result)
    with pytest.raises(NotImplementedError):
        check_mover_prediction(stub, result)
