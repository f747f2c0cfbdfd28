"""Directional addition and subtraction (utils.steering) on both architectures."""

import pytest
import torch

from utils.data.sentiment import sentiment_score
from transformer_lens.utilities import get_act_name
from utils.interventions.hooks import (
    add_to_heads_hooks,
    add_to_residual_hooks,
    project_out_of_heads_hooks,
)
from utils.interventions.steering import (
    greedy_continuations,
    head_addition_sweep,
    removed_direct_effect,
    steering_sweep,
)
from utils.attribution.dla import direct_contributions
from utils.analysis.directions import (
    head_output_differences,
    mean_difference,
    projection_accuracy,
    projection_effect_size,
    random_directions_like,
    residual_directions,
    sentiment_logit_direction,
)

PROMPTS = ["When Mary and John went to the store, John gave a drink to"] * 2


def capture_hook(store, key):
    def hook(value, hook):
        store[key] = value.clone()

    return hook


# --- directions -------------------------------------------------------------


def test_mean_difference_and_its_errors():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([1, 1, 0])
    assert torch.allclose(mean_difference(acts, labels), torch.tensor([2.0, -2.0]))
    assert torch.allclose(mean_difference(acts.T, labels, batch_dim=1), torch.tensor([2.0, -2.0]))
    with pytest.raises(ValueError, match="labels for a batch"):
        mean_difference(acts, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="0 or 1"):
        mean_difference(acts, torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError, match="both classes"):
        mean_difference(acts, torch.tensor([1, 1, 1]))
    with pytest.raises(TypeError):
        mean_difference(acts, [1, 1, 0])


def test_residual_and_head_directions(any_model):
    tokens = any_model.to_tokens(["The film was great and", "The film was awful and"])
    labels = torch.tensor([1, 0])
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
    cfg = any_model.cfg
    resid = residual_directions(any_model, cache, labels)
    assert resid.shape == (cfg.n_layers + 1, cfg.d_model)
    manual = cache[get_act_name("resid_pre", 1)][0, -1] - cache[get_act_name("resid_pre", 1)][1, -1]
    assert torch.allclose(resid[1], manual, atol=1e-5)
    heads = head_output_differences(any_model, cache, labels)
    assert heads.shape == (cfg.n_layers, cfg.n_heads, cfg.d_head)
    z = cache[get_act_name("z", 0)][:, -1, 1]
    assert torch.allclose(heads[0, 1], z[0] - z[1], atol=1e-5)
    # one position per prompt: prompt 0 at position 2, prompt 1 at position 3
    positions = torch.tensor([2, 3])
    resid_pre = cache[get_act_name("resid_pre", 1)]
    at = residual_directions(any_model, cache, labels, positions)
    assert torch.allclose(at[1], resid_pre[0, 2] - resid_pre[1, 3], atol=1e-5)
    z = cache[get_act_name("z", 0)][:, :, 1]
    at = head_output_differences(any_model, cache, labels, positions)
    assert torch.allclose(at[0, 1], z[0, 2] - z[1, 3], atol=1e-5)
    with pytest.raises(TypeError, match="positions must be a LongTensor"):
        residual_directions(any_model, cache, labels, -1)


