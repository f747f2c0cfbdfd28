"""Checks for the exercises of chapter 01 (Knowledge Recalling).

Each ``check_*`` function takes the learner's function (and, for some, the loaded model
and a few prompts of the chapter), compares it with the course's reference on random
and edge-case inputs, prints one line when every case matches and raises
:class:`utils.course.checks.CheckFailed` otherwise.
"""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
from collections import Counter
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from utils.course.checks import Case, CheckFailed, Hook, check_against_reference, run_hook
from utils.course.checks.background import random_attention_pattern
from utils.interventions.knockout import attention_knockout_hooks
from utils.analysis.classify import classify_by_source
from utils.attribution.dla import head_attribution_by_key
from utils.scores.retrieval import negative_attention_score

__all__ = [
    "check_negative_attention_score",
    "check_classify_by_source",
    "check_head_attribution_by_key",
    "check_knockout_hook",
    "check_letter_prediction",
]



# ---------------------------------------------------------------------------
# The negative attention score (survey Eq. 5)
# ---------------------------------------------------------------------------


def check_negative_attention_score(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> None:
    """Check ``fn(pattern, yes_pos, no_pos) -> Tensor[n_heads]`` against
    :func:`utils.scores.retrieval.negative_attention_score`."""
    generator = torch.Generator().manual_seed(10)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos)

    def at(*values: int) -> Tensor:
        return torch.tensor(values, dtype=torch.long)

    # Both options get the same attention from every query: the score is exactly 0.
    tie = random(2, 3, 6)
    tie[..., 1] = tie[..., 3] = (tie[..., 1] + tie[..., 3]) / 2
    tie[..., :3, 3] = 0.0  # queries before the later option cannot see it
    tie = tie / tie.sum(-1, keepdim=True)
    # Head 0 never looks at "Yes" (position 1), head 1 never at "No" (position 2), and
    # head 2 at neither: only the epsilon keeps the logarithm finite.
    blind = random(1, 3, 6)
    blind[:, 0, :, 1] = 0.0
    blind[:, 1, :, 2] = 0.0
    blind[:, 2, :, 1:3] = 0.0
    blind = blind / blind.sum(-1, keepdim=True)
    cases = [
        Case(
            "random patterns: batch 3, 4 heads, 8 positions",
            (random(3, 4, 8), at(2, 5, 1), at(4, 3, 6)),
        ),
        Case("batch of 1, 'No' before 'Yes'", (random(1, 2, 7), at(5), at(2))),
        Case(
            "both options at the end: one query counted",
            (random(2, 2, 6), at(5, 4), at(4, 5)),
        ),
        Case("equal attention to both options", (tie, at(1, 3), at(3, 1))),
        Case(
            "no attention at all on one or both options",
            (blind, at(1), at(2)),
        ),
    ]
    check_against_reference(
        fn,
        negative_attention_score,
        cases,
        exercise="negative attention score",
        atol=1e-4,
    )


# ---------------------------------------------------------------------------
# Naming a head by where its push came from
# ---------------------------------------------------------------------------


def check_classify_by_source(fn: Callable[..., str]) -> None:
    """Check ``fn(subject, relation, bos, threshold=0.7) -> str`` against
    :func:`utils.analysis.classify.classify_by_source`."""
    at_075, at_1 = {"threshold": 0.75}, {"threshold": 1.0}
    cases = [
        Case("clearly from the subject", (1.8, 0.05, 0.1)),
        Case("clearly from the relation", (0.02, 0.9, -0.1)),
        Case("from both: mixed", (0.5, 0.4, 0.0)),
        Case("a BOS part that does not dominate is not in the share", (1.0, 0.3, 0.5)),
        Case("mostly from BOS", (0.2, 0.1, 0.6)),
        Case("BOS exactly equal to the others together: not 'bos'", (0.5, 0.5, 1.0)),
        Case("a negative subject part does not count", (-1.5, 0.8, 0.0)),
        Case("BOS outweighs the one positive part", (1.0, -2.0, 1.5)),
        Case("a negative relation part does not shrink the others", (2.0, -1.5, 1.0)),
        Case("nothing positive at all: share 0.5", (-0.3, -0.2, -0.1)),
        Case("share exactly at the threshold 0.75", (3.0, 1.0, 0.0), at_075),
        Case("share exactly at 1 - threshold", (1.0, 3.0, 0.0), at_075),
        Case("threshold 1: only pure subject heads", (0.9, 0.01, 0.0), at_1),
    ]
    check_against_reference(
        fn, classify_by_source, cases, exercise="classify a head by source"
    )


