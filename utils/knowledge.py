"""Knowledge Recalling (survey section 3.2): where heads read a fact from, and how to
block or tilt what they recall.

Three groups of tools:

- **Reading**: :func:`head_attribution_by_key` splits each head's direct logit
  attribution by the key position its output was read from, and
  :func:`attribution_by_source` sums those parts over the subject tokens, the relation
  tokens and BOS of a factual prompt, so that a head can be called a *subject*,
  *relation* or *mixed* head, or one that mostly reads BOS (:func:`classify_by_source`).
- **Weights**: :func:`ov_lookup_accuracy` reads a head's OV circuit as an associative
  memory from a key token (a country) to its attribute (the capital).
- **Options**: :func:`option_attention` summarises how heads spread their attention
  over the options of multiple-choice prompts (constant vs single-letter heads).
Choosing heads (top, random controls) is :mod:`utils.heads`; published indices are
:func:`utils.course.published.compare_with_published`.

Interventions (attention knockout, equalised attention, last-position ablation) live in
:mod:`utils.knockout`, the chapter's prompt sets in :mod:`utils.knowledge_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from utils.circuits import expand_kv_heads
from utils.hooks import Head, check_heads

def _v_hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


def _pattern_hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def head_attribution_by_key(model: Any, cache: Any, directions: Tensor, pos: int = -1) -> Tensor:
    """Each head's direct logit attribution at ``pos``, split by the key it read from.

    A head's output at query ``pos`` is a weighted sum over keys,
    ``sum_k A[pos, k] * v_k W_O``; projecting each term on ``directions`` (divided by the
    final norm's scale, as in :func:`utils.lens.head_direct_logit_attribution`) says how
    much of the head's push toward the answer came from each key position. Summed over
    keys, the parts give the head's direct logit attribution.

    Args:
        cache: holds ``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.attn.hook_v`` for
            every layer and ``ln_final.hook_scale``.
        directions: ``(batch, d_model)`` unembedding directions, e.g. of the answers.

    Returns:
        ``(batch, n_layers, n_heads, key_pos)``.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    pattern0 = cache[_pattern_hook_name(0)]
    batch = pattern0.shape[0]
    if not isinstance(directions, Tensor) or directions.shape != (batch, model.cfg.d_model):
        raise ValueError(
            f"directions must have shape ({batch}, {model.cfg.d_model}), got "
            f"{tuple(directions.shape) if isinstance(directions, Tensor) else type(directions).__name__}"
        )
    scale = cache["ln_final.hook_scale"][:, pos]  # (batch, 1)
    rows = []
    for layer in range(n_layers):
        attention = cache[_pattern_hook_name(layer)][:, :, pos, :]  # (batch, head, key)
        values = expand_kv_heads(cache[_v_hook_name(layer)], n_heads, head_dim=2)  # (b, key, head, d_head)
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
    tokens: Sequence[Tensor],
    answer_ids: Tensor,
    subject_positions: Sequence[Sequence[int]],
) -> SourceAttribution:
    """Split each head's direct logit attribution to the answer into subject, relation
    and BOS parts, averaged over factual prompts of any lengths.

    The *relation* tokens are all prompt tokens that are neither BOS (position 0) nor
    part of the subject, the final position included.

    Args:
        tokens: one ``(1, pos_i)`` tensor per prompt, BOS first (as
            :func:`utils.datasets.factual_recall_dataset` gives them).
        answer_ids: ``(n_prompts,)`` single-token answers.
        subject_positions: per prompt, the subject's token positions (BOS counted).
    """
    n_prompts = len(tokens)
    if n_prompts == 0:
        raise ValueError("no prompts given")
    if not isinstance(answer_ids, Tensor) or answer_ids.shape != (n_prompts,):
        raise ValueError(f"answer_ids must be a tensor of shape ({n_prompts},)")
    if len(subject_positions) != n_prompts:
        raise ValueError(
            f"{n_prompts} prompts but {len(subject_positions)} lists of subject positions"
        )
    wanted = {"ln_final.hook_scale"}
    for layer in range(model.cfg.n_layers):
        wanted |= {_pattern_hook_name(layer), _v_hook_name(layer)}
    by_length: dict[int, list[int]] = {}
    for index, (prompt_tokens, subject) in enumerate(zip(tokens, subject_positions)):
        if not isinstance(prompt_tokens, Tensor) or prompt_tokens.ndim != 2 or prompt_tokens.shape[0] != 1:
            raise ValueError(f"prompt {index} must be a (1, pos) tensor, got {getattr(prompt_tokens, 'shape', prompt_tokens)}")
        n_pos = prompt_tokens.shape[1]
        if not list(subject) or min(subject) < 1 or max(subject) >= n_pos:
            raise ValueError(f"prompt {index}: subject positions {list(subject)} must lie in [1, {n_pos - 1}]")
        by_length.setdefault(n_pos, []).append(index)
    parts: dict[str, list[Tensor]] = {"total": [], "subject": [], "relation": [], "bos": []}
    # Prompts of one length share a forward pass; their order does not matter for the mean.
    for n_pos, indices in by_length.items():
        batch = torch.cat([tokens[i] for i in indices])
        _, cache = model.run_with_cache(batch, names_filter=lambda name: name in wanted)
        directions = model.W_U[:, answer_ids[indices]].T
        per_key = head_attribution_by_key(model, cache, directions)  # (b, layer, head, key)
        for row, index in enumerate(indices):
            is_subject = torch.zeros(n_pos, dtype=torch.bool)
            is_subject[list(subject_positions[index])] = True
            is_relation = ~is_subject
            is_relation[0] = False
            parts["total"].append(per_key[row].sum(-1))
            parts["subject"].append(per_key[row][..., is_subject].sum(-1))
            parts["relation"].append(per_key[row][..., is_relation].sum(-1))
            parts["bos"].append(per_key[row][..., 0])
    return SourceAttribution(**{key: torch.stack(value).mean(0) for key, value in parts.items()})


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


