"""Checks for the exercises of chapter 10 (Activation patching).

Each ``check_*`` function takes the learner's function (and, for the patching loops,
the loaded model), compares it with the course's reference in :mod:`utils.interventions.patching` on
random and edge-case inputs, prints one line when every case matches and raises
:class:`utils.course.checks.CheckFailed` otherwise.

The checks that need the model build their own two IOI prompts (and their ABC
corruptions) with :func:`utils.data.ioi.ioi_dataset`, so that they stay small: a
handful of forward passes on two short prompts.
"""

from __future__ import annotations

from types import SimpleNamespace

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from utils.analysis.stats import bootstrap_ci
from utils.course.checks import Case, Hook, check_against_reference, run_hook
from utils.data.ioi import IOIDataset, ioi_dataset
from utils.core.metrics import logit_diff
from utils.interventions.hooks import replace_heads_hooks
from utils.interventions.patching import (
    attribution_patching_sweep,
    normalise_patching,
)
from utils.interventions.engine import cache_run, replace_heads_sweep

__all__ = [
    "check_normalise_patching",
    "check_head_patch_hook",
    "check_patch_heads",
    "check_attribution_patching",
    "check_claim_stands",
    "claim_stands",
]

Metric = Callable[[Tensor], Tensor]


# ---------------------------------------------------------------------------
# Shared inputs
# ---------------------------------------------------------------------------



def _small_ioi(model: Any, seed: int = 3) -> tuple[IOIDataset, Metric]:
    """Two IOI prompts with their corruptions, and the logit difference on them."""
    ioi = ioi_dataset(model, 2, seed=seed)

    def metric(logits: Tensor) -> Tensor:
        return logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)

    return ioi, metric


# ---------------------------------------------------------------------------
# Exercise: the normalised patching metric
# ---------------------------------------------------------------------------


def check_normalise_patching(fn: Callable[[Tensor, float, float], Tensor]) -> None:
    """Check ``fn(values, clean_value, corrupted_value) -> Tensor`` (same shape as
    ``values``) against :func:`utils.interventions.patching.normalise_patching`."""
    generator = torch.Generator().manual_seed(10)
    grid = torch.randn(5, 4, generator=generator) * 2
    cases = [
        Case(
            "random (layers, heads) grid, clean 3.3, corrupted -1.1",
            (grid, 3.3, -1.1),
        ),
        Case(
            "the two baselines themselves map to 1 and 0",
            (torch.tensor([3.3, -1.1, 1.1]), 3.3, -1.1),
        ),
        Case(
            "clean below corrupted (an answer that flips sign)",
            (torch.randn(6, generator=generator), -4.2, 3.3),
        ),
        Case(
            "both baselines positive",
            (torch.randn(3, 3, generator=generator), 5.0, 2.0),
        ),
        Case("a single value (0-d tensor)", (torch.tensor(0.7), 2.0, 0.5)),
    ]
    check_against_reference(
        fn, normalise_patching, cases, exercise="normalised patching metric"
    )


# ---------------------------------------------------------------------------
# Exercise: a position-specific patching hook
# ---------------------------------------------------------------------------


def check_head_patch_hook(
    fn: Callable[[Tensor, int, "Sequence[int] | None"], Hook],
) -> None:
    """Check ``fn(source_z, head, positions)``, a factory of ``hook_z`` hooks that copy
    one head's output from ``source_z`` at ``positions`` (all positions for ``None``).

    Each case applies the learner's hook and the reference hook to the same random
    ``hook_z`` tensor ``(batch, pos, n_heads, d_head)`` and compares what they return
    (or, for a hook that returns ``None``, the tensor it edited in place).
    """
    generator = torch.Generator().manual_seed(11)

    def pair(batch: int, n_pos: int, n_heads: int = 4) -> tuple[Tensor, Tensor]:
        shape = (batch, n_pos, n_heads, 8)
        z = torch.randn(*shape, generator=generator)
        return z, torch.randn(*shape, generator=generator)

    def apply(
        factory: Callable[..., Hook],
        z: Tensor,
        source_z: Tensor,
        head: int,
        positions: Sequence[int] | None,
    ) -> Tensor:
        return run_hook(factory(source_z, head, positions), z)

    def reference(source_z: Tensor, head: int, positions: Sequence[int] | None) -> Hook:
        one_layer = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=source_z.shape[2]))

        def hook(z: Tensor, hook: Any) -> Tensor:
            batch, n_pos = z.shape[:2]
            if positions is None:
                replace = replace_heads_hooks(one_layer, [(0, head)], [source_z])
                return replace[0][1](z, hook)
            for position in positions:
                at = torch.full((batch,), position % n_pos, dtype=torch.long)
                z = replace_heads_hooks(one_layer, [(0, head)], [source_z], positions=at)[0][1](z, hook)
            return z

        return hook

    cases = [
        Case("head 1 at position 3 (batch 2, 6 positions)", (*pair(2, 6), 1, [3])),
        Case("head 0 at two positions, [2, 4]", (*pair(2, 6), 0, [2, 4])),
        Case("last head (3) at the last position, given as -1", (*pair(2, 6), 3, [-1])),
        Case("head 2 at every position (positions=None)", (*pair(2, 5), 2, None)),
        Case("batch of 1, first position", (*pair(1, 4), 1, [0])),
    ]
    check_against_reference(
        lambda *args: apply(fn, *args),
        lambda *args: apply(reference, *args),
        cases,
        exercise="position-specific patching hook",
    )


