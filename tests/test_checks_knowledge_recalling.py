"""The exercise checks of chapter 01: each accepts a correct solution (the course's
reference and a learner-style one), rejects realistic bugs with ``CheckFailed`` and lets
the student stub's ``NotImplementedError`` through."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
import math

import pytest
import torch

from utils.course.checks import CheckFailed
from utils.course.checks.knowledge_recalling import (
    check_classify_by_source,
    check_head_attribution_by_key,
    check_knockout_hook,
    check_letter_prediction,
    check_negative_attention_score,
)
from utils.attribution.circuits import expand_kv_heads
from utils.analysis.classify import classify_by_source
from utils.attribution.dla import head_attribution_by_key
from utils.data.tokens import to_tokens
from utils.scores.retrieval import negative_attention_score


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: write this part, then run the check below")


# ---------------------------------------------------------------------------
# negative attention score
# ---------------------------------------------------------------------------


def make_nas(*, eps=1e-9, start="max", flip=False, reduce_queries="sum", batch="mean"):
    """A learner-style NAS; the keyword arguments switch on one bug each."""

    def nas(pattern, yes_pos, no_pos):
        batch_size, _, n_queries, _ = pattern.shape
        rows = torch.arange(batch_size)
        to_yes = pattern[rows, :, :, yes_pos]  # (batch, head, query)
        to_no = pattern[rows, :, :, no_pos]
        ratio = (to_yes + eps) / (to_no + eps) if flip else (to_no + eps) / (to_yes + eps)
        terms = (to_yes + to_no) * torch.log(ratio)
        pick = torch.maximum if start == "max" else torch.minimum
        first = pick(yes_pos, no_pos)
        counted = (torch.arange(n_queries)[None, :] >= first[:, None]).float()[:, None, :]
        per_item = (terms * counted).sum(-1)
        if reduce_queries == "mean":
            per_item = per_item / counted.sum(-1)
        return per_item.mean(0) if batch == "mean" else per_item.sum(0)

    return nas


def test_negative_attention_score_check_accepts_correct_solutions(capsys):
    check_negative_attention_score(negative_attention_score)
    check_negative_attention_score(make_nas())
    assert "negative attention score" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(make_nas(eps=0.0), id="no-epsilon"),
        pytest.param(make_nas(start="min"), id="starts-at-the-earlier-option"),
        pytest.param(make_nas(flip=True), id="yes-over-no"),
        pytest.param(make_nas(reduce_queries="mean"), id="mean-over-queries"),
        pytest.param(make_nas(batch="sum"), id="sum-over-batch"),
    ],
)
def test_negative_attention_score_check_rejects_bugs(wrong):
    with pytest.raises(CheckFailed):
        check_negative_attention_score(wrong)


def test_negative_attention_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_negative_attention_score(stub)


# ---------------------------------------------------------------------------
# classify a head by source
# ---------------------------------------------------------------------------


def make_classify(*, clamp=True, bos_rule=">", bos_in_share=False, guard=True):
    """A learner-style classifier in plain Python; the keyword arguments add bugs."""

    def classify(subject, relation, bos, threshold=0.7):
        s, r = (max(subject, 0.0), max(relation, 0.0)) if clamp else (subject, relation)
        b = max(bos, 0.0)
        if (b > s + r) if bos_rule == ">" else (b >= s + r):
            return "bos"
        total = s + r + b if bos_in_share else s + r
        share = 0.5 if guard and total == 0 else s / total
        if share >= threshold:
            return "subject"
        if share <= 1 - threshold:
            return "relation"
        return "mixed"

    return classify


def test_classify_by_source_check_accepts_correct_solutions():
    check_classify_by_source(classify_by_source)
    check_classify_by_source(make_classify())


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(make_classify(clamp=False), id="negative-parts-count"),
        pytest.param(make_classify(bos_rule=">="), id="bos-on-a-tie"),
        pytest.param(make_classify(bos_in_share=True), id="bos-in-the-share"),
        pytest.param(make_classify(guard=False), id="divides-by-zero"),
    ],
)
def test_classify_by_source_check_rejects_bugs(wrong):
    with pytest.raises(CheckFailed):
        check_classify_by_source(wrong)


def test_classify_by_source_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_classify_by_source(stub)


# ---------------------------------------------------------------------------
# attribution split by key position
# ---------------------------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    "The capital of Spain is",
    "The capital of Italy is",
    "The Eiffel Tower is located in the city of",
]


@pytest.fixture(scope="module")
def prompts(any_model):
    tokens, lengths = to_tokens(any_model, PROMPTS)  # right-padded, like the chapter's facts
    answers = torch.tensor([100, 200, 300, 400])
    return any_model, tokens, answers, lengths - 1


def make_attribution(*, kv="expand", scale=True, query=-1, weight=True):
    """A learner-style split of one head's DLA by key; the keyword arguments add bugs."""

    def attribution(model, cache, directions, layer, head):
        values = cache[get_act_name("v", layer)]  # (batch, key, kv_head, d_head)
        if kv == "expand":
            values = expand_kv_heads(values, model.cfg.n_heads, head_dim=2)[:, :, head]
        elif kv == "modulo":
            values = values[:, :, head % values.shape[2]]
        else:
            values = values[:, :, head]
        along = (values @ model.W_O[layer, head]) @ directions.T  # (batch, key, batch)
        along = along.diagonal(dim1=0, dim2=2).T  # each prompt on its own direction
        if weight:
            along = along * cache[get_act_name("pattern", layer)][:, head, query]
        if scale:
            along = along / cache[get_act_name("scale")][:, -1]
        return along

    return attribution


