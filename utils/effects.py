"""Direct, indirect and total effect of one head (the survey's Figure 5).

The head's output is changed from its value on the clean run to a replacement (its
value on a corrupted run, or zero). The *total* effect lets every later layer react to
the change. The *direct* effect adds the change only to the final residual stream, so
it reaches the logits through no other component. The *indirect* effect is what the
later components add on top: total minus direct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from utils.hooks import check_heads, z_hook_name


@dataclass(frozen=True)
class HeadEffects:
    """Changes of a metric caused by replacing one head's output (replacement - clean)."""

    clean: float
    total: float
    direct: float
    indirect: float


def head_effects(
    model: Any,
    clean_tokens: Tensor,
    layer: int,
    head: int,
    metric: Callable[[Tensor], Tensor],
    *,
    corrupted_tokens: Tensor | None = None,
) -> HeadEffects:
    """Direct, indirect and total effect of ``(layer, head)`` on ``metric(logits)``.

    Args:
        clean_tokens: ``(batch, pos)``.
        metric: maps logits to a scalar tensor, e.g. a ``logit_diff`` closure.
        corrupted_tokens: the replacement is the head's output on these tokens (same
            shape as ``clean_tokens``); ``None`` zero-ablates the head instead.
    """
    check_heads(model, [(layer, head)])
    name = z_hook_name(layer)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=[name])
        clean_z = clean_cache[name][:, :, head]
        if corrupted_tokens is None:
            new_z = torch.zeros_like(clean_z)
        else:
            if corrupted_tokens.shape != clean_tokens.shape:
                raise ValueError(
                    f"clean tokens {tuple(clean_tokens.shape)} and corrupted tokens "
                    f"{tuple(corrupted_tokens.shape)} must have the same shape"
                )
            _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=[name])
            new_z = corrupted_cache[name][:, :, head]

        def replace(z: Tensor, hook: Any) -> Tensor:
            z[:, :, head] = new_z
            return z

        total_logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(name, replace)])
        delta = (new_z - clean_z) @ model.W_O[layer, head]
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        direct_logits = model.run_with_hooks(
            clean_tokens, fwd_hooks=[(last, lambda resid, hook: resid + delta)]
        )
    clean = float(metric(clean_logits))
    total = float(metric(total_logits)) - clean
    direct = float(metric(direct_logits)) - clean
    return HeadEffects(clean=clean, total=total, direct=direct, indirect=total - direct)
