"""Checks for the exercises of chapter 02 (In-Context Identification).

Each ``check_*`` function takes the learner's function, compares it with the course's
reference on random and edge-case inputs, prints one line when every case matches and
raises :class:`utils.course.checks.CheckFailed` otherwise. None of them needs the model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from utils.course.checks import Case, check_against_reference
from utils.course.checks.background import one_hot_pattern, random_attention_pattern
from utils.course.checks.interpretive import check_choice
from utils.analysis.classify import classify_movers
from utils.core.heads import Head
from utils.scores.patterns import first_token_score, subword_merge_score
from utils.scores.retrieval import retrieval_score

__all__ = [
    "FALSIFIER_OPTIONS",
    "check_name_mover_falsifier",
    "check_first_token_score",
    "check_retrieval_score",
    "check_subword_merge_score",
    "check_classify_movers",
]

Span = tuple[int, int]


def _positions(*values: int) -> Tensor:
    """A ``LongTensor`` of positions, one per batch item."""
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------
# The first-token (attention sink) score
# ---------------------------------------------------------------------------


def check_first_token_score(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(pattern) -> Tensor[n_heads]`` against
    :func:`utils.scores.patterns.first_token_score`."""
    generator = torch.Generator().manual_seed(20)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos)

    # head 0 is a perfect sink, head 1 attends to itself, head 2 one step back
    crafted = one_hot_pattern(2, 3, 5, lambda h, i: (0, i, i - 1)[h])
    cases = [
        Case("random patterns: batch 3, 4 heads, 7 positions", (random(3, 4, 7),)),
        Case("batch of 1", (random(1, 2, 6),)),
        Case("shortest sequence: 2 positions", (random(4, 3, 2),)),
        Case("one-hot heads: sink, self, previous token", (crafted,)),
    ]
    check_against_reference(fn, first_token_score, cases, exercise="first-token score")


# ---------------------------------------------------------------------------
# The retrieval score (survey Eq. 4)
# ---------------------------------------------------------------------------


