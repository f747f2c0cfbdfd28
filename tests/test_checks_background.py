"""The exercise checks of chapter 00: each accepts a correct solution (the course's
reference and a learner-style one), rejects realistic bugs with ``CheckFailed`` and lets
the student stub's ``NotImplementedError`` through."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
import pytest
import torch

from utils.course.checks import CheckFailed
from utils.course.checks.background import (
    check_head_dla,
    check_induction_score,
    check_previous_token_score,
    check_zero_head_hook,
    one_hot_pattern,
    random_attention_pattern,
)
from utils.data.ioi import ioi_dataset
from utils.attribution.dla import (
    head_direct_logit_attribution,
    logit_difference_direction,
)
from utils.scores.patterns import induction_score, previous_token_score


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: write this part, then run the check below")


def test_shared_pattern_builders():
    generator = torch.Generator().manual_seed(0)
    pattern = random_attention_pattern(generator, 2, 3, 5)
    assert pattern.shape == (2, 3, 5, 5)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 3, 5))
    assert bool((pattern.triu(diagonal=1) == 0).all())
    hot = one_hot_pattern(1, 2, 4, lambda h, i: i - 1 - h)
    assert hot[0, 0, 2, 1] == 1 and hot[0, 1, 3, 1] == 1 and hot[0, 1, 1, 0] == 1


# ---------------------------------------------------------------------------
# previous-token score
# ---------------------------------------------------------------------------


def learner_previous_token_score(pattern):
    n_pos = pattern.shape[-1]
    queries = torch.arange(1, n_pos)
    return pattern[:, :, queries, queries - 1].mean(dim=(0, 2))


def test_previous_token_score_check_accepts_correct_solutions(capsys):
    check_previous_token_score(previous_token_score)
    check_previous_token_score(learner_previous_token_score)
    assert "previous-token score" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda p: p.diagonal(0, -2, -1).mean(dim=(0, 2)), id="attends-to-self"),
        pytest.param(lambda p: p.diagonal(-1, -2, -1).mean(dim=2), id="no-batch-mean"),
        pytest.param(
            lambda p: p.diagonal(-1, -2, -1).sum(dim=2).mean(0) / p.shape[-1],
            id="counts-query-0",
        ),
    ],
)
def test_previous_token_score_check_rejects_bugs(wrong):
    with pytest.raises(CheckFailed):
        check_previous_token_score(wrong)


def test_previous_token_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_previous_token_score(stub)


# ---------------------------------------------------------------------------
# induction score
# ---------------------------------------------------------------------------


def learner_induction_score(pattern, period):
    queries = torch.arange(period, pattern.shape[-1])
    return pattern[:, :, queries, queries - period + 1].mean(dim=(0, 2))


def test_induction_score_check_accepts_correct_solutions():
    check_induction_score(induction_score)
    check_induction_score(learner_induction_score)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(
            lambda p, period: p.diagonal(-period, -2, -1).mean(dim=(0, 2)),
            id="duplicate-token-offset",
        ),
        pytest.param(
            lambda p, period: p.diagonal(-(period - 1), -2, -1).mean(dim=(0, 2)),
            id="counts-query-period-minus-1",
        ),
        pytest.param(
            lambda p, period: p.diagonal(-(period - 1), -2, -1)[..., 1:].mean(dim=(1, 2)),
            id="mean-over-heads",
        ),
    ],
)
def test_induction_score_check_rejects_bugs(wrong):
    with pytest.raises(CheckFailed):
        check_induction_score(wrong)


def test_induction_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_induction_score(stub)


# ---------------------------------------------------------------------------
# zero-ablation hook
# ---------------------------------------------------------------------------


def learner_zero_head_hook(head):
    def hook(z, hook):
        z[:, :, head, :] = 0.0
        return z

    return hook


def learner_zero_head_hook_out_of_place(head):
    def hook(z, hook):
        keep = torch.ones(z.shape[2], 1)
        keep[head] = 0.0
        return z * keep

    return hook


def learner_zero_head_hook_in_place_returns_none(head):
    def hook(z, hook):
        z[..., head, :] = 0.0

    return hook


def reference_zero_head_hook(model):
    """A plain hand-written zero-ablation hook factory."""

    def factory(head):
        def hook(z, hook):
            z[:, :, head] = 0.0
            return z

        return hook

    return factory


def wrong_zero_position(head):
    def hook(z, hook):
        z[:, head] = 0.0
        return z

    return hook


def wrong_keeps_only_the_head(head):
    def hook(z, hook):
        kept = torch.zeros_like(z)
        kept[:, :, head] = z[:, :, head]
        return kept

    return hook


def wrong_edits_a_copy(head):
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0  # forgets to return the copy

    return hook


def wrong_off_by_one(head):
    def hook(z, hook):
        z[:, :, head - 1] = 0.0
        return z

    return hook


@pytest.fixture(scope="module")
def prompt_tokens(any_model):
    return any_model.to_tokens("When Mary and John went to the store, John gave a drink to")


@pytest.mark.parametrize(
    "solution",
    [
        learner_zero_head_hook,
        learner_zero_head_hook_out_of_place,
        learner_zero_head_hook_in_place_returns_none,
    ],
)
def test_zero_head_hook_check_accepts_correct_solutions(any_model, prompt_tokens, solution):
    check_zero_head_hook(solution, any_model, prompt_tokens)


def test_zero_head_hook_check_accepts_the_reference(any_model, prompt_tokens):
    check_zero_head_hook(reference_zero_head_hook(any_model), any_model, prompt_tokens)


@pytest.mark.parametrize(
    "wrong",
    [wrong_zero_position, wrong_keeps_only_the_head, wrong_edits_a_copy, wrong_off_by_one],
)
def test_zero_head_hook_check_rejects_bugs(embedded_model, wrong):
    tokens = embedded_model.to_tokens("When Mary and John went to the store, John gave")
    with pytest.raises(CheckFailed):
        check_zero_head_hook(wrong, embedded_model, tokens)


def test_zero_head_hook_check_lets_the_stub_through(embedded_model):
    tokens = embedded_model.to_tokens("When Mary and John went to the store")
    with pytest.raises(NotImplementedError):
        check_zero_head_hook(stub, embedded_model, tokens)


# ---------------------------------------------------------------------------
# one head's direct logit attribution
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ioi_inputs(any_model):
    ioi = ioi_dataset(any_model, 4, seed=0)
    with torch.no_grad():
        _, cache = any_model.run_with_cache(ioi.tokens)
    directions = logit_difference_direction(any_model, ioi.answer_ids, ioi.wrong_ids)
    return any_model, cache, directions


def learner_head_dla(model, cache, directions, layer, head, pos=-1):
    z = cache[get_act_name("z", layer)][:, pos, head]  # (batch, d_head)
    written = z @ model.W_O[layer, head]  # (batch, d_model)
    scale = cache[get_act_name("scale")][:, pos, 0]  # (batch,)
    return ((written * directions).sum(-1) / scale).mean()


def reference_head_dla(model, cache, directions, layer, head, pos=-1):
    n_pos = cache[get_act_name("z", 0)].shape[1]
    positions = torch.full((directions.shape[0],), pos % n_pos)
    return head_direct_logit_attribution(model, cache, directions, positions)[layer, head]


def wrong_no_scale(model, cache, directions, layer, head, pos=-1):
    z = cache[get_act_name("z", layer)][:, pos, head]
    return ((z @ model.W_O[layer, head]) * directions).sum(-1).mean()


def wrong_sum_over_batch(model, cache, directions, layer, head, pos=-1):
    z = cache[get_act_name("z", layer)][:, pos, head]
    scale = cache[get_act_name("scale")][:, pos, 0]
    return (((z @ model.W_O[layer, head]) * directions).sum(-1) / scale).sum()


def wrong_last_position_always(model, cache, directions, layer, head, pos=-1):
    return learner_head_dla(model, cache, directions, layer, head, -1)


def wrong_scale_of_first_prompt(model, cache, directions, layer, head, pos=-1):
    z = cache[get_act_name("z", layer)][:, pos, head]
    scale = cache[get_act_name("scale")][0, pos, 0]
    return (((z @ model.W_O[layer, head]) * directions).sum(-1) / scale).mean()


@pytest.mark.parametrize("solution", [learner_head_dla, reference_head_dla])
def test_head_dla_check_accepts_correct_solutions(ioi_inputs, solution):
    check_head_dla(solution, *ioi_inputs)


@pytest.mark.parametrize(
    "wrong",
    [
        wrong_no_scale,
        wrong_sum_over_batch,
        wrong_last_position_always,
        wrong_scale_of_first_prompt,
    ],
)
def test_head_dla_check_rejects_bugs(ioi_inputs, wrong):
    with pytest.raises(CheckFailed):
        check_head_dla(wrong, *ioi_inputs)


def test_head_dla_check_lets_the_stub_through(ioi_inputs):
    with pytest.raises(NotImplementedError):
        check_head_dla(stub, *ioi_inputs)
