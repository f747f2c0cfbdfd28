"""The logit lens: decoding the residual stream at every layer, answer ranks and the
logit-difference direction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import check_layer


def residual_stack(model: Any, cache: Any, pos: int = -1) -> Tensor:
    """The residual stream at ``pos`` before each block and after the last one.

    Returns:
        ``(n_layers + 1, batch, d_model)``; row ``l`` enters block ``l``, the last row is
        what the final norm and the unembedding read.
    """
    n_layers = model.cfg.n_layers
    rows = [cache[get_act_name("resid_pre", layer)][:, pos] for layer in range(n_layers)]
    rows.append(cache[get_act_name("resid_post", n_layers - 1)][:, pos])
    return torch.stack(rows)


def unembed(model: Any, resid: Tensor) -> Tensor:
    """Apply the final norm and the unembedding to any residual vector(s) ``(..., d_model)``."""
    logits = model.ln_final(resid) @ model.W_U
    b_U = getattr(model, "b_U", None)
    return logits + b_U if b_U is not None else logits


def logit_lens(model: Any, cache: Any, pos: int = -1) -> Tensor:
    """Logits decoded from the residual stream after each layer (nostalgebraist, 2020).

    Returns:
        ``(n_layers + 1, batch, d_vocab)``; the last row equals the model's logits.
    """
    return unembed(model, residual_stack(model, cache, pos))


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