def classify_by_source(subject: float, relation: float, bos: float, threshold: float = 0.7) -> str:
    """Name a head by where its push toward the answer came from.

    ``"bos"`` when the positive part read from BOS outweighs the positive parts read
    from the subject and relation tokens together (the head mostly adds a constant
    vector, the value of the attention sink); otherwise ``"subject"`` when its
    :func:`subject_share` is at least ``threshold``, ``"relation"`` when it is at most
    ``1 - threshold``, and ``"mixed"`` in between.

    Args:
        subject, relation, bos: the head's parts from :func:`attribution_by_source`.
    """
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0.5, 1], got {threshold}")
    for name, value in (("subject", subject), ("relation", relation), ("bos", bos)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if max(bos, 0.0) > max(subject, 0.0) + max(relation, 0.0):
        return "bos"
    share = float(subject_share(torch.tensor(float(subject)), torch.tensor(float(relation))))
    if share >= threshold:
        return "subject"
    if share <= 1.0 - threshold:
        return "relation"
    return "mixed"


@dataclass
class OptionAttention:
    """Where heads look among the options of multiple-choice prompts, from one query position.

    ``mass`` is the attention the query gives to all option positions together;
    ``entropy`` is the entropy of that attention renormalised over the options, divided
    by ``ln(n_options)`` so that 1 means an even spread and 0 a single option;
    ``distribution`` is the renormalised attention averaged over prompts. These three are
    ``(n_layers, n_heads[, n_options])`` means over prompts. ``favourite`` is
    ``(batch, n_layers, n_heads)``: the option each head attends to most in each prompt.
    """

    mass: Tensor
    entropy: Tensor
    distribution: Tensor
    favourite: Tensor


def option_attention(cache: Any, option_positions: Tensor, *, query_pos: int = -1) -> OptionAttention:
    """Summarise every head's attention from ``query_pos`` over the option positions.

    Args:
        cache: holds ``blocks.{l}.attn.hook_pattern`` for every layer.
        option_positions: ``LongTensor[batch, n_options]``, e.g. the letters A-D.
    """
    if not isinstance(option_positions, Tensor) or option_positions.ndim != 2 or option_positions.shape[1] < 2:
        raise ValueError("option_positions must be a LongTensor of shape (batch, n_options >= 2)")
    layers = []
    n_layers = 0
    while _pattern_hook_name(n_layers) in cache:
        layers.append(cache[_pattern_hook_name(n_layers)][:, :, query_pos])  # (batch, head, key)
        n_layers += 1
    if not layers:
        raise ValueError("the cache holds no blocks.{l}.attn.hook_pattern entries")
    attention = torch.stack(layers, dim=1)  # (batch, layer, head, key)
    batch, _, _, n_keys = attention.shape
    if option_positions.shape[0] != batch:
        raise ValueError(f"{option_positions.shape[0]} rows of option positions for a batch of {batch}")
    if bool((option_positions < 0).any()) or bool((option_positions >= n_keys).any()):
        raise ValueError(f"option positions must lie in [0, {n_keys - 1}]")
    index = option_positions.to(attention.device)[:, None, None, :].expand(*attention.shape[:3], -1)
    on_options = attention.gather(-1, index)  # (batch, layer, head, option)
    mass = on_options.sum(-1)
    spread = on_options / mass.clamp(min=1e-12)[..., None]
    entropy = -(spread * torch.log(spread.clamp(min=1e-12))).sum(-1) / torch.log(torch.tensor(float(spread.shape[-1])))
    return OptionAttention(
        mass=mass.mean(0),
        entropy=entropy.mean(0),
        distribution=spread.mean(0),
        favourite=spread.argmax(-1),
    )


def ov_lookup_accuracy(model: Any, cache: Any, source_pos: int, candidate_ids: Tensor) -> Tensor:
    """Read each head's OV circuit as an associative memory: key in, attribute out.

    For prompt ``b``, take the value vector a head would read at ``source_pos`` (e.g. the
    subject token), pass it through the head's ``W_O`` and the unembedding, and compare
    the logits of the candidates ``candidate_ids`` (one per prompt, e.g. every prompt's
    correct capital). The score is the fraction of prompts whose own candidate wins:
    1 means the head would write the right attribute for every key if it attended to
    it, ``1 / batch`` is chance.

    Args:
        cache: holds ``blocks.{l}.attn.hook_v`` for every layer, batch ``(batch, pos, ...)``.
        candidate_ids: ``(batch,)`` distinct token ids.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    values0 = cache[_v_hook_name(0)]
    batch, n_pos = values0.shape[:2]
    if not isinstance(candidate_ids, Tensor) or candidate_ids.shape != (batch,):
        raise ValueError(f"candidate_ids must be a tensor of shape ({batch},)")
    if candidate_ids.unique().numel() != batch:
        raise ValueError("candidate_ids must be distinct: one attribute per prompt")
    if isinstance(source_pos, bool) or not isinstance(source_pos, int) or not -n_pos <= source_pos < n_pos:
        raise ValueError(f"source_pos must be an int position in a prompt of {n_pos} tokens, got {source_pos!r}")
    unembed = model.W_U[:, candidate_ids.to(model.W_U.device)]  # (d_model, batch)
    own = torch.arange(batch)
    scores = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        values = expand_kv_heads(cache[_v_hook_name(layer)][:, source_pos], n_heads, head_dim=1)  # (b, h, d_head)
        written = torch.einsum("bhd,hdm->bhm", values, model.W_O[layer].to(values.device))
        logits = written @ unembed.to(written.device)  # (b, h, batch)
        scores[layer] = (logits.argmax(-1).cpu() == own[:, None]).float().mean(0)
    return scores


