"""QK / OV circuits and grouped key/value heads."""

from transformer_lens.utilities import get_act_name
import pytest
import torch

from utils.attribution.circuits import (
    expand_kv_heads,
    head_weights,
    ov_circuit,
    ov_copying_scores,
    ov_embedding_lookup,
    qk_circuit,
)


def test_expand_kv_heads_maps_query_heads_to_their_group():
    kv = torch.arange(3).float().reshape(1, 1, 3, 1)  # (batch, pos, kv_heads, d)
    expanded = expand_kv_heads(kv, 9, head_dim=2)
    assert expanded[0, 0, :, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="evenly"):
        expand_kv_heads(kv, 8, head_dim=2)


def test_circuit_shapes_and_rank(any_model):
    cfg = any_model.cfg
    weights = head_weights(any_model, 0, cfg.n_heads - 1)
    assert weights["W_K"].shape == (cfg.d_model, cfg.d_head)
    qk, ov = qk_circuit(any_model, 0, 0), ov_circuit(any_model, 0, 0)
    assert qk.shape == ov.shape == (cfg.d_model, cfg.d_model)
    assert torch.linalg.matrix_rank(qk, rtol=1e-4) <= cfg.d_head  # float32 noise needs a tolerance


def test_keys_recomputed_from_weights_match_the_cache(embedded_model):
    """Grouped heads: query head h reads the key head its group shares."""
    tokens = embedded_model.to_tokens("The cat sat on the mat")
    with torch.no_grad():
        _, cache = embedded_model.run_with_cache(tokens)
    normalised = cache["blocks.2.ln1.hook_normalized"]
    keys = normalised @ head_weights(embedded_model, 2, 8)["W_K"]
    cached = cache[get_act_name("k", 2)][:, :, 8 // 3]  # before the rotary embedding
    assert torch.allclose(keys, cached, atol=1e-3)


def test_ov_copying_scores_on_planted_weights():
    """Head 1 copies (W_V W_O = I), head 0 anti-copies (W_V W_O = -I)."""
    from types import SimpleNamespace

    d_model, n_tokens = 8, 8
    embeddings = torch.linalg.qr(torch.randn(d_model, d_model, generator=torch.Generator().manual_seed(0)))[0]
    model = SimpleNamespace(
        cfg=SimpleNamespace(n_layers=1, n_heads=2),
        W_E=embeddings * d_model**0.5,
        W_U=embeddings.T.clone(),
        W_V=torch.eye(d_model).reshape(1, 1, d_model, d_model),  # one shared key/value head
        W_O=torch.stack([-torch.eye(d_model), torch.eye(d_model)]).unsqueeze(0),
    )
    scores = ov_copying_scores(model, torch.arange(n_tokens))
    assert scores.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="at least two"):
        ov_copying_scores(model, torch.tensor([5]))


def test_ov_copying_scores_of_random_weights_are_near_chance(gpt2_random):
    scores = ov_copying_scores(gpt2_random, torch.arange(1000, 1040))
    assert scores.shape == (gpt2_random.cfg.n_layers, gpt2_random.cfg.n_heads)
    assert scores.max() < 0.3


def test_ov_copying_scores_read_the_embeddings_given():
    from types import SimpleNamespace

    d_model, n_tokens = 8, 8
    embeddings = torch.linalg.qr(torch.randn(d_model, d_model, generator=torch.Generator().manual_seed(0)))[0]
    model = SimpleNamespace(
        cfg=SimpleNamespace(n_layers=1, n_heads=2, d_model=d_model),
        W_E=embeddings * d_model**0.5,
        W_U=embeddings.T.clone(),
        W_V=torch.eye(d_model).reshape(1, 1, d_model, d_model),
        W_O=torch.stack([-torch.eye(d_model), torch.eye(d_model)]).unsqueeze(0),
    )
    ids = torch.arange(n_tokens)
    assert ov_copying_scores(model, ids, embeddings=model.W_E).tolist() == [[0.0, 1.0]]
    # reading the negated embeddings swaps the copier and the anti-copier
    assert ov_copying_scores(model, ids, embeddings=-model.W_E).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="one row per token id"):
        ov_copying_scores(model, ids, embeddings=model.W_E[:3])


