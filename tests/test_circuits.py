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
