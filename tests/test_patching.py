"""Exact and attribution patching: the fast engine equals TransformerLens's patching loop."""

import pandas as pd
import pytest
import torch
from transformer_lens.patching import (
    generic_activation_patch,
    layer_head_vector_patch_setter,
    layer_pos_head_vector_patch_setter,
)
from transformer_lens.utilities import get_act_name

from utils.data.ioi import ioi_dataset
from utils.core.metrics import logit_diff, logit_diffs
from utils.interventions.patching import (
    attribution_patching_sweep,
    head_patching_per_prompt,
    head_patching_sweep,
    head_position_patching_sweep,
    normalise_patching,
    patching_baselines,
    residual_patching_sweep,
)
from utils.interventions.engine import cache_run, replace_heads_sweep, run_from_layer
from utils.analysis.ranking import ranking_agreement


@pytest.fixture(scope="module")
def ioi_small(any_model):
    ioi = ioi_dataset(any_model, 2, seed=1)

    def metric(logits):
        return logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)

    return any_model, ioi, metric


def transformer_lens_patching(model, clean, corrupted, metric, direction, layers, position=None):
    """TransformerLens's own loop (one forward pass per head), the reference: it copies
    the source run's ``hook_z`` of one head into the base run."""
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    with torch.no_grad():
        _, source_cache = model.run_with_cache(source, names_filter=lambda name: name.endswith("hook_z"))
    heads = range(model.cfg.n_heads)
    if position is None:
        index = pd.DataFrame({"layer": [l for l in layers for _ in heads], "head": [h for _ in layers for h in heads]})
        setter = layer_head_vector_patch_setter
    else:
        position = position % base.shape[1]
        index = pd.DataFrame({
            "layer": [l for l in layers for _ in heads], "pos": [position] * (len(layers) * len(heads)),
            "head": [h for _ in layers for h in heads],
        })
        setter = layer_pos_head_vector_patch_setter
    values = generic_activation_patch(model, base, source_cache, metric, setter, "z", index_df=index)
    return values.reshape(len(layers), model.cfg.n_heads).cpu()


def _some_layers(model):
    return sorted({0, model.cfg.n_layers // 2, model.cfg.n_layers - 1})


def test_resuming_a_cached_run_reproduces_its_logits(ioi_small):
    model, ioi, _ = ioi_small
    run = cache_run(model, ioi.tokens)
    for layer in _some_layers(model):
        logits = run_from_layer(model, run, layer, run.resid_pre[layer].repeat(2, 1, 1))
        assert torch.allclose(logits, run.logits.repeat(2, 1, 1), atol=1e-3)
        last = run_from_layer(model, run, layer, run.resid_pre[layer], last_position_only=True)
        assert torch.allclose(last, run.logits[:, -1:], atol=1e-3)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_fast_exact_patching_equals_transformer_lens(ioi_small, direction):
    model, ioi, metric = ioi_small
    last = model.cfg.n_layers - 1
    end = ioi.positions["END"]
    for layers, positions in (([0, last], None), ([last], end)):
        naive = transformer_lens_patching(
            model, ioi.tokens, ioi.corrupted_tokens, metric, direction, layers,
            None if positions is None else int(end[0]),
        )
        fast = head_patching_sweep(
            model, ioi.tokens, ioi.corrupted_tokens, metric,
            direction=direction, layers=layers, positions=positions,
        )
        assert fast.shape == (len(layers), model.cfg.n_heads)
        assert (fast - naive).abs().max() <= 1e-4
        last_only = head_patching_sweep(
            model, ioi.tokens, ioi.corrupted_tokens, metric,
            direction=direction, layers=layers, positions=positions, last_position_only=True,
        )
        assert (last_only - naive).abs().max() <= 1e-4


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_per_prompt_head_patching_averages_to_the_sweep(any_model, direction):
    ioi = ioi_dataset(any_model, 4, seed=2)
    last = any_model.cfg.n_layers - 1
    heads = [(0, 1), (last, 0), (last, any_model.cfg.n_heads - 1)]
    sweep = head_patching_sweep(
        any_model, ioi.tokens, ioi.corrupted_tokens,
        lambda logits: logit_diff(logits, ioi.answer_ids, ioi.wrong_ids),
        direction=direction, layers=[0, last],
    )
    runs = tuple(cache_run(any_model, t, last_position_only=True) for t in (ioi.tokens, ioi.corrupted_tokens))
    assert runs[0].logits.shape[1] == 1
    for shared in (None, runs):
        per_prompt = head_patching_per_prompt(
            any_model, ioi.tokens, ioi.corrupted_tokens,
            lambda logits: logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids), heads,
            direction=direction, last_position_only=True, runs=shared,
        )
        assert per_prompt.shape == (3, 4)
        expected = torch.stack([sweep[0 if layer == 0 else 1, head] for layer, head in heads])
        assert (per_prompt.mean(dim=1) - expected).abs().max() <= 1e-4
    # One position per prompt (S2 in the first two prompts, END in the others) agrees with
    # the sweep patching the same positions.
    at = torch.where(torch.arange(len(ioi)) < 2, ioi.positions["S2"], ioi.positions["END"])
    sweep_at = head_patching_sweep(
        any_model, ioi.tokens, ioi.corrupted_tokens,
        lambda logits: logit_diff(logits, ioi.answer_ids, ioi.wrong_ids),
        direction=direction, layers=[0, last], positions=at,
    )
    per_prompt_at = head_patching_per_prompt(
        any_model, ioi.tokens, ioi.corrupted_tokens,
        lambda logits: logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids), heads,
        direction=direction, last_position_only=True, positions=at,
    )
    expected_at = torch.stack([sweep_at[0 if layer == 0 else 1, head] for layer, head in heads])
    assert (per_prompt_at.mean(dim=1) - expected_at).abs().max() <= 1e-4
    assert not torch.allclose(per_prompt_at, per_prompt, atol=1e-3)  # the position restricts the patch


