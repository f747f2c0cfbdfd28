"""Zero, mean and resample ablation of heads, their effects and backup analysis."""

import pytest
import torch

from transformer_lens.utilities import get_act_name

from utils.attribution.dla import logit_difference_direction
from utils.core.metrics import logit_diff
from utils.data.ioi import ioi_dataset
from utils.core.heads import layer_matched_random_heads
from utils.core.metrics import logit_diffs
from utils.interventions.ablation import ablate_head_sets, ablation_values, derangement, head_ablation_sweep
from utils.interventions.engine import cache_run
from utils.interventions.effects import backup_analysis, head_effects
from utils.interventions.hooks import replace_heads_hooks


def plain_replace_hook(heads, value):
    """A plain hand-written hook writing ``value`` into ``heads`` of one layer."""

    def hook(z, hook):
        z[:, :, heads] = value.expand_as(z)[:, :, heads]
        return z

    return hook


@pytest.fixture(scope="module")
def ioi_small(any_model):
    ioi = ioi_dataset(any_model, 4, seed=2)

    def metric(logits):
        return logit_diff(logits, ioi.answer_ids, ioi.wrong_ids)

    return any_model, ioi, metric


def test_derangement_moves_every_item_and_is_seeded():
    for n in (2, 3, 8):
        permutation = derangement(n, seed=3)
        assert sorted(permutation.tolist()) == list(range(n))
        assert (permutation != torch.arange(n)).all()
    assert torch.equal(derangement(8, seed=1), derangement(8, seed=1))
    with pytest.raises(ValueError, match="n >= 2"):
        derangement(1)


def test_ablation_values_shapes_and_meaning(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    batch, pos = tokens.shape
    shape = (batch, pos, model.cfg.n_heads, model.cfg.d_head)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[get_act_name("z", 0)])
    zero = ablation_values(model, tokens, "zero")
    mean = ablation_values(model, tokens, "mean")
    resample = ablation_values(model, tokens, "resample", seed=0)
    assert len(zero) == len(mean) == len(resample) == model.cfg.n_layers
    for values in (zero, mean, resample):
        assert values[0].expand(shape).shape == shape
    assert torch.count_nonzero(zero[0]) == 0
    assert torch.allclose(mean[0][0], cache[get_act_name("z", 0)].mean(dim=0))
    order = derangement(batch, seed=0)
    assert torch.allclose(resample[0], cache[get_act_name("z", 0)][order])


def test_ablation_values_from_an_existing_cache(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
    for method in ("mean", "resample"):
        fresh = ablation_values(model, tokens, method)
        reused = ablation_values(model, tokens, method, reference_cache=cache)
        assert all(torch.equal(a, b) for a, b in zip(fresh, reused)), method
    with pytest.raises(ValueError, match="lacks"):
        ablation_values(model, tokens, "mean", reference_cache={})
    with pytest.raises(ValueError, match="reference prompts"):
        ablation_values(model, tokens[:2], "mean", reference_tokens=tokens[:2], reference_cache=cache)


def test_single_head_sweep_matches_the_shared_hooks(ioi_small):
    model, ioi, metric = ioi_small
    tokens = ioi.tokens
    layer = model.cfg.n_layers - 1
    zero = head_ablation_sweep(model, tokens, metric, method="zero", layers=[layer])
    mean = head_ablation_sweep(
        model, tokens, metric, method="mean", layers=[layer], last_position_only=True
    )
    assert zero.shape == mean.shape == (1, model.cfg.n_heads)
    prebuilt = ablation_values(model, tokens, "mean")
    assert torch.equal(
        head_ablation_sweep(
            model, tokens, metric, values=prebuilt, layers=[layer], last_position_only=True
        ),
        mean,
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
        mean_z = cache[get_act_name("z", layer)].mean(dim=0, keepdim=True)
        for head in (0, model.cfg.n_heads - 1):
            zero_hooks = [(get_act_name("z", layer), plain_replace_hook([head], torch.zeros_like(mean_z)))]
            mean_hooks = [(get_act_name("z", layer), plain_replace_hook([head], mean_z))]
            expected_zero = metric(model.run_with_hooks(tokens, fwd_hooks=zero_hooks))
            expected_mean = metric(model.run_with_hooks(tokens, fwd_hooks=mean_hooks))
            assert zero[0, head] == pytest.approx(float(expected_zero), abs=1e-4)
            assert mean[0, head] == pytest.approx(float(expected_mean), abs=1e-4)


def test_replace_heads_hooks_match_plain_hooks(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    layer = model.cfg.n_layers - 1
    heads = [0, model.cfg.n_heads - 1]
    for method in ("zero", "mean", "resample"):
        values = ablation_values(model, tokens, method)
        with torch.no_grad():
            ours = model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, [(layer, h) for h in heads], values))
            plain = model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), plain_replace_hook(heads, values[layer]))])
        assert torch.allclose(ours, plain, atol=1e-5), method


