"""The exercise checks of chapter 02: each accepts a correct solution (the course's
reference and a learner-style one), rejects realistic bugs with ``CheckFailed`` and lets
the student stub's ``NotImplementedError`` through."""

from __future__ import annotations

import pytest
import torch

from utils.course.checks import CheckFailed
from utils.course.checks.in_context_identification import (
    check_classify_movers,
    check_first_token_score,
    check_retrieval_score,
    check_subword_merge_score,
)
from utils.analysis.classify import classify_movers
from utils.scores.patterns import first_token_score, subword_merge_score
from utils.scores.retrieval import retrieval_score


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: write this part, then run the check below")


# ---------------------------------------------------------------------------
# first-token score
# ---------------------------------------------------------------------------


def learner_first_token_score(pattern):
    return pattern[..., 1:, 0].mean(dim=-1).mean(dim=0)


def test_first_token_score_check_accepts_correct_solutions(capsys):
    check_first_token_score(first_token_score)
    check_first_token_score(learner_first_token_score)
    assert "first-token score" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda p: p[:, :, :, 0].mean(dim=(0, 2)), id="counts-query-0"),
        pytest.param(lambda p: p[:, :, 0, 1:].mean(dim=(0, 2)), id="row-instead-of-column"),
        pytest.param(lambda p: p[:, :, 1:, 0].mean(dim=(1, 2)), id="mean-over-heads"),
    ],
)
def test_first_token_score_check_rejects_bugs(wrong):
    with pytest.raises(CheckFailed):
        check_first_token_score(wrong)


def test_first_token_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_first_token_score(stub)


# ---------------------------------------------------------------------------
# retrieval score
# ---------------------------------------------------------------------------


def make_retrieval(*, bug=None):
    """A learner-style retrieval score; ``bug`` switches on one mistake."""

    def score(pattern, query_pos, target_pos):
        hits = []
        for item in range(pattern.shape[0]):
            query = int(query_pos[0 if bug == "first-query" else item])
            row = pattern[item, :, query]  # (n_heads, key_pos)
            if bug == "soft":
                hits.append(row[:, target_pos[item]])
                continue
            if bug == "any-maximum":
                hits.append((row[:, target_pos[item]] == row.max(dim=-1).values).float())
                continue
            target = int(target_pos[item]) - (1 if bug == "off-by-one" else 0)
            hits.append((row.argmax(dim=-1) == target).float())
        return torch.stack(hits).mean(dim=0)

    return score


def test_retrieval_score_check_accepts_correct_solutions():
    check_retrieval_score(retrieval_score)
    check_retrieval_score(make_retrieval())


@pytest.mark.parametrize(
    "bug", ["first-query", "soft", "any-maximum", "off-by-one"]
)
def test_retrieval_score_check_rejects_bugs(bug):
    with pytest.raises(CheckFailed):
        check_retrieval_score(make_retrieval(bug=bug))


def test_retrieval_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_retrieval_score(stub)


# ---------------------------------------------------------------------------
# subword-merge score
# ---------------------------------------------------------------------------


def make_merge(*, bug=None):
    """A learner-style subword-merge score; ``bug`` switches on one mistake."""

    def score(pattern, spans):
        singles = [
            (b, first)
            for b, words in enumerate(spans)
            for first, last in words
            if first == last
        ]
        results = []
        for item, words in enumerate(spans):
            for first, last in words:
                if last == first:
                    continue
                n_back = last - first
                pieces = pattern[item, :, last, first:last]
                merge = pieces.mean(-1) if bug == "mean-over-pieces" else pieces.sum(-1)
                lowest = 0 if bug == "bos-in-baseline" else 1
                rows = [
                    pattern[b, :, q, q - n_back : q].sum(-1)
                    for b, q in singles
                    if q - n_back >= lowest and (bug != "same-item-baseline" or b == item)
                ]
                baseline = torch.stack(rows).mean(0)
                results.append(merge if bug == "no-baseline" else merge - baseline)
        return torch.stack(results).mean(0)

    return score


def test_subword_merge_score_check_accepts_correct_solutions():
    check_subword_merge_score(subword_merge_score)
    check_subword_merge_score(make_merge())


@pytest.mark.parametrize(
    "bug", ["no-baseline", "mean-over-pieces", "bos-in-baseline", "same-item-baseline"]
)
def test_subword_merge_score_check_rejects_bugs(bug):
    with pytest.raises(CheckFailed):
        check_subword_merge_score(make_merge(bug=bug))


def test_subword_merge_score_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_subword_merge_score(stub)


# ---------------------------------------------------------------------------
# movers and negative movers
# ---------------------------------------------------------------------------


def make_movers(*, bug=None):
    """A learner-style classification in plain Python; ``bug`` adds one mistake."""

    def classify(attention, dla, *, min_attention, min_dla):
        movers, negative = [], []
        for layer in range(attention.shape[0]):
            for head in range(attention.shape[1]):
                a, d = float(attention[layer, head]), float(dla[layer, head])
                attends = a > min_attention if bug == "strict" else a >= min_attention
                if not attends and bug != "negative-ignore-attention":
                    continue
                if attends and (d > min_dla if bug == "strict" else d >= min_dla):
                    movers.append((layer, head))
                elif d <= -min_dla and (attends or bug == "negative-ignore-attention"):
                    negative.append((layer, head))
        if bug == "sorted-by-signed-dla":
            key = lambda head: -float(dla[head])  # noqa: E731
        else:
            key = lambda head: -abs(float(dla[head]))  # noqa: E731
        if bug != "unsorted":
            movers, negative = sorted(movers, key=key), sorted(negative, key=key)
        return {"movers": movers, "negative movers": negative}

    return classify


def test_classify_movers_check_accepts_correct_solutions():
    check_classify_movers(classify_movers)
    check_classify_movers(make_movers())


@pytest.mark.parametrize(
    "bug", ["strict", "negative-ignore-attention", "sorted-by-signed-dla", "unsorted"]
)
def test_classify_movers_check_rejects_bugs(bug):
    with pytest.raises(CheckFailed):
        check_classify_movers(make_movers(bug=bug))


def test_classify_movers_check_lets_the_stub_through():
    with pytest.raises(NotImplementedError):
        check_classify_movers(stub)