def test_per_prompt_head_patching_rejects_bad_input(gpt2_random):
    ioi = ioi_dataset(gpt2_random, 2, seed=0)
    per_prompt = lambda logits: logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)  # noqa: E731
    with pytest.raises(ValueError, match="one value per prompt"):
        head_patching_per_prompt(gpt2_random, ioi.tokens, ioi.corrupted_tokens,
                                 lambda logits: per_prompt(logits).mean(), [(0, 0)])
    with pytest.raises(ValueError, match="other tokens"):
        head_patching_per_prompt(gpt2_random, ioi.tokens, ioi.corrupted_tokens, per_prompt, [(0, 0)],
                                 runs=(cache_run(gpt2_random, ioi.corrupted_tokens),
                                       cache_run(gpt2_random, ioi.tokens)))
    with pytest.raises(ValueError):
        head_patching_per_prompt(gpt2_random, ioi.tokens, ioi.corrupted_tokens, per_prompt, [(99, 0)])
    with pytest.raises(ValueError, match="one position per prompt"):
        head_patching_per_prompt(gpt2_random, ioi.tokens, ioi.corrupted_tokens, per_prompt, [(0, 0)],
                                 positions=torch.stack([ioi.positions["S2"], ioi.positions["END"]], dim=1))


def test_position_specific_patching_matches_hooked_runs(ioi_small):
    model, ioi, metric = ioi_small
    heads = [(model.cfg.n_layers - 1, 1), (0, 2)]
    values = head_position_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, heads, direction="noise"
    )
    assert values.shape == (2, ioi.tokens.shape[1])
    clean_value, _ = patching_baselines(model, ioi.tokens, ioi.corrupted_tokens, metric)
    assert values[:, 0].tolist() == pytest.approx([clean_value] * 2, abs=1e-4)  # BOS agrees
    s2 = int(ioi.positions["S2"][0])
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(
            ioi.corrupted_tokens, names_filter=lambda name: name.endswith("hook_z")
        )
        cases = ((0, heads[0], s2), (0, heads[0], -1), (1, heads[1], -1))
        for row, (layer, head), position in cases:
            name = get_act_name("z", layer)

            def patch(z, hook, head=head, position=position, name=name):
                z[:, position, head] = corrupted_cache[name][:, position, head]
                return z

            expected = metric(model.run_with_hooks(ioi.tokens, fwd_hooks=[(name, patch)]))
            assert values[row, position] == pytest.approx(float(expected), abs=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        head_position_patching_sweep(
            model, ioi.tokens, ioi.corrupted_tokens, metric, [(0, model.cfg.n_heads)]
        )


def test_per_prompt_positions_match_hooked_runs(ioi_small):
    model, ioi, metric = ioi_small
    layer = model.cfg.n_layers - 1
    rows = torch.arange(2)
    # A different position in each prompt: S2 in the first, the IO name in the second.
    at = torch.tensor([int(ioi.positions["S2"][0]), int(ioi.positions["IO"][1])])
    end = ioi.positions["END"]
    z_name, resid_name = get_act_name("z", layer), get_act_name("resid_pre", layer)
    heads = head_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, direction="noise", layers=[layer], positions=at
    )
    residual = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, direction="noise", layers=[layer],
        positions={"mixed": at, "END": end},
    )
    assert residual.shape == (1, 2)
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(ioi.corrupted_tokens, names_filter=[z_name, resid_name])
        for head in range(model.cfg.n_heads):
            def patch_head(z, hook, head=head):
                z[rows, at, head] = corrupted_cache[z_name][rows, at, head]
                return z

            expected = metric(model.run_with_hooks(ioi.tokens, fwd_hooks=[(z_name, patch_head)]))
            assert heads[0, head] == pytest.approx(float(expected), abs=1e-4)
        for column, where in enumerate((at, end)):
            def patch_resid(resid, hook, where=where):
                resid[rows, where] = corrupted_cache[resid_name][rows, where]
                return resid

            expected = metric(model.run_with_hooks(ioi.tokens, fwd_hooks=[(resid_name, patch_resid)]))
            assert residual[0, column] == pytest.approx(float(expected), abs=1e-4)
    # Several positions per prompt (LongTensor[batch, k]) patch them together; the
    # attribution estimate is linear, so its terms at the two positions add up.
    both = torch.stack([at, end], dim=1)
    attribution = {
        name: attribution_patching_sweep(model, ioi.tokens, ioi.corrupted_tokens, metric, layers=[layer], positions=where)
        for name, where in (("at", at), ("end", end), ("both", both))
    }
    with torch.no_grad():
        base_value = float(metric(model(ioi.corrupted_tokens)))
    assert torch.allclose(attribution["both"] - base_value, attribution["at"] + attribution["end"] - 2 * base_value, atol=1e-4)