def reference_attribution(model, cache, directions, layer, head):
    return head_attribution_by_key(model, cache, directions)[:, layer, head]


@pytest.mark.parametrize("solution", [make_attribution(), reference_attribution])
def test_attribution_by_key_check_accepts_correct_solutions(prompts, solution):
    check_head_attribution_by_key(solution, *prompts)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(make_attribution(scale=False), id="no-final-norm-scale"),
        pytest.param(make_attribution(query=0), id="first-query-row"),
        pytest.param(make_attribution(weight=False), id="no-attention-weights"),
    ],
)
def test_attribution_by_key_check_rejects_bugs(prompts, wrong):
    with pytest.raises(CheckFailed):
        check_head_attribution_by_key(wrong, *prompts)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(make_attribution(kv="modulo"), id="kv-head-by-modulo"),
        pytest.param(make_attribution(kv="same"), id="ignores-grouped-query-attention"),
    ],
)
def test_attribution_by_key_check_catches_grouped_query_bugs(embedded_model, wrong):
    tokens, lengths = to_tokens(embedded_model, PROMPTS)
    assert embedded_model.cfg.n_key_value_heads < embedded_model.cfg.n_heads
    with pytest.raises(CheckFailed):
        check_head_attribution_by_key(wrong, embedded_model, tokens, torch.arange(4) + 100, lengths - 1)


def test_attribution_by_key_check_lets_the_stub_through(prompts):
    with pytest.raises(NotImplementedError):
        check_head_attribution_by_key(stub, *prompts)


# ---------------------------------------------------------------------------
# attention-knockout hook
# ---------------------------------------------------------------------------


def make_knockout(*, value=-math.inf, where="row"):
    """A learner-style knockout hook factory; the keyword arguments add bugs."""

    def factory(key_positions, query_pos=-1):
        def hook(scores, hook):
            if where == "row":
                scores[:, :, query_pos, key_positions] = value
            elif where == "column":
                scores[:, :, :, key_positions] = value
            else:
                scores[:, :, key_positions, query_pos] = value
            return scores

        return hook

    return factory


@pytest.fixture(scope="module")
def fact(any_model):
    tokens = any_model.to_tokens("The Eiffel Tower is located in the city of")
    return any_model, tokens, [1, 2, 3]


def test_knockout_hook_check_accepts_a_correct_solution(fact):
    check_knockout_hook(make_knockout(), *fact)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(make_knockout(value=0.0), id="zero-instead-of-minus-infinity"),
        pytest.param(make_knockout(where="column"), id="blocks-every-query"),
        pytest.param(make_knockout(where="swapped"), id="query-and-key-swapped"),
    ],
)
def test_knockout_hook_check_rejects_bugs(embedded_model, wrong):
    tokens = embedded_model.to_tokens("The Eiffel Tower is located in the city of")
    with pytest.raises(CheckFailed):
        check_knockout_hook(wrong, embedded_model, tokens, [1, 2, 3])


def test_knockout_hook_check_lets_the_stub_through(fact):
    with pytest.raises(NotImplementedError):
        check_knockout_hook(stub, *fact)


# ---------------------------------------------------------------------------
# the letter prediction
# ---------------------------------------------------------------------------


def test_letter_prediction_check():
    correct = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    last = torch.full_like(correct, 3)
    assert check_letter_prediction(lambda answer, n: n - 1, last, correct) == 1.0
    assert check_letter_prediction(lambda answer, n: answer, correct, correct) == 1.0
    with pytest.raises(CheckFailed, match="matches the head on 25%"):
        check_letter_prediction(lambda answer, n: answer, last, correct)
    with pytest.raises(CheckFailed, match="an int in"):
        check_letter_prediction(lambda answer, n: "D", last, correct)
    with pytest.raises(CheckFailed, match="an int in"):
        check_letter_prediction(lambda answer, n: 4, last, correct)
    with pytest.raises(NotImplementedError):
        check_letter_prediction(stub, last, correct)
    with pytest.raises(ValueError, match="same shape"):
        check_letter_prediction(lambda answer, n: 3, last[:3], correct)