def test_sentiment_logit_direction_reads_the_score(any_model):
    tokens = any_model.to_tokens(PROMPTS[:1])
    positive, negative = torch.tensor([10, 20, 30]), torch.tensor([40, 50])
    with torch.no_grad():
        logits, cache = any_model.run_with_cache(tokens)
    direction = sentiment_logit_direction(any_model, positive, negative)
    normalised = any_model.ln_final(cache[get_act_name("resid_post", any_model.cfg.n_layers - 1)][:, -1])
    bias = getattr(any_model, "b_U", None)
    offset = 0.0 if bias is None else float(bias[positive].mean() - bias[negative].mean())
    expected = sentiment_score(logits, positive, negative)
    assert torch.allclose(normalised @ direction + offset, expected, atol=1e-3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sentiment_logit_direction(any_model, torch.tensor([any_model.cfg.d_vocab]), negative)
    with pytest.raises(ValueError, match="non-empty"):
        sentiment_logit_direction(any_model, torch.tensor([], dtype=torch.long), negative)


def test_random_directions_like():
    direction = torch.arange(1.0, 9.0)
    draws = random_directions_like(direction, 3, seed=4)
    assert draws.shape == (3, 8)
    assert torch.allclose(draws.norm(dim=-1), direction.norm().expand(3))
    assert torch.equal(draws, random_directions_like(direction, 3, seed=4))
    assert not torch.allclose(draws, random_directions_like(direction, 3, seed=5))
    with pytest.raises(ValueError, match="1-D"):
        random_directions_like(direction[None], 1)
    with pytest.raises(ValueError, match="positive int"):
        random_directions_like(direction, 0)


def test_projection_accuracy():
    train = torch.tensor([[2.0, 0.0], [3.0, 1.0], [-2.0, 0.0], [-1.0, 5.0]])
    train_labels = torch.tensor([1, 1, 0, 0])
    test = torch.tensor([[1.5, 0.0], [-3.0, 0.0], [-2.5, 0.0]])
    test_labels = torch.tensor([1, 0, 0])
    right = torch.tensor([1.0, 0.0])
    assert float(projection_accuracy(train, train_labels, test, test_labels, right)) == 1.0
    assert float(projection_accuracy(train, train_labels, test, test_labels, -right)) == 1.0
    # A direction that reverses between the splits scores 0: the threshold comes from train.
    flipped_test = torch.tensor([[-1.5, 0.0], [3.0, 0.0], [2.5, 0.0]])
    assert float(projection_accuracy(train, train_labels, flipped_test, test_labels, right)) == 0.0
    stacked = projection_accuracy(
        train.expand(4, -1, -1), train_labels, test.expand(4, -1, -1), test_labels, right.expand(4, -1)
    )
    assert stacked.shape == (4,)
    with pytest.raises(ValueError, match="directions have size"):
        projection_accuracy(train, train_labels, test, test_labels, torch.ones(3))
    with pytest.raises(ValueError, match="labels for a batch"):
        projection_accuracy(train, train_labels, test, train_labels, right)


def test_projection_effect_size():
    train = torch.tensor([[2.0, 0.0], [3.0, 1.0], [-2.0, 0.0], [-1.0, 5.0]])
    train_labels = torch.tensor([1, 1, 0, 0])
    test = torch.tensor([[1.0, 0.0], [3.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])
    test_labels = torch.tensor([1, 1, 0, 0])
    # class means +2 and -2, both with standard deviation sqrt(2): d = 4 / sqrt(2)
    expected = 4 / 2**0.5
    right = torch.tensor([1.0, 0.0])
    assert abs(float(projection_effect_size(train, train_labels, test, test_labels, right)) - expected) < 1e-5
    # the sign is taken from the train set, so a reversed direction gives the same value
    reversed_value = float(projection_effect_size(train, train_labels, test, test_labels, -right))
    assert abs(reversed_value - expected) < 1e-5
    with pytest.raises(ValueError, match="at least two prompts"):
        projection_effect_size(train, train_labels, test[:3], torch.tensor([1, 1, 0]), right)


# --- directional addition ---------------------------------------------------


def test_add_to_residual_hooks_shift_every_position_but_bos(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    layer = 1
    direction = torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    name = get_act_name("resid_pre", layer)
    store = {}
    scale = torch.tensor([2.0, -1.0])
    with torch.no_grad():
        any_model.run_with_hooks(tokens, fwd_hooks=[(name, capture_hook(store, "clean"))])
        any_model.run_with_hooks(
            tokens,
            fwd_hooks=add_to_residual_hooks(any_model, layer, direction, scale, start_pos=1)
            + [(name, capture_hook(store, "steered"))],
        )
    change = store["steered"] - store["clean"]
    assert torch.allclose(change[:, 0], torch.zeros_like(change[:, 0]))
    assert torch.allclose(change[0, 1:], (2.0 * direction).expand_as(change[0, 1:]), atol=1e-4)
    assert torch.allclose(change[1, 1:], (-1.0 * direction).expand_as(change[1, 1:]), atol=1e-4)


def test_add_to_residual_hooks_errors(any_model):
    good = torch.zeros(any_model.cfg.d_model)
    with pytest.raises(ValueError, match="shape"):
        add_to_residual_hooks(any_model, 0, torch.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        add_to_residual_hooks(any_model, any_model.cfg.n_layers + 1, good)
    with pytest.raises(ValueError, match="start_pos"):
        add_to_residual_hooks(any_model, 0, good, start_pos=-1)
    with pytest.raises(TypeError, match="scale"):
        add_to_residual_hooks(any_model, 0, good, "big")
    hooks = add_to_residual_hooks(any_model, 0, good, torch.ones(5))
    with pytest.raises(ValueError, match="5 values for 2 rows"):
        any_model.run_with_hooks(any_model.to_tokens(PROMPTS), fwd_hooks=hooks)


def test_steering_sweep_at_zero_is_the_clean_run(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    # not a constant vector: LayerNorm would centre it away
    direction = 10 * torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(3))

    def metric(logits):
        return logits[:, -1, 0]

    with torch.no_grad():
        clean = metric(any_model(tokens))
        hooks = add_to_residual_hooks(any_model, 1, direction, 1.0, start_pos=1)
        one_alpha = metric(any_model.run_with_hooks(tokens, fwd_hooks=hooks))
    swept = steering_sweep(any_model, tokens, 1, direction, [0.0, 1.0], metric)
    assert swept.shape == (2, 2)
    assert torch.allclose(swept[0], clean, atol=1e-3)
    assert torch.allclose(swept[1], one_alpha, atol=1e-3)
    assert not torch.allclose(swept[1], clean, atol=1e-3)
    rows = steering_sweep(any_model, tokens, 1, direction, [0.0, 1.0], lambda logits: logits[:, -1, :3])
    assert rows.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        steering_sweep(any_model, tokens, 1, direction, [], metric)
    with pytest.raises(ValueError, match="one value"):
        steering_sweep(any_model, tokens, 1, direction, [1.0], lambda logits: logits.mean())


def test_head_addition_sweep_matches_separate_runs(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    cfg = any_model.cfg
    z_dirs = torch.randn(cfg.n_layers, cfg.n_heads, cfg.d_head, generator=torch.Generator().manual_seed(5))
    head_sets = [[(0, 0)], [(1, 1)], [(0, 0), (1, 1)]]

    def metric(logits):
        return logits[:, -1, :4]

    swept = head_addition_sweep(any_model, tokens, head_sets, z_dirs, metric, scale=2.0)
    assert swept.shape == (3, 2, 4)
    with torch.no_grad():
        for index, heads in enumerate(head_sets):
            hooks = add_to_heads_hooks(any_model, heads, z_dirs, 2.0)
            alone = metric(any_model.run_with_hooks(tokens, fwd_hooks=hooks))
            assert torch.allclose(swept[index], alone, atol=1e-3)
    # At chosen positions (here different per prompt) the positions before the earliest
    # one are computed once: the same values as separate plain runs.
    at = torch.tensor([tokens.shape[1] - 1, tokens.shape[1] - 3])
    swept = head_addition_sweep(any_model, tokens, head_sets, z_dirs, metric, scale=2.0, positions=at,
                                last_position_only=True)
    with torch.no_grad():
        for index, heads in enumerate(head_sets):
            hooks = add_to_heads_hooks(any_model, heads, z_dirs, 2.0, positions=at)
            alone = metric(any_model.run_with_hooks(tokens, fwd_hooks=hooks))
            assert torch.allclose(swept[index], alone, atol=1e-3)
            assert not torch.allclose(alone, metric(any_model(tokens)), atol=1e-3)
    with pytest.raises(ValueError, match="empty"):
        head_addition_sweep(any_model, tokens, [], z_dirs, metric)
    with pytest.raises(ValueError, match="positions"):
        head_addition_sweep(any_model, tokens, head_sets, z_dirs, metric, positions=torch.tensor([0, tokens.shape[1]]))


def test_add_to_heads_hooks_changes_one_head_at_one_position(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    cfg = any_model.cfg
    layer, head = 1, 1
    z_dirs = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.d_head)
    z_dirs[layer, head] = 1.0
    store = {}
    name = get_act_name("z", layer)
    with torch.no_grad():
        any_model.run_with_hooks(tokens, fwd_hooks=[(name, capture_hook(store, "clean"))])
        any_model.run_with_hooks(
            tokens,
            fwd_hooks=add_to_heads_hooks(
                any_model, [(layer, head)], z_dirs, 3.0, positions=torch.full((2,), tokens.shape[1] - 1)
            )
            + [(name, capture_hook(store, "steered"))],
        )
    change = store["steered"] - store["clean"]
    assert torch.allclose(change[:, -1, head], torch.full((2, cfg.d_head), 3.0), atol=1e-5)
    change[:, -1, head] = 0.0
    assert torch.count_nonzero(change) == 0
    with pytest.raises(ValueError, match="z_directions"):
        add_to_heads_hooks(any_model, [(layer, head)], torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="out of range"):
        add_to_heads_hooks(any_model, [(layer, cfg.n_heads)], z_dirs)


# --- directional subtraction ------------------------------------------------


def test_project_out_removes_only_the_heads_component(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    cfg = any_model.cfg
    layer, heads = 1, [(1, 0), (1, 2)]
    direction = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(1))
    unit = direction / direction.norm()
    store = {}
    with torch.no_grad():
        names = [get_act_name("z", layer), get_act_name("attn_out", layer)]
        _, cache = any_model.run_with_cache(tokens, names_filter=names)
        any_model.run_with_hooks(
            tokens,
            fwd_hooks=project_out_of_heads_hooks(any_model, heads, direction)
            + [(get_act_name("attn_out", layer), capture_hook(store, "out"))],
        )
    z = cache[get_act_name("z", layer)]
    written = torch.stack([z[:, :, h] @ any_model.W_O[layer, h] for _, h in heads]).sum(0)
    expected = cache[get_act_name("attn_out", layer)] - (written @ unit)[..., None] * unit
    assert torch.allclose(store["out"], expected, atol=1e-4)


def test_project_out_errors(any_model):
    cfg = any_model.cfg
    with pytest.raises(ValueError, match="zero"):
        project_out_of_heads_hooks(any_model, [(0, 0)], torch.zeros(cfg.d_model))
    with pytest.raises(ValueError, match="one per layer"):
        project_out_of_heads_hooks(any_model, [(0, 0)], torch.ones(1, cfg.d_model))
    with pytest.raises(ValueError, match="d_model"):
        project_out_of_heads_hooks(any_model, [(0, 0)], torch.ones(cfg.d_model + 1))
    with pytest.raises(ValueError, match="out of range"):
        project_out_of_heads_hooks(any_model, [(cfg.n_layers, 0)], torch.ones(cfg.d_model))


def test_removed_direct_effect_is_the_heads_direct_contribution_along_the_readout(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    cfg = any_model.cfg
    readout = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(6))
    heads = [(0, 1), (1, 0)]
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
    # projecting out the readout itself removes exactly the heads' direct contribution
    removed = removed_direct_effect(any_model, cache, heads, readout, readout)
    parts = direct_contributions(any_model, cache, readout)["heads"]
    assert torch.allclose(removed, parts[:, 0, 1] + parts[:, 1, 0], atol=1e-4)
    # a direction orthogonal to the readout removes nothing that the readout sees
    other = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(7))
    other = other - (other @ readout) / (readout @ readout) * readout
    orthogonal = removed_direct_effect(any_model, cache, heads, other, readout)
    assert torch.allclose(orthogonal, torch.zeros(2), atol=1e-4)
    with pytest.raises(ValueError, match="readout"):
        removed_direct_effect(any_model, cache, heads, readout, torch.ones(3))
    with pytest.raises(ValueError, match="one per layer"):
        removed_direct_effect(any_model, cache, heads, readout[None], readout)


# --- who carries the signal -------------------------------------------------


def test_direct_contributions_add_up_to_the_readout(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    cfg = any_model.cfg
    direction = torch.randn(cfg.d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens)
    parts = direct_contributions(any_model, cache, direction)
    assert parts["heads"].shape == (2, cfg.n_layers, cfg.n_heads)
    assert parts["mlp"].shape == (2, cfg.n_layers)
    scale = cache[get_act_name("scale")][:, -1, 0]
    rest = cache["hook_embed"][:, -1]
    if "hook_pos_embed" in cache:
        rest = rest + cache["hook_pos_embed"][:, -1]
    for layer in range(cfg.n_layers):
        b_O = any_model.blocks[layer].attn.b_O
        if b_O is not None:
            rest = rest + b_O
    total = parts["heads"].sum((1, 2)) + parts["mlp"].sum(1) + rest @ direction / scale
    final = cache[get_act_name("resid_post", cfg.n_layers - 1)][:, -1] @ direction / scale
    assert torch.allclose(total, final, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        direct_contributions(any_model, cache, torch.ones(3))


def test_steering_sweep_equals_plain_forward_passes(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    generator = torch.Generator().manual_seed(7)
    directions = 10 * torch.randn(3, any_model.cfg.d_model, generator=generator)

    def metric(logits):
        return logits[:, -1, :5]

    def plain(layer, direction, alpha):
        """The reference: one forward pass with the addition hook."""
        hooks = add_to_residual_hooks(any_model, layer, direction, alpha, start_pos=1)
        with torch.no_grad():
            return metric(any_model.run_with_hooks(tokens, fwd_hooks=hooks))

    alphas = [[-1.0, 0.0, 1.0], [0.5], [-0.5, 2.0]]
    for last_only in (False, True):
        swept = steering_sweep(any_model, tokens, 1, directions, alphas, metric, last_position_only=last_only)
        assert [tuple(v.shape) for v in swept] == [(3, 2, 5), (1, 2, 5), (2, 2, 5)]
        for direction, row, values in zip(directions, alphas, swept):
            for alpha, value in zip(row, values):
                assert torch.allclose(value, plain(1, direction, alpha), atol=1e-3)
    # one alpha list shared by every direction; one direction alone gives one tensor
    shared = steering_sweep(any_model, tokens, 0, directions[:2], [0.0, 1.0], metric)
    single = steering_sweep(any_model, tokens, 0, directions[0], [0.0, 1.0], metric)
    assert isinstance(single, torch.Tensor) and torch.allclose(shared[0], single, atol=1e-5)
    assert torch.allclose(single[1], plain(0, directions[0], 1.0), atol=1e-3)
    with pytest.raises(ValueError, match="directions"):
        steering_sweep(any_model, tokens, 1, torch.ones(3), [1.0], metric)
    with pytest.raises(ValueError, match="alphas"):
        steering_sweep(any_model, tokens, 1, directions, [[1.0]], metric)
    with pytest.raises(ValueError, match="alphas"):
        steering_sweep(any_model, tokens, 1, directions[0], [[1.0]], metric)
    with pytest.raises(ValueError, match="layer"):
        steering_sweep(any_model, tokens, any_model.cfg.n_layers, directions, [1.0], metric)
    with pytest.raises(ValueError, match="one value"):
        steering_sweep(any_model, tokens, 1, directions, [1.0], lambda logits: logits.mean())


def test_greedy_continuations_equal_transformer_lens_generate(any_model):
    tokens = any_model.to_tokens(PROMPTS)
    direction = 10 * torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(11))
    rows = torch.tensor([0.0, 1.0])

    def reference(hooks):
        """TransformerLens's own greedy generation under the hooks, without a key/value cache."""
        with torch.no_grad(), any_model.hooks(fwd_hooks=list(hooks)):
            generated = any_model.generate(tokens, max_new_tokens=4, do_sample=False, stop_at_eos=False,
                                           verbose=False, use_past_kv_cache=False, return_type="tokens")
        return [any_model.tokenizer.decode(row[tokens.shape[1]:]) for row in generated]

    for hooks in ([], add_to_residual_hooks(any_model, 1, direction, rows, start_pos=1)):
        assert greedy_continuations(any_model, tokens, 4, hooks) == reference(hooks)
    texts = greedy_continuations(any_model, tokens, 3)
    with torch.no_grad():
        first = any_model(tokens)[:, -1].argmax(-1)
    assert all(text.startswith(any_model.tokenizer.decode(t)) for text, t in zip(texts, first))
    # A large steering vector changes what is generated.
    push = 50 * any_model.W_U[:, first[0]].detach()
    hooks = add_to_residual_hooks(any_model, any_model.cfg.n_layers, -push, start_pos=1)
    assert greedy_continuations(any_model, tokens, 3, hooks) != texts
    calls = []

    def count(resid, hook):
        calls.append(resid.shape[1])
        return resid

    greedy_continuations(any_model, tokens, 3, [(get_act_name("resid_pre", 0), count)])
    assert calls == [tokens.shape[1], tokens.shape[1] + 1, tokens.shape[1] + 2]  # the whole sequence each step
    with pytest.raises(ValueError, match="n_tokens"):
        greedy_continuations(any_model, tokens, 0)
