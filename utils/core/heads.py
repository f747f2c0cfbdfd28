"""Heads as values: the one ``Head`` type, validation against a model, grouping by
layer, choosing heads from a score map and drawing random control heads.

A head prints as TransformerLens names it, ``L23H4``. Every function of the library
that takes heads takes an iterable of ``Head`` (or plain ``(layer, head)`` pairs, which
:func:`check_heads` turns into ``Head``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Iterable, NamedTuple

from torch import Tensor

__all__ = [
    "Head",
    "by_layer",
    "check_heads",
    "check_layer",
    "format_heads",
    "layer_matched_random_heads",
    "matched_heads",
    "random_heads",
    "top_heads",
]


class Head(NamedTuple):
    """One attention head. Prints as TransformerLens names heads: ``L23H4``.

    A ``Head`` is a tuple, so ``layer, head = h`` and ``scores[h]`` work; build one from
    any ``(layer, head)`` pair with ``Head(*pair)``.
    """

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    def __repr__(self) -> str:
        return f"Head({self.layer}, {self.head})"


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
    return [Head(*divmod(int(i), n_heads)) for i in indices]


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
        Head(layer, head)
        for layer in range(min_layer, model.cfg.n_layers)
        for head in range(model.cfg.n_heads)
        if (layer, head) not in excluded
    ]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(pool):
        raise ValueError(f"k must be an int in [1, {len(pool)}] (heads left to draw), got {k!r}")
    return sorted(random.Random(seed).sample(pool, k))


def layer_matched_random_heads(
    model: Any, heads: Iterable[Head], *, seed: int = 0, exclude: Iterable[Head] = ()
) -> list[Head]:
    """One random head in the layer of each of ``heads``, none of them among ``heads``
    or ``exclude``, drawn in order with ``random.Random(seed)`` and returned sorted by
    layer and head: the layer-matched null
    of a head-level claim (draw it for ``seed in range(20)`` or more).

    When every head of a layer is already taken, that draw comes from all layers. No
    heads give no draw (an empty list), so a chapter whose search found none runs on.

    Raises:
        ValueError: a head in ``heads`` or ``exclude`` is out of range, or too few heads
            are left to draw from.
    """
    heads = list(heads)
    if not heads:
        return []
    heads = check_heads(model, heads)
    exclude = list(exclude)
    taken = set(heads) | (set(check_heads(model, exclude)) if exclude else set())
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if len(taken) + len(heads) > n_layers * n_heads:
        raise ValueError(f"too few heads left to draw {len(heads)} outside the {len(taken)} taken")
    rng = random.Random(seed)
    drawn: list[Head] = []
    for layer, _ in heads:
        pool = [Head(layer, h) for h in range(n_heads) if (layer, h) not in taken]
        if not pool:
            pool = [Head(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in taken]
        drawn.append(rng.choice(pool))
        taken.add(drawn[-1])
    return sorted(drawn)


def format_heads(heads: Iterable[Head], scores: Tensor | None = None, *, digits: int = 2) -> str:
    """``"L18H6 (1.00), L20H6 (0.91)"``: heads as TransformerLens names them, with their
    scores if given."""
    parts = []
    for layer, head in heads:
        label = str(Head(layer, head))
        if scores is not None:
            label += f" ({float(scores[layer, head]):.{digits}f})"
        parts.append(label)
    return ", ".join(parts) if parts else "none"


def check_layer(model: Any, layer: int, *, allow_end: bool = False) -> int:
    """Return ``layer`` if the model has it, else raise a ``ValueError`` naming the range.

    With ``allow_end=True``, ``n_layers`` itself is accepted (the residual after the
    last block).
    """
    n_layers = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    upper = n_layers if allow_end else n_layers - 1
    if not 0 <= layer <= upper:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0..{upper}")
    return layer


def check_heads(model: Any, heads: Iterable[Head]) -> list[Head]:
    """Validate ``(layer, head)`` pairs against the model and return them as a list."""
    checked = []
    for item in heads:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"heads must be (layer, head) pairs, got {item!r}")
        layer, head = item
        check_layer(model, layer)
        if isinstance(head, bool) or not isinstance(head, int):
            raise TypeError(f"head index must be an int, got {type(head).__name__}")
        if not 0 <= head < model.cfg.n_heads:
            raise ValueError(
                f"head {head} is out of range in layer {layer}: this model has heads "
                f"0..{model.cfg.n_heads - 1}"
            )
        checked.append(Head(int(layer), int(head)))
    if not checked:
        raise ValueError("no heads given")
    return checked


def by_layer(model: Any, heads: Iterable[Head]) -> dict[int, list[int]]:
    """``{layer: [head indices]}`` for ``heads``, checked against the model, layers in
    the order they first appear."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, head in check_heads(model, heads):
        grouped[layer].append(head)
    return dict(grouped)


def matched_heads(
    scores: Tensor, heads: Iterable[Head], *, seed: int = 0, pool: int = 4, exclude: Iterable[Head] = ()
) -> list[Head]:
    """A control set for ``heads`` matched on ``scores`` (``Tensor[n_layers, n_heads]``,
    e.g. each head's clean direct logit attribution): for each head, one random head
    among the ``pool`` other heads whose score is closest to its own, heads of the same
    layer first among equally close ones, none of them in ``heads``, ``exclude`` or
    drawn already; seeded by ``random.Random(seed)``, returned sorted.

    Where a layer-matched null (:func:`layer_matched_random_heads`) compares heads with
    weak ones, this compares them with heads of about the same size of effect: the
    control for "is this about *these* heads, or about removing that much?".

    Raises:
        ValueError: ``scores`` is not 2-D, ``pool`` < 1, a head is out of range, or too
            few heads are left.
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError("scores must be a Tensor[n_layers, n_heads]")
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive int, got {pool!r}")
    n_layers, n_heads = scores.shape
    heads = [Head(int(l), int(h)) for l, h in heads]
    for l, h in [*heads, *exclude]:
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            raise ValueError(f"head L{l}H{h} is outside the scores' {n_layers} x {n_heads} heads")
    taken = set(heads) | {Head(int(l), int(h)) for l, h in exclude}
    if len(taken) + len(heads) > n_layers * n_heads:
        raise ValueError(f"too few heads left to draw {len(heads)} outside the {len(taken)} taken")
    rng = random.Random(seed)
    drawn: list[Head] = []
    for layer, head in heads:
        target = float(scores[layer, head])
        free = [Head(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in taken]
        free.sort(key=lambda c: (abs(float(scores[c.layer, c.head]) - target), c.layer != layer))
        drawn.append(rng.choice(free[:pool]))
        taken.add(drawn[-1])
    return sorted(drawn)
