"""Helpers for activation caches: which hooks to keep, and slicing a cache to one
position.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformer_lens.utilities import get_act_name

# ---------------------------------------------------------------------------
# Lean caches
# ---------------------------------------------------------------------------


def attention_and_dla_filter(name: str) -> bool:
    """``names_filter`` for ``run_with_cache`` that keeps attention patterns, head
    outputs (``hook_z``) and the final norm's scale: what attention scores, mean
    ablation and :func:`utils.attribution.dla.head_direct_logit_attribution` read."""
    return name.endswith("attn.hook_pattern") or name.endswith("attn.hook_z") or name == get_act_name("scale")


def single_position_cache(cache: Any, pos: int) -> dict[str, Tensor]:
    """The ``hook_z`` entries and the final-norm scale of a cache at one position.

    The result keeps a position axis of length 1, so
    ``head_direct_logit_attribution(model, single_position_cache(cache, -1), directions, pos=0)``
    gives the same numbers as attributing position -1 of the full cache, without
    computing every head's output at every other position.
    """
    n_layers = 0
    while get_act_name("z", n_layers) in cache:
        n_layers += 1
    if n_layers == 0 or get_act_name("scale") not in cache:
        raise ValueError("the cache needs blocks.{l}.attn.hook_z and ln_final.hook_scale entries")
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise TypeError(f"pos must be an int, got {type(pos).__name__}")
    n_pos = cache[get_act_name("z", 0)].shape[1]
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"pos {pos} is outside a prompt of {n_pos} positions")
    index = pos % n_pos
    kept = {
        get_act_name("z", layer): cache[get_act_name("z", layer)][:, index : index + 1]
        for layer in range(n_layers)
    }
    kept[get_act_name("scale")] = cache[get_act_name("scale")][:, index : index + 1]
    return kept
