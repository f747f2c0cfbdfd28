"""Checks for the exercises of chapter 11 (Ablation).

Each ``check_*`` function takes the learner's function (and, for the direct effect,
the loaded model), compares it with the course's reference in :mod:`utils.interventions.ablation`
and :mod:`utils.interventions.hooks` on random and edge-case inputs, prints one line when every case
matches and raises :class:`utils.course.checks.CheckFailed` otherwise.

A derangement is random, so the learner's cannot be compared number by number with the
reference's: its check compares what every correct answer shares instead (a
permutation, no fixed point, reproducible from the seed, varying with the seed).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from utils.interventions.effects import head_effects
from utils.interventions.ablation import ablation_values, derangement, mean_over_prompts
from utils.analysis.stats import bootstrap_ci
from utils.course.checks.interpretive import check_choice, check_prediction
from utils.course.checks import Case, Hook, check_against_reference, run_hook
from utils.data.ioi import ioi_dataset
from utils.interventions.hooks import replace_heads_hooks
from utils.core.metrics import logit_diff

__all__ = [
    "check_mean_ablation_hook",
    "check_derangement",
    "check_direct_effect",
    "FALSIFIER_CHOICES",
    "check_falsifier",
    "falsification_verdict",
    "MOVER_TRANSFER_OPTIONS",
    "mover_transfer_outcome",
    "check_mover_prediction",
]

Metric = Callable[[Tensor], Tensor]



# ---------------------------------------------------------------------------
# Exercise: a mean-ablation hook
# ---------------------------------------------------------------------------


def check_mean_ablation_hook(fn: Callable[[Tensor, Sequence[int]], Hook]) -> None:
    """Check ``fn(reference_z, heads)``, a factory of ``hook_z`` hooks that replace the
    chosen heads' outputs by their per-position mean over the reference prompts.

    The reference is :func:`utils.interventions.hooks.replace_heads_hooks` with the
    per-position mean as the value, on one layer. Each case applies both hooks
    to the same random ``hook_z`` tensor ``(batch, pos, n_heads, d_head)``.
    """
    generator = torch.Generator().manual_seed(20)

    def reference(reference_z: Tensor, heads: Sequence[int]) -> Hook:
        n_heads = reference_z.shape[2]
        one_layer = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=n_heads))
        mean = mean_over_prompts(reference_z)
        chosen = [(0, head) for head in heads]
        return replace_heads_hooks(one_layer, chosen, [mean])[0][1]

    def apply(
        factory: Callable[..., Hook], z: Tensor, reference_z: Tensor, heads: list[int]
    ) -> Tensor:
        return run_hook(factory(reference_z, heads), z)

    def z(batch: int, n_pos: int, n_heads: int = 4) -> Tensor:
        # an offset per position, so that a mean over positions is visibly wrong
        offset = torch.arange(n_pos, dtype=torch.float32)[None, :, None, None]
        return torch.randn(batch, n_pos, n_heads, 8, generator=generator) + offset

    cases = [
        Case(
            "head 1; 3 prompts, 6 reference prompts, 5 positions",
            (z(3, 5), z(6, 5), [1]),
        ),
        Case("heads 0 and 3 together", (z(2, 5), z(6, 5), [0, 3])),
        Case("every head", (z(2, 4), z(5, 4), [0, 1, 2, 3])),
        Case("more prompts than reference prompts", (z(4, 3), z(2, 3), [2])),
        Case("a single reference prompt", (z(2, 4), z(1, 4), [0])),
    ]
    check_against_reference(
        lambda *args: apply(fn, *args),
        lambda *args: apply(reference, *args),
        cases,
        exercise="mean-ablation hook",
    )


# ---------------------------------------------------------------------------
# Exercise: a derangement for resample ablation
# ---------------------------------------------------------------------------


def _derangement_report(
    fn: Callable[[int, int], Any], n: int, seeds: Sequence[int]
) -> dict[str, bool]:
    """What a correct ``fn(n, seed)`` guarantees, tested over ``seeds``."""
    draws = [fn(n, seed) for seed in seeds]
    is_tensor = all(
        isinstance(d, Tensor) and d.ndim == 1 and d.dtype in (torch.int64, torch.int32)
        for d in draws
    )
    rows = [d.tolist() if isinstance(d, Tensor) else list(d) for d in draws]
    is_permutation = all(sorted(row) == list(range(n)) for row in rows)
    moves_all = is_permutation and all(
        all(value != index for index, value in enumerate(row)) for row in rows
    )
    again = [fn(n, seed) for seed in seeds]
    same = all(
        (a.tolist() if isinstance(a, Tensor) else list(a)) == row
        for a, row in zip(again, rows)
    )
    distinct = len({tuple(row) for row in rows})
    return {
        "a 1-D integer (long) tensor": is_tensor,
        "a permutation of 0..n-1": is_permutation,
        "moves every index (no prompt keeps its own activations)": moves_all,
        "the same seed gives the same permutation": same,
        "different seeds give different permutations": distinct > 1,
    }


def check_derangement(fn: Callable[[int, int], Tensor]) -> None:
    """Check ``fn(n, seed) -> LongTensor[n]``, a seeded random derangement.

    The reference :func:`utils.interventions.ablation.derangement` draws one particular derangement;
    any other correct draw is fine. So each case compares *properties* over several
    seeds: a permutation of ``range(n)`` with no fixed point, the same for the same
    seed, different for different seeds (where more than one derangement exists).
    """
    cases = [
        Case("n = 2 (only one derangement exists), seeds 0-9", (2, list(range(10)))),
        Case("n = 3, seeds 0-19", (3, list(range(20)))),
        Case("n = 8, seeds 0-19", (8, list(range(20)))),
        Case("n = 50, seeds 0-4", (50, list(range(5)))),
    ]
    check_against_reference(
        lambda n, seeds: _derangement_report(fn, n, seeds),
        lambda n, seeds: _derangement_report(derangement, n, seeds),
        cases,
        exercise="derangement",
    )


# ---------------------------------------------------------------------------
# Exercise: the direct effect of ablating a head
# ---------------------------------------------------------------------------


def check_direct_effect(
    fn: Callable[[Any, Tensor, int, int, Metric, Sequence[Tensor]], float], model: Any
) -> None:
    """Check ``fn(model, tokens, layer, head, metric, values) -> float``, the direct
    effect of replacing one head's output by ``values`` (from
    :func:`utils.interventions.ablation.ablation_values`), against the ``direct`` field of
    :func:`utils.interventions.effects.head_effects` (final norm recomputed). On a model
    with post-attention norms (Gemma 3) the head's change of write is taken through its
    layer's norm frozen at the clean run (``z @ W_O`` times
    :func:`utils.core.norms.post_norm_factor`), which a learner can compute from the
    cache; elsewhere that factor is 1 and nothing changes.

    Two cases on two IOI prompts: zero ablation of a head of the last layer, and mean
    ablation (over four other prompts of the same template) of a head of an earlier
    layer, where the direct effect differs from the total one.
    """
    ioi = ioi_dataset(model, 2, seed=4)
    reference_prompts = ioi_dataset(model, 4, seed=5)
    tokens = ioi.tokens
    values = {
        "zero": ablation_values(model, tokens, "zero"),
        "mean": ablation_values(
            model, tokens, "mean", reference_tokens=reference_prompts.tokens
        ),
    }
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    last, earlier = n_layers - 1, max(0, n_layers - 4)

    def metric(logits: Tensor) -> Tensor:
        return logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)

    def learner(layer: int, head: int, method: str) -> Any:
        with torch.no_grad():
            return fn(model, tokens, layer, head, metric, values[method])

    def reference(layer: int, head: int, method: str) -> float:
        replacement = values[method]
        effects = head_effects(model, tokens, [(layer, head)], metric, replacement, post_norm="frozen")
        return effects.direct

    cases = [
        Case(
            f"zero ablation, head {n_heads - 1} of the last layer ({last})",
            (last, n_heads - 1, "zero"),
        ),
        Case(f"mean ablation, head 0 of layer {earlier}", (earlier, 0, "mean")),
    ]
    check_against_reference(
        learner,
        reference,
        cases,
        exercise="direct effect of an ablation",
        atol=1e-4,
        rtol=1e-3,
    )


# ---------------------------------------------------------------------------
# Interpretive exercise: what would falsify "the repair is specific"?
# ---------------------------------------------------------------------------

#: The options of the exercise "What result would falsify the claim?" (chapter 11).
FALSIFIER_CHOICES = {
    "a": "control sets with the same direct effect are repaired about as much as the writers",
    "b": "control sets with the same direct effect are repaired much less than the writers",
    "c": "the writers' compensation has a bootstrap interval that excludes zero",
    "d": "zero ablation of the writers gives a different compensation from mean ablation",
}


def check_falsifier(fn: Callable[[], str]) -> None:
    """Check ``fn() -> key``, the learner's choice among :data:`FALSIFIER_CHOICES` of the
    result that would falsify "the model repairs the loss of *these* heads, not any loss
    of that size" (:func:`utils.course.checks.interpretive.check_choice`). The run's
    answer comes after the control, from :func:`falsification_verdict`.
    """
    check_choice(
        fn,
        FALSIFIER_CHOICES,
        "a",
        exercise="falsifier",
        explanation="the claim forbids it; the control below shows whether it happens",
        feedback={
            "b": "that is what the claim predicts, so it supports it.",
            "c": "that shows there is a repair, not that it is specific to these heads.",
            "d": "that is about the replacement, not about which heads were removed.",
        },
    )


def falsification_verdict(writers: float, controls: Sequence[float]) -> str:
    """What the matched control says about the claim of :func:`check_falsifier`.

    Args:
        writers: the share of their direct effect the model makes up when the writers
            are ablated.
        controls: the same share for each matched control set.
    """
    controls = [float(c) for c in controls]
    if not controls:
        raise ValueError("controls must hold at least one control set's share")
    as_much = sum(c >= writers for c in controls)
    verdict = "falsified" if as_much > len(controls) / 2 else "not falsified"
    return (
        f"the writers' loss is made up by {writers:.0%}; {as_much} of {len(controls)} matched "
        f"control sets are repaired as much or more (median {sorted(controls)[len(controls) // 2]:.0%}): "
        f"the claim is {verdict}"
    )


# ---------------------------------------------------------------------------
# Interpretive exercise: do the IOI name movers move letters too?
# ---------------------------------------------------------------------------

#: The outcomes a learner predicts for the IOI name movers mean-ablated on acronyms.
MOVER_TRANSFER_OPTIONS = {
    "a": "they lower the right letter's margin more than at least 95% of the layer-matched "
         "random sets, with an interval above zero: a mover that works across tasks",
    "b": "they lower it, but no more than random heads of their layers do (or with an "
         "interval that reaches zero): nothing specific to these heads",
    "c": "they do not lower it at all (the mean change is zero or a rise)",
}


def mover_transfer_outcome(mean_drop: float, ci_low: float, percentile: float) -> str:
    """The key of :data:`MOVER_TRANSFER_OPTIONS` that an ablation comparison falls under:
    ``"c"`` when the mean drop is not positive, ``"a"`` when it beats at least 95% of
    the null draws and its interval's lower end is above zero, ``"b"`` otherwise."""
    if mean_drop <= 0:
        return "c"
    return "a" if percentile >= 0.95 and ci_low > 0 else "b"


