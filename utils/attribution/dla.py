"""Direct logit attribution: what each head (or each component) writes along an
answer direction, split by the key position it read from when asked.

Everything here is built from two functions:

- :func:`head_writes`, what every head writes into the residual stream at the given
  positions (``z @ W_O``, times the post-attention norm's frozen factor on models that
  have one, see :mod:`utils.core.norms`), optionally projected on directions or split
  by key;
- :func:`frozen_final_norm`, which divides such writes by the final norm's scale from
  the cached run (the norm *frozen*, so the parts add up to the whole) and projects
  them on directions.

:func:`head_direct_logit_attribution` (per head, averaged over prompts),
:func:`direct_contributions` (per prompt, heads and MLPs),
:func:`component_direct_logit_attribution` (embedding, attention layers, MLPs) and
:func:`head_attribution_by_key` (per head and key) are the two combined. Their tests
compare them with TransformerLens's ``stack_head_results(apply_ln=True)``,
``decompose_resid`` and ``logit_attrs``. Positions follow :mod:`utils.core.positions`;
``None`` means the last position of every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.circuits import expand_kv_heads
from utils.core.cache import attention_values_and_dla_filter, resolve_positions, take_positions
from utils.core.models import attention_weight
from utils.core.norms import post_norm_factor
from utils.core.positions import check_positions

# ---------------------------------------------------------------------------
# The two building blocks
# ---------------------------------------------------------------------------


def _check_directions(directions: Tensor, batch: int, d_model: int) -> Tensor:
    """``(batch, d_model)`` directions; one ``(d_model,)`` direction is used for every prompt."""
    if isinstance(directions, Tensor) and directions.shape == (d_model,):
        return directions.expand(batch, d_model)
    if not isinstance(directions, Tensor) or directions.shape != (batch, d_model):
        shape = tuple(directions.shape) if isinstance(directions, Tensor) else type(directions).__name__
        raise ValueError(f"directions must have shape ({batch}, {d_model}) or ({d_model},), got {shape}")
    return directions


def head_writes(
    model: Any,
    cache: Any,
    positions: Tensor | None = None,
    *,
    directions: Tensor | None = None,
    by_key: bool = False,
) -> Tensor:
    """What every head writes into the residual stream at each prompt's positions.

    Head ``h`` of layer ``l`` writes ``z[l, h] @ W_O[l, h]`` (the survey's Eq. 3:
    summed over heads, plus ``b_O``, this is the layer's ``hook_attn_out``). Each
    layer's ``W_O`` is read once per call, from the layer itself
    (:func:`utils.core.models.attention_weight`), not from the bridge's stacked
    ``model.W_O``, which is rebuilt at every access.

    **Post-attention norms** (Gemma 2 and 3, see :mod:`utils.core.norms`): the layer's
    output passes through an RMSNorm before the residual stream, so the write is
    ``z[l, h] @ W_O[l, h] * g_l / s_l``, with ``g_l`` the norm's gain and ``s_l`` its
    scale at the (query) position in the cached run, *frozen* there as the final norm
    is frozen in direct logit attribution. The factor is shared by the layer's heads,
    and the writes still sum (plus ``b_O * g_l / s_l``) to ``hook_attn_out``. The scale
    is read from ``blocks.{l}.ln1_post.hook_scale`` when the cache holds it, else
    recomputed from the layer's heads. TransformerLens's ``stack_head_results``
    ignores this norm (its per-head writes are too small by ``g / s``, ~300x on Gemma 3).
    Models without a post-attention norm have a factor of 1.

    With ``directions`` the result is the write projected on each prompt's direction.
    It is computed by projecting ``W_O`` (times the post-norm factor) on the direction
    first (``d_head`` numbers per head instead of ``d_model``), which TransformerLens
    does not offer: its ``stack_head_results`` builds every ``d_model``-sized write first.

    With ``by_key`` the write at query ``q`` is split over the keys it read,
    ``A[q, k] * v_k @ W_O`` (times the post-norm factor at ``q``); summed over keys it
    is the write. TransformerLens has no such split.

    Args:
        cache: holds ``blocks.{l}.attn.hook_z`` of every layer, or with ``by_key``
            ``hook_pattern`` and ``hook_v``.
        positions: ``LongTensor[batch]``, or ``LongTensor[batch, k]`` for several
            positions per prompt; ``None`` for the last position of every prompt.
        directions: ``(batch, d_model)`` (or one ``(d_model,)`` for every prompt).

    Returns:
        ``(batch, [k,] n_layers, n_heads[, key_pos][, d_model])``: the ``k`` axis for
        2-D ``positions``, ``key_pos`` with ``by_key``, ``d_model`` without
        ``directions``.
    """
    source = get_act_name("pattern" if by_key else "z", 0)
    if source not in cache:
        needed = "hook_pattern and hook_v" if by_key else "hook_z"
        raise ValueError(f"the cache needs blocks.{{l}}.attn.{needed} of every layer (missing {source})")
    first = cache[source]
    batch, n_pos = first.shape[0], first.shape[-2] if by_key else first.shape[1]
    index = resolve_positions(positions, batch, n_pos)
    single = index.ndim == 1
    index = index[:, None] if single else index  # (batch, k)
    if directions is not None:
        directions = _check_directions(directions, batch, model.cfg.d_model)
    rows = [
        layer_head_writes(model, cache, layer, index, directions=directions, by_key=by_key)
        for layer in range(model.cfg.n_layers)
    ]
    stacked = torch.stack(rows, dim=2)  # (batch, k, layer, ...)
    return stacked[:, 0] if single else stacked


def layer_head_writes(
    model: Any,
    cache: Any,
    layer: int,
    index: Tensor,
    *,
    directions: Tensor | None = None,
    by_key: bool = False,
) -> Tensor:
    """One layer's part of :func:`head_writes`, at ``index`` (``LongTensor[batch, k]``,
    already checked), with ``directions`` ``(batch, d_model)`` or ``None``.

    Returns:
        ``(batch, k, n_heads[, key_pos][, d_model])``.
    """
    n_heads = model.cfg.n_heads
    W_O = attention_weight(model, "W_O", layer)  # (n_heads, d_head, d_model)
    factor = post_norm_factor(model, cache, layer)  # (batch, pos, d_model) or None
    device = cache[get_act_name("pattern" if by_key else "z", layer)].device
    W_O = W_O.to(device)
    at = None if factor is None else take_positions(factor, index).to(device)  # (batch, k, d_model)
    if directions is not None:
        directions = directions.to(device)
        # W_O projected on each prompt's direction (times the post-norm factor):
        # (batch, k, n_heads, d_head)
        along = directions[:, None] if at is None else directions[:, None] * at
        read_out = torch.einsum("hdm,bkm->bkhd", W_O, along.expand(index.shape[0], index.shape[1], -1))
    if by_key:
        pattern = cache[get_act_name("pattern", layer)]  # (batch, head, query, key)
        attention = take_positions(pattern.transpose(1, 2), index)  # (batch, k, head, key)
        values = expand_kv_heads(cache[get_act_name("v", layer)], n_heads, head_dim=2)  # (b, key, h, d_head)
        if directions is None:
            per_value = torch.einsum("bshd,hdm->bhsm", values, W_O)
            written = attention[..., None] * per_value[:, None]  # (batch, k, head, key, d_model)
            if at is not None:
                written = written * at[:, :, None, None, :]
        else:
            per_value = torch.einsum("bshd,bkhd->bkhs", values, read_out)
            written = attention * per_value  # (batch, k, head, key)
    else:
        z = take_positions(cache[get_act_name("z", layer)], index)  # (batch, k, head, d_head)
        if directions is None:
            written = torch.einsum("bkhd,hdm->bkhm", z, W_O)
            if at is not None:
                written = written * at[:, :, None, :]
        else:
            written = (z * read_out).sum(dim=-1)  # (batch, k, head)
    return written


def frozen_final_norm(
    cache: Any, values: Tensor, positions: Tensor | None = None, *, directions: Tensor | None = None
) -> Tensor:
    """Residual-stream writes read through the final norm *frozen* at the cached run:
    divided by ``ln_final.hook_scale`` of the same prompt and position, and, with
    ``directions``, projected on them.

    Freezing the scale makes the attribution linear, so the parts of the residual
    stream (heads, MLPs, embeddings, biases) add up to the final residual's
    contribution. In compatibility mode every writing weight is centred, so
    LayerNorm's centring leaves the writes unchanged and the scale is all that remains.

    Args:
        values: ``(batch, [k,] ..., d_model)`` writes at ``positions``, or, without
            ``directions``, any ``(batch, [k,] ...)`` values already projected (e.g.
            from ``head_writes(..., directions=...)``).
        positions: the positions the values were taken at, as for :func:`head_writes`.
        directions: ``(batch, d_model)`` or ``(d_model,)``.

    Returns:
        ``values`` divided by the scale; with ``directions``, without the last axis.
    """
    scale_name = get_act_name("scale")
    if scale_name not in cache:
        raise ValueError("the cache needs ln_final.hook_scale (the final norm's scale)")
    scale = cache[scale_name]  # (batch, pos, 1)
    batch, n_pos = scale.shape[:2]
    index = resolve_positions(positions, batch, n_pos)
    if values.shape[: index.ndim] != index.shape:
        raise ValueError(
            f"values {tuple(values.shape)} must start with the positions' shape {tuple(index.shape)}"
        )
    if directions is not None:
        directions = _check_directions(directions, batch, values.shape[-1]).to(values.device)
        middle = values.ndim - 2  # axes between the batch and d_model
        values = (values * directions.reshape(batch, *[1] * middle, -1)).sum(dim=-1)
    at = take_positions(scale, index)[..., 0].to(values.device)  # (batch[, k])
    return values / at.reshape(*at.shape, *[1] * (values.ndim - at.ndim))


# ---------------------------------------------------------------------------
# Direct logit attribution
# ---------------------------------------------------------------------------


def logit_difference_direction(model: Any, correct_ids: Tensor, incorrect_ids: Tensor) -> Tensor:
    """Unembedding direction of logit(correct) - logit(incorrect), ``(batch, d_model)``."""
    W_U = model.W_U
    return (W_U[:, correct_ids] - W_U[:, incorrect_ids]).T


def head_direct_logit_attribution(
    model: Any, cache: Any, directions: Tensor, positions: Tensor | None = None
) -> Tensor:
    """Each head's direct contribution to a logit direction at ``positions``, averaged
    over the batch.

    Every head's write is divided by the final norm's scale from the same run (so the
    contributions are in logit units and, with the other components, add up to the
    logit difference) and projected on ``directions`` (``(batch, d_model)``, e.g. from
    :func:`logit_difference_direction`). The cache needs ``hook_z`` of every layer and
    ``ln_final.hook_scale``.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    along = head_writes(model, cache, positions, directions=directions)
    return frozen_final_norm(cache, along, positions).mean(dim=0)


