"""Checks for the exercises of chapter 16 (Simplified-model training).

Each ``check_*`` function takes the learner's function, compares it with the course's
reference in :mod:`utils.toy` on random and edge-case inputs, prints one line when
every case matches and raises :class:`utils.course.checks.CheckFailed` otherwise.

The prediction exercise has no reference function to compare with: the learner
predicts where the trained induction head attends, and
:func:`check_induction_prediction` scores that prediction against the attention the
chapter's own run produced.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from utils.course.checks import Case, CheckFailed, check_against_reference, describe
from utils.toy.model import ToyConfig, ToyTransformer, composition_scores
from utils.toy.tasks import iteration_head_share, parity_tokens

__all__ = [
    "check_parity_tokens",
    "check_iteration_share",
    "check_k_composition",
    "check_induction_prediction",
]


def _bits(text: str) -> Tensor:
    return torch.tensor([[int(c) for c in text]])


def _causal_pattern(generator: torch.Generator, batch: int, n_heads: int, n_pos: int) -> Tensor:
    scores = torch.randn(batch, n_heads, n_pos, n_pos, generator=generator) * 3.0
    future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


# ---------------------------------------------------------------------------
# Exercise: the parity data
# ---------------------------------------------------------------------------


def check_parity_tokens(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(bits) -> LongTensor[batch, 2n + 2]``, the parity sequences
    ``[BOS] x_1 .. x_n [EOI] s_1 .. s_n`` for bits ``(batch, n)``, against
    :func:`utils.toy.tasks.parity_tokens`."""
    generator = torch.Generator().manual_seed(16)
    cases = [
        Case("the survey's example 001011", (_bits("001011"),)),
        Case("all zeros (every state even)", (torch.zeros(2, 5, dtype=torch.long),)),
        Case("all ones (the states alternate)", (torch.ones(1, 7, dtype=torch.long),)),
        Case("a single bit, 1", (_bits("1"),)),
        Case("8 random rows of 12 bits", (torch.randint(0, 2, (8, 12), generator=generator),)),
    ]
    check_against_reference(fn, parity_tokens, cases, exercise="parity sequences")


# ---------------------------------------------------------------------------
# Exercise: the iteration-head score
# ---------------------------------------------------------------------------


def _iteration_reference(pattern: Tensor, n_bits: int) -> Tensor:
    return iteration_head_share(pattern, torch.full((pattern.shape[0],), n_bits))


