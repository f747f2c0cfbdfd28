"""Circuits read from the weights: QK and OV matrices per head, OV copying scores, an
OV associative-lookup test, and the two weight-based tests of copy suppression
(:func:`ov_suppression_scores`, :func:`qk_prediction_scores`).

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
from utils.core.norms import _norm_eps, norm_gain, post_norm_gain, qk_norm_note, qk_norms, rms_normalise, warn_qk_norm
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


def ov_suppression_scores(
    model: Any, token_ids: Tensor, *, embeddings: Tensor | None = None, per_token: bool = False
) -> Tensor:
    """How much each head's OV circuit *suppresses* the token it reads, the mirror of
    :func:`ov_copying_scores`: ``Tensor[n_layers, n_heads]``.

    For each token ``t`` the head is assumed to attend fully to ``t``: its (normalised)
    embedding goes through ``W_V W_O`` and the unembedding, restricted to the tokens
    given (the diagonal of ``E W_V W_O W_U`` against its row). The score is the fraction
    of tokens whose *own* logit is the *lowest* of the row: 1 means the head lowers
    exactly the token it reads (the OV half of copy suppression, McDougall et al.
    2023), ``1 / len(token_ids)`` is chance. A post-attention norm's gain is applied
    (its scale is positive and does not change an argmin).

    Args:
        token_ids: ``(n,)`` distinct token ids, ``n >= 2``.
        embeddings: what the head reads for each token, ``(n, d_model)``; the raw rows
            of ``W_E`` by default, or :func:`effective_embeddings`.
        per_token: return ``Tensor[n_layers, n_heads, n]``, 1 where token ``i``'s own
            logit is the lowest (the per-token values whose mean is the score), for a
            bootstrap over tokens.
    """
    if not isinstance(token_ids, Tensor) or token_ids.ndim != 1 or token_ids.numel() < 2:
        raise ValueError("token_ids must be a 1-D tensor of at least two token ids")
    if token_ids.unique().numel() != token_ids.numel():
        raise ValueError("token_ids must be distinct: a repeated token ties with itself")
    hits = _ov_lookup_scores(model, token_ids, token_ids, embeddings, lowest=True, per_token=True)
    return hits if per_token else hits.mean(dim=-1)


def qk_prediction_scores(
    model: Any,
    token_ids: Tensor,
    key_embeddings: Tensor,
    *,
    query_vectors: Tensor | None = None,
    per_token: bool = False,
) -> Tensor:
    """Whether each head's QK circuit attends to a token *because that token is predicted*
    at the query (the QK half of copy suppression, McDougall et al. 2023):
    ``Tensor[n_layers, n_heads]``.

    Query ``i`` is the unembedding of token ``i``, ``W_U[:, token_ids[i]]`` (what the
    residual stream holds where the model predicts that token), key ``j`` is what a
    head reads at token ``j``, usually its :func:`effective_embeddings`. Both are
    RMS-normalised, as the attention layer's input norm does (its gain is folded into
    ``W_Q``, ``W_K``), and projected by the head's ``W_Q`` and ``W_K`` with their biases.
    The score is the fraction of queries whose own token gets the largest attention
    score among the keys: 1 means the head always looks for the token that is
    predicted, ``1 / len(token_ids)`` is chance.

    On a model with QK norms (Gemma 3, ...) each query and key is RMS-normalised per
    head and multiplied by the norms' gains, exactly as the model does on these
    inputs; what the score leaves out on every rotary model is the rotation (it
    compares a query and a key as if at the same position) and, everywhere, the rest
    of the residual stream at real positions (a query holds more than one predicted
    token; a key position holds more than its token's block-0 output).

    Args:
        token_ids: ``(n,)`` distinct token ids, ``n >= 2``.
        key_embeddings: ``(n, d_model)``, the key side for each token.
        query_vectors: ``(n, d_model)``, the query side; the unembedding columns of
            ``token_ids`` by default.
        per_token: return ``Tensor[n_layers, n_heads, n]``, 1 where query ``i``'s own
            key wins (the per-token values whose mean is the score).
    """
    if not isinstance(token_ids, Tensor) or token_ids.ndim != 1 or token_ids.numel() < 2:
        raise ValueError("token_ids must be a 1-D tensor of at least two token ids")
    if token_ids.unique().numel() != token_ids.numel():
        raise ValueError("token_ids must be distinct: one key per query")
    n, d_model = token_ids.numel(), model.cfg.d_model
    for label, given in (("key_embeddings", key_embeddings), ("query_vectors", query_vectors)):
        if given is not None and (not isinstance(given, Tensor) or given.shape != (n, d_model)):
            raise ValueError(
                f"{label} must have shape ({n}, {d_model}), one row per token id, "
                f"got {tuple(getattr(given, 'shape', ()))}"
            )
    if query_vectors is None:
        query_vectors = model.W_U[:, token_ids.to(model.W_U.device)].T
    queries_in = rms_normalise(query_vectors.float())
    keys_in = rms_normalise(key_embeddings.float().to(queries_in.device))
    n_heads = model.cfg.n_heads
    own = torch.arange(n)
    hits = torch.zeros(model.cfg.n_layers, n_heads, n)
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            W_Q = attention_weight(model, "W_Q", layer)  # (heads, d_model, d_head)
            W_K = expand_kv_heads(attention_weight(model, "W_K", layer), n_heads, head_dim=0)
            q = torch.einsum("tm,hmd->htd", queries_in, W_Q.float())
            k = torch.einsum("tm,hmd->htd", keys_in, W_K.float())
            for name, side in (("b_Q", "q"), ("b_K", "k")):
                bias = attention_weight(model, name, layer)
                if bias is not None:
                    if bias.shape[0] != n_heads:
                        bias = expand_kv_heads(bias, n_heads, head_dim=0)
                    if side == "q":
                        q = q + bias.float()[:, None]
                    else:
                        k = k + bias.float()[:, None]
            norms = qk_norms(model, layer)
            if norms is not None:
                q_gain, k_gain = (norm_gain(norm).float().to(q.device) for norm in norms)
                q = rms_normalise(q, _norm_eps(model, norms[0])) * q_gain
                k = rms_normalise(k, _norm_eps(model, norms[1])) * k_gain
            attention = q @ k.transpose(1, 2)  # (heads, queries, keys)
            hits[layer] = (attention.argmax(dim=-1).cpu() == own).float()
    return hits if per_token else hits.mean(dim=-1)


def _ov_lookup_scores(
    model: Any,
    source_ids: Tensor,
    candidate_ids: Tensor,
    embeddings: Tensor | None,
    *,
    lowest: bool = False,
    per_token: bool = False,
) -> Tensor:
    """The computation of :func:`ov_embedding_lookup` (``lowest``: of
    :func:`ov_suppression_scores`, the own candidate's logit the lowest), without input checks."""
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
    scores = torch.zeros(model.cfg.n_layers, n_heads, source_ids.numel())
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            W_V = expand_kv_heads(attention_weight(model, "W_V", layer), n_heads, head_dim=0)
            values = torch.einsum("tm,hmd->htd", embeddings, W_V)
            written = torch.einsum("htd,hdm->htm", values, attention_weight(model, "W_O", layer))
            gain = post_norm_gain(model, layer)
            if gain is not None:
                written = written * gain.to(written.device, written.dtype)
            logits = written @ unembed  # (n_heads, sources, candidates)
            picked = logits.argmin(dim=-1) if lowest else logits.argmax(dim=-1)
            scores[layer] = (picked == own).float().cpu()
    return scores if per_token else scores.mean(dim=-1)


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