def test_replace_heads_hooks_at_one_position_per_row(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    values = ablation_values(model, tokens, "mean")
    positions = torch.tensor([1, 2, 3, 4])
    name = get_act_name("z", 0)
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=[name])
        with model.hooks(fwd_hooks=replace_heads_hooks(model, [(0, 1)], values, positions=positions)):
            _, replaced = model.run_with_cache(tokens, names_filter=[name])
    for row, position in enumerate(positions.tolist()):
        expected = clean[name][row].clone()
        expected[position, 1] = values[0][0, position, 1]
        assert torch.allclose(replaced[name][row], expected, atol=1e-6)
    with pytest.raises(TypeError, match="LongTensor"):
        replace_heads_hooks(model, [(0, 1)], values, positions=[1, 2, 3, 4])


def test_head_effects_of_several_heads_match_plain_hooks(ioi_small):
    model, ioi, metric = ioi_small
    tokens = ioi.tokens
    layer = model.cfg.n_layers // 2
    values = ablation_values(model, tokens, "mean")
    effects = head_effects(model, tokens, [(layer, 0), (layer, 1)], metric, values)
    with torch.no_grad():
        total = metric(model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), plain_replace_hook([0, 1], values[layer]))]))
    assert effects.total == pytest.approx(float(total) - effects.clean, abs=1e-4)


def test_backup_analysis_bookkeeping(ioi_small):
    model, ioi, metric = ioi_small
    tokens = ioi.tokens
    directions = logit_difference_direction(model, ioi.answer_ids, ioi.wrong_ids)
    layer = model.cfg.n_layers // 2
    values = ablation_values(model, tokens, "zero")
    result = backup_analysis(model, tokens, metric, directions, [(layer, 1)], values)
    reference = head_effects(model, tokens, [(layer, 1)], metric, values)  # zero ablation of one head
    assert result.clean == pytest.approx(reference.clean, abs=1e-4)
    assert result.ablated - result.clean == pytest.approx(reference.total, abs=1e-4)
    # The additive prediction is the direct effect; what the model makes up is the rest.
    assert result.predicted - result.clean == pytest.approx(reference.direct, abs=1e-4)
    assert result.compensation == pytest.approx(reference.indirect, abs=1e-4)
    # A zero-ablated head writes nothing, and it is left out of the changes of the others.
    assert result.dla_ablated[layer, 1] == pytest.approx(0.0, abs=1e-5)
    assert result.dla_change[layer, 1] == 0.0
    assert result.dla_change.shape == (model.cfg.n_layers, model.cfg.n_heads)
    heads = [(layer, 0), (model.cfg.n_layers - 1, 2)]
    together = backup_analysis(model, tokens, metric, directions, heads, values, keep=("pattern",))
    with torch.no_grad():
        hooks = [(get_act_name("z", l), plain_replace_hook([h], values[l])) for l, h in heads]
        with model.hooks(fwd_hooks=hooks):
            ablated, ablated_cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert together.ablated == pytest.approx(float(metric(ablated)), abs=1e-4)
    # The ablated run's attention patterns, kept on request.
    for l in range(model.cfg.n_layers):
        name = get_act_name("pattern", l)
        assert torch.allclose(together.ablated_cache[name], ablated_cache[name], atol=1e-5)
    # Downstream: the heads after the first ablated layer, the ablated heads excepted.
    downstream = together.downstream
    assert not downstream[: layer + 1].any()
    assert downstream[layer + 1 :].sum() == (model.cfg.n_layers - layer - 1) * model.cfg.n_heads - 1
    assert not downstream[model.cfg.n_layers - 1, 2]
    change = together.downstream_change
    assert torch.equal(change[downstream], together.dla_change[downstream])
    assert bool((change[~downstream] == 0).all())
    with pytest.raises(TypeError, match="not one string"):
        backup_analysis(model, tokens, metric, directions, heads, values, keep="pattern")