def check_iteration_share(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(pattern, n_bits) -> Tensor[n_heads]``: for parity sequences of
    ``n_bits`` input bits, the share of output steps ``t`` (the query at position
    ``n_bits + t``) at which each head attends most to position ``t``.

    The reference is :func:`utils.toy.tasks.iteration_head_share`. Besides random
    patterns, the cases build heads that attend one position too early or too late and
    a head that spreads its attention over bit ``t`` and its neighbours: the share
    counts the *strongest* key only.
    """
    generator = torch.Generator().manual_seed(61)

    def built(n_bits: int, offsets: list[int], batch: int = 2) -> Tensor:
        n_pos = 2 * n_bits + 2
        pattern = torch.full((batch, len(offsets), n_pos, n_pos), 0.0)
        pattern[..., 0] = 1.0  # every other query rests on [BOS]
        for head, offset in enumerate(offsets):
            for t in range(1, n_bits + 1):
                query = n_bits + t
                pattern[:, head, query] = 0.0
                pattern[:, head, query, max(0, t + offset)] = 1.0
        return pattern

    def spread(n_bits: int) -> Tensor:
        pattern = built(n_bits, [0])
        for t in range(1, n_bits + 1):
            row = pattern[:, 0, n_bits + t]
            row[:] = 0.0
            row[:, t], row[:, t - 1], row[:, t + 1] = 0.4, 0.3, 0.3
        return pattern

    cases = [
        Case("a perfect head and heads one bit early / late (6 bits)", (built(6, [0, -1, 1]), 6)),
        Case("a head spreading attention around bit t (5 bits)", (spread(5), 5)),
        Case("random patterns, 3 heads, 4 bits", (_causal_pattern(generator, 4, 3, 10), 4)),
        Case("random patterns, 1 bit", (_causal_pattern(generator, 3, 2, 4), 1)),
    ]
    check_against_reference(fn, _iteration_reference, cases, exercise="iteration-head share")


# ---------------------------------------------------------------------------
# Exercise: K-composition from the weights
# ---------------------------------------------------------------------------


def check_k_composition(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Any]) -> None:
    """Check ``fn(W_V, W_O, W_Q, W_K) -> float``: the K-composition score of an
    earlier head (``W_V`` ``(d_model, d_head)``, ``W_O`` ``(d_head, d_model)``) with a
    later head (``W_Q``, ``W_K`` ``(d_model, d_head)``), against
    :func:`utils.toy.model.composition_scores` on random models."""
    models = {
        seed: ToyTransformer(ToyConfig(n_heads=2, d_model=24, d_head=6, d_vocab=8, n_ctx=8), seed=seed)
        for seed in (0, 1)
    }

    def reference(seed: int, earlier: int, later: int) -> float:
        return float(composition_scores(models[seed], "K")[0, earlier, later])

    def learner(seed: int, earlier: int, later: int) -> Any:
        model = models[seed]
        with torch.no_grad():
            return fn(model.W_V[0, earlier], model.W_O[0, earlier], model.W_Q[1, later], model.W_K[1, later])

    # A head whose keys read exactly what the earlier head writes: the score is large.
    aligned = models[1]
    with torch.no_grad():
        aligned.blocks[1].attn.W_K[1] = aligned.blocks[0].attn.W_O[0].T.clone()
    cases = [
        Case("random heads 0 -> 0", (0, 0, 0)),
        Case("random heads 1 -> 0", (0, 1, 0)),
        Case("a later head whose W_K reads the earlier head's W_O", (1, 0, 1)),
    ]
    check_against_reference(learner, reference, cases, exercise="K-composition score", atol=1e-4)


# ---------------------------------------------------------------------------
# Exercise: predict where the trained induction head attends
# ---------------------------------------------------------------------------


def _prediction_share(fn: Callable[[int, int], int], pattern: Tensor, period: int) -> float:
    top = pattern.argmax(dim=-1)  # (batch, query)
    hits = []
    for query in range(period, 2 * period):
        key = fn(query, period)
        if isinstance(key, Tensor) and key.numel() == 1:
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, int):
            raise CheckFailed(
                f"induction prediction: for query {query} and period {period} return a key "
                f"position (an int), got {describe(key)}"
            )
        hits.append((top[:, query] == key).float())
    return float(torch.stack(hits).mean())


def _reference_prediction(query: int, period: int) -> int:
    return query - period + 1


def check_induction_prediction(
    fn: Callable[[int, int], int], patterns: Mapping[int, Tensor], *, margin: float = 0.05
) -> None:
    """Check ``fn(query, period) -> key``, a prediction of the key the trained layer-1
    head attends to most from each query of the second copy of a repeated sequence.

    Args:
        patterns: ``{period: pattern}``, the head's attention ``(batch, 2 * period,
            2 * period)`` on held-out repeated sequences of that period.
        margin: how far below the share of the best simple rule (key ``query -
            period + 1``) the share of the prediction may fall.

    The check reports, for each period, the share of (sequence, query) pairs at which
    the head's strongest key is the predicted one.
    """
    if not patterns:
        raise ValueError("patterns must hold at least one period")
    lines = []
    for period, pattern in sorted(patterns.items()):
        if pattern.ndim != 3 or pattern.shape[-1] < 2 * period:
            raise ValueError(f"the pattern for period {period} must be (batch, >= {2 * period}, ...)")
        yours = _prediction_share(fn, pattern, period)
        best = _prediction_share(_reference_prediction, pattern, period)
        if yours < best - margin:
            example = period + period // 2
            raise CheckFailed(
                f"induction prediction: on sequences of period {period} the head attends most "
                f"to your key in {yours:.0%} of the queries of the second copy (the best simple "
                f"rule reaches {best:.0%}); e.g. from query {example} you predicted key "
                f"{fn(example, period)}, but the head's strongest key there is most often "
                f"{int(pattern[:, example].argmax(dim=-1).mode().values)}"
            )
        lines.append(f"period {period}: {yours:.0%}")
    print(
        "\N{CHECK MARK} induction prediction: the head attends most to the key you predicted ("
        + ", ".join(lines)
        + " of the queries)"
    )
