"""Norms inside a block that the per-head decompositions must account for.

**Post-attention norms ("sandwich" norms).** In Gemma 2 and 3 the attention layer's
output passes through its own RMSNorm (the bridge's ``blocks.{l}.ln1_post``) before it
joins the residual stream, and so does the MLP's (``ln2_post``). The layer's
``hook_attn_out`` is then *not* ``sum_h z_h @ W_O[h] (+ b_O)`` (that is
``attn.hook_out``) but

    hook_attn_out = (sum_h z_h @ W_O[h] + b_O) * g / s,

with ``g`` the norm's gain (``1 + weight`` for Gemma) and ``s`` its scale, the RMS of
``attn.hook_out`` at that position (``ln1_post.hook_scale``). The gain is a fixed
weight; the scale depends on the whole layer's output. Freezing ``s`` at its value in
the run (as direct logit attribution freezes the final norm's scale) makes the map
linear, so head ``h``'s write into the residual stream is

    z_h @ W_O[h] * g / s,

a factor ``g / s`` shared by the layer's heads; these writes sum to ``hook_attn_out``
exactly (plus ``b_O * g / s`` where there is an output bias). Models without a
post-attention norm (GPT-2, Llama, SmolLM2, ...) have factor 1 and nothing changes.

Every per-head decomposition of the library reads the factor from here:
:func:`utils.attribution.dla.head_writes` (and so all of direct logit attribution),
:mod:`utils.interventions.effects` (direct effects), :mod:`utils.attribution.circuits`
(the gain is part of the OV map), :mod:`utils.interventions.steering` and
:func:`utils.interventions.hooks.project_out_of_heads_hooks`.

**QK norms.** Gemma 3 (and Qwen 3, OLMo 2, ...) RMS-normalise each head's query and key
(``attn.q_norm``, ``attn.k_norm``) before the rotary embedding, so the attention score
is not a bilinear form of the residual stream: see :func:`qk_norms`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

__all__ = [
    "apply_post_norm",
    "has_post_attention_norm",
    "has_qk_norm",
    "norm_gain",
    "post_norm_factor",
    "post_attention_norm",
    "post_norm_gain",
    "post_norm_scale",
    "post_norm_scale_name",
    "qk_norm_note",
    "qk_norms",
    "rms_normalise",
    "rms_scale",
    "warn_qk_norm",
]


def _blocks(model: Any) -> Any:
    return getattr(model, "blocks", None)


def post_attention_norm(model: Any, layer: int) -> Any | None:
    """The norm that layer ``layer``'s attention output passes through before the
    residual stream (``blocks[layer].ln1_post``), or ``None`` when there is none."""
    blocks = _blocks(model)
    if blocks is None:
        return None
    norm = getattr(blocks[layer], "ln1_post", None)
    if norm is None or isinstance(getattr(norm, "original_component", None), torch.nn.Identity):
        return None
    return norm


def has_post_attention_norm(model: Any) -> bool:
    """Whether the attention output of (any) layer is normalised before the residual
    stream, as in Gemma 2 and 3."""
    blocks = _blocks(model)
    if blocks is None:
        return False
    return any(post_attention_norm(model, layer) is not None for layer in range(len(blocks)))


def norm_gain(norm: Any) -> Tensor:
    """The gain a bridge norm multiplies by: ``1 + weight`` for Gemma-style norms
    (``uses_weight_offset``), else ``weight`` (ones when it has none)."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        raise ValueError(f"the norm {norm!r} has no weight")
    weight = weight.detach()
    return (1.0 + weight) if bool(getattr(norm, "uses_weight_offset", False)) else weight


def _norm_eps(model: Any, norm: Any) -> float:
    component = getattr(norm, "original_component", None)
    for name in ("eps", "variance_epsilon"):
        value = getattr(component, name, None)
        if value is not None:
            return float(value)
    return float(getattr(model.cfg, "eps", 1e-6))


def rms_normalise(values: Tensor, eps: float = 1e-6) -> Tensor:
    """``values`` divided by their root mean square over the last dimension (``eps``
    added to the mean square), as an RMS norm does before its gain."""
    return values / rms_scale(values, eps)


def rms_scale(values: Tensor, eps: float = 1e-6) -> Tensor:
    """The root mean square of ``values`` over the last dimension, ``eps`` added to the
    mean square: an RMS norm's scale, ``(..., 1)``."""
    return (values.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def post_norm_gain(model: Any, layer: int) -> Tensor | None:
    """The post-attention norm's gain ``g`` of ``layer``, ``(d_model,)``; ``None``
    without a post-attention norm."""
    norm = post_attention_norm(model, layer)
    return None if norm is None else norm_gain(norm)


def post_norm_scale_name(layer: int) -> str:
    """Hook name of the post-attention norm's scale, ``blocks.{layer}.ln1_post.hook_scale``."""
    return f"blocks.{layer}.ln1_post.hook_scale"


def _layer_output_from_cache(model: Any, cache: Any, layer: int) -> Tensor | None:
    """``attn.hook_out`` of ``layer`` rebuilt from the cache (``sum_h z_h W_O[h] + b_O``)."""
    from utils.attribution.circuits import expand_kv_heads  # a late import: circuits imports this
    from utils.core.models import attention_weight

    W_O = attention_weight(model, "W_O", layer)
    z_name = get_act_name("z", layer)
    if z_name in cache:
        z = cache[z_name]
    elif get_act_name("pattern", layer) in cache and get_act_name("v", layer) in cache:
        pattern = cache[get_act_name("pattern", layer)]  # (batch, head, query, key)
        values = expand_kv_heads(cache[get_act_name("v", layer)], model.cfg.n_heads, head_dim=2)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, values.to(pattern.dtype))
    else:
        return None
    out = torch.einsum("bphd,hdm->bpm", z, W_O.to(z.device, z.dtype))
    b_O = attention_weight(model, "b_O", layer)
    return out if b_O is None else out + b_O.to(out.device, out.dtype)