# ---------------------------------------------------------------------------
# Exercise: the per-head patching loop
# ---------------------------------------------------------------------------


def check_patch_heads(
    fn: Callable[[Any, Tensor, Tensor, Metric, int, Sequence[int]], Tensor], model: Any
) -> None:
    """Check ``fn(model, base_tokens, source_tokens, metric, layer, heads)``, the naive
    loop that patches each of ``heads`` of ``layer`` (all positions) with one forward
    pass per head, against the fast exact patching of :mod:`utils.interventions.patching`
    (:func:`utils.interventions.patching.head_patching_sweep` without its input checks: the clean
    and corrupted runs are cached once for both cases).

    Two cases on two IOI prompts: denoising two heads of the last layer, and noising
    one head of an earlier layer (so that the patch must travel through later blocks).
    """
    ioi, metric = _small_ioi(model)
    tokens = {"clean": ioi.tokens, "corrupted": ioi.corrupted_tokens}
    runs = {name: cache_run(model, value) for name, value in tokens.items()}
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    last, earlier = n_layers - 1, max(0, n_layers - 4)

    def learner(base: str, source: str, layer: int, heads: list[int]) -> Any:
        with torch.no_grad():
            return fn(model, tokens[base], tokens[source], metric, layer, heads)

    def reference(base: str, source: str, layer: int, heads: list[int]) -> Tensor:
        every_head = replace_heads_sweep(
            model, runs[base], runs[source].z, metric, layers=[layer]
        )
        return every_head[0, heads]

    cases = [
        Case(
            f"denoising: corrupted run, clean source, heads 0 and {n_heads - 1} of the "
            f"last layer ({last})",
            ("corrupted", "clean", last, [0, n_heads - 1]),
        ),
        Case(
            f"noising: clean run, corrupted source, head 1 of layer {earlier}",
            ("clean", "corrupted", earlier, [1]),
        ),
    ]
    check_against_reference(
        learner, reference, cases, exercise="per-head patching loop", atol=1e-4
    )


# ---------------------------------------------------------------------------
# Exercise: attribution patching
# ---------------------------------------------------------------------------


def check_attribution_patching(
    fn: Callable[[Any, Tensor, Tensor, Metric], Tensor], model: Any
) -> None:
    """Check ``fn(model, base_tokens, source_tokens, metric) -> Tensor[n_layers,
    n_heads]``, the attribution-patching estimate of patching every head, against
    :func:`utils.interventions.patching.attribution_patching_sweep`.

    The learner's function is called with gradients switched off, as in the chapter, so
    it has to switch them on itself where it needs them. One case, denoising on two IOI
    prompts, keeps the check to a few forward and backward passes; it sees every head
    of every layer.
    """
    ioi, metric = _small_ioi(model)
    clean, corrupted = ioi.tokens, ioi.corrupted_tokens

    def learner(base: Tensor, source: Tensor, metric: Metric) -> Any:
        with torch.no_grad():
            return fn(model, base, source, metric)

    def reference(base: Tensor, source: Tensor, metric: Metric) -> Tensor:
        with torch.no_grad():
            return attribution_patching_sweep(model, source, base, metric)

    cases = [
        Case(
            "denoising: corrupted run, clean source (2 prompts)",
            (corrupted, clean, metric),
        ),
    ]
    check_against_reference(
        learner, reference, cases, exercise="attribution patching", atol=1e-4, rtol=1e-3
    )


# ---------------------------------------------------------------------------
# Exercise: what would falsify a head-level claim?
# ---------------------------------------------------------------------------


def claim_stands(effects: Tensor, null_effects: Tensor, bound: float) -> bool:
    """The reference decision rule: the 95% bootstrap interval of the mean held-out
    effect lies above ``bound`` and above every layer-matched null draw."""
    _, low, _ = bootstrap_ci(effects)
    return bool(low > bound and low > float(torch.as_tensor(null_effects).max()))


def check_claim_stands(fn: Callable[[Tensor, Tensor, float], bool]) -> None:
    """Check ``fn(effects, null_effects, bound) -> bool`` against :func:`claim_stands`
    on synthetic held-out effects: a clear effect, a mean that clears the bound while
    its interval does not, an interval that clears the bound while a null draw is
    larger, and an effect that is negative."""
    generator = torch.Generator().manual_seed(11)

    def effects(mean: float, spread: float, n: int = 32) -> Tensor:
        return mean + spread * torch.randn(n, generator=generator)

    quiet_null = 0.05 * torch.randn(20, generator=generator)
    loud_null = torch.cat([quiet_null[:19], torch.tensor([0.9])])
    cases = [
        Case("a clear effect, a quiet null", (effects(0.8, 0.2), quiet_null, 0.3)),
        Case("the mean clears the bound but its interval does not", (effects(0.4, 1.0, n=12), quiet_null, 0.3)),
        Case("the interval clears the bound, one null draw is larger", (effects(0.8, 0.2), loud_null, 0.3)),
        Case("a negative effect", (effects(-0.5, 0.2), quiet_null, 0.3)),
    ]

    def learner(*args: Any) -> Any:
        answer = fn(*args)
        if not isinstance(answer, (bool, torch.Tensor)) and answer not in (0, 1):
            raise TypeError(f"return True or False, got {answer!r}")
        return bool(answer)

    check_against_reference(learner, claim_stands, cases, exercise="what would falsify the claim")
