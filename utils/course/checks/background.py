"""Checks for the exercises of chapter 00 (Background and tools).

Each ``check_*`` function takes the learner's function (and, for some, the loaded model
and a small input from the chapter), compares it with the course's reference on random
and edge-case inputs, prints one line when every case matches and raises
:class:`utils.course.checks.CheckFailed` otherwise.

:func:`random_attention_pattern` and :func:`one_hot_pattern` build the synthetic
attention patterns that the checks of chapters 00-02 share.
"""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
from typing import Any, Callable

import torch
from torch import Tensor

from utils.course.checks import Case, Hook, check_against_reference, run_hook
from utils.course.checks.interpretive import check_prediction
from utils.interventions.ablation import ablation_values
from utils.interventions.hooks import replace_heads_hooks
from utils.attribution.dla import head_direct_logit_attribution
from utils.scores.patterns import induction_score, previous_token_score

__all__ = [
    "random_attention_pattern",
    "one_hot_pattern",
    "check_previous_token_score",
    "check_induction_score",
    "check_zero_head_hook",
    "check_head_dla",
    "LATE_HEADS_OPTIONS",
    "check_late_heads_prediction",
]



def random_attention_pattern(
    generator: torch.Generator,
    batch: int,
    n_heads: int,
    n_pos: int,
    *,
    sharpness: float = 3.0,
) -> Tensor:
    """A causal attention pattern ``(batch, n_heads, n_pos, n_pos)`` with random rows.

    Each row is a softmax of Gaussian scores times ``sharpness`` over the keys at or
    before the query, so rows sum to one and the upper triangle is exactly zero.
    """
    scores = torch.randn(batch, n_heads, n_pos, n_pos, generator=generator) * sharpness
    future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def one_hot_pattern(
    batch: int, n_heads: int, n_pos: int, key_of_query: Callable[[int, int], int]
) -> Tensor:
    """A pattern in which head ``h`` puts all attention from query ``i`` on one key,
    ``key_of_query(h, i)`` clamped to ``[0, i]``."""
    pattern = torch.zeros(batch, n_heads, n_pos, n_pos)
    for h in range(n_heads):
        for i in range(n_pos):
            pattern[:, h, i, max(0, min(i, key_of_query(h, i)))] = 1.0
    return pattern


def _uniform_pattern(batch: int, n_heads: int, n_pos: int) -> Tensor:
    """Causal attention spread evenly over every visible key."""
    causal = torch.tril(torch.ones(n_pos, n_pos))
    rows = causal / causal.sum(-1, keepdim=True)
    return rows.expand(batch, n_heads, n_pos, n_pos).clone()


# ---------------------------------------------------------------------------
# Attention scores
# ---------------------------------------------------------------------------


