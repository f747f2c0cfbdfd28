"""Hook factories on both architectures."""

import pytest
import torch

from transformer_lens.utilities import get_act_name

from utils.core.heads import check_heads
from utils.interventions.hooks import add_to_residual_hooks, replace_heads_hooks, source_values

PROMPTS = ["When Mary and John went to the store, John gave a drink to"]
OTHER = ["When Alice and Bob went to the park, Bob gave a book to"]


def last_layer_head(model):
    return model.cfg.n_layers - 1, model.cfg.n_heads - 1


def test_patching_heads_from_another_run(any_model):
    clean, corrupted = any_model.to_tokens(PROMPTS), any_model.to_tokens(OTHER)
    assert clean.shape == corrupted.shape
    heads = [(l, h) for l in range(any_model.cfg.n_layers) for h in range(any_model.cfg.n_heads)]
    source = source_values(any_model, corrupted)
    with torch.no_grad():
        patched = any_model.run_with_hooks(clean, fwd_hooks=replace_heads_hooks(any_model, heads, source))
        # patching every head's z changes the run, but the MLPs still read the clean tokens
        assert not torch.allclose(patched, any_model(clean), atol=1e-3)
        # patching one head at one position changes only positions at or after it
        one = any_model.run_with_hooks(
            clean, fwd_hooks=replace_heads_hooks(any_model, [(0, 0)], source, positions=torch.tensor([3]))
        )
        base = any_model(clean)
    assert torch.allclose(one[:, :3], base[:, :3], atol=1e-4)
    assert not torch.allclose(one[:, 3:], base[:, 3:], atol=1e-4)


def test_patch_shape_mismatch_is_a_clear_error(any_model):
    source = source_values(any_model, any_model.to_tokens(["Hi there"]))
    with pytest.raises(ValueError, match="positions"):
        any_model.run_with_hooks(
            any_model.to_tokens(PROMPTS), fwd_hooks=replace_heads_hooks(any_model, [(0, 0)], source)
        )


def plain_add(vector, position):
    def hook(resid, hook):
        resid = resid.clone()
        resid[:, position] += vector
        return resid

    return hook


def test_add_to_residual(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    vector = torch.randn(any_model.cfg.d_model)
    end = any_model.cfg.n_layers
    with torch.no_grad():
        base = any_model(tokens)
        same = any_model.run_with_hooks(tokens, fwd_hooks=add_to_residual_hooks(any_model, end, vector, 0.0))
        last = torch.tensor([tokens.shape[1] - 1])
        shifted = any_model.run_with_hooks(tokens, fwd_hooks=add_to_residual_hooks(any_model, 0, vector, positions=last))
        plain = any_model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("resid_pre", 0), plain_add(vector, -1))])
    assert torch.allclose(shifted, plain, atol=1e-5)
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
    zeros = [torch.zeros(1, 1, any_model.cfg.n_heads, any_model.cfg.d_head)] * any_model.cfg.n_layers
    with pytest.raises(error, match=message):
        replace_heads_hooks(any_model, heads, zeros)


def test_local_window_hooks_truncate_and_renormalise(any_model):
    from utils.interventions.hooks import local_window_hooks
    from utils.interventions.runner import PrefixRun

    tokens = any_model.to_tokens(PROMPTS + OTHER)
    window, head = 3, any_model.cfg.n_heads - 1
    name = get_act_name("pattern", 0)
    with torch.no_grad():
        _, clean = any_model.run_with_cache(tokens, names_filter=name)
        with any_model.hooks(fwd_hooks=local_window_hooks(any_model, [(0, head)], window, rows=[1])):
            _, cache = any_model.run_with_cache(tokens, names_filter=name)
    before, after = clean[name], cache[name]
    n = tokens.shape[1]
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    far = (k <= q - window) & (k > 0)
    assert torch.allclose(after[0], before[0]) and torch.allclose(after[1, :head], before[1, :head])
    assert after[1, head][far].abs().max() == 0  # the far keys (BOS kept) are cut out ...
    kept = before[1, head] * ~far
    assert torch.allclose(after[1, head], kept / kept.sum(-1, keepdim=True), atol=1e-5)  # ... and rows renormalised
    # under a PrefixRun only the computed (later) queries run, and they are restricted
    last = any_model.cfg.n_layers - 1
    seen = {}

    def keep(pattern, hook):
        seen["pattern"] = pattern.clone()

    prefix = PrefixRun(any_model, tokens, n - 2)
    restricted = prefix(local_window_hooks(any_model, [(last, 0)], window) + [(get_act_name("pattern", last), keep)])
    assert seen["pattern"].shape[-2:] == (2, n)
    assert seen["pattern"][:, 0][:, far[-2:]].abs().max() == 0
    assert seen["pattern"][:, 1][:, far[-2:]].abs().max() > 0  # another head of the layer is untouched
    assert not torch.allclose(restricted, prefix())
    with pytest.raises(ValueError, match="window"):
        local_window_hooks(any_model, [(0, 0)], 0)
