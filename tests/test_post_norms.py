"""Per-head decompositions on models with and without post-attention norms.

Gemma 3 normalises each attention layer's output (``ln1_post``) before it joins the
residual stream, so a head writes ``z @ W_O * g / s``, not ``z @ W_O``
(:mod:`utils.core.norms`). Every per-head decomposition of the library must still add
up to the layer's ``hook_attn_out``: direct logit attribution (``head_writes``, by key
too), direct effects (``write_change``, ``head_effects``), OV circuits, projecting a
direction out of heads and its predicted direct effect. Each test runs on the
embedded model, the random GPT-2 model and Gemma 3 (skipped where it is not installed),
on one short prompt.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformer_lens.utilities import get_act_name

from utils.attribution.circuits import expand_kv_heads, ov_circuit, qk_circuit
from utils.attribution.dla import (
    component_direct_logit_attribution,
    head_attribution_by_key,
    head_direct_logit_attribution,
    head_writes,
    logit_difference_direction,
)
from utils.core.metrics import logit_diff
from utils.core.norms import (
    apply_post_norm,
    has_post_attention_norm,
    has_qk_norm,
    post_norm_factor,
    post_norm_gain,
    post_norm_scale,
    qk_norm_note,
    rms_normalise,
    rms_scale,
)
from utils.interventions.ablation import ablation_values
from utils.interventions.effects import head_effects, write_change, write_change_names
from utils.interventions.hooks import project_out_of_heads_hooks, replace_heads_hooks
from utils.interventions.steering import removed_direct_effect

torch.set_grad_enabled(False)

PROMPT = "When Mary and John went to the store, John gave a drink to"


def assert_close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal up to ``rtol`` of the largest value (float32 sums in a different order)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tolerance = rtol * max(float(expected.abs().max()), 1e-6)
    error = float((got - expected).abs().max())
    assert error <= tolerance, f"max error {error:.3g} > {tolerance:.3g}"


@pytest.fixture(scope="module")
def run(every_model):
    model = every_model
    tokens = model.to_tokens(PROMPT)
    logits, cache = model.run_with_cache(tokens)
    correct = torch.tensor([model.to_single_token(" Mary")])
    incorrect = torch.tensor([model.to_single_token(" John")])
    return model, tokens, logits, cache, correct, incorrect


def bias_write(model, cache, layer: int) -> torch.Tensor:
    """What the layer writes besides its heads, ``(batch, pos, d_model)``: ``b_O``
    (through the post-norm, frozen), zeros without an output bias."""
    out = cache[get_act_name("attn_out", layer)]
    b_O = model.blocks[layer].attn.b_O
    if b_O is None:
        return torch.zeros_like(out)
    factor = post_norm_factor(model, cache, layer)
    return (b_O if factor is None else b_O * factor).expand_as(out)


def test_the_models_differ_where_expected(run):
    model = run[0]
    is_gemma = model.cfg.d_vocab == 262144
    assert has_post_attention_norm(model) == is_gemma
    assert has_qk_norm(model) == is_gemma
    assert (qk_norm_note(model) is not None) == is_gemma


def test_head_writes_sum_to_hook_attn_out(run):
    model, _, _, cache, _, _ = run
    n_pos = cache["hook_embed"].shape[1]
    at = [1, 5, n_pos - 1]
    writes = head_writes(model, cache, torch.tensor([at]))  # (batch, k, layer, head, d_model)
    for layer in range(model.cfg.n_layers):
        expected = (cache[get_act_name("attn_out", layer)] - bias_write(model, cache, layer))[:, at]
        assert_close(writes[:, :, layer].sum(dim=2), expected)


def test_rms_normalise_is_torchs_rms_norm_without_gain(run):
    model, _, _, cache, _, _ = run
    resid = cache[get_act_name("resid_pre", model.cfg.n_layers // 2)].float()
    for eps in (1e-6, 1e-5):
        expected = torch.nn.functional.rms_norm(resid, (model.cfg.d_model,), eps=eps)
        assert_close(rms_normalise(resid, eps), expected)
        assert_close(resid / rms_scale(resid, eps), expected)
    assert rms_scale(resid).shape == (*resid.shape[:-1], 1)


def test_post_norm_scale_is_recomputed_when_not_cached(run):
    model, _, _, cache, _, _ = run
    layer = model.cfg.n_layers // 2
    lean = {name: cache[name] for name in (get_act_name("z", layer),)}
    if not has_post_attention_norm(model):
        assert post_norm_scale(model, lean, layer) is None and post_norm_gain(model, layer) is None
        return
    assert_close(post_norm_scale(model, lean, layer), cache[f"blocks.{layer}.ln1_post.hook_scale"])
    assert_close(apply_post_norm(model, layer, cache[f"blocks.{layer}.attn.hook_out"]), cache[get_act_name("attn_out", layer)])
    with pytest.raises(ValueError, match="ln1_post"):
        post_norm_scale(model, {}, layer)


def test_head_dla_sums_to_the_attention_layers_dla(run):
    model, _, logits, cache, correct, incorrect = run
    directions = logit_difference_direction(model, correct, incorrect)
    per_head = head_direct_logit_attribution(model, cache, directions)
    components = component_direct_logit_attribution(model, cache, directions)
    bias = torch.stack([
        (bias_write(model, cache, layer)[0, -1] @ directions[0]) / cache[get_act_name("scale")][0, -1, 0]
        for layer in range(model.cfg.n_layers)
    ])
    assert_close(per_head.sum(dim=1) + bias, components["attn"], rtol=1e-3)
    by_key = head_attribution_by_key(model, cache, directions)
    assert_close(by_key.sum(dim=-1)[0], per_head, rtol=1e-3)
    if has_post_attention_norm(model):
        # the heads carry the logit difference, as they do on a Llama-style model
        total = components["embed"] + components["attn"].sum() + components["mlp"].sum()
        actual = logits[0, -1, correct[0]] - logits[0, -1, incorrect[0]]
        assert abs(float(total - actual)) < 1e-2 * abs(float(actual))
        assert float(per_head.abs().max()) > 0.2 * abs(float(actual))


def test_write_change_of_every_head_is_the_layers_output(run):
    model, tokens, _, _, _, _ = run
    layer = model.cfg.n_layers // 2
    heads = [(layer, head) for head in range(model.cfg.n_heads)]
    zeros = ablation_values(model, tokens, "zero")
    names = write_change_names(model, [layer]) + [get_act_name("attn_out", layer)]
    _, clean = model.run_with_cache(tokens, names_filter=names)
    with model.hooks(fwd_hooks=replace_heads_hooks(model, heads, zeros)):
        _, ablated = model.run_with_cache(tokens, names_filter=names)
    heads_out = clean[get_act_name("attn_out", layer)] - bias_write(model, clean, layer)
    frozen = write_change(model, clean, ablated, heads, final_norm="frozen")
    assert_close(frozen, -heads_out)
    one_by_one = sum(write_change(model, clean, ablated, [head], final_norm="frozen") for head in heads)
    assert_close(one_by_one, -heads_out)
    if model.blocks[layer].attn.b_O is None:  # zeroing every head leaves nothing to normalise
        assert_close(write_change(model, clean, ablated, heads, final_norm="recomputed"), -heads_out)


def test_frozen_direct_effect_of_zeroing_a_head_is_minus_its_dla(run):
    model, tokens, _, cache, correct, incorrect = run
    metric = lambda logits: logit_diff(logits, correct, incorrect)  # noqa: E731
    dla = head_direct_logit_attribution(model, cache, logit_difference_direction(model, correct, incorrect))
    layer, head = divmod(int(dla.abs().argmax()), model.cfg.n_heads)
    effects = head_effects(model, tokens, [(layer, head)], metric, ablation_values(model, tokens, "zero"), final_norm="frozen")
    assert abs(effects.direct + float(dla[layer, head])) <= 1e-3 * max(1.0, abs(float(dla[layer, head])))


def test_ov_circuits_sum_to_hook_attn_out(run):
    model, _, _, cache, _, _ = run
    layer, n_heads = model.cfg.n_layers // 2, model.cfg.n_heads
    attn = model.blocks[layer].attn
    x = cache[f"blocks.{layer}.ln1.hook_out"][0]  # what W_V reads, (pos, d_model)
    pattern = cache[get_act_name("pattern", layer)][0]  # (head, query, key)
    b_V = attn.b_V
    b_V = None if b_V is None else expand_kv_heads(b_V, n_heads, head_dim=0)
    total = 0.0
    for head in range(n_heads):
        per_key = x @ ov_circuit(model, layer, head)  # the head's OV map, gain included
        if b_V is not None:
            gain = post_norm_gain(model, layer)
            bias = b_V[head] @ attn.W_O[head]
            per_key = per_key + (bias if gain is None else bias * gain)
        total = total + pattern[head] @ per_key
    scale = post_norm_scale(model, cache, layer)
    if scale is not None:  # the post-norm's scale is what an OV circuit leaves out
        total = total / scale[0]
    expected = (cache[get_act_name("attn_out", layer)] - bias_write(model, cache, layer))[0]
    assert_close(total, expected, rtol=1e-3)


def test_projecting_out_of_every_head_removes_the_direction_from_hook_attn_out(run):
    model, tokens, _, cache, correct, incorrect = run
    layer = model.cfg.n_layers // 2
    heads = [(layer, head) for head in range(model.cfg.n_heads)]
    every_position = torch.arange(tokens.shape[1])[None]
    heads_out = head_writes(model, cache, every_position)[:, :, layer].sum(dim=2)  # (batch, pos, d_model)
    unit = heads_out[0, -1] / heads_out[0, -1].norm()
    name = get_act_name("attn_out", layer)
    with model.hooks(fwd_hooks=project_out_of_heads_hooks(model, heads, unit)):
        _, projected = model.run_with_cache(tokens, names_filter=[name])
    expected = cache[name] - (heads_out @ unit)[..., None] * unit
    assert_close(projected[name], expected, rtol=1e-3)
    readout = logit_difference_direction(model, correct, incorrect)[0]
    removed = removed_direct_effect(model, cache, heads, unit, readout)
    predicted = (heads_out[0, -1] @ unit) * (unit @ readout) / cache[get_act_name("scale")][0, -1, 0]
    assert_close(removed, predicted[None], rtol=1e-3)


def test_qk_circuit_keeps_the_qk_norm_gains_and_warns_about_their_scales(run):
    model, _, _, cache, _, _ = run
    layer, head = 1, model.cfg.n_heads - 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qk = qk_circuit(model, layer, head)
    assert bool(caught) == has_qk_norm(model)
    if not has_qk_norm(model):
        return
    assert "q_norm" in str(caught[0].message)
    x = cache[f"blocks.{layer}.ln1.hook_out"][0]  # (pos, d_model)
    attn = f"blocks.{layer}.attn"
    kv_head = head // (model.cfg.n_heads // model.cfg.n_key_value_heads)
    q = cache[f"{attn}.hook_q_normed"][0, head] * cache[f"{attn}.q_norm.hook_scale"][0, head]
    k = cache[f"{attn}.hook_k_normed"][0, kv_head] * cache[f"{attn}.k_norm.hook_scale"][0, kv_head]
    assert_close(x @ qk @ x.T, q @ k.T, rtol=1e-3)


def test_direct_effect_with_frozen_post_norms_is_the_hand_computation(run):
    """What chapter 11's exercise computes: the head's change of ``z @ W_O`` times the
    frozen post-norm factor, added to the final residual stream (final norm recomputed)."""
    model, tokens, _, _, correct, incorrect = run
    metric = lambda logits: logit_diff(logits, correct, incorrect)  # noqa: E731
    layer, head = model.cfg.n_layers - 1, model.cfg.n_heads - 1
    zeros = ablation_values(model, tokens, "zero")
    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    logits, cache = model.run_with_cache(tokens, names_filter=[get_act_name("z", layer), final])
    z = cache[get_act_name("z", layer)][:, :, head]
    delta = (zeros[layer].expand_as(cache[get_act_name("z", layer)])[:, :, head] - z) @ model.blocks[layer].attn.W_O[head]
    factor = post_norm_factor(model, cache, layer)
    if factor is not None:
        delta = delta * factor
    by_hand = float(metric(model.unembed(model.ln_final(cache[final] + delta))) - metric(logits))
    effects = head_effects(model, tokens, [(layer, head)], metric, zeros, post_norm="frozen")
    assert abs(effects.direct - by_hand) <= 1e-3 * max(1.0, abs(by_hand))