def check_previous_token_score(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(pattern) -> Tensor[n_heads]`` against
    :func:`utils.scores.patterns.previous_token_score`."""
    generator = torch.Generator().manual_seed(0)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos)

    # head 0 looks one step back, head 1 at itself, head 2 at the first token
    crafted = one_hot_pattern(2, 3, 6, lambda h, i: (i - 1, i, 0)[h])
    cases = [
        Case("random patterns: batch 3, 4 heads, 7 positions", (random(3, 4, 7),)),
        Case("batch of 1", (random(1, 2, 5),)),
        Case("shortest sequence: 2 positions", (random(4, 3, 2),)),
        Case("one-hot heads: previous token, self, first token", (crafted,)),
        Case("uniform attention", (_uniform_pattern(2, 2, 5),)),
    ]
    check_against_reference(
        fn, previous_token_score, cases, exercise="previous-token score"
    )


def check_induction_score(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(pattern, period) -> Tensor[n_heads]`` against
    :func:`utils.scores.patterns.induction_score`."""
    generator = torch.Generator().manual_seed(1)

    def random(batch: int, n_heads: int, n_pos: int) -> Tensor:
        return random_attention_pattern(generator, batch, n_heads, n_pos)

    period = 4
    # head 0 is a perfect induction head, head 1 a duplicate-token head (one step
    # short), head 2 looks one step back
    def key(h: int, i: int) -> int:
        return (i - period + 1, i - period, i - 1)[h] if i >= period else i

    crafted = one_hot_pattern(2, 3, 2 * period, key)
    # everything from query period - 1 (which has no earlier copy) goes to key 0
    first_query = random(2, 2, 2 * period)
    first_query[:, :, period - 1] = 0.0
    first_query[:, :, period - 1, 0] = 1.0
    cases = [
        Case("random patterns: batch 3, 4 heads, period 5", (random(3, 4, 10), 5)),
        Case("batch of 1", (random(1, 2, 8), 4)),
        Case("shortest period: 2", (random(2, 3, 4), 2)),
        Case("period = seq_len - 1 (one query counted)", (random(2, 2, 6), 5)),
        Case(
            "one-hot heads: induction, duplicate token, previous token",
            (crafted, period),
        ),
        Case("query period - 1 attends only to key 0", (first_query, period)),
    ]
    check_against_reference(fn, induction_score, cases, exercise="induction score")


# ---------------------------------------------------------------------------
# A hook
# ---------------------------------------------------------------------------



def check_zero_head_hook(fn: Callable[[int], Hook], model: Any, tokens: Tensor) -> None:
    """Check ``fn(head)``, a factory of ``hook_z`` hooks that zero one head, against
    :func:`utils.interventions.hooks.replace_heads_hooks` with zeros.

    The hook is tried on random ``hook_z`` tensors ``(batch, pos, n_heads, d_head)`` and
    then inside the model: one forward pass on ``tokens`` with the learner's hook at a
    middle layer, one with the reference hook, comparing the last position's logits.
    """
    n_heads = model.cfg.n_heads
    last, layer = n_heads - 1, model.cfg.n_layers // 2
    generator = torch.Generator().manual_seed(2)

    def run(kind: str, *args: Any, ablate: Callable[[int], Hook]) -> Tensor:
        if kind == "tensor":
            z, head = args
            return run_hook(ablate(head), z)
        head = args[0]
        hooks = [(get_act_name("z", layer), ablate(head))]
        with torch.no_grad():
            return model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]

    def reference_factory(head: int) -> Hook:
        def zero_hook(z: Tensor, hook: Any) -> Tensor:
            zeros = [torch.zeros_like(z[:1, :1])] * model.cfg.n_layers
            return replace_heads_hooks(model, [(layer, head)], zeros)[0][1](z, hook)

        return zero_hook

    def z(batch: int, n_pos: int) -> Tensor:
        return torch.randn(batch, n_pos, n_heads, 8, generator=generator)

    cases = [
        Case("random hook_z (batch 2, 5 positions), head 0", ("tensor", z(2, 5), 0)),
        Case(f"random hook_z, last head ({last})", ("tensor", z(2, 5), last)),
        Case("batch of 1, a single position, head 1", ("tensor", z(1, 1), 1)),
        Case(f"inside the model: head 1 of layer {layer}, last logits", ("model", 1)),
    ]
    check_against_reference(
        lambda *args: run(*args, ablate=fn),
        lambda *args: run(*args, ablate=reference_factory),
        cases,
        exercise="zero-ablation hook",
        atol=1e-4,
    )


# ---------------------------------------------------------------------------
# Direct logit attribution
# ---------------------------------------------------------------------------


