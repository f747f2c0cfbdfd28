"""Direct, indirect and total effect of a head."""

from transformer_lens.utilities import get_act_name
import pytest
import torch

from utils.interventions.effects import head_effects
from utils.interventions.ablation import zero_ablation_hooks
from utils.attribution.lens import unembed
from utils.core.metrics import logit_diff

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_effects_match_independent_computations(any_model):
    tokens = any_model.to_tokens(PROMPT)
    correct = torch.tensor([any_model.to_single_token(" Mary")])
    incorrect = torch.tensor([any_model.to_single_token(" John")])
    metric = lambda logits: logit_diff(logits, correct, incorrect)  # noqa: E731
    layer, head = any_model.cfg.n_layers // 2, 1
    effects = head_effects(any_model, tokens, layer, head, metric)
    with torch.no_grad():
        clean_logits, cache = any_model.run_with_cache(tokens)
        ablated = any_model.run_with_hooks(tokens, fwd_hooks=zero_ablation_hooks(any_model, [(layer, head)]))
        z = cache[get_act_name("z", layer)][:, :, head]
        final = cache[get_act_name("resid_post", any_model.cfg.n_layers - 1)]
        direct_logits = unembed(any_model, final - z @ any_model.W_O[layer, head])
    assert effects.clean == pytest.approx(metric(clean_logits).item(), abs=1e-4)
    assert effects.total == pytest.approx(metric(ablated).item() - effects.clean, abs=1e-4)
    assert effects.direct == pytest.approx(metric(direct_logits).item() - effects.clean, abs=1e-3)
    assert effects.indirect == pytest.approx(effects.total - effects.direct)


def test_effects_with_a_corrupted_run_and_errors(any_model):
    clean = any_model.to_tokens(PROMPT)
    corrupted = any_model.to_tokens("When Alice and Bob went to the park, Carl gave a book to")
    metric = lambda logits: logits[0, -1, 0]  # noqa: E731
    if clean.shape == corrupted.shape:
        effects = head_effects(any_model, clean, 0, 0, metric, corrupted_tokens=corrupted)
        assert effects.total != 0.0
    with pytest.raises(ValueError, match="same shape"):
        head_effects(any_model, clean, 0, 0, metric, corrupted_tokens=clean[:, :-1])
    with pytest.raises(ValueError, match="out of range"):
        head_effects(any_model, clean, 0, 99, metric)
