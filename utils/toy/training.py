"""Training a :class:`~utils.toy.model.ToyTransformer` and reading its history.

:func:`train` is a plain AdamW loop. Everything random in it comes from ``seed``: the
batches are drawn from a ``torch.Generator`` seeded with it and the model carries its
own initialisation seed, so a run is reproducible whatever the global random state.
At step 0, every ``eval_every`` steps and at the end it calls ``evaluate(model)`` and
records what comes back, so the history holds the loss curve and the head scores on
the same steps. :func:`induction_evaluator` and :func:`parity_evaluator` are the two
evaluations of chapter 16.

The rest reads a finished run: when the loss dropped (:func:`phase_change_step`) and
when a score rose (:func:`rise_step`). Removing a head uses the library's own
interventions (:func:`utils.interventions.ablation.ablation_values` and
:func:`utils.interventions.hooks.replace_heads_hooks`), which work on the toy model
unchanged; intervals come from :func:`utils.analysis.stats.bootstrap_ci`.
"""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformer_lens.utilities import lm_cross_entropy_loss
from torch import Tensor

from utils.scores.patterns import induction_score, previous_token_score
from utils.toy.model import ToyTransformer, composition_scores
from utils.toy.tasks import (
    first_half_mask,
    iteration_head_share,
    masked_sequence_mean,
    repeated_half_mask,
    state_accuracy,
    state_mask,
)

__all__ = [
    "History",
    "train",
    "induction_evaluator",
    "parity_evaluator",
    "parity_loss",
    "drop_steps",
    "phase_change_step",
    "rise_step",
    "transition_width",
    "summarise_induction_run",
]

Evaluation = Callable[[ToyTransformer], dict[str, Any]]


@dataclass
class History:
    """What :func:`train` saw.

    Attributes:
        steps: the steps at which ``evaluate`` ran (0 is before any update).
        records: for each name ``evaluate`` returned, its values at ``steps``.
        train_loss: the training loss of every step.
        cpu_seconds, wall_seconds: the run's ``time.process_time`` and wall time.
    """

    steps: list[int] = field(default_factory=list)
    records: dict[str, list[Any]] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __getitem__(self, name: str) -> Tensor:
        """One record over the checkpoints, stacked: ``(n_checkpoints, ...)``."""
        if name not in self.records:
            raise KeyError(f"no record {name!r}; the history has {sorted(self.records)}")
        return torch.stack([torch.as_tensor(value, dtype=torch.float32) for value in self.records[name]])

    def final(self, name: str) -> Tensor:
        """A record's value at the last checkpoint."""
        return self[name][-1]


