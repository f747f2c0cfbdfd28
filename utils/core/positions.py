"""Positions, one way: one position per prompt is a ``LongTensor[batch]``.

A prompt set's named positions (``"IO"``, ``"S2"``, ``"END"``, ...) are
``LongTensor[batch]``, and so is every argument of the library that says where to look
or act in each prompt. Several positions per prompt (the tokens of a subject, say) are
a ``LongTensor[batch, k]``. :func:`check_positions` validates both and names the
problem.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_positions", "last_positions", "same_position"]


def check_positions(name: str, positions: Any, batch: int, n_pos: int) -> Tensor:
    """Return ``positions`` as a ``LongTensor`` of shape ``(batch,)`` or ``(batch, k)``
    with every value in ``[0, n_pos)``.

    Raises:
        TypeError: ``positions`` is not an integer tensor.
        ValueError: wrong shape or a position out of range; the message names
            ``name``.
    """
    if not isinstance(positions, Tensor) or positions.dtype not in (torch.int64, torch.int32):
        kind = f"{positions.dtype} tensor" if isinstance(positions, Tensor) else type(positions).__name__
        raise TypeError(f"{name} must be a LongTensor of shape ({batch},), got a {kind}")
    if positions.ndim not in (1, 2) or positions.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape ({batch},) or ({batch}, k), one row per prompt, got "
            f"{tuple(positions.shape)}"
        )
    if positions.numel() and (bool((positions < 0).any()) or bool((positions >= n_pos).any())):
        raise ValueError(f"{name} has positions outside [0, {n_pos - 1}]")
    return positions.long()


def last_positions(tokens: Tensor) -> Tensor:
    """The last position of every prompt of a ``(batch, pos)`` batch of equal length."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long)


def same_position(batch: int, position: int) -> Tensor:
    """``position`` for each of ``batch`` prompts, ``LongTensor[batch]`` (prompts of one
    template, where a named token sits at the same place in every prompt).

    Raises:
        ValueError: ``batch`` is not a positive int or ``position`` not a non-negative int.
    """
    for name, value, minimum in (("batch", batch, 1), ("position", position, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return torch.full((batch,), position, dtype=torch.long)
