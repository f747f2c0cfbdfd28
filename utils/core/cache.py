"""Helpers for activation caches: which hooks to keep, which layers a cache holds,
reading activations at each prompt's positions, and slicing a cache to one position.

Positions follow :mod:`utils.core.positions`: one position per prompt is a
``LongTensor[batch]``, several a ``LongTensor[batch, k]``; ``None`` stands for the last
position of every prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.positions import check_positions

__all__ = [
    "attention_and_dla_filter",
    "attention_values_and_dla_filter",
    "n_cached_layers",
    "resolve_positions",
    "single_position_cache",
    "take_positions",
]

# ---------------------------------------------------------------------------
# Lean caches
# ---------------------------------------------------------------------------


def attention_and_dla_filter(name: str) -> bool:
    """``names_filter`` for ``run_with_cache`` that keeps attention patterns, head
    outputs (``hook_z``), the final norm's scale and, on models with post-attention
    norms (Gemma 2 and 3), those norms' scales: what attention scores, mean ablation
    and :func:`utils.attribution.dla.head_direct_logit_attribution` read."""
    return (
        name.endswith("attn.hook_pattern")
        or name.endswith("attn.hook_z")
        or name.endswith("ln1_post.hook_scale")
        or name == get_act_name("scale")
    )


def attention_values_and_dla_filter(name: str) -> bool:
    """``names_filter`` for what a direct logit attribution split by key reads
    (:func:`utils.attribution.dla.head_attribution_by_key`): attention patterns, values
    (``hook_v``), the final norm's scale and the post-attention norms' scales."""
    return (
        name.endswith("attn.hook_pattern")
        or name.endswith("attn.hook_v")
        or name.endswith("ln1_post.hook_scale")
        or name == get_act_name("scale")
    )


def n_cached_layers(cache: Any, name: str) -> int:
    """How many layers of activation ``name`` (e.g. ``"pattern"``) the cache holds:
    layers ``0, 1, ...`` up to the first one missing.

    For functions that take a cache (an ``ActivationCache`` or a plain dict) but no
    model, so they cannot read ``model.cfg.n_layers``.
    """
    n_layers = 0
    while get_act_name(name, n_layers) in cache:
        n_layers += 1
    return n_layers


# ---------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------


def resolve_positions(
    positions: Tensor | None, batch: int, n_pos: int, *, name: str = "positions"
) -> Tensor:
    """``positions`` checked with :func:`utils.core.positions.check_positions`, or, for
    ``None``, the last position of every prompt (``LongTensor[batch]``)."""
    if positions is None:
        return torch.full((batch,), n_pos - 1, dtype=torch.long)
    return check_positions(name, positions, batch, n_pos)


def take_positions(activation: Tensor, positions: Tensor) -> Tensor:
    """``activation`` (``(batch, pos, ...)``) at each prompt's own positions.

    Args:
        positions: ``LongTensor[batch]`` (gives ``(batch, ...)``) or
            ``LongTensor[batch, k]`` (gives ``(batch, k, ...)``), already checked.
    """
    rows = torch.arange(activation.shape[0], device=activation.device)
    index = positions.to(activation.device)
    if index.ndim == 2:
        rows = rows[:, None]
    return activation[rows, index]


def single_position_cache(cache: Any, positions: Tensor | None = None) -> dict[str, Tensor]:
    """The ``hook_z`` entries and the final-norm scale of a cache at one position per
    prompt (``None``: the last), with the post-attention norms' scales
    (``blocks.{l}.ln1_post.hook_scale``) where the cache holds them.

    The result keeps a position axis of length 1, so
    ``head_direct_logit_attribution(model, single_position_cache(cache, positions), directions)``
    gives the same numbers as attributing ``positions`` of the full cache, while
    keeping only what that needs.
    """
    n_layers = n_cached_layers(cache, "z")
    if n_layers == 0 or get_act_name("scale") not in cache:
        raise ValueError("the cache needs blocks.{l}.attn.hook_z and ln_final.hook_scale entries")
    batch, n_pos = cache[get_act_name("z", 0)].shape[:2]
    index = resolve_positions(positions, batch, n_pos)
    if index.ndim != 1:
        raise ValueError(f"positions must have shape ({batch},): one position per prompt")
    names = [get_act_name("z", layer) for layer in range(n_layers)] + [get_act_name("scale")]
    names += [name for layer in range(n_layers) if (name := f"blocks.{layer}.ln1_post.hook_scale") in cache]
    return {name: take_positions(cache[name], index)[:, None] for name in names}
