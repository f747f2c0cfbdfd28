"""The logit lens: decoding the residual stream at every layer, answer ranks and the
logit-difference direction.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from utils.core.cache import resolve_positions, take_positions
from utils.core.heads import check_layer


def residual_stack(model: Any, cache: Any, positions: Tensor | None = None) -> Tensor:
    """The residual stream at each prompt's position before each block and after the
    last one (TransformerLens's ``cache.accumulated_resid``, read at ``positions``).

    Args:
        cache: an ``ActivationCache`` holding ``hook_resid_pre`` of every layer and
            ``hook_resid_post`` of the last.
        positions: ``LongTensor[batch]``; ``None`` for the last position of every prompt.

    Returns:
        ``(n_layers + 1, batch, d_model)``; row ``l`` enters block ``l``, the last row is
        what the final norm and the unembedding read.
    """
    if not hasattr(cache, "accumulated_resid"):
        raise TypeError("residual_stack needs an ActivationCache (from run_with_cache), not a dict")
    stack = cache.accumulated_resid()  # (n_layers + 1, batch, pos, d_model)
    index = resolve_positions(positions, stack.shape[1], stack.shape[2])
    if index.ndim != 1:
        raise ValueError(f"positions must have shape ({stack.shape[1]},): one position per prompt")
    return take_positions(stack.permute(1, 2, 0, 3), index).transpose(0, 1)  # via (batch, pos, layer, d)


def unembed(model: Any, resid: Tensor) -> Tensor:
    """Apply the final norm and the unembedding to any residual vector(s) ``(..., d_model)``."""
    logits = model.ln_final(resid) @ model.W_U
    b_U = getattr(model, "b_U", None)
    return logits + b_U if b_U is not None else logits


def logit_lens(model: Any, cache: Any, positions: Tensor | None = None) -> Tensor:
    """Logits decoded from the residual stream after each layer (nostalgebraist, 2020),
    at ``positions`` (``None``: the last position of every prompt).

    Returns:
        ``(n_layers + 1, batch, d_vocab)``; the last row equals the model's logits.
    """
    return unembed(model, residual_stack(model, cache, positions))


def answer_rank(logits: Tensor, answer_ids: Tensor) -> Tensor:
    """Rank (0 = top) of each answer among the vocabulary.

    Args:
        logits: ``(..., batch, d_vocab)``.
        answer_ids: ``(batch,)``.

    Returns:
        ``(..., batch)`` ranks.
    """
    answer_logits = logits.gather(-1, answer_ids.expand(*logits.shape[:-1])[..., None].to(logits.device))
    return (logits > answer_logits).sum(dim=-1)


def layer_of(model: Any, layer: int) -> int:
    """Validate a layer index (re-exported for chapters)."""
    return check_layer(model, layer)