def test_clear_errors(gpt2_random):
    model = gpt2_random
    ioi = ioi_dataset(model, 2, seed=0)
    tokens = ioi.tokens
    with pytest.raises(ValueError, match="unknown ablation method"):
        ablation_values(model, tokens, "half")
    with pytest.raises(ValueError, match="template length"):
        ablation_values(model, tokens, "mean", reference_tokens=tokens[:, :-1])
    with pytest.raises(ValueError, match="as many reference prompts"):
        ablation_values(model, tokens, "resample", reference_tokens=tokens[:1])
    with pytest.raises(ValueError, match="tokens must be"):
        ablation_values(model, tokens[0], "mean")
    values = ablation_values(model, tokens, "zero")
    with pytest.raises(ValueError, match="out of range"):
        replace_heads_hooks(model, [(0, model.cfg.n_heads)], values)
    with pytest.raises(ValueError, match="one entry per layer"):
        replace_heads_hooks(model, [(0, 0)], values[:1])


@pytest.mark.parametrize("last_position_only", [False, True])
def test_ablate_head_sets_match_plain_hooks(ioi_small, monkeypatch, last_position_only):
    """Each set resumed from its first layer, several per run, equals a full hooked run."""
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads

    def metric(logits):
        return logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)

    values = ablation_values(model, tokens, "mean")
    chosen = [(n_layers - 1, 0), (n_layers // 2, 1)]
    sets = [chosen, [], [(0, n_heads - 1)], [(n_layers - 1, 1)]]
    sets += [layer_matched_random_heads(model, chosen, seed=seed) for seed in range(3)]
    run = cache_run(model, tokens, last_position_only=last_position_only)
    if last_position_only:
        assert torch.allclose(run.logits, cache_run(model, tokens).logits[:, -1:], atol=1e-4)
    expected = torch.stack(
        [metric(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, heads, values) if heads else [])) for heads in sets]
    )
    result = ablate_head_sets(model, run, sets, values, metric, last_position_only=last_position_only)
    assert result.shape == (len(sets), tokens.shape[0])
    assert torch.allclose(result, expected, atol=1e-4)
    # one copy per resumed run: the same numbers
    per_item = tokens.shape[0] * (1 if last_position_only else tokens.shape[1]) * model.cfg.d_vocab * 4
    monkeypatch.setenv("COURSE_LOGITS_BUDGET_MB", str(per_item / 2**20))
    single = ablate_head_sets(model, run, sets, values, metric, last_position_only=last_position_only)
    assert torch.allclose(single, expected, atol=1e-4)
    # at one position per prompt
    positions = torch.full((tokens.shape[0],), tokens.shape[1] - 1)
    at_end = ablate_head_sets(model, run, sets[:1], values, metric, positions=positions)
    plain = metric(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, sets[0], values, positions=positions)))
    assert torch.allclose(at_end[0], plain, atol=1e-4)


