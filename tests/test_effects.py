"""Direct, indirect and total effect of replacing heads, against plain computations."""

import pytest
import torch
from transformer_lens.utilities import get_act_name

from utils.attribution.lens import unembed
from utils.core.metrics import logit_diff
from utils.interventions.ablation import ablation_values
from utils.interventions.effects import head_effects
from utils.interventions.hooks import source_values

PROMPT = "When Mary and John went to the store, John gave a drink to"


def zero_head_hook(head):
    """A plain hand-written zero-ablation hook, the reference for the library's."""

    def hook(z, hook):
        z[:, :, head] = 0.0
        return z

    return hook


@pytest.fixture(scope="module")
def setting(any_model):
    tokens = any_model.to_tokens(PROMPT)
    correct = torch.tensor([any_model.to_single_token(" Mary")])
    incorrect = torch.tensor([any_model.to_single_token(" John")])
    return tokens, (lambda logits: logit_diff(logits, correct, incorrect))


def test_effects_match_independent_computations(any_model, setting):
    tokens, metric = setting
    layer, head = any_model.cfg.n_layers // 2, 1
    zeros = ablation_values(any_model, tokens, "zero")
    effects = head_effects(any_model, tokens, [(layer, head)], metric, zeros)
    with torch.no_grad():
        clean_logits, cache = any_model.run_with_cache(tokens)
        ablated = any_model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), zero_head_hook(head))])
        z = cache[get_act_name("z", layer)][:, :, head]
        final = cache[get_act_name("resid_post", any_model.cfg.n_layers - 1)]
        direct_logits = unembed(any_model, final - z @ any_model.W_O[layer, head])
    assert effects.clean == pytest.approx(metric(clean_logits).item(), abs=1e-4)
    assert effects.total == pytest.approx(metric(ablated).item() - effects.clean, abs=1e-4)
    assert effects.direct == pytest.approx(metric(direct_logits).item() - effects.clean, abs=1e-3)
    assert effects.indirect == pytest.approx(effects.total - effects.direct)
    assert effects.final_norm == "recomputed"


def test_frozen_final_norm_is_linear_in_the_write(any_model, setting):
    """With the clean run's final-norm scale held fixed, the direct effect is the change
    of the head's write, divided by that scale, read through the unembedding."""
    tokens, metric = setting
    layer, head = any_model.cfg.n_layers - 1, 0
    zeros = ablation_values(any_model, tokens, "zero")
    frozen = head_effects(any_model, tokens, [(layer, head)], metric, zeros, final_norm="frozen")
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
        write = cache[get_act_name("z", layer)][:, -1, head] @ any_model.W_O[layer, head]
        scale = cache[get_act_name("scale")][:, -1]
        correct, incorrect = any_model.to_single_token(" Mary"), any_model.to_single_token(" John")
        direction = any_model.W_U[:, correct] - any_model.W_U[:, incorrect]
        expected = float(-(write / scale) @ direction)
    assert frozen.direct == pytest.approx(expected, abs=1e-3)
    assert frozen.final_norm == "frozen"
    with pytest.raises(ValueError, match="final_norm"):
        head_effects(any_model, tokens, [(layer, head)], metric, zeros, final_norm="none")


def test_effects_of_patching_from_a_corrupted_run_and_errors(any_model, setting):
    clean, _ = setting
    corrupted = any_model.to_tokens("When Alice and Bob went to the park, Carl gave a book to")
    metric = lambda logits: logits[0, -1, 0]  # noqa: E731
    if clean.shape == corrupted.shape:
        effects = head_effects(any_model, clean, [(0, 0)], metric, source_values(any_model, corrupted))
        assert effects.total != 0.0
    with pytest.raises(ValueError, match="positions"):
        head_effects(any_model, clean, [(0, 0)], metric, source_values(any_model, clean[:, :-1]))
    with pytest.raises(ValueError, match="out of range"):
        head_effects(any_model, clean, [(0, 99)], metric, ablation_values(any_model, clean, "zero"))