def test_full_sweep_shape_and_no_effect_when_runs_are_equal(gpt2_random):
    ioi = ioi_dataset(gpt2_random, 2, seed=0)
    metric = lambda logits: logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)  # noqa: E731
    same = head_patching_sweep(gpt2_random, ioi.tokens, ioi.tokens, metric)
    clean_value, _ = patching_baselines(gpt2_random, ioi.tokens, ioi.corrupted_tokens, metric)
    assert same.shape == (gpt2_random.cfg.n_layers, gpt2_random.cfg.n_heads)
    assert torch.allclose(same, torch.full_like(same, clean_value), atol=1e-4)
    attribution = attribution_patching_sweep(
        gpt2_random, ioi.tokens, ioi.tokens, metric
    )
    assert torch.allclose(attribution, same, atol=1e-4)


def test_attribution_is_the_first_order_term_of_exact_patching(ioi_small):
    # Patching a tiny step eps towards the source changes the metric by eps times the
    # attribution estimate, up to O(eps^2): the gradient is checked, not the approximation.
    model, ioi, metric = ioi_small
    layers = _some_layers(model)
    eps = 1e-2
    base, source = cache_run(model, ioi.corrupted_tokens), cache_run(model, ioi.tokens)
    stepped = [b + eps * (s - b) for b, s in zip(base.z, source.z)]
    exact_step = replace_heads_sweep(model, base, stepped, metric, layers=layers)
    base_value = float(metric(base.logits))
    attribution = attribution_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, layers=layers
    )
    finite_difference = (exact_step - base_value) / eps
    linear_term = attribution - base_value
    scale = linear_term.abs().max()
    assert (finite_difference - linear_term).abs().max() <= 0.05 * scale + 1e-4


def test_residual_patching_matches_a_hooked_run(ioi_small):
    model, ioi, metric = ioi_small
    layer = model.cfg.n_layers // 2
    positions = [2, ioi.tokens.shape[1] - 1]
    values = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, layers=[layer],
        positions=torch.tensor([positions, positions]),  # LongTensor[batch, k]: k columns
    )
    assert values.shape == (1, 2)
    single = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, layers=[layer], positions=ioi.positions["END"]
    )
    assert single.shape == (1, 1) and single[0, 0] == pytest.approx(float(values[0, 1]), abs=1e-5)
    name = get_act_name("resid_pre", layer)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(ioi.tokens, names_filter=[name])
        for column, position in enumerate(positions):
            def patch(resid, hook, position=position):
                resid[:, position] = clean_cache[name][:, position]
                return resid

            expected = metric(model.run_with_hooks(ioi.corrupted_tokens, fwd_hooks=[(name, patch)]))
            assert values[0, column] == pytest.approx(float(expected), abs=1e-4)
    # Patching every position of the first layer's input is running the clean prompt.
    first = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, layers=[0]
    )
    _, corrupted_value = patching_baselines(
        model, ioi.tokens, ioi.corrupted_tokens, metric
    )
    assert first.shape == (1, ioi.tokens.shape[1])
    assert first[0, 0] == pytest.approx(corrupted_value, abs=1e-4)  # BOS is the same in both


