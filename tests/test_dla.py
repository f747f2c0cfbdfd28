"""The direct-logit-attribution core (utils.attribution.dla) against TransformerLens's
own decompositions, on both architectures.

``head_writes`` must give what ``cache.stack_head_results`` gives, and sum over heads
to ``hook_attn_out`` minus ``b_O``; everything built on it must agree with
``stack_head_results(apply_ln=True)``, ``decompose_resid(apply_ln=True)`` and
``logit_attrs``. The random GPT-2 model writes tiny values, so tolerances are relative.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities import get_act_name

from utils.attribution.dla import (
    component_direct_logit_attribution,
    direct_contributions,
    frozen_final_norm,
    head_attribution_by_key,
    head_direct_logit_attribution,
    head_writes,
    logit_difference_direction,
)
from utils.core.cache import attention_values_and_dla_filter

torch.set_grad_enabled(False)

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "When Anna and Tom went to the park, Tom gave a book to",
]


def assert_close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal up to ``rtol`` of the largest value (float32 sums in a different order)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    tolerance = rtol * max(float(expected.abs().max()), 1e-6)
    assert float((got - expected).abs().max()) <= tolerance


@pytest.fixture(scope="module")
def run(any_model):
    model = any_model
    tokens = model.to_tokens(PROMPTS)
    assert tokens.shape[0] == 2
    _, cache = model.run_with_cache(tokens)
    correct = torch.tensor([model.to_single_token(" Mary"), model.to_single_token(" Anna")])
    incorrect = torch.tensor([model.to_single_token(" John"), model.to_single_token(" Tom")])
    generator = torch.Generator().manual_seed(0)
    random_direction = torch.randn(model.cfg.d_model, generator=generator)  # not centred
    return model, tokens, cache, correct, incorrect, random_direction


def by_head(model, stacked: torch.Tensor) -> torch.Tensor:
    """TransformerLens's ``(n_layers * n_heads, batch, ...)`` as ``(batch, n_layers, n_heads, ...)``."""
    shape = (model.cfg.n_layers, model.cfg.n_heads, *stacked.shape[1:])
    return stacked.reshape(shape).movedim(2, 0)


# ---------------------------------------------------------------------------
# head_writes
# ---------------------------------------------------------------------------


def test_head_writes_sum_to_the_attention_output(run):
    model, tokens, cache, *_ = run
    every_position = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)
    writes = head_writes(model, cache, every_position)  # (batch, pos, layer, head, d_model)
    assert writes.shape == (*tokens.shape, model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model)
    for layer in range(model.cfg.n_layers):
        b_O = model.blocks[layer].attn.b_O
        total = writes[:, :, layer].sum(dim=2) + (b_O if b_O is not None else 0.0)
        assert_close(total, cache[get_act_name("attn_out", layer)])


def test_head_writes_match_stack_head_results(run):
    model, tokens, cache, *_ = run
    assert_close(head_writes(model, cache), by_head(model, cache.stack_head_results(pos_slice=-1)))
    # one position per prompt, each its own
    positions = torch.tensor([3, 9])
    every = by_head(model, cache.stack_head_results())  # (batch, layer, head, pos, d_model)
    expected = torch.stack([every[0, :, :, 3], every[1, :, :, 9]])
    assert_close(head_writes(model, cache, positions), expected)


def test_projecting_W_O_first_gives_the_projected_writes(run):
    model, tokens, cache, correct, incorrect, _ = run
    directions = logit_difference_direction(model, correct, incorrect)
    full = head_writes(model, cache)
    projected = head_writes(model, cache, directions=directions)
    assert_close(projected, torch.einsum("blhm,bm->blh", full, directions))
    # split by key: the parts sum to the write, projected or not
    per_key = head_writes(model, cache, by_key=True)  # (batch, layer, head, key, d_model)
    assert per_key.shape == (*full.shape[:3], tokens.shape[1], model.cfg.d_model)
    assert_close(per_key.sum(dim=3), full)
    per_key_along = head_writes(model, cache, directions=directions, by_key=True)
    assert_close(per_key_along, torch.einsum("blhkm,bm->blhk", per_key, directions))


def test_head_writes_bad_input(run):
    model, _, cache, *_ = run
    with pytest.raises(ValueError, match="hook_z"):
        head_writes(model, {get_act_name("scale"): cache[get_act_name("scale")]})
    with pytest.raises(ValueError, match="hook_pattern and hook_v"):
        head_writes(model, {get_act_name("z", 0): cache[get_act_name("z", 0)]}, by_key=True)
    with pytest.raises(ValueError, match="directions must have shape"):
        head_writes(model, cache, directions=torch.ones(3, model.cfg.d_model))
    with pytest.raises(TypeError, match="positions must be a LongTensor"):
        head_writes(model, cache, -1)
    with pytest.raises(ValueError, match="outside"):
        head_writes(model, cache, torch.tensor([0, 99]))


# ---------------------------------------------------------------------------
# Per-head, per-prompt and per-component attribution against TransformerLens
# ---------------------------------------------------------------------------


def test_head_dla_matches_logit_attrs(run):
    model, _, cache, correct, incorrect, random_direction = run
    directions = logit_difference_direction(model, correct, incorrect)
    ours = head_direct_logit_attribution(model, cache, directions)
    # logit_attrs applies the frozen final norm itself, so it takes the raw head results
    theirs = cache.logit_attrs(
        cache.stack_head_results(pos_slice=-1), tokens=correct, incorrect_tokens=incorrect, pos_slice=-1
    )
    assert_close(ours, by_head(model, theirs).mean(0))
    # any direction, even one that is not centred, against stack_head_results(apply_ln=True)
    normalised = cache.stack_head_results(pos_slice=-1, apply_ln=True)
    expected = by_head(model, torch.einsum("cbm,m->cb", normalised, random_direction)).mean(0)
    assert_close(head_direct_logit_attribution(model, cache, random_direction), expected)