def post_norm_scale(model: Any, cache: Any, layer: int) -> Tensor | None:
    """The post-attention norm's scale ``s`` of ``layer`` in a cached run,
    ``(batch, pos, 1)``; ``None`` without a post-attention norm.

    Read from ``blocks.{layer}.ln1_post.hook_scale`` when the cache holds it; otherwise
    recomputed (the same numbers up to rounding) from what the cache holds of the
    layer: ``attn.hook_out``, every head's ``hook_z``, or ``hook_pattern`` and
    ``hook_v``.

    Raises:
        ValueError: the model has a post-attention norm and the cache holds none of these.
    """
    norm = post_attention_norm(model, layer)
    if norm is None:
        return None
    name = post_norm_scale_name(layer)
    if name in cache:
        return cache[name]
    out_name = f"blocks.{layer}.attn.hook_out"
    out = cache[out_name] if out_name in cache else _layer_output_from_cache(model, cache, layer)
    if out is None:
        raise ValueError(
            f"layer {layer} normalises its attention output (ln1_post): the cache needs "
            f"{name}, or {out_name}, or blocks.{layer}.attn.hook_z of every head"
        )
    return rms_scale(out.float(), _norm_eps(model, norm))


def post_norm_factor(model: Any, cache: Any, layer: int) -> Tensor | None:
    """What each head's ``z @ W_O`` of ``layer`` is multiplied by on its way into the
    residual stream, ``g / s``: ``(batch, pos, d_model)``; ``None`` (a factor of 1)
    without a post-attention norm. The scale is frozen at the cached run."""
    gain = post_norm_gain(model, layer)
    if gain is None:
        return None
    scale = post_norm_scale(model, cache, layer)
    return gain.to(scale.device, scale.dtype) / scale


def apply_post_norm(model: Any, layer: int, out: Tensor) -> Tensor:
    """Layer ``layer``'s post-attention norm applied to an attention output ``out``
    (``(..., d_model)``, like ``attn.hook_out``), recomputing its scale; ``out`` itself
    without a post-attention norm."""
    norm = post_attention_norm(model, layer)
    if norm is None:
        return out
    values = rms_normalise(out.float(), _norm_eps(model, norm))
    return (values * norm_gain(norm).to(values.device)).to(out.dtype)


# ---------------------------------------------------------------------------
# QK norms
# ---------------------------------------------------------------------------


def qk_norms(model: Any, layer: int) -> tuple[Any, Any] | None:
    """Layer ``layer``'s per-head query and key norms ``(attn.q_norm, attn.k_norm)``,
    or ``None`` when queries and keys are not normalised.

    With QK norms, head ``h``'s score between a query at ``i`` and a key at ``j`` is
    ``RoPE(x_i W_Q g_q / s_q(i)) . RoPE(x_j W_K g_k / s_k(j)) / sqrt(d_head)``, where
    ``s_q(i)`` and ``s_k(j)`` are the RMS of the head's query and key at those positions
    (before the gains ``g_q``, ``g_k``). The gains are weights; the scales depend on
    the input, per head and position.
    """
    blocks = _blocks(model)
    if blocks is None:
        return None
    attn = getattr(blocks[layer], "attn", None)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is None or k_norm is None:
        return None
    return q_norm, k_norm


def has_qk_norm(model: Any) -> bool:
    """Whether the model RMS-normalises each head's queries and keys (Gemma 3, Qwen 3, ...)."""
    blocks = _blocks(model)
    return blocks is not None and len(blocks) > 0 and qk_norms(model, 0) is not None


def qk_norm_note(model: Any) -> str | None:
    """What a QK circuit read from the weights leaves out on this model, or ``None``."""
    if not has_qk_norm(model):
        return None
    return (
        "this model RMS-normalises each head's queries and keys before the rotary "
        "embedding (attn.q_norm, attn.k_norm): the QK circuit read from the weights "
        "includes the norms' gains but leaves out their per-position scales (the RMS of "
        "the head's query and key, which divide each score by s_q(i) * s_k(j)) and the "
        "rotation, so it ranks keys only as far as their keys' RMS are alike"
    )


def warn_qk_norm(model: Any, what: str = "a QK circuit") -> None:
    """Warn (once per call site) that ``what`` ignores the model's QK norms."""
    note = qk_norm_note(model)
    if note is not None:
        warnings.warn(f"{what}: {note}", stacklevel=3)
