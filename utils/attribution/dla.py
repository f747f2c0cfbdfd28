"""Direct logit attribution: what each head (or each component) writes along an
answer direction, split by the key position it reads from when asked.

The final norm is *frozen*: its scale is read from the cache of the clean run and
applied to every component's write, so the parts sum to the whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.attribution.circuits import expand_kv_heads
from utils.core.heads import check_heads, check_layer
from utils.core.positions import check_positions


def head_output(model: Any, z: Tensor, layer: int, head: int) -> Tensor:
    """What one head writes into the residual stream: ``z[..., head, :] @ W_O[layer, head]``.

    Args:
        z: ``hook_z`` of that layer, ``(batch, pos, n_heads, d_head)``.

    Returns:
        ``(batch, pos, d_model)``.
    """
    check_heads(model, [(layer, head)])
    return z[..., head, :] @ model.W_O[layer, head].to(z.device)


def all_head_outputs(model: Any, cache: Any, layer: int) -> Tensor:
    """Every head's write into the residual stream at ``layer``: ``(batch, pos, n_heads, d_model)``."""
    check_layer(model, layer)
    z = cache[get_act_name("z", layer)]
    return torch.einsum("bphd,hdm->bphm", z, model.W_O[layer].to(z.device))


def head_attribution_by_key(model: Any, cache: Any, directions: Tensor, pos: int | Tensor = -1) -> Tensor:
    """Each head's direct logit attribution at ``pos``, split by the key it read from.

    A head's output at query ``pos`` is a weighted sum over keys,
    ``sum_k A[pos, k] * v_k W_O``; projecting each term on ``directions`` (divided by the
    final norm's scale, as in :func:`utils.attribution.dla.head_direct_logit_attribution`) says how
    much of the head's push toward the answer came from each key position. Summed over
    keys, the parts give the head's direct logit attribution.

    Args:
        cache: holds ``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.attn.hook_v`` for
            every layer and ``ln_final.hook_scale``.
        directions: ``(batch, d_model)`` unembedding directions, e.g. of the answers.
        pos: the query position, one for all prompts (an int) or one per prompt
            (``LongTensor[batch]``, e.g. ``positions["END"]`` of right-padded prompts).

    Returns:
        ``(batch, n_layers, n_heads, key_pos)``.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    pattern0 = cache[get_act_name("pattern", 0)]
    batch = pattern0.shape[0]
    if not isinstance(directions, Tensor) or directions.shape != (batch, model.cfg.d_model):
        raise ValueError(
            f"directions must have shape ({batch}, {model.cfg.d_model}), got "
            f"{tuple(directions.shape) if isinstance(directions, Tensor) else type(directions).__name__}"
        )
    if isinstance(pos, Tensor):
        query = check_positions("pos", pos, batch, pattern0.shape[2]).to(pattern0.device)
        if query.ndim != 1:
            raise ValueError(f"pos must be an int or a LongTensor of shape ({batch},), one query per prompt")
    else:
        query = torch.full((batch,), pos, dtype=torch.long, device=pattern0.device)
    prompts = torch.arange(batch, device=pattern0.device)
    scale = cache[get_act_name("scale")][prompts, query]  # (batch, 1)
    rows = []
    for layer in range(n_layers):
        attention = cache[get_act_name("pattern", layer)][prompts, :, query, :]  # (batch, head, key)
        values = expand_kv_heads(cache[get_act_name("v", layer)], n_heads, head_dim=2)  # (b, key, head, d_head)
        # Project W_O on the direction first: (batch, head, d_head), cheaper than d_model outputs.
        read_out = torch.einsum("hdm,bm->bhd", model.W_O[layer], directions.to(values.device))
        per_key = torch.einsum("bkhd,bhd->bhk", values, read_out) * attention
        rows.append(per_key / scale[:, :, None])
    return torch.stack(rows, dim=1)


@dataclass
class SourceAttribution:
    """Direct logit attribution of every head, split by where it attended.

    Each field is ``(n_layers, n_heads)``, averaged over the prompts, in logits;
    ``subject + relation + bos == total`` (up to rounding).
    """

    total: Tensor
    subject: Tensor
    relation: Tensor
    bos: Tensor


def attribution_by_source(
    model: Any,
    tokens: Tensor,
    answer_ids: Tensor,
    subject_mask: Tensor,
    end_positions: Tensor,
) -> SourceAttribution:
    """Split each head's direct logit attribution to the answer into subject, relation
    and BOS parts, averaged over factual prompts of any lengths.

    All prompts run in one batch; each head's attribution is read at the prompt's own
    last real token ``end_positions[b]`` (right padding after it is never attended to).
    The *relation* tokens are the prompt tokens up to and including that position that
    are neither BOS (position 0) nor part of the subject.

    Args:
        tokens: ``(batch, pos)``, BOS first, right-padded (as
            :func:`utils.data.facts.factual_recall_dataset` gives them).
        answer_ids: ``(batch,)`` single-token answers.
        subject_mask: ``BoolTensor[batch, pos]``, true at the subject's tokens.
        end_positions: ``LongTensor[batch]``, the last real token of each prompt.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError(f"tokens must be a (batch, pos) tensor, got {getattr(tokens, 'shape', tokens)}")
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
    wanted = {get_act_name("scale")}
    for layer in range(model.cfg.n_layers):
        wanted |= {get_act_name("pattern", layer), get_act_name("v", layer)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    directions = model.W_U[:, answer_ids].T
    per_key = head_attribution_by_key(model, cache, directions, pos=end).cpu()  # (b, layer, head, key)
    relation = inside & ~subject

    def part(mask: Tensor) -> Tensor:
        return (per_key * mask[:, None, None, :].to(per_key.dtype)).sum(-1).mean(0)

    # Keys after a prompt's end get no attention from it (causal), so the total is a plain sum.
    return SourceAttribution(
        total=per_key.sum(-1).mean(0),
        subject=part(subject),
        relation=part(relation),
        bos=per_key[..., 0].mean(0),
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
    scale = cache[get_act_name("scale")][:, pos]  # (batch, 1)
    directions = directions.to(scale.device)
    # A TransformerBridge assembles the stacked W_O on every access: read it once.
    W_O = model.W_O
    rows = []
    for layer in range(model.cfg.n_layers):
        z = cache[get_act_name("z", layer)][:, pos]  # (batch, n_heads, d_head)
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
    scale = cache[get_act_name("scale")][:, pos]
    directions = directions.to(scale.device)

    def project(resid: Tensor) -> Tensor:
        return (torch.einsum("bm,bm->b", resid[:, pos], directions) / scale[:, 0]).mean()

    embed = cache["hook_embed"]
    if "hook_pos_embed" in cache:
        embed = embed + cache["hook_pos_embed"]
    attn = torch.stack(
        [project(cache[get_act_name("attn_out", layer)]) for layer in range(model.cfg.n_layers)]
    )
    mlp = torch.stack(
        [project(cache[get_act_name("mlp_out", layer)]) for layer in range(model.cfg.n_layers)]
    )
    return {"embed": project(embed), "attn": attn, "mlp": mlp}


# ---------------------------------------------------------------------------
# Who carries the signal
# ---------------------------------------------------------------------------


def direct_contributions(model: Any, cache: Any, direction: Tensor, pos: int = -1) -> dict[str, Tensor]:
    """Per prompt, each head's and each MLP's direct contribution along ``direction``.

    Outputs at ``pos`` are divided by the final norm's scale of the same run, so with
    ``direction`` from :func:`sentiment_logit_direction` the values are in logits and,
    with the embedding and the biases, add up to the sentiment score. The cache needs
    ``hook_z`` and ``hook_mlp_out`` of every layer and ``ln_final.hook_scale``.

    Returns:
        ``{"heads": (batch, n_layers, n_heads), "mlp": (batch, n_layers)}``.
    """
    if not isinstance(direction, Tensor) or direction.shape != (model.cfg.d_model,):
        raise ValueError(f"direction must be a tensor of shape ({model.cfg.d_model},)")
    scale = cache[get_act_name("scale")][:, pos]  # (batch, 1)
    direction = direction.to(scale.device)
    heads, mlps = [], []
    for layer in range(model.cfg.n_layers):
        z = cache[get_act_name("z", layer)][:, pos]  # (batch, n_heads, d_head)
        written = torch.einsum("bhd,hdm,m->bh", z, model.W_O[layer].to(z.device), direction)
        heads.append(written / scale)
        mlp = cache[get_act_name("mlp_out", layer)][:, pos] @ direction
        mlps.append(mlp / scale[:, 0])
    return {"heads": torch.stack(heads, dim=1), "mlp": torch.stack(mlps, dim=1)}