def train(
    model: ToyTransformer,
    sample_batch: Callable[[torch.Generator], Any],
    *,
    n_steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_every: int = 50,
    evaluate: Evaluation | None = None,
    loss_fn: Callable[[ToyTransformer, Any], Tensor] | None = None,
    num_threads: int | None = 1,
) -> History:
    """Train ``model`` in place with AdamW and return its :class:`History`.

    Args:
        model: the model to train (its weights change).
        sample_batch: draws one training batch from the generator it is given.
        n_steps: number of optimiser steps.
        lr, weight_decay: AdamW's settings (a constant learning rate).
        seed: seeds the generator the batches come from.
        eval_every: how often ``evaluate`` runs (also at step 0 and at the end).
        evaluate: returns the numbers to record, e.g. :func:`induction_evaluator`.
        loss_fn: ``loss_fn(model, batch)``; by default the batch is a token tensor and
            the loss the mean next-token cross-entropy over every position.
        num_threads: torch threads for the loop, restored afterwards; ``None`` leaves
            torch's setting alone. A toy model's matrices are so small that splitting
            them across threads costs more than it saves: on a 2-core machine shared with
            other jobs a step took 3 ms of CPU on one thread and 20-80 ms on two, the
            second thread mostly waiting for the first. A fixed thread count also fixes
            the order of floating-point sums, so a run gives the same numbers on
            machines with different numbers of cores.
    """
    if not isinstance(model, ToyTransformer):
        raise ValueError(f"model must be a ToyTransformer, got {type(model).__name__}")
    for name, value in (("n_steps", n_steps), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        # Training needs gradients even where the caller turned them off globally.
        with torch.enable_grad():
            return _train(model, sample_batch, n_steps, lr, weight_decay, seed, eval_every, evaluate, loss_fn)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    model: ToyTransformer,
    sample_batch: Callable[[torch.Generator], Any],
    n_steps: int,
    lr: float,
    weight_decay: float,
    seed: int,
    eval_every: int,
    evaluate: Evaluation | None,
    loss_fn: Callable[[ToyTransformer, Any], Tensor] | None,
) -> History:
    if loss_fn is None:
        loss_fn = lambda m, tokens: m(tokens, return_type="loss")  # noqa: E731
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = History()
    cpu_start, wall_start = time.process_time(), time.perf_counter()

    def checkpoint(step: int) -> None:
        if evaluate is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            values = evaluate(model)
        model.train(was_training)
        history.steps.append(step)
        for key, value in values.items():
            history.records.setdefault(key, []).append(value)

    model.train()
    checkpoint(0)
    for step in range(1, n_steps + 1):
        loss = loss_fn(model, sample_batch(generator))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)} at step {step}; lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.train_loss.append(float(loss.detach()))
        if step % eval_every == 0 or step == n_steps:
            checkpoint(step)
    model.eval()
    history.cpu_seconds = time.process_time() - cpu_start
    history.wall_seconds = time.perf_counter() - wall_start
    return history


# ---------------------------------------------------------------------------
# The two evaluations
# ---------------------------------------------------------------------------