def test_effective_embeddings_are_block_0_outputs(any_model):
    from utils.attribution.circuits import effective_embeddings

    ids = torch.tensor([1000, 1001, 2345])
    got = effective_embeddings(any_model, ids, batch_size=2)
    assert got.shape == (3, any_model.cfg.d_model)
    bos = any_model.tokenizer.bos_token_id
    _, cache = any_model.run_with_cache(torch.tensor([[bos, 2345]]))
    assert torch.allclose(got[2], cache["blocks.0.hook_resid_post"][0, 1], atol=1e-4)
    assert not torch.allclose(got, any_model.W_E[ids], atol=1e-3)  # block 0 changed them
    with pytest.raises(ValueError, match="token ids must lie in"):
        effective_embeddings(any_model, torch.tensor([any_model.cfg.d_vocab]))
    with pytest.raises(ValueError, match="1-D tensor"):
        effective_embeddings(any_model, ids[None])


def test_ov_embedding_lookup_on_planted_weights():
    """Head 1's OV maps token i onto token (i + 1) % n: a lookup, not a copy."""
    from types import SimpleNamespace

    d_model = n_tokens = 8
    embeddings = torch.linalg.qr(torch.randn(d_model, d_model, generator=torch.Generator().manual_seed(1)))[0]
    shift = torch.roll(torch.eye(d_model), 1, dims=1)  # e_i -> e_{i+1}
    mapping = embeddings.T @ shift @ embeddings  # in the embedding basis (rows are embeddings)
    model = SimpleNamespace(
        cfg=SimpleNamespace(n_layers=1, n_heads=2),
        W_E=embeddings * d_model**0.5,
        W_U=embeddings.T.clone(),
        W_V=torch.eye(d_model).reshape(1, 1, d_model, d_model),
        W_O=torch.stack([torch.eye(d_model), mapping]).unsqueeze(0),
    )
    sources = torch.arange(n_tokens)
    targets = (sources + 1) % n_tokens
    assert ov_embedding_lookup(model, sources, targets).tolist() == [[0.0, 1.0]]
    assert ov_embedding_lookup(model, sources, sources).tolist() == [[1.0, 0.0]]
    assert torch.equal(ov_embedding_lookup(model, sources, sources), ov_copying_scores(model, sources))
    with pytest.raises(ValueError, match="distinct"):
        ov_embedding_lookup(model, sources[:3], torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        ov_embedding_lookup(model, sources[:3], sources[:2])


def test_ov_embedding_lookup_runs_on_both_architectures(any_model):
    ids = torch.arange(1000, 1010)
    scores = ov_embedding_lookup(any_model, ids, ids + 10)
    assert scores.shape == (any_model.cfg.n_layers, any_model.cfg.n_heads)
    assert bool(((scores >= 0) & (scores <= 1)).all())


def test_ov_copying_scores_accept_a_sample_with_repeats(any_model):
    """A random sample of token ids may repeat one (chapter 00 draws 300 at random): the
    copying score accepts it, while the lookup, which needs one attribute per key, does not."""
    ids = torch.tensor([1000, 1001, 1000, 1002, 1003])
    scores = ov_copying_scores(any_model, ids)
    assert scores.shape == (any_model.cfg.n_layers, any_model.cfg.n_heads)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    with pytest.raises(ValueError, match="distinct"):
        ov_embedding_lookup(any_model, ids, ids)


def _planted_model(d_model: int = 8, seed: int = 0):
    """One layer, two heads; embeddings orthonormal, W_U their transpose."""
    from types import SimpleNamespace

    embeddings = torch.linalg.qr(torch.randn(d_model, d_model, generator=torch.Generator().manual_seed(seed)))[0]
    eye = torch.eye(d_model)
    return SimpleNamespace(
        cfg=SimpleNamespace(n_layers=1, n_heads=2, d_model=d_model),
        W_E=embeddings * d_model**0.5,
        W_U=embeddings.T.clone(),
        W_V=eye.reshape(1, 1, d_model, d_model),
        W_O=torch.stack([-eye, eye]).unsqueeze(0),  # head 0 suppresses, head 1 copies
        W_Q=torch.stack([eye, eye]).unsqueeze(0),
        W_K=torch.stack([-eye, eye]).unsqueeze(0),  # head 0 avoids the predicted token, head 1 seeks it
    )


def test_ov_suppression_scores_on_planted_weights():
    from utils.attribution.circuits import ov_suppression_scores

    model = _planted_model()
    ids = torch.arange(8)
    assert ov_suppression_scores(model, ids).tolist() == [[1.0, 0.0]]
    assert ov_suppression_scores(model, ids, embeddings=-model.W_E).tolist() == [[0.0, 1.0]]
    per_token = ov_suppression_scores(model, ids, per_token=True)
    assert per_token.shape == (1, 2, 8) and per_token[0, 0].tolist() == [1.0] * 8
    with pytest.raises(ValueError, match="distinct"):
        ov_suppression_scores(model, torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="at least two"):
        ov_suppression_scores(model, torch.tensor([3]))
    with pytest.raises(ValueError, match="one row per token id"):
        ov_suppression_scores(model, ids, embeddings=model.W_E[:3])


def test_qk_prediction_scores_on_planted_weights():
    from utils.attribution.circuits import qk_prediction_scores

    model = _planted_model()
    ids = torch.arange(8)
    # the unembedding of token i is its embedding here: head 1 attends to the predicted token
    assert qk_prediction_scores(model, ids, model.W_E).tolist() == [[0.0, 1.0]]
    # a query that predicts token (i + 1) % n finds that key instead
    shifted = model.W_U[:, (ids + 1) % 8].T
    assert qk_prediction_scores(model, ids, model.W_E, query_vectors=shifted).tolist() == [[0.0, 0.0]]
    per_token = qk_prediction_scores(model, ids, model.W_E, per_token=True)
    assert per_token.shape == (1, 2, 8) and per_token.mean(-1).tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="key_embeddings must have shape"):
        qk_prediction_scores(model, ids, model.W_E[:3])
    with pytest.raises(ValueError, match="distinct"):
        qk_prediction_scores(model, torch.tensor([1, 1]), model.W_E[:2])