def direct_contributions(
    model: Any, cache: Any, direction: Tensor, positions: Tensor | None = None
) -> dict[str, Tensor]:
    """Per prompt, each head's and each MLP's direct contribution along ``direction``.

    Outputs at ``positions`` are divided by the final norm's scale of the same run, so
    with ``direction`` from :func:`utils.analysis.directions.sentiment_logit_direction`
    the values are in logits and, with the embedding and the biases, add up to the
    sentiment score. The cache needs ``hook_z`` and ``hook_mlp_out`` of every layer and
    ``ln_final.hook_scale``.

    Returns:
        ``{"heads": (batch, n_layers, n_heads), "mlp": (batch, n_layers)}``.
    """
    if not isinstance(direction, Tensor) or direction.shape != (model.cfg.d_model,):
        raise ValueError(f"direction must be a tensor of shape ({model.cfg.d_model},)")
    heads = frozen_final_norm(cache, head_writes(model, cache, positions, directions=direction), positions)
    mlp_out = _layer_outputs(cache, "mlp_out", positions)  # (batch, n_layers, d_model)
    return {"heads": heads, "mlp": frozen_final_norm(cache, mlp_out, positions, directions=direction)}


def _layer_outputs(cache: Any, name: str, positions: Tensor | None) -> Tensor:
    """``hook_{name}`` of every layer at ``positions``: ``(batch, n_layers, d_model)``."""
    if not hasattr(cache, "stack_activation"):
        raise TypeError(f"reading hook_{name} of every layer needs an ActivationCache (from run_with_cache)")
    stacked = cache.stack_activation(name).transpose(0, 1)  # (batch, layer, pos, d_model)
    index = resolve_positions(positions, stacked.shape[0], stacked.shape[2])
    if index.ndim != 1:
        raise ValueError(f"positions must have shape ({stacked.shape[0]},): one position per prompt")
    return take_positions(stacked.transpose(1, 2), index)


