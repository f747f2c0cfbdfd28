"""Logit lens and direct logit attribution add up on both architectures."""

import pytest
import torch
from transformer_lens.utilities import get_act_name

from utils.attribution.lens import answer_rank, logit_lens, residual_stack
from utils.attribution.dla import (
    component_direct_logit_attribution,
    head_direct_logit_attribution,
    logit_difference_direction,
)

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_logit_lens_final_row_is_the_model_output(any_model):
    with torch.no_grad():
        logits, cache = any_model.run_with_cache(any_model.to_tokens(PROMPT))
        lens = logit_lens(any_model, cache)
    assert lens.shape == (any_model.cfg.n_layers + 1, 1, any_model.cfg.d_vocab)
    assert torch.allclose(lens[-1, 0], logits[0, -1], atol=1e-3)
    assert residual_stack(any_model, cache).shape == (any_model.cfg.n_layers + 1, 1, any_model.cfg.d_model)


def test_residual_stack_reads_each_prompts_position(any_model):
    tokens = any_model.to_tokens([PROMPT, "When Anna and Tom went to the park, Tom gave a book to"])
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
    positions = torch.tensor([2, 7])
    stack = residual_stack(any_model, cache, positions)
    layer = any_model.cfg.n_layers // 2
    resid = cache[get_act_name("resid_pre", layer)]
    assert torch.equal(stack[layer], torch.stack([resid[0, 2], resid[1, 7]]))
    final = cache[get_act_name("resid_post", any_model.cfg.n_layers - 1)]
    assert torch.equal(residual_stack(any_model, cache)[-1], final[:, -1])
    with torch.no_grad():
        lens = logit_lens(any_model, cache, positions)
    assert lens.shape == (any_model.cfg.n_layers + 1, 2, any_model.cfg.d_vocab)
    with pytest.raises(TypeError, match="ActivationCache"):
        residual_stack(any_model, dict(cache.items()))
    with pytest.raises(ValueError, match="one position per prompt"):
        residual_stack(any_model, cache, positions[:, None])


def test_answer_rank():
    logits = torch.tensor([[[0.1, 0.5, 0.2]], [[0.9, 0.0, 0.3]]])  # (layers=2, batch=1, vocab=3)
    assert answer_rank(logits, torch.tensor([2])).tolist() == [[1], [1]]
    assert answer_rank(logits, torch.tensor([0])).tolist() == [[2], [0]]


def test_direct_attributions_add_up_to_the_logit_difference(any_model):
    tokens = any_model.to_tokens(PROMPT)
    mary = torch.tensor([any_model.to_single_token(" Mary")])
    john = torch.tensor([any_model.to_single_token(" John")])
    with torch.no_grad():
        logits, cache = any_model.run_with_cache(tokens)
        directions = logit_difference_direction(any_model, mary, john)
        heads = head_direct_logit_attribution(any_model, cache, directions)
        parts = component_direct_logit_attribution(any_model, cache, directions)
    difference = (logits[0, -1, mary] - logits[0, -1, john]).item()
    scale = cache[get_act_name("scale")][0, -1, 0]
    bias_terms = torch.zeros(any_model.cfg.n_layers)
    for layer in range(any_model.cfg.n_layers):
        b_O = any_model.blocks[layer].attn.b_O
        if b_O is not None:
            bias_terms[layer] = (b_O @ directions[0]) / scale
    total = parts["embed"] + parts["attn"].sum() + parts["mlp"].sum()
    assert abs(total.item() - difference) < 1e-3 * max(1.0, abs(difference))
    assert torch.allclose(heads.sum(dim=1) + bias_terms, parts["attn"], atol=1e-3)