# ---------------------------------------------------------------------------
# Direct logit attribution split by key position
# ---------------------------------------------------------------------------


def _same_length_batch(
    tokens: Tensor, answer_ids: Tensor, end_positions: Tensor | None, limit: int
) -> tuple[Tensor, Tensor]:
    """Up to ``limit`` prompts that end at the most common position, cut to that
    length, and their answers."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a (batch, pos) tensor, got {getattr(tokens, 'shape', tokens)}")
    if end_positions is None:
        end_positions = torch.full((tokens.shape[0],), tokens.shape[1] - 1)
    ends = [int(end) for end in end_positions]
    end = Counter(ends).most_common(1)[0][0]
    chosen = [i for i, e in enumerate(ends) if e == end][:limit]
    return tokens[chosen, : end + 1], answer_ids[chosen]


def check_head_attribution_by_key(
    fn: Callable[..., Tensor],
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    end_positions: Tensor | None = None,
) -> None:
    """Check ``fn(model, cache, directions, layer, head) -> Tensor[batch, key_pos]``,
    one head's direct logit attribution at the last position split by key, against
    :func:`utils.attribution.dla.head_attribution_by_key`.

    Runs the model once, on up to four of the prompts that end at the most common
    position, cut to that length (so the last position is a real token).

    Args:
        tokens: ``(batch, pos)``, right-padded where prompts differ in length.
        answer_ids: ``(batch,)``, the answer of each prompt.
        end_positions: ``LongTensor[batch]``, each prompt's last real token; default
            the last column.
    """
    batch, answers = _same_length_batch(tokens, answer_ids, end_positions, limit=4)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    wanted = {get_act_name("scale")}
    for layer in range(n_layers):
        wanted |= {get_act_name("pattern", layer), get_act_name("v", layer)}
    with torch.no_grad():
        _, full = model.run_with_cache(batch, names_filter=lambda name: name in wanted)
    cache = {name: full[name].detach().clone() for name in wanted}
    one = {name: tensor[:1].clone() for name, tensor in cache.items()}
    directions = model.W_U[:, answers.to(model.W_U.device)].T.detach().clone()

    def reference(cache: dict, directions: Tensor, layer: int, head: int) -> Tensor:
        return head_attribution_by_key(model, cache, directions)[:, layer, head]

    def learner(cache: dict, directions: Tensor, layer: int, head: int) -> Any:
        return fn(model, cache, directions, layer, head)

    last, middle, d = n_layers - 1, n_layers // 2, directions
    # Heads 1 and n_heads // 2 + 1 read a key/value head other than head % n_kv_heads
    # when grouped-query attention shares key/value heads.
    cases = [
        Case("layer 0, head 0", (cache, d, 0, 0)),
        Case(f"layer {middle}, head 1", (cache, d, middle, 1)),
        Case(f"last layer, last head ({n_heads - 1})", (cache, d, last, n_heads - 1)),
        Case(
            f"batch of 1: layer {last}, head {n_heads // 2 + 1}",
            (one, directions[:1], last, n_heads // 2 + 1),
        ),
    ]
    check_against_reference(
        learner,
        reference,
        cases,
        exercise="attribution split by key position",
        atol=1e-4,
    )


# ---------------------------------------------------------------------------
# An attention-knockout hook
# ---------------------------------------------------------------------------



def check_knockout_hook(
    fn: Callable[..., Hook], model: Any, tokens: Tensor, key_positions: Sequence[int]
) -> None:
    """Check ``fn(key_positions, query_pos=-1)``, a factory of ``hook_attn_scores``
    hooks that block the edges from one query to some keys, against
    :func:`utils.interventions.knockout.attention_knockout_hooks`.

    The hook is tried on random attention scores ``(batch, n_heads, query, key)`` and
    then inside the model: one forward pass on ``tokens`` (``(1, pos)``) with the
    learner's hook in five middle layers blocking the last position's edges to
    ``key_positions``, one with the reference hooks, comparing the last logits.
    """
    generator = torch.Generator().manual_seed(11)
    n_layers = model.cfg.n_layers
    window = list(range(max(0, n_layers // 2 - 2), min(n_layers, n_layers // 2 + 3)))
    stand_in = SimpleNamespace(cfg=SimpleNamespace(n_layers=1))  # layer 0 will do
    keys = [int(position) for position in key_positions]

    def scores(batch: int, n_heads: int, n_pos: int) -> Tensor:
        values = torch.randn(batch, n_heads, n_pos, n_pos, generator=generator)
        future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), diagonal=1)
        return values.masked_fill(future, float("-inf"))

    def run(kind: str, *args: Any, factory: Callable[[list[int], int], Hook]) -> Tensor:
        if kind == "tensor":
            values, blocked, query = args
            return run_hook(factory(blocked, query), values)
        blocked = list(args[0])
        hooks = [
            (get_act_name("attn_scores", layer), factory(blocked, -1))
            for layer in window
        ]
        with torch.no_grad():
            return model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]

    def reference_factory(keys: list[int], query: int) -> Hook:
        return attention_knockout_hooks(stand_in, [0], keys, query_pos=query)[0][1]

    def learner_factory(keys: list[int], query: int) -> Hook:
        return fn(keys, query_pos=query)

    cases = [
        Case(
            "random scores (batch 2, 3 heads, 6 positions), keys [1, 2], last query",
            ("tensor", scores(2, 3, 6), [1, 2], -1),
        ),
        Case("query 3 as a positive index, key 0", ("tensor", scores(2, 3, 6), [0], 3)),
        Case(
            "batch of 1, the query's own position among the keys",
            ("tensor", scores(1, 2, 5), [2, 4], 4),
        ),
        Case(
            f"inside the model: layers {window[0]}-{window[-1]}, keys {keys}",
            ("model", keys),
        ),
    ]
    check_against_reference(
        lambda *args: run(*args, factory=learner_factory),
        lambda *args: run(*args, factory=reference_factory),
        cases,
        exercise="attention-knockout hook",
        atol=1e-4,
    )


# ---------------------------------------------------------------------------
# A prediction: which letter does the single-letter head read?
# ---------------------------------------------------------------------------


def check_letter_prediction(
    fn: Callable[[int, int], int], favourite: Tensor, correct: Tensor, *, n_options: int = 4,
    needed: float = 0.75,
) -> float:
    """Check ``fn(correct, n_options) -> int``, a learner's *prediction* of the option
    letter (0 = A) that the single-letter head attends to most on a question whose
    right answer is letter ``correct``, against what the head did in this run.

    There is no reference function: the prediction is scored on every question of the
    run, ``favourite[b]`` being the head's most-attended letter and ``correct[b]`` the
    right one. It passes when it matches the head on at least ``needed`` of them, and
    returns that share.
    """
    if not isinstance(favourite, Tensor) or not isinstance(correct, Tensor) or favourite.shape != correct.shape:
        raise ValueError("favourite and correct must be tensors of the same shape (one entry per question)")
    predictions = []
    for answer in correct.tolist():
        guess = fn(int(answer), n_options)
        if isinstance(guess, Tensor) and guess.numel() == 1:
            guess = int(guess)
        if isinstance(guess, bool) or not isinstance(guess, int) or not 0 <= guess < n_options:
            raise CheckFailed(
                f"letter prediction: for a question whose answer is letter {answer} your function returned "
                f"{guess!r}; return a letter index, an int in [0, {n_options})"
            )
        predictions.append(guess)
    share = float((torch.tensor(predictions) == favourite.cpu()).float().mean())
    if share < needed:
        observed = Counter(favourite.tolist()).most_common(1)[0]
        raise CheckFailed(
            f"letter prediction: your prediction matches the head on {share:.0%} of the questions "
            f"(needed {needed:.0%}). Look again at the bar chart and at the printed lines: which letter "
            f"did the head prefer, and did its choice change with the right answer? (It chose letter "
            f"{observed[0]} on {observed[1]} of {len(predictions)} questions.)"
        )
    print(f"✓ letter prediction: it matches the single-letter head on {share:.0%} of the questions")
    return share