def test_copy_suppression_scores_run_on_both_architectures(any_model):
    """Shapes and ranges on a real architecture (GPT-2 with biases, SmolLM2 with grouped
    key/value heads), and the QK score recomputed for one head from the model's own
    query and key projections of the same normalised inputs."""
    from utils.attribution.circuits import (
        effective_embeddings,
        ov_suppression_scores,
        qk_prediction_scores,
    )

    ids = torch.arange(1000, 1012)
    eff = effective_embeddings(any_model, ids)
    cfg = any_model.cfg
    for scores in (ov_suppression_scores(any_model, ids, embeddings=eff), qk_prediction_scores(any_model, ids, eff)):
        assert scores.shape == (cfg.n_layers, cfg.n_heads)
        assert bool(((scores >= 0) & (scores <= 1)).all())
    layer, head = cfg.n_layers - 1, cfg.n_heads - 1
    weights = head_weights(any_model, layer, head)
    rms = lambda x: x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    q = rms(any_model.W_U[:, ids].T) @ weights["W_Q"]
    k = rms(eff) @ weights["W_K"]
    b_Q, b_K = any_model.blocks[layer].attn.b_Q, any_model.blocks[layer].attn.b_K
    if b_Q is not None:
        q = q + b_Q[head]
    if b_K is not None:
        k = k + expand_kv_heads(b_K, cfg.n_heads, head_dim=0)[head]
    expected = ((q @ k.T).argmax(-1) == torch.arange(len(ids))).float().mean()
    assert qk_prediction_scores(any_model, ids, eff)[layer, head] == pytest.approx(float(expected))
