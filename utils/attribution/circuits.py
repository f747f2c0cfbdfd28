"""Circuits read from the weights: QK and OV matrices per head, OV copying scores and
an OV associative-lookup test.

**What a weight-only circuit freezes** (see :mod:`utils.core.norms`):

* On models with a post-attention norm (Gemma 2 and 3) a head's write reaches the
  residual stream as ``z W_O * g / s``. The gain ``g`` is a weight and is part of the
  OV map here (``W_V W_O diag(g)``); the scale ``s``, a positive number per position
  shared by all heads of the layer and set by the whole layer's output in a given
  run, is left out (frozen at 1). It rescales a head's write but never changes which
  token the write favours, so the copying and lookup scores (argmaxes) are exact.
* On models with QK norms (Gemma 3, Qwen 3, ...) queries and keys are RMS-normalised
  per head before the rotary embedding. :func:`qk_circuit` includes the norms' gains
  but leaves out their per-position scales (and, on every rotary model, the rotation);
  it warns when given such a model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.cache import take_positions
from utils.core.heads import check_heads
from utils.core.models import attention_weight
from utils.core.norms import norm_gain, post_norm_gain, qk_norm_note, qk_norms, warn_qk_norm
from utils.core.positions import check_positions


def expand_kv_heads(values: Tensor, n_heads: int, head_dim: int = 1) -> Tensor:
    """Repeat grouped key/value heads so that there is one per query head.

    Query head ``h`` uses key/value head ``h // (n_heads // n_kv_heads)``, as in
    Llama-style grouped-query attention.

    Args:
        values: a tensor whose dimension ``head_dim`` counts key/value heads.
        n_heads: the number of query heads; a multiple of the key/value heads.
    """
    n_kv = values.shape[head_dim]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads evenly")
    return values.repeat_interleave(n_heads // n_kv, dim=head_dim)


def head_weights(model: Any, layer: int, head: int) -> dict[str, Tensor]:
    """``W_Q``, ``W_K``, ``W_V`` (``(d_model, d_head)``) and ``W_O`` (``(d_head, d_model)``) of one head."""
    check_heads(model, [(layer, head)])
    n_heads = model.cfg.n_heads
    return {
        "W_Q": attention_weight(model, "W_Q", layer)[head],
        "W_K": expand_kv_heads(attention_weight(model, "W_K", layer), n_heads, head_dim=0)[head],
        "W_V": expand_kv_heads(attention_weight(model, "W_V", layer), n_heads, head_dim=0)[head],
        "W_O": attention_weight(model, "W_O", layer)[head],
    }


def qk_circuit(model: Any, layer: int, head: int) -> Tensor:
    """``W_Q W_K^T`` (``(d_model, d_model)``, rank at most ``d_head``): which residual
    directions at the query attend to which at the key, before positional rotation.

    On a model with QK norms (:func:`utils.core.norms.qk_norms`) this is
    ``W_Q diag(g_q) diag(g_k) W_K^T`` with the query and key norms' gains; what it
    leaves out is each score's division by the RMS of the head's query and key at
    their positions, ``s_q(i) * s_k(j)``, which depends on the input (and the rotary
    rotation). A warning says so when such a model is passed.
    """
    weights = head_weights(model, layer, head)
    W_Q, W_K = weights["W_Q"], weights["W_K"]
    norms = qk_norms(model, layer)
    if norms is not None:
        warn_qk_norm(model, "qk_circuit")
        q_gain, k_gain = (norm_gain(norm).to(W_Q.device, W_Q.dtype) for norm in norms)
        W_Q, W_K = W_Q * q_gain, W_K * k_gain
    return W_Q @ W_K.T


def qk_circuit_note(model: Any) -> str | None:
    """What :func:`qk_circuit` leaves out on ``model`` (``None``: nothing beyond the
    rotation), for printing next to a QK-circuit figure."""
    return qk_norm_note(model)


def ov_circuit(model: Any, layer: int, head: int) -> Tensor:
    """``W_V W_O`` (``(d_model, d_model)``): what the head writes for what it attends to.

    On a model with a post-attention norm it is ``W_V W_O diag(g)``, the norm's gain
    included and its scale (shared by the layer's heads, set per position by the run)
    frozen at 1; see the module docstring.
    """
    weights = head_weights(model, layer, head)
    ov = weights["W_V"] @ weights["W_O"]
    gain = post_norm_gain(model, layer)
    return ov if gain is None else ov * gain.to(ov.device, ov.dtype)


def effective_embeddings(model: Any, token_ids: Tensor, *, batch_size: int = 256) -> Tensor:
    """Each token's *effective embedding*: the residual stream after block 0 at the token,
    in the two-token prompt ``[BOS, token]``, ``Tensor[len(token_ids), d_model]``.

    In many models the first MLP acts as an extended embedding, and later heads read what
    it has made of a token rather than the raw row of ``W_E``; weight-based circuit
    scores on the raw embedding then miss heads that copy (McDougall et al., copy
    suppression, use ``W_E`` followed by MLP0 the same way). Block 0's attention
    here sees only BOS and the token itself.
    """
    if not isinstance(token_ids, Tensor) or token_ids.ndim != 1 or token_ids.numel() < 1:
        raise ValueError("token_ids must be a 1-D tensor of token ids")
    if int(token_ids.min()) < 0 or int(token_ids.max()) >= model.cfg.d_vocab:
        raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab})")
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    if bos is None:
        raise ValueError("the model's tokenizer has no BOS token to put before each token")
    name = get_act_name("resid_post", 0)
    chunks = []
    with torch.no_grad():
        for start in range(0, token_ids.numel(), batch_size):
            ids = token_ids[start : start + batch_size].to(model.W_E.device)
            prompts = torch.stack([torch.full_like(ids, bos), ids], dim=1)
            _, cache = model.run_with_cache(prompts, names_filter=name, stop_at_layer=1)
            chunks.append(cache[name][:, 1])
    return torch.cat(chunks)


def ov_copying_scores(model: Any, token_ids: Tensor, *, embeddings: Tensor | None = None) -> Tensor:
    """How much each head's OV circuit copies tokens, ``Tensor[n_layers, n_heads]``.

    For each sampled token ``t``, the head is assumed to attend fully to ``t``: its
    (normalised) embedding goes through ``W_V W_O`` and the unembedding, restricted to
    the sampled tokens. The score is the fraction of tokens whose own logit is the
    largest, so 1 means a perfect copier and ``1 / len(token_ids)`` is chance. A
    post-attention norm's gain is applied (its scale does not change an argmax).

    Args:
        embeddings: what the head reads for each token, ``(len(token_ids), d_model)``;
            the raw rows of ``W_E`` by default, or :func:`effective_embeddings`.

    It is :func:`ov_embedding_lookup` with each token as its own attribute.
    """
    if not isinstance(token_ids, Tensor) or token_ids.ndim != 1 or token_ids.numel() < 2:
        raise ValueError("token_ids must be a 1-D tensor of at least two token ids")
    # duplicates are allowed here (a random sample may repeat a token), as they always
    # were: a repeated token's candidates tie, and rounding decides which one wins
    return _ov_lookup_scores(model, token_ids, token_ids, embeddings)


def ov_embedding_lookup(
    model: Any, source_ids: Tensor, candidate_ids: Tensor, *, embeddings: Tensor | None = None
) -> Tensor:
    """Each head's OV circuit as an associative memory on *raw token embeddings*.

    Source ``i``'s (RMS-normalised) embedding goes through the head's ``W_V W_O`` and
    the unembedding; the score is the fraction of sources whose own candidate
    ``candidate_ids[i]`` has the largest logit among all the candidates. Unlike
    :func:`ov_lookup_accuracy`, which reads the value vector cached at a position (a
    residual stream that earlier layers may already have filled with the attribute, so
    that a plain copier passes too), this uses only the weights: a head scores high
    only if its weights map the key token itself onto its attribute. With
    ``candidate_ids == source_ids`` it is the copying score.

    Args:
        source_ids: ``(n,)`` token ids of the keys (e.g. countries).
        candidate_ids: ``(n,)`` distinct token ids, the attribute of each key.
        embeddings: what the head reads for each key, ``(n, d_model)``; the raw rows of
            ``W_E`` by default, or :func:`effective_embeddings` (then the weights are no
            longer all that is read: block 0 has acted on each key).

    Returns:
        ``Tensor[n_layers, n_heads]``; chance is ``1 / n``.
    """
    if not isinstance(source_ids, Tensor) or source_ids.ndim != 1 or source_ids.numel() < 2:
        raise ValueError("source_ids must be a 1-D tensor of at least two token ids")
    if not isinstance(candidate_ids, Tensor) or candidate_ids.shape != source_ids.shape:
        raise ValueError(f"candidate_ids must be a tensor of shape {tuple(source_ids.shape)}, like source_ids")
    if candidate_ids.unique().numel() != candidate_ids.numel():
        raise ValueError("candidate_ids must be distinct: one attribute per key")
    return _ov_lookup_scores(model, source_ids, candidate_ids, embeddings)


def _ov_lookup_scores(model: Any, source_ids: Tensor, candidate_ids: Tensor, embeddings: Tensor | None) -> Tensor:
    """The computation of :func:`ov_embedding_lookup`, without its input checks."""
    n_heads = model.cfg.n_heads
    if embeddings is None:
        embeddings = model.W_E[source_ids.to(model.W_E.device)]
    elif embeddings.shape != (source_ids.numel(), model.cfg.d_model):
        raise ValueError(
            f"embeddings must have shape ({source_ids.numel()}, {model.cfg.d_model}), "
            f"one row per token id, got {tuple(embeddings.shape)}"
        )
    embeddings = embeddings / embeddings.pow(2).mean(-1, keepdim=True).sqrt()
    unembed = model.W_U[:, candidate_ids.to(model.W_U.device)]
    own = torch.arange(source_ids.numel(), device=embeddings.device)
    scores = torch.zeros(model.cfg.n_layers, n_heads)
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            W_V = expand_kv_heads(attention_weight(model, "W_V", layer), n_heads, head_dim=0)
            values = torch.einsum("tm,hmd->htd", embeddings, W_V)
            written = torch.einsum("htd,hdm->htm", values, attention_weight(model, "W_O", layer))
            gain = post_norm_gain(model, layer)
            if gain is not None:
                written = written * gain.to(written.device, written.dtype)
            logits = written @ unembed  # (n_heads, sources, candidates)
            scores[layer] = (logits.argmax(dim=-1) == own).float().mean(dim=-1).cpu()
    return scores


def ov_lookup_accuracy(model: Any, cache: Any, source_positions: Tensor, candidate_ids: Tensor) -> Tensor:
    """Read each head's OV circuit as an associative memory: key in, attribute out.

    For prompt ``b``, take the value vector a head would read at
    ``source_positions[b]`` (e.g. the subject token), pass it through the head's
    ``W_O`` and the unembedding, and compare the logits of the candidates
    ``candidate_ids`` (one per prompt, e.g. every prompt's correct capital). The score
    is the fraction of prompts whose own candidate wins: 1 means the head would write
    the right attribute for every key if it attended to it, ``1 / batch`` is chance.
    A post-attention norm's gain is applied (its scale does not change an argmax).

    Args:
        cache: holds ``blocks.{l}.attn.hook_v`` for every layer, batch ``(batch, pos, ...)``.
        source_positions: ``LongTensor[batch]``, one position per prompt.
        candidate_ids: ``(batch,)`` distinct token ids.

    Returns:
        ``Tensor[n_layers, n_heads]``.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    values0 = cache[get_act_name("v", 0)]
    batch, n_pos = values0.shape[:2]
    if not isinstance(candidate_ids, Tensor) or candidate_ids.shape != (batch,):
        raise ValueError(f"candidate_ids must be a tensor of shape ({batch},)")
    if candidate_ids.unique().numel() != batch:
        raise ValueError("candidate_ids must be distinct: one attribute per prompt")
    source_positions = check_positions("source_positions", source_positions, batch, n_pos)
    if source_positions.ndim != 1:
        raise ValueError(f"source_positions must have shape ({batch},): one position per prompt")
    W_U = model.W_U
    unembed = W_U[:, candidate_ids.to(W_U.device)]  # (d_model, batch)
    own = torch.arange(batch)
    scores = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        at_source = take_positions(cache[get_act_name("v", layer)], source_positions)  # (b, kv, d_head)
        values = expand_kv_heads(at_source, n_heads, head_dim=1)  # (b, h, d_head)
        W_O = attention_weight(model, "W_O", layer)
        written = torch.einsum("bhd,hdm->bhm", values, W_O.to(values.device))
        gain = post_norm_gain(model, layer)
        if gain is not None:
            written = written * gain.to(written.device, written.dtype)
        logits = written @ unembed.to(written.device)  # (b, h, batch)
        scores[layer] = (logits.argmax(-1).cpu() == own[:, None]).float().mean(0)
    return scores
