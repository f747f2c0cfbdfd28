"""Choosing heads from a score map, drawing random control heads, and naming heads.

Every chapter ends an experiment the same way: take the ``k`` heads with the highest
score, compare them with ``k`` random heads (the control group), and print them as
``layer.head``. These three helpers are that shared vocabulary.
"""

from __future__ import annotations

import random
from typing import Any, Iterable

from torch import Tensor

from utils.hooks import Head, check_heads, check_layer

__all__ = ["Head", "top_heads", "random_heads", "format_heads"]


def top_heads(scores: Tensor, k: int, *, largest: bool = True) -> list[Head]:
    """The ``k`` heads with the largest (or, with ``largest=False``, smallest) scores,
    best first.

    Args:
        scores: ``Tensor[n_layers, n_heads]``.
        k: how many heads, between 1 and the number of heads.

    Raises:
        ValueError: ``scores`` is not a 2-D tensor, or ``k`` is out of range.
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a (n_layers, n_heads) tensor, got {shape}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= scores.numel():
        raise ValueError(f"k must be an int in [1, {scores.numel()}], got {k!r}")
    n_heads = scores.shape[1]
    indices = scores.flatten().topk(k, largest=largest).indices
    return [divmod(int(i), n_heads) for i in indices]


def random_heads(
    model: Any, k: int, *, seed: int = 0, exclude: Iterable[Head] = (), min_layer: int = 0
) -> list[Head]:
    """``k`` distinct heads drawn uniformly with ``random.Random(seed)`` from layers
    ``>= min_layer``, avoiding ``exclude``; sorted by layer and head.

    The control group for an intervention: if ablating ``k`` chosen heads hurts more
    than ablating ``k`` random ones, the choice mattered.

    Raises:
        ValueError: a head in ``exclude`` or ``min_layer`` is out of range, or fewer
            than ``k`` heads are left to draw from.
    """
    check_layer(model, min_layer)
    exclude = list(exclude)
    excluded = set(check_heads(model, exclude)) if exclude else set()
    pool = [
        (layer, head)
        for layer in range(min_layer, model.cfg.n_layers)
        for head in range(model.cfg.n_heads)
        if (layer, head) not in excluded
    ]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(pool):
        raise ValueError(f"k must be an int in [1, {len(pool)}] (heads left to draw), got {k!r}")
    return sorted(random.Random(seed).sample(pool, k))


def format_heads(heads: Iterable[Head], scores: Tensor | None = None, *, digits: int = 2) -> str:
    """``"18.6 (1.00), 20.6 (0.91)"``: heads as ``layer.head``, with their scores if given."""
    parts = []
    for layer, head in heads:
        label = f"{layer}.{head}"
        if scores is not None:
            label += f" ({float(scores[layer, head]):.{digits}f})"
        parts.append(label)
    return ", ".join(parts) if parts else "none"