def component_direct_logit_attribution(
    model: Any, cache: Any, directions: Tensor, positions: Tensor | None = None
) -> dict[str, Tensor]:
    """Direct contribution of the embedding, each attention layer and each MLP, averaged
    over the batch; the values plus the final-bias term sum to the logit difference.

    The cache must be an ``ActivationCache`` holding ``hook_embed`` (and
    ``hook_pos_embed`` where the model has learned positions), ``hook_attn_out`` and
    ``hook_mlp_out`` of every layer and ``ln_final.hook_scale``.

    Returns:
        ``{"embed": scalar, "attn": Tensor[n_layers], "mlp": Tensor[n_layers]}``.
    """
    embed = cache["hook_embed"]
    if "hook_pos_embed" in cache:
        embed = embed + cache["hook_pos_embed"]
    index = resolve_positions(positions, embed.shape[0], embed.shape[1])
    if index.ndim != 1:
        raise ValueError(f"positions must have shape ({embed.shape[0]},): one position per prompt")
    parts = {
        "embed": take_positions(embed, index),
        "attn": _layer_outputs(cache, "attn_out", index),
        "mlp": _layer_outputs(cache, "mlp_out", index),
    }
    return {
        key: frozen_final_norm(cache, value, index, directions=directions).mean(dim=0)
        for key, value in parts.items()
    }