def check_head_dla(
    fn: Callable[..., "Tensor | float"], model: Any, cache: Any, directions: Tensor
) -> None:
    """Check ``fn(model, cache, directions, layer, head, pos)``, one head's direct logit
    attribution averaged over the batch, against
    :func:`utils.attribution.dla.head_direct_logit_attribution`.

    Args:
        cache: a cache of a run on a batch of prompts (the chapter's IOI cache);
            only the ``hook_z`` entries and the final norm's scale of its first four
            prompts are used.
        directions: ``(batch, d_model)`` unembedding directions for that batch.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [get_act_name("z", layer) for layer in range(n_layers)]
    names.append(get_act_name("scale"))
    # Four prompts are enough, and keep the copies the check makes per case small.
    small = {name: cache[name][:4].detach().clone() for name in names}
    one = {name: tensor[:1].clone() for name, tensor in small.items()}
    directions = directions[:4].detach().clone()
    n_pos = small[names[0]].shape[1]

    def reference(
        cache: dict, directions: Tensor, layer: int, head: int, pos: int
    ) -> float:
        at = torch.full((directions.shape[0],), pos % n_pos)  # one position per prompt
        every_head = head_direct_logit_attribution(model, cache, directions, at)
        return float(every_head[layer, head])

    def learner(
        cache: dict, directions: Tensor, layer: int, head: int, pos: int
    ) -> Any:
        return fn(model, cache, directions, layer, head, pos)

    middle, d = n_layers // 2, directions
    cases = [
        Case(
            "last layer, last head, last position",
            (small, directions, n_layers - 1, n_heads - 1, -1),
        ),
        Case(f"layer {middle}, head 1, last position", (small, d, middle, 1, -1)),
        Case("layer 0, head 0, position 2", (small, d, 0, 0, min(2, n_pos - 1))),
        Case(
            f"batch of 1: layer {middle}, head 0, last position",
            (one, directions[:1], middle, 0, -1),
        ),
    ]
    check_against_reference(
        learner,
        reference,
        cases,
        exercise="one head's direct logit attribution",
        atol=1e-4,
    )


# ---------------------------------------------------------------------------
# Interpretive exercise: predict what zeroing the late heads does
# ---------------------------------------------------------------------------

#: The outcomes a learner chooses from, by the ratio ablated / clean logit difference.
LATE_HEADS_OPTIONS = {
    "a": "the logit difference hardly moves (it keeps more than 80% of its value)",
    "b": "it shrinks but keeps its sign: Mary stays ahead of John",
    "c": "it changes sign: John overtakes Mary",
}


def late_heads_outcome(ratio: float) -> str:
    """The key of :data:`LATE_HEADS_OPTIONS` that a ratio ablated / clean falls under."""
    return "a" if ratio > 0.8 else "b" if ratio > 0 else "c"


def check_late_heads_prediction(
    fn: Callable[[], str], model: Any, tokens: Tensor, metric: Callable[[Tensor], float], *, n_late: int = 8
) -> bool:
    """Run the experiment the learner predicted (every head of the last ``n_late`` layers
    zeroed, ``metric`` the logit difference on ``tokens``) and say whether ``fn()``, a key
    of :data:`LATE_HEADS_OPTIONS`, came true on the loaded model. A wrong prediction is
    reported, not raised (:func:`utils.course.checks.interpretive.check_prediction`)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 1 <= n_late <= n_layers:
        raise ValueError(f"n_late must be in [1, {n_layers}], got {n_late}")
    late = [(layer, head) for layer in range(n_layers - n_late, n_layers) for head in range(n_heads)]
    with torch.no_grad():
        clean = metric(model(tokens))
        zeros = ablation_values(model, tokens, "zero")
        ablated = metric(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, late, zeros)))
    ratio = ablated / clean
    return check_prediction(
        fn,
        LATE_HEADS_OPTIONS,
        late_heads_outcome(ratio),
        exercise="zeroing the late heads",
        explanation=(
            f"Here the difference goes from {clean:.2f} to {ablated:.2f} ({ratio:.0%} of itself). The "
            "last layers hold the heads that move a name to the final position (chapter 02), "
            "but also heads that push the other way, and a head that outputs zeros writes a "
            "value it never writes on real text, which later layers then read: zeroing many "
            "heads at once measures all three together. Chapter 11 pulls them apart."
        ),
    )