def check_retrieval_score(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(pattern, query_pos, target_pos) -> Tensor[n_heads]`` against
    :func:`utils.scores.retrieval.retrieval_score`."""
    generator = torch.Generator().manual_seed(21)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos, sharpness=2.0)

    # Sharp heads whose top key is known: head h looks h + 1 steps back from every
    # query, and each item's target is 2 steps back, so only head 1 retrieves.
    sharp = one_hot_pattern(3, 3, 8, lambda h, i: i - h - 1) * 0.9
    sharp = sharp + random(3, 3, 8) * 0.1
    # Uniform rows: every visible key ties; the first one (key 0) counts as the top.
    causal = torch.tril(torch.ones(6, 6))
    uniform = (causal / causal.sum(-1, keepdim=True)).expand(2, 2, 6, 6).clone()
    # One query row per item and every key (what attention_rows keeps)
    rows = torch.softmax(torch.randn(4, 3, 1, 9, generator=generator) * 3, dim=-1)
    cases = [
        Case(
            "random patterns: batch 4, 3 heads, 9 positions",
            (random(4, 3, 9), _positions(8, 6, 7, 5), _positions(3, 2, 6, 1)),
        ),
        Case("batch of 1", (random(1, 4, 7), _positions(6), _positions(2))),
        Case(
            "one-hot heads with known top keys, different queries per item",
            (sharp, _positions(7, 4, 6), _positions(5, 2, 4)),
        ),
        Case(
            "ties: uniform attention, targets 0 and 3",
            (uniform, _positions(5, 4), _positions(0, 3)),
        ),
        Case(
            "a single query row per item (pattern of shape (4, 3, 1, 9))",
            (rows, _positions(0, 0, 0, 0), _positions(8, 1, 4, 0)),
        ),
    ]
    check_against_reference(fn, retrieval_score, cases, exercise="retrieval score")


# ---------------------------------------------------------------------------
# The subword-merge score
# ---------------------------------------------------------------------------


def check_subword_merge_score(
    fn: Callable[[Tensor, Sequence[Sequence[Span]]], Tensor],
) -> None:
    """Check ``fn(pattern, spans) -> Tensor[n_heads]`` against
    :func:`utils.scores.patterns.subword_merge_score`."""
    generator = torch.Generator().manual_seed(22)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos)

    # positions: 0 BOS, 1 word, 2-3 a split word, 4 word, 5 word. Head 0 is a
    # previous-token head (score 0); head 1 attends one step back only inside a word,
    # to itself elsewhere (score 1).
    previous = one_hot_pattern(1, 1, 6, lambda h, i: i - 1)
    merger = previous.clone()
    merger[0, 0, 4:, :] = 0.0
    merger[0, 0, 4, 4] = merger[0, 0, 5, 5] = 1.0
    merger[0, 0, 1, :] = 0.0
    merger[0, 0, 1, 1] = 1.0
    crafted = torch.cat([previous, merger], dim=1)
    one_item = [(1, 1), (2, 3), (4, 4), (5, 7), (8, 8), (9, 9), (10, 11)]
    two_items = [
        [(1, 1), (2, 2), (3, 4), (5, 5)],
        [(1, 2), (3, 3), (4, 6), (7, 7), (8, 8)],
    ]
    cases = [
        Case(
            "random pattern, one item: words of 1, 2 and 3 pieces",
            (random(1, 3, 12), [one_item]),
        ),
        Case(
            "two items with different words; baseline pooled over both",
            (random(2, 2, 9), two_items),
        ),
        Case(
            "a previous-token head and a head that merges pieces",
            (crafted, [[(1, 1), (2, 3), (4, 4), (5, 5)]]),
        ),
        Case(
            "a 2-step baseline needs 2 tokens after BOS: words at 1 and 2 do not count",
            (random(1, 2, 8), [[(1, 1), (2, 2), (3, 5), (6, 6), (7, 7)]]),
        ),
    ]
    check_against_reference(
        fn, subword_merge_score, cases, exercise="subword-merge score"
    )


# ---------------------------------------------------------------------------
# Movers and negative movers
# ---------------------------------------------------------------------------


def check_classify_movers(fn: Callable[..., dict[str, list[Head]]]) -> None:
    """Check ``fn(attention, dla, *, min_attention, min_dla)`` against
    :func:`utils.analysis.classify.classify_movers`."""
    generator = torch.Generator().manual_seed(23)
    attention = torch.rand(6, 5, generator=generator)
    dla = torch.randn(6, 5, generator=generator)
    boundary_attention = torch.tensor(
        [[0.25, 0.25, 0.125, 0.5], [0.5, 0.75, 0.25, 0.0]]
    )
    boundary_dla = torch.tensor([[0.5, -0.5, 2.0, 0.25], [-1.0, 0.75, -0.25, -3.0]])
    # movers and negative movers are each sorted by |dla|, largest first
    one_layer_attention = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.1]])
    one_layer_dla = torch.tensor([[0.4, -1.2, 1.1, -0.35, 5.0]])
    cases = [
        Case(
            "random scores, 6 layers x 5 heads",
            (attention, dla),
            {"min_attention": 0.3, "min_dla": 0.5},
        ),
        Case(
            "values exactly at the thresholds",
            (boundary_attention, boundary_dla),
            {"min_attention": 0.25, "min_dla": 0.5},
        ),
        Case(
            "one layer; the largest |DLA| belongs to a head that does not attend",
            (one_layer_attention, one_layer_dla),
            {"min_attention": 0.5, "min_dla": 0.3},
        ),
        Case(
            "thresholds so high that no head qualifies",
            (attention, dla),
            {"min_attention": 0.99, "min_dla": 10.0},
        ),
        Case(
            "thresholds of zero: every head is one or the other",
            (attention, dla),
            {"min_attention": 0.0, "min_dla": 0.0},
        ),
    ]
    check_against_reference(fn, classify_movers, cases, exercise="classify movers")


# ---------------------------------------------------------------------------
# Interpretive exercise: what would falsify "the name movers are necessary"?
# ---------------------------------------------------------------------------

#: The results a learner chooses from.
FALSIFIER_OPTIONS = {
    "a": "mean-ablating the name movers lowers the logit difference by no more than "
    "ablating layer-matched random heads typically does",
    "b": "on some prompts the name movers attend more to S than to IO",
    "c": "on a few prompts the logit difference rises when the name movers are ablated",
    "d": "the name movers' direct logit attribution adds up to less than the whole logit difference",
}
_FALSIFIER_FEEDBACK = {
    "b": "attention is not effect. A head can look elsewhere on a few prompts and still carry "
    "the answer on average; the claim is about what removing the heads does.",
    "c": "a few prompts going the other way is what noise looks like; the claim is about the "
    "mean effect, which its confidence interval describes.",
    "d": "several heads and MLPs share the answer, so no group of heads needs to carry all of "
    "it; being necessary is not being sufficient.",
}


def check_name_mover_falsifier(fn: Callable[[], str]) -> None:
    """Check ``fn()``, the key of :data:`FALSIFIER_OPTIONS` naming the result that would
    falsify "the name movers are necessary for IOI"
    (:func:`utils.course.checks.interpretive.check_choice`)."""
    check_choice(
        fn,
        FALSIFIER_OPTIONS,
        "a",
        exercise="falsifying the name movers",
        explanation=(
            "necessary means that removing them costs more than removing any heads would; "
            "if their ablation falls inside the spread of layer-matched random ablations, "
            "the claim has nothing to stand on. The next cells run exactly this test (the "
            "percentile among 20 random draws is the finding 02.ioi.ablation_beats_null)."
        ),
        feedback=_FALSIFIER_FEEDBACK,
    )