# ---------------------------------------------------------------------------
# Split by key position and by source
# ---------------------------------------------------------------------------


def head_attribution_by_key(
    model: Any, cache: Any, directions: Tensor, positions: Tensor | None = None, *, keys: Tensor | None = None
) -> Tensor:
    """Each head's direct logit attribution at ``positions``, split by the key it read from.

    A head's output at a query is a weighted sum over keys, ``sum_k A[q, k] * v_k W_O``;
    projecting each term on ``directions`` (through the frozen final norm, as in
    :func:`head_direct_logit_attribution`) says how much of the head's push toward the
    answer came from each key position. Summed over keys, the parts give the head's
    direct logit attribution. TransformerLens has no such split.

    Args:
        cache: holds ``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.attn.hook_v`` for
            every layer and ``ln_final.hook_scale``.
        directions: ``(batch, d_model)`` unembedding directions, e.g. of the answers.
        positions: the query position of each prompt (``LongTensor[batch]``, e.g.
            ``positions["END"]`` of right-padded prompts); ``None`` for the last.

        keys: one key position per prompt (``LongTensor[batch]``, e.g. where a given
            word sits): return only the part read from that key.

    Returns:
        ``(batch, n_layers, n_heads, key_pos)``, or ``(batch, n_layers, n_heads)`` with ``keys``.

    Raises:
        ValueError: ``keys`` is not one position per prompt inside the prompts.
    """
    along = frozen_final_norm(cache, head_writes(model, cache, positions, directions=directions, by_key=True), positions)
    if keys is None:
        return along
    batch, n_keys = along.shape[0], along.shape[-1]
    keys = check_positions("keys", keys, batch, n_keys)
    if keys.ndim != 1:
        raise ValueError(f"keys must hold one position per prompt, shape ({batch},)")
    return along[torch.arange(batch), ..., keys.to(along.device)]


@dataclass
class SourceAttribution:
    """Direct logit attribution of every head, split by where it attended.

    Each field is ``(n_layers, n_heads)``, averaged over the prompts, in logits;
    ``subject + relation + bos == total`` (up to rounding). ``final`` is the part of
    ``relation`` read from the final position itself (the query's own token).
    """

    total: Tensor
    subject: Tensor
    relation: Tensor
    bos: Tensor
    final: Tensor | None = None