def test_ablate_head_sets_unembed_only_chosen_positions(ioi_small, monkeypatch):
    """logit_positions: the metric reads k positions per prompt, which differ between
    prompts, and gets the same logits as from a full hooked run."""
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    n_layers = model.cfg.n_layers
    batch, length = tokens.shape
    at = torch.stack([torch.arange(2) + row % 3 for row in range(batch)])  # (batch, 2), per prompt

    def read(logits):  # (batch, 2, d_vocab) -> one value per prompt
        return logits.log_softmax(dim=-1)[..., 5].mean(dim=-1)

    def full(logits):
        return read(logits[torch.arange(batch)[:, None], at])

    values = ablation_values(model, tokens, "mean")
    sets = [[], [(n_layers - 1, 0)], [(0, 1), (n_layers - 1, 1)]]
    run = cache_run(model, tokens)
    expected = torch.stack(
        [full(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, heads, values) if heads else [])) for heads in sets]
    )
    result = ablate_head_sets(model, run, sets, values, read, logit_positions=at)
    assert torch.allclose(result, expected, atol=1e-4)
    monkeypatch.setenv("COURSE_LOGITS_BUDGET_MB", str(batch * 2 * model.cfg.d_vocab * 4 / 2**20))
    assert torch.allclose(ablate_head_sets(model, run, sets, values, read, logit_positions=at), expected, atol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        ablate_head_sets(model, run, sets, values, read, logit_positions=at, last_position_only=True)
    with pytest.raises(ValueError, match="must lie in"):
        ablate_head_sets(model, run, sets, values, read, logit_positions=at + length)
    with pytest.raises(ValueError, match="LongTensor"):
        ablate_head_sets(model, run, sets, values, read, logit_positions=at[:1])
    with pytest.raises(ValueError, match="every position's logits"):
        ablate_head_sets(model, cache_run(model, tokens, last_position_only=True), sets, values, read, logit_positions=at)


def test_ablate_head_sets_clear_errors(gpt2_random):
    model = gpt2_random
    ioi = ioi_dataset(model, 2, seed=0)
    values = ablation_values(model, ioi.tokens, "mean")
    run = cache_run(model, ioi.tokens)

    def metric(logits):
        return logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)

    with pytest.raises(TypeError, match="CachedRun"):
        ablate_head_sets(model, ioi.tokens, [[(0, 0)]], values, metric)
    with pytest.raises(ValueError, match="non-empty sequence"):
        ablate_head_sets(model, run, [], values, metric)
    with pytest.raises(ValueError, match="out of range"):
        ablate_head_sets(model, run, [[(0, model.cfg.n_heads)]], values, metric)
    with pytest.raises(ValueError, match="one value per prompt"):
        ablate_head_sets(model, run, [[(0, 0)]], values, lambda logits: logits[:, -1].sum())
def test_ablation_attribution_estimates_the_exact_sweep(ioi_small):
    from utils.interventions.ablation import ablation_attribution

    model, ioi, metric = ioi_small
    values = {m: ablation_values(model, ioi.tokens, m, seed=0) for m in ("zero", "mean")}
    screen = ablation_attribution(model, ioi.tokens, metric, values)
    clean = float(metric(model(ioi.tokens)))
    assert abs(float(screen["clean"]) - clean) < 1e-3
    layer = model.cfg.n_layers - 1  # the last layer: the metric is linear in its z up to the final norm
    exact = head_ablation_sweep(model, ioi.tokens, metric, values=values["mean"], layers=[layer])[0]
    assert screen["mean"].shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert torch.allclose(screen["mean"][layer], exact, atol=0.05 * max(1.0, abs(clean)))
    with pytest.raises(ValueError, match="clean"):
        ablation_attribution(model, ioi.tokens, metric, {"clean": values["mean"]})
    with pytest.raises(ValueError, match="one entry per layer"):
        ablation_attribution(model, ioi.tokens, metric, {"mean": values["mean"][:1]})