def test_head_dla_at_each_prompts_own_position(run):
    model, _, cache, _, _, random_direction = run
    per_prompt = [
        by_head(model, torch.einsum("cbm,m->cb", cache.stack_head_results(pos_slice=pos, apply_ln=True), random_direction))
        for pos in (4, 8)
    ]  # (batch, layer, head) each, at one position for every prompt
    expected = (per_prompt[0][0] + per_prompt[1][1]) / 2
    got = head_direct_logit_attribution(model, cache, random_direction, torch.tensor([4, 8]))
    assert_close(got, expected)


def test_direct_contributions_match_transformer_lens(run):
    model, _, cache, _, _, random_direction = run
    parts = direct_contributions(model, cache, random_direction)
    heads = cache.stack_head_results(pos_slice=-1, apply_ln=True)
    assert_close(parts["heads"], by_head(model, torch.einsum("cbm,m->cb", heads, random_direction)))
    components, labels = cache.decompose_resid(pos_slice=-1, apply_ln=True, return_labels=True)
    mlp = [i for i, label in enumerate(labels) if label.endswith("_mlp_out")]
    expected = torch.einsum("cbm,m->bc", components[mlp], random_direction)
    assert_close(parts["mlp"], expected)
    with pytest.raises(ValueError, match="direction must be"):
        direct_contributions(model, cache, torch.ones(2, model.cfg.d_model))


def test_component_dla_matches_decompose_resid(run):
    model, _, cache, correct, incorrect, _ = run
    directions = logit_difference_direction(model, correct, incorrect)
    parts = component_direct_logit_attribution(model, cache, directions)
    components, labels = cache.decompose_resid(pos_slice=-1, apply_ln=True, return_labels=True)
    along = torch.einsum("cbm,bm->cb", components, directions).mean(dim=1)
    embed = sum(along[i] for i, label in enumerate(labels) if label in ("embed", "pos_embed"))
    assert_close(parts["embed"], embed)
    for kind in ("attn", "mlp"):
        rows = [i for i, label in enumerate(labels) if label.endswith(f"_{kind}_out")]
        assert_close(parts[kind], along[rows])


def test_attribution_by_key_sums_to_the_head_dla(run):
    model, tokens, cache, correct, _, _ = run
    directions = model.W_U[:, correct].T
    per_key = head_attribution_by_key(model, cache, directions)
    assert per_key.shape == (2, model.cfg.n_layers, model.cfg.n_heads, tokens.shape[1])
    assert_close(per_key.sum(-1).mean(0), head_direct_logit_attribution(model, cache, directions))
    # one head by hand: A[last, k] * (v_k W_O) . u / scale
    layer, head = model.cfg.n_layers - 1, model.cfg.n_heads - 1
    group = model.cfg.n_heads // cache[get_act_name("v", layer)].shape[2]
    values = cache[get_act_name("v", layer)][:, :, head // group]  # (batch, key, d_head)
    along = (values @ model.blocks[layer].attn.W_O[head]) @ directions.T  # (batch, key, batch)
    along = along[torch.arange(2), :, torch.arange(2)]
    attention = cache[get_act_name("pattern", layer)][:, head, -1]
    expected = attention * along / cache[get_act_name("scale")][:, -1]
    assert_close(per_key[:, layer, head], expected)
    keys = torch.tensor([1, tokens.shape[1] - 1])
    one_key = head_attribution_by_key(model, cache, directions, keys=keys)
    assert_close(one_key, per_key[torch.arange(2), ..., keys])
    with pytest.raises(ValueError, match="keys"):
        head_attribution_by_key(model, cache, directions, keys=torch.tensor([0, tokens.shape[1]]))



def test_attention_values_and_dla_filter_caches_what_attribution_by_key_reads(run):
    """The filter keeps patterns, values and the norms' scales and nothing else, and a
    cache it filtered gives the same split by key as the full cache."""
    model, tokens, cache, correct, _, _ = run
    _, filtered = model.run_with_cache(tokens, names_filter=attention_values_and_dla_filter)
    # TransformerLens 4 also caches the values under their new name, "attn.v.hook_out".
    others = ("hook_z", "resid", "mlp", "hook_q", "hook_k", "hook_attn_scores")
    unexpected = [name for name in filtered.keys() if any(part in name for part in others)]
    assert not unexpected, unexpected
    assert get_act_name("pattern", 0) in filtered and get_act_name("v", 0) in filtered
    assert get_act_name("scale") in filtered
    assert get_act_name("z", 0) not in filtered and get_act_name("resid_post", 0) not in filtered
    directions = model.W_U[:, correct].T
    assert_close(head_attribution_by_key(model, filtered, directions), head_attribution_by_key(model, cache, directions))

def test_frozen_final_norm_bad_input(run):
    model, _, cache, *_ = run
    values = torch.ones(2, 3, model.cfg.d_model)
    with pytest.raises(ValueError, match="ln_final.hook_scale"):
        frozen_final_norm({}, values)
    with pytest.raises(ValueError, match="must start with the positions' shape"):
        frozen_final_norm(cache, torch.ones(3, model.cfg.d_model))
    with pytest.raises(ValueError, match="directions must have shape"):
        frozen_final_norm(cache, values, directions=torch.ones(5))
    scale = cache[get_act_name("scale")][:, -1, 0]
    assert_close(frozen_final_norm(cache, values)[:, 0, 0], 1 / scale)
