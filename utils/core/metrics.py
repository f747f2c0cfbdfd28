"""Metrics: what an experiment measures on the logits.

A :data:`Metric` maps logits to one scalar tensor (the batch already averaged); a
:data:`PerPromptMetric` maps logits to one value per prompt, ``(batch,)``. Every
intervention in :mod:`utils.interventions` takes a ``Metric``.

The next-token loss is TransformerLens's own: ``model(tokens, return_type="loss",
loss_per_token=True)`` runs the model, and
``transformer_lens.utilities.lm_cross_entropy_loss(logits, tokens, per_token=True)``
reads given logits (both ``(batch, pos - 1)``; they agree on the bridge).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def logit_diffs(logits: Tensor, correct_ids: Tensor, incorrect_ids: Tensor) -> Tensor:
    """Per prompt, logit(correct) - logit(incorrect) at the last position: a
    :data:`PerPromptMetric` once the ids are bound.

    Args:
        logits: ``(batch, pos, d_vocab)``.
        correct_ids, incorrect_ids: token ids, ``(batch,)``.

    Returns:
        ``(batch,)``, differentiable.

    Raises:
        ValueError: the logits are not 3-dimensional, or the ids are not one per prompt.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(
            "logits must have shape (batch, pos, d_vocab), got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    batch = logits.shape[0]
    for name, ids in (("correct_ids", correct_ids), ("incorrect_ids", incorrect_ids)):
        if not isinstance(ids, Tensor) or ids.shape != (batch,):
            raise ValueError(f"{name} must be a tensor of shape ({batch},)")
    last = logits[:, -1, :]
    rows = torch.arange(batch, device=logits.device)
    correct = last[rows, correct_ids.to(logits.device)]
    incorrect = last[rows, incorrect_ids.to(logits.device)]
    return correct - incorrect


def logit_diff(logits: Tensor, correct_ids: Tensor, incorrect_ids: Tensor) -> Tensor:
    """Mean over the batch of :func:`logit_diffs`: a scalar tensor (differentiable, so
    it serves attribution patching too)."""
    return logit_diffs(logits, correct_ids, incorrect_ids).mean()


#: Logits ``(batch, pos, d_vocab)`` -> one scalar tensor, the batch already averaged
#: (e.g. a :func:`logit_diff` closure). Every intervention takes one.
Metric = Callable[[Tensor], Tensor]

#: Logits ``(batch, pos, d_vocab)`` -> one value per prompt, ``(batch,)`` (e.g.
#: :func:`utils.data.sentiment.sentiment_score` on fixed ids, or the per-token loss of
#: ``transformer_lens.utilities.lm_cross_entropy_loss(..., per_token=True)`` averaged
#: over positions).
PerPromptMetric = Callable[[Tensor], Tensor]


def metric_value(metric: Metric, logits: Tensor) -> Tensor:
    """``metric(logits)``, checked to be a scalar tensor.

    Raises:
        ValueError: the metric returns anything but a single number, e.g. one value per
            prompt (average it over the batch first).
    """
    value = metric(logits)
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    if not isinstance(value, Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"metric must return a scalar tensor, got {shape}; average per-prompt values "
            "over the batch (e.g. with .mean())"
        )
    return value