def test_compensation_parts_add_up_and_match_backup_analysis(ioi_small):
    from utils.interventions.effects import compensation_parts, direct_effects

    model, ioi, metric = ioi_small
    values = ablation_values(model, ioi.tokens, "mean", seed=0)
    heads = [(model.cfg.n_layers - 1, 0), (0, 1)]
    parts = compensation_parts(model, ioi.tokens, heads, values, ioi.answer_ids, ioi.wrong_ids)
    assert parts["residual"].abs().max() < 1e-3
    assert torch.allclose(parts["total"], parts["ablated"] - parts["clean"])
    directions = logit_difference_direction(model, ioi.answer_ids, ioi.wrong_ids)
    backup = backup_analysis(model, ioi.tokens, metric, directions, heads, values, final_norm="frozen")
    compensation = parts["other_heads"] + parts["mlps"] + parts["norm"]
    assert abs(float(compensation.mean()) - backup.compensation) < 1e-3
    _, cache = model.run_with_cache(ioi.tokens)
    direct = direct_effects(model, cache, [heads, heads[:1]], values, directions)
    assert direct.shape == (len(ioi.tokens), 2)
    assert torch.allclose(direct[:, 0], parts["ablated_heads"], atol=1e-3)
    with pytest.raises(ValueError, match="no heads"):
        compensation_parts(model, ioi.tokens, [], values, ioi.answer_ids, ioi.wrong_ids)
    with pytest.raises(ValueError, match="one id per prompt"):
        compensation_parts(model, ioi.tokens, heads, values, ioi.answer_ids[:1], ioi.wrong_ids)
    with pytest.raises(ValueError, match="no head sets"):
        direct_effects(model, cache, [], values, directions)