def attribution_by_source(
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    subject_mask: Tensor,
    end_positions: Tensor,
    *,
    baseline_ids: Tensor | None = None,
) -> SourceAttribution:
    """Split each head's direct logit attribution to the answer into subject, relation
    and BOS parts, averaged over factual prompts of any lengths.

    All prompts run in one batch; each head's attribution is read at the prompt's own
    last real token ``end_positions[b]`` (right padding after it is never attended to).
    The *relation* tokens are the prompt tokens up to and including that position that
    are neither BOS (position 0) nor part of the subject; ``final`` gives that
    position's part on its own.

    Args:
        tokens: ``(batch, pos)``, BOS first, right-padded (as
            :func:`utils.data.facts.factual_recall_dataset` gives them).
        answer_ids: ``(batch,)`` single-token answers.
        subject_mask: ``BoolTensor[batch, pos]``, true at the subject's tokens.
        end_positions: ``LongTensor[batch]``, the last real token of each prompt.
        baseline_ids: token ids whose mean unembedding is subtracted from each answer's:
            the attribution is then to the logit difference answer - baseline (e.g. all
            the prompts' answers, i.e. logits centred over the candidate answers), so a
            push that raises every candidate alike (a BOS head's constant vector) does
            not count. ``None`` attributes the raw answer logit.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a (batch, pos) tensor, got {getattr(tokens, 'shape', tokens)}")
    if baseline_ids is not None and (not isinstance(baseline_ids, Tensor) or baseline_ids.ndim != 1
                                     or baseline_ids.numel() == 0):
        raise ValueError("baseline_ids must be a non-empty 1-D tensor of token ids")
    n_prompts, n_pos = tokens.shape
    if n_prompts == 0:
        raise ValueError("no prompts given")
    if not isinstance(answer_ids, Tensor) or answer_ids.shape != (n_prompts,):
        raise ValueError(f"answer_ids must be a tensor of shape ({n_prompts},)")
    end = check_positions("end_positions", end_positions, n_prompts, n_pos)
    if end.ndim != 1:
        raise ValueError(f"end_positions must have shape ({n_prompts},)")
    if not isinstance(subject_mask, Tensor) or subject_mask.dtype != torch.bool or subject_mask.shape != tokens.shape:
        raise ValueError(f"subject_mask must be a BoolTensor of shape {tuple(tokens.shape)}, like tokens")
    keys = torch.arange(n_pos)
    inside = (keys[None, :] >= 1) & (keys[None, :] <= end[:, None])  # neither BOS nor padding
    subject = subject_mask.cpu()
    for index in range(n_prompts):
        if not bool(subject[index].any()) or bool((subject[index] & ~inside[index]).any()):
            raise ValueError(f"prompt {index}: the subject positions must lie in [1, {int(end[index])}]")
    _, cache = model.run_with_cache(tokens, names_filter=attention_values_and_dla_filter)
    directions = model.W_U[:, answer_ids].T
    if baseline_ids is not None:
        directions = directions - model.W_U[:, baseline_ids.to(model.W_U.device)].mean(dim=1)[None, :]
    per_key = head_attribution_by_key(model, cache, directions, end).cpu()  # (b, layer, head, key)
    relation = inside & ~subject

    def part(mask: Tensor) -> Tensor:
        return (per_key * mask[:, None, None, :].to(per_key.dtype)).sum(-1).mean(0)

    # Keys after a prompt's end get no attention from it (causal), so the total is a plain sum.
    return SourceAttribution(
        total=per_key.sum(-1).mean(0),
        subject=part(subject),
        relation=part(relation),
        bos=per_key[..., 0].mean(0),
        final=part(keys[None, :] == end[:, None]),
    )


def subject_share(subject: Tensor, relation: Tensor) -> Tensor:
    """Fraction of a head's answer-promoting push that it read from the subject.

    Only positive parts count (a part that pushes *against* the answer is not where the
    head found it): ``max(subject, 0) / (max(subject, 0) + max(relation, 0))``, and 0.5
    where neither part is positive.
    """
    if subject.shape != relation.shape:
        raise ValueError(f"subject {tuple(subject.shape)} and relation {tuple(relation.shape)} differ in shape")
    positive_subject, positive_relation = subject.clamp(min=0), relation.clamp(min=0)
    total = positive_subject + positive_relation
    return torch.where(total > 0, positive_subject / total.clamp(min=1e-12), torch.full_like(total, 0.5))