def induction_evaluator(tokens: Tensor, period: int) -> Evaluation:
    """Evaluation on held-out repeated sequences of one ``period``
    (``tokens`` ``(batch, 2 * period)`` or longer; only the two copies are read).

    The returned function gives the mean loss on the first copy (``loss_first``) and
    on the predictable part of the second (``loss_repeated``), the previous-token
    scores of layer 0 and the induction scores of the last layer (from
    :mod:`utils.metrics`, one per head), and the K-composition of every layer-0 head
    with every layer-1 head (``k_composition``, ``(n_heads, n_heads)``).
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2 * period:
        raise ValueError(f"tokens must be (batch, >= {2 * period}) repeated sequences")
    tokens = tokens[:, : 2 * period]
    periods = torch.full((tokens.shape[0],), period)
    repeated = repeated_half_mask(periods, 2 * period)
    first = first_half_mask(periods, 2 * period)

    def evaluate(model: ToyTransformer) -> dict[str, Any]:
        last = model.cfg.n_layers - 1
        names = [get_act_name("pattern", layer) for layer in (0, last)]
        logits, cache = model.run_with_cache(tokens, names_filter=names)
        losses = lm_cross_entropy_loss(logits, tokens, per_token=True)
        return {
            "loss_first": float(masked_sequence_mean(losses, first).mean()),
            "loss_repeated": float(masked_sequence_mean(losses, repeated).mean()),
            "prev_token": previous_token_score(cache["pattern", 0]).cpu(),
            "induction": induction_score(cache["pattern", last], period).cpu(),
            "k_composition": composition_scores(model, "K")[0].cpu(),
        }

    return evaluate


def parity_loss(model: ToyTransformer, batch: Any) -> Tensor:
    """Cross-entropy on the states only (a ``ParityBatch``): the input bits are random,
    so training on them would only teach the model to guess."""
    logits = model(batch.tokens)
    losses = lm_cross_entropy_loss(logits, batch.tokens, per_token=True)
    mask = state_mask(batch.lengths, batch.tokens.shape[1]).to(losses.device)
    return (losses * mask).sum() / mask.sum()


def parity_evaluator(batch: Any) -> Evaluation:
    """Evaluation on held-out parity sequences (a ``ParityBatch``): the state loss, the
    share of states predicted right, and the iteration-head share of every head
    (``iteration``, ``(n_layers, n_heads)``)."""

    def evaluate(model: ToyTransformer) -> dict[str, Any]:
        names = [get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
        logits, cache = model.run_with_cache(batch.tokens, names_filter=names)
        losses = lm_cross_entropy_loss(logits, batch.tokens, per_token=True)
        mask = state_mask(batch.lengths, batch.tokens.shape[1])
        return {
            "loss": float((losses * mask).sum() / mask.sum()),
            "accuracy": float(state_accuracy(logits, batch.tokens, batch.lengths).mean()),
            "iteration": torch.stack([iteration_head_share(cache[n], batch.lengths) for n in names]),
        }

    return evaluate


# ---------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------


def _curve(steps: Sequence[int], values: Any) -> tuple[list[int], Tensor]:
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.ndim != 1 or len(steps) != len(values) or len(steps) < 3:
        raise ValueError("steps and values must be 1-D, of the same length, at least 3")
    return list(steps), values


def drop_steps(steps: Sequence[int], loss: Any, fractions: Sequence[float]) -> list[int]:
    """For each fraction ``f``, the first checkpoint at which ``loss`` has covered ``f``
    of the way from its starting value down to its lowest value.

    Raises:
        ValueError: the loss never drops (its lowest value is its first).
    """
    steps, loss = _curve(steps, loss)
    start, lowest = float(loss[0]), float(loss.min())
    if not lowest < start:
        raise ValueError("the loss never drops below its starting value")
    found = []
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {fraction}")
        level = start - fraction * (start - lowest)
        found.append(steps[int((loss <= level).nonzero()[0])])
    return found


def phase_change_step(steps: Sequence[int], loss: Any) -> int:
    """The first checkpoint at which ``loss`` is half-way down from its starting value
    to its lowest value: the middle of the drop."""
    return drop_steps(steps, loss, [0.5])[0]


def rise_step(steps: Sequence[int], score: Any) -> int:
    """The first checkpoint at which ``score`` is half-way up from its starting value
    to its highest value (the mirror image of :func:`phase_change_step`)."""
    steps, score = _curve(steps, score)
    return phase_change_step(steps, -score)


def transition_width(steps: Sequence[int], loss: Any, low: float = 0.2, high: float = 0.8) -> int:
    """Steps the loss takes from ``low`` to ``high`` of its drop: small next to the
    steps before the drop means an abrupt change."""
    start, end = drop_steps(steps, loss, [low, high])
    return end - start


def summarise_induction_run(history: History) -> dict[str, Any]:
    """The phase change and the heads of a run with :func:`induction_evaluator`.

    Returns a dict with ``onset`` (20% of the repeated-half loss drop), ``phase``
    (50%), ``end`` (80%), the losses at the start and end, the layer-0 head with the
    highest final previous-token score and the layer-1 head with the highest final
    induction score, their final scores and the checkpoints at which each score rose
    half-way (``prev_rise``, ``induction_rise``).
    """
    steps = history.steps
    loss = history["loss_repeated"]
    onset, phase, end = drop_steps(steps, loss, [0.2, 0.5, 0.8])
    prev, induction = history["prev_token"], history["induction"]
    prev_head, induction_head = int(prev[-1].argmax()), int(induction[-1].argmax())
    return {
        "onset": onset,
        "phase": phase,
        "end": end,
        "loss_start": float(loss[0]),
        "loss_final": float(loss[-1]),
        "prev_head": prev_head,
        "induction_head": induction_head,
        "prev_score": float(prev[-1, prev_head]),
        "induction_score": float(induction[-1, induction_head]),
        "prev_rise": rise_step(steps, prev[:, prev_head]),
        "induction_rise": rise_step(steps, induction[:, induction_head]),
    }