def test_ablation_values_matched_to_groups(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    reference = ioi_dataset(model, 4, seed=5).tokens
    groups = torch.tensor([0, 0, 1, 1])
    reference_groups = torch.tensor([1, 0, 1, 0])
    name = get_act_name("z", 0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[name])
        _, reference_cache = model.run_with_cache(reference, names_filter=[name])
    z, reference_z = cache[name], reference_cache[name]
    # mean: position p averaged over the reference prompts of the prompt's own group
    mean = ablation_values(model, tokens, "mean", reference_tokens=reference,
                           groups=groups, reference_groups=reference_groups)
    assert len(mean) == model.cfg.n_layers and mean[0].shape == z.shape
    for row, group in enumerate(groups.tolist()):
        assert torch.allclose(mean[0][row], reference_z[reference_groups == group].mean(dim=0))
    # from the prompts themselves, each group's own mean
    own = ablation_values(model, tokens, "mean", groups=groups)
    assert torch.allclose(own[0][0], z[:2].mean(dim=0)) and torch.allclose(own[0][3], z[2:].mean(dim=0))
    # one group: the same as the pooled mean
    pooled = ablation_values(model, tokens, "mean")
    single = ablation_values(model, tokens, "mean", groups=torch.zeros(4, dtype=torch.long))
    assert torch.allclose(single[0], pooled[0].expand_as(single[0]))
    # resample from the prompts themselves: another prompt of the same group
    resample = ablation_values(model, tokens, "resample", groups=groups, seed=3)
    assert torch.equal(resample[0], z[[1, 0, 3, 2]])
    # resample from reference prompts: a reference prompt of the same group, each used once
    drawn = ablation_values(model, tokens, "resample", reference_tokens=reference,
                            groups=groups, reference_groups=reference_groups, seed=1)
    sources = []
    for row, group in enumerate(groups.tolist()):
        matches = [k for k in range(4) if torch.equal(drawn[0][row], reference_z[k])]
        assert matches and reference_groups[matches[0]] == group
        sources.append(matches[0])
    assert sorted(sources) == [0, 1, 2, 3]
    # the default is unchanged
    assert torch.equal(ablation_values(model, tokens, "resample", seed=3)[0],
                       z[derangement(4, seed=3)])


def test_ablation_values_groups_clear_errors(ioi_small):
    model, ioi, _ = ioi_small
    tokens = ioi.tokens
    with pytest.raises(ValueError, match="one per prompt"):
        ablation_values(model, tokens, "mean", groups=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        ablation_values(model, tokens, "mean", groups=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="group 2 has no reference prompt"):
        ablation_values(model, tokens, "mean", reference_tokens=tokens,
                        groups=torch.tensor([0, 0, 1, 2]), reference_groups=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="give reference_groups"):
        ablation_values(model, tokens, "mean", reference_tokens=tokens, groups=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="needs groups"):
        ablation_values(model, tokens, "mean", reference_groups=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="single prompt"):
        ablation_values(model, tokens, "resample", groups=torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="as many reference prompts"):
        ablation_values(model, tokens, "resample", reference_tokens=tokens,
                        groups=torch.tensor([0, 0, 1, 1]), reference_groups=torch.tensor([0, 0, 0, 1]))



def test_compare_ablation_against_a_layer_matched_null(ioi_small):
    """The chosen heads and 20 layer-matched draws, each equal to a plain hooked run."""
    from utils.interventions.ablation import compare_ablation

    model, ioi, _ = ioi_small
    tokens = ioi.tokens

    def metric(logits):
        return logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)

    values = ablation_values(model, tokens, "mean")
    n_layers = model.cfg.n_layers
    chosen = [(n_layers - 1, 0), (n_layers // 2, 1)]
    exclude = [(n_layers - 1, 1)]
    run = cache_run(model, tokens, last_position_only=True)
    result = compare_ablation(model, run, chosen, values, metric, seed=3, exclude=exclude, last_position_only=True)
    assert result.chosen_heads == tuple(chosen)
    assert result.null.shape == (20, tokens.shape[0]) and len(result.null_sets) == 20
    for draw in result.null_sets:
        assert sorted(layer for layer, _ in draw) == sorted(layer for layer, _ in chosen)
        assert not set(draw) & (set(chosen) | set(exclude))
    with torch.no_grad():
        clean = metric(model(tokens))
        ablated = metric(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, chosen, values)))
        first_draw = metric(model.run_with_hooks(tokens, fwd_hooks=replace_heads_hooks(model, list(result.null_sets[0]), values)))
    assert torch.allclose(result.clean, clean, atol=1e-4)
    assert torch.allclose(result.drops, clean - ablated, atol=1e-4)
    assert result.null_drops[0] == pytest.approx(float((clean - first_draw).mean()), abs=1e-4)
    expected_percentile = float((result.null_drops < (clean - ablated).mean()).float().mean())
    assert result.percentile == pytest.approx(expected_percentile)
    again = compare_ablation(model, run, chosen, values, metric, seed=3, exclude=exclude, last_position_only=True)
    assert torch.equal(again.null, result.null) and again.null_sets == result.null_sets


def test_compare_ablation_clear_errors(gpt2_random):
    from utils.interventions.ablation import compare_ablation

    model = gpt2_random
    ioi = ioi_dataset(model, 2, seed=0)
    values = ablation_values(model, ioi.tokens, "mean")
    run = cache_run(model, ioi.tokens)

    def metric(logits):
        return logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids)

    with pytest.raises(ValueError, match="n_draws"):
        compare_ablation(model, run, [(0, 0)], values, metric, n_draws=0)
    with pytest.raises(ValueError, match="at least one head"):
        compare_ablation(model, run, [], values, metric)
    with pytest.raises(ValueError, match="out of range"):
        compare_ablation(model, run, [(0, model.cfg.n_heads)], values, metric)