def check_mover_prediction(fn: Callable[[], str], comparison: Any) -> bool:
    """Say whether ``fn()``, a key of :data:`MOVER_TRANSFER_OPTIONS`, predicted what
    mean-ablating the IOI name movers does to the acronym task on the loaded model.

    Args:
        fn: returns the predicted key.
        comparison: the test, an :class:`utils.interventions.ablation.AblationComparison`
            (``.drops`` per prompt, ``.percentile`` against its null).

    A wrong prediction is reported, not raised
    (:func:`utils.course.checks.interpretive.check_prediction`).
    """
    drops = comparison.drops
    mean, low, high = bootstrap_ci(drops)
    percentile = float(comparison.percentile)
    observed = mover_transfer_outcome(float(mean), float(low), percentile)
    return check_prediction(
        fn,
        MOVER_TRANSFER_OPTIONS,
        observed,
        exercise="name movers on acronyms",
        explanation=(
            f"Here the margin falls by {mean:.2f} (95% CI {low:.2f} to {high:.2f}) over "
            f"{len(drops)} prompts, more than {percentile:.0%} of the "
            f"{len(comparison.null_sets)} random sets. The heads were chosen on IOI prompts "
            "alone, by where they look and what they write there; a label that names a "
            "task-general role predicts an effect on a task the selection never saw."
        ),
    )
