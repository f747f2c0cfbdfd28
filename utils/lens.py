"""Reading the residual stream in vocabulary space: the logit lens and direct logit attribution."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from utils.hooks import check_layer, z_hook_name


def residual_stack(model: Any, cache: Any, pos: int = -1) -> Tensor:
    """The residual stream at ``pos`` before each block and after the last one.

    Returns:
        ``(n_layers + 1, batch, d_model)``; row ``l`` enters block ``l``, the last row is
        what the final norm and the unembedding read.
    """
    n_layers = model.cfg.n_layers
    rows = [cache[f"blocks.{layer}.hook_resid_pre"][:, pos] for layer in range(n_layers)]
    rows.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, pos])
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


def logit_difference_direction(model: Any, correct_ids: Tensor, incorrect_ids: Tensor) -> Tensor:
    """Unembedding direction of logit(correct) - logit(incorrect), ``(batch, d_model)``."""
    W_U = model.W_U
    return (W_U[:, correct_ids] - W_U[:, incorrect_ids]).T


def head_direct_logit_attribution(
    model: Any, cache: Any, directions: Tensor, pos: int = -1
) -> Tensor:
    """Each head's direct contribution to a logit direction at ``pos``.

    Every head's output is divided by the final norm's scale from the same run (so the
    contributions are in logit units and, with the other components, add up to the
    logit difference) and projected on ``directions`` (``(batch, d_model)``, e.g. from
    :func:`logit_difference_direction`); the result is averaged over the batch.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    scale = cache["ln_final.hook_scale"][:, pos]  # (batch, 1)
    directions = directions.to(scale.device)
    # A TransformerBridge assembles the stacked W_O on every access: read it once.
    W_O = model.W_O
    rows = []
    for layer in range(model.cfg.n_layers):
        z = cache[z_hook_name(layer)][:, pos]  # (batch, n_heads, d_head)
        # Project W_O on each prompt's direction first: d_head numbers per head, not d_model.
        read_out = torch.einsum("hdm,bm->bhd", W_O[layer].to(z.device), directions)
        projected = (z * read_out).sum(dim=-1)  # (batch, n_heads)
        rows.append((projected / scale).mean(dim=0))
    return torch.stack(rows)


def component_direct_logit_attribution(
    model: Any, cache: Any, directions: Tensor, pos: int = -1
) -> dict[str, Tensor]:
    """Direct contribution of the embedding, each attention layer and each MLP, averaged
    over the batch; the values plus the final-bias term sum to the logit difference.

    Returns:
        ``{"embed": scalar, "attn": Tensor[n_layers], "mlp": Tensor[n_layers]}``.
    """
    scale = cache["ln_final.hook_scale"][:, pos]
    directions = directions.to(scale.device)

    def project(resid: Tensor) -> Tensor:
        return (torch.einsum("bm,bm->b", resid[:, pos], directions) / scale[:, 0]).mean()

    embed = cache["hook_embed"]
    if "hook_pos_embed" in cache:
        embed = embed + cache["hook_pos_embed"]
    attn = torch.stack(
        [project(cache[f"blocks.{layer}.hook_attn_out"]) for layer in range(model.cfg.n_layers)]
    )
    mlp = torch.stack(
        [project(cache[f"blocks.{layer}.hook_mlp_out"]) for layer in range(model.cfg.n_layers)]
    )
    return {"embed": project(embed), "attn": attn, "mlp": mlp}


def layer_of(model: Any, layer: int) -> int:
    """Validate a layer index (re-exported for chapters)."""
    return check_layer(model, layer)