def test_normalise_patching():
    values = torch.tensor([0.0, 1.0, 3.0])
    assert torch.allclose(normalise_patching(values, 3.0, 1.0), torch.tensor([-0.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="equal"):
        normalise_patching(values, 2.0, 2.0)


def test_ranking_helpers():
    a = torch.tensor([[0.1, 0.9], [0.5, -0.2]])
    b = torch.tensor([[0.2, 0.8], [0.6, 0.1]])
    agreement = ranking_agreement(a, b, k=2)
    assert agreement.spearman == pytest.approx(1.0)
    assert agreement.top_k_overlap == 2
    assert ranking_agreement(a, -b, k=2).spearman == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        ranking_agreement(a, b[:1], k=1)


def test_ranking_agreement_handles_ties_as_scipy_does():
    from scipy.stats import spearmanr

    # many tied effects (heads that do nothing), as zero-ablation maps have
    a = torch.tensor([[0.0, 0.0, 0.3], [0.0, 1.2, 0.3], [-0.5, 0.0, 0.0]])
    b = torch.tensor([[0.1, 0.0, 0.2], [0.0, 0.9, 0.2], [0.0, -0.1, 0.0]])
    expected = spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    assert ranking_agreement(a, b, k=3).spearman == pytest.approx(float(expected), abs=1e-12)
    # a tie-blind ranking would call these identical maps imperfectly correlated
    assert ranking_agreement(a, a.clone(), k=3).spearman == pytest.approx(1.0)
    with pytest.raises(TypeError, match="tensors"):
        ranking_agreement(a.tolist(), b, k=3)


def test_clear_errors(gpt2_random):
    model = gpt2_random
    ioi = ioi_dataset(model, 2, seed=0)
    metric = lambda logits: logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)  # noqa: E731
    clean, corrupted = ioi.tokens, ioi.corrupted_tokens
    for function in (head_patching_sweep, attribution_patching_sweep, residual_patching_sweep):
        with pytest.raises(ValueError, match="same shape"):
            function(model, clean, corrupted[:, :-1], metric)
        with pytest.raises(ValueError, match="direction"):
            function(model, clean, corrupted, metric, direction="sideways")
        with pytest.raises(ValueError, match="scalar"):
            function(model, clean, corrupted, lambda logits: logits[:, -1, 0])
        with pytest.raises(ValueError, match="out of range"):
            function(model, clean, corrupted, metric, layers=[model.cfg.n_layers])
        with pytest.raises(ValueError, match="outside"):
            function(model, clean, corrupted, metric, positions=torch.full((2,), clean.shape[1]))
        with pytest.raises(TypeError, match="LongTensor"):
            function(model, clean, corrupted, metric, positions=[1])
        with pytest.raises(ValueError, match="one row per prompt"):
            function(model, clean, corrupted, metric, positions=torch.tensor([1, 1, 1]))
    with pytest.raises(TypeError, match="token ids"):
        head_patching_sweep(model, clean.tolist(), corrupted, metric)
    with pytest.raises(ValueError, match="integer token ids"):
        head_patching_sweep(model, clean.float(), corrupted.float(), metric)
    run = cache_run(model, clean)
    with pytest.raises(ValueError, match="one entry per layer"):
        replace_heads_sweep(model, run, run.z[:1], metric)
    with pytest.raises(ValueError, match="resid must stack"):
        run_from_layer(model, run, 0, run.resid_pre[0][:, :-1])


def test_residual_patching_per_prompt_gives_each_prompts_value(ioi_small):
    model, ioi, metric = ioi_small
    per_prompt_metric = lambda logits: logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)  # noqa: E731
    layers = [0, model.cfg.n_layers - 1]
    columns = {"S2": ioi.positions["S2"], "END": ioi.positions["END"]}
    values = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, per_prompt_metric, layers=layers, positions=columns,
        per_prompt=True, last_position_only=True,
    )
    assert values.shape == (2, 2, len(ioi))
    mean = residual_patching_sweep(
        model, ioi.tokens, ioi.corrupted_tokens, metric, layers=layers, positions=columns,
        last_position_only=True,
    )
    assert torch.allclose(values.mean(dim=-1), mean, atol=1e-4)
    # one prompt patched alone gives the same value as in the batch
    alone = residual_patching_sweep(
        model, ioi.tokens[1:2], ioi.corrupted_tokens[1:2],
        lambda logits: logit_diffs(logits, ioi.answer_ids[1:2], ioi.wrong_ids[1:2]),
        layers=layers, positions={k: v[1:2] for k, v in columns.items()}, per_prompt=True,
        last_position_only=True,
    )
    assert torch.allclose(alone[..., 0], values[..., 1], atol=1e-3)
    with pytest.raises(ValueError, match="one value per prompt"):
        residual_patching_sweep(model, ioi.tokens, ioi.corrupted_tokens, metric, layers=layers, per_prompt=True)
