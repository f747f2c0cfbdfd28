"""Hook factories on both architectures."""

import pytest
import torch

from utils.interventions.steering import add_to_residual_hooks
from utils.core.heads import check_heads
from utils.interventions.ablation import (
    head_means,
    mean_ablation_hooks,
    patch_head_hooks,
    zero_ablation_hooks,
)
from transformer_lens.utilities import get_act_name

PROMPTS = ["When Mary and John went to the store, John gave a drink to"]
OTHER = ["When Alice and Bob went to the park, Bob gave a book to"]


def last_layer_head(model):
    return model.cfg.n_layers - 1, model.cfg.n_heads - 1


def test_zero_ablation_zeroes_the_head_and_changes_logits(any_model):
    layer, head = 1, 0
    tokens = any_model.to_tokens(PROMPTS)
    name = get_act_name("z", layer)
    captured = {}

    def capture(z, hook):
        captured["z"] = z.clone()

    with torch.no_grad():
        clean = any_model(tokens)
        ablated = any_model.run_with_hooks(
            tokens, fwd_hooks=zero_ablation_hooks(any_model, [(layer, head)]) + [(name, capture)]
        )
    assert torch.count_nonzero(captured["z"][:, :, head]) == 0
    assert torch.count_nonzero(captured["z"][:, :, head + 1]) > 0
    assert not torch.allclose(clean, ablated)


def test_patching_heads_from_another_run(any_model):
    clean, corrupted = any_model.to_tokens(PROMPTS), any_model.to_tokens(OTHER)
    assert clean.shape == corrupted.shape
    heads = [(l, h) for l in range(any_model.cfg.n_layers) for h in range(any_model.cfg.n_heads)]
    with torch.no_grad():
        _, source = any_model.run_with_cache(corrupted)
        patched = any_model.run_with_hooks(clean, fwd_hooks=patch_head_hooks(any_model, heads, source))
        # patching every head's z changes the run, but the MLPs still read the clean tokens
        assert not torch.allclose(patched, any_model(clean), atol=1e-3)
        # patching one head at one position changes only positions at or after it
        one = any_model.run_with_hooks(
            clean, fwd_hooks=patch_head_hooks(any_model, [(0, 0)], source, positions=[3])
        )
        base = any_model(clean)
    assert torch.allclose(one[:, :3], base[:, :3], atol=1e-4)


def test_mean_ablation_uses_reference_means(any_model):
    tokens = any_model.to_tokens(PROMPTS + OTHER)
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
    means = head_means(cache, any_model)
    captured = {}

    def capture(z, hook):
        captured["z"] = z.clone()

    with torch.no_grad():
        any_model.run_with_hooks(
            tokens, fwd_hooks=mean_ablation_hooks(any_model, [(0, 1)], means) + [(get_act_name("z", 0), capture)]
        )
    assert torch.allclose(captured["z"][0, :, 1], cache[get_act_name("z", 0)][:, :, 1].mean(0), atol=1e-5)
    flat = head_means(cache, any_model, per_position=False)
    assert flat[0].shape == (any_model.cfg.n_heads, any_model.cfg.d_head)
    short = any_model.to_tokens(["Hi there"])
    with pytest.raises(ValueError, match="per-position means"):
        any_model.run_with_hooks(short, fwd_hooks=mean_ablation_hooks(any_model, [(0, 1)], means))


def test_patch_shape_mismatch_is_a_clear_error(any_model):
    with torch.no_grad():
        _, source = any_model.run_with_cache(any_model.to_tokens(["Hi there"]))
    with pytest.raises(ValueError, match="same batch size and token length"):
        any_model.run_with_hooks(
            any_model.to_tokens(PROMPTS), fwd_hooks=patch_head_hooks(any_model, [(0, 0)], source)
        )


def test_add_to_residual(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    vector = torch.randn(any_model.cfg.d_model)
    end = any_model.cfg.n_layers
    with torch.no_grad():
        base = any_model(tokens)
        same = any_model.run_with_hooks(tokens, fwd_hooks=add_to_residual_hooks(any_model, end, vector, scale=0.0))
        shifted = any_model.run_with_hooks(tokens, fwd_hooks=add_to_residual_hooks(any_model, 0, vector, positions=[-1]))
    assert torch.allclose(base, same, atol=1e-5)
    assert torch.allclose(base[:, :-1], shifted[:, :-1], atol=1e-4)
    assert not torch.allclose(base[:, -1], shifted[:, -1], atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        add_to_residual_hooks(any_model, 0, torch.randn(3))
    with pytest.raises(ValueError, match="out of range"):
        add_to_residual_hooks(any_model, end + 1, vector)


@pytest.mark.parametrize(
    "heads, error, message",
    [
        ([(99, 0)], ValueError, "layer 99 is out of range"),
        ([(0, 99)], ValueError, "head 99 is out of range"),
        ([(-1, 0)], ValueError, "out of range"),
        ([(0.5, 0)], TypeError, "layer must be an int"),
        ([3], TypeError, "pairs"),
        ([], ValueError, "no heads"),
    ],
)
def test_bad_heads(any_model, heads, error, message):
    with pytest.raises(error, match=message):
        check_heads(any_model, heads)
    with pytest.raises(error, match=message):
        zero_ablation_hooks(any_model, heads)
