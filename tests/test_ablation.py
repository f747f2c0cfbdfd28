"""Zero, mean and resample ablation of heads, their effects and backup analysis."""

import pytest
import torch

from utils.interventions.effects import ablation_head_effects, backup_analysis
from utils.interventions.ablation import (
    ablation_hooks,
    ablation_values,
    derangement,
    head_ablation_effects,
)
from utils.data.ioi import ioi_dataset
from utils.interventions.effects import head_effects
from utils.interventions.ablation import (
    head_means,
    mean_ablation_hooks,
    zero_ablation_hooks,
)
from transformer_lens.utilities import get_act_name
from utils.attribution.dla import logit_difference_direction
from utils.core.metrics import logit_diff


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


def test_single_head_sweep_matches_the_shared_hooks(ioi_small):
    model, ioi, metric = ioi_small
    tokens = ioi.tokens
    layer = model.cfg.n_layers - 1
    zero = head_ablation_effects(model, tokens, metric, method="zero", layers=[layer])
    mean = head_ablation_effects(
        model, tokens, metric, method="mean", layers=[layer], last_position_only=True
    )
    assert zero.shape == mean.shape == (1, model.cfg.n_heads)
    prebuilt = ablation_values(model, tokens, "mean")
    assert torch.equal(
        head_ablation_effects(
            model, tokens, metric, values=prebuilt, layers=[layer], last_position_only=True
        ),
        mean,
    )
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
        means = head_means(cache, model)
        for head in (0, model.cfg.n_heads - 1):
            zero_hooks = zero_ablation_hooks(model, [(layer, head)])
            mean_hooks = mean_ablation_hooks(model, [(layer, head)], means)
            expected_zero = metric(model.run_with_hooks(tokens, fwd_hooks=zero_hooks))
            expected_mean = metric(model.run_with_hooks(tokens, fwd_hooks=mean_hooks))
            assert zero[0, head] == pytest.approx(float(expected_zero), abs=1e-4)
            assert mean[0, head] == pytest.approx(float(expected_mean), abs=1e-4)


def test_ablation_effects_agree_with_head_effects_for_zero_ablation(ioi_small):
    model, ioi, metric = ioi_small
    layer, head = model.cfg.n_layers // 2, 1
    zeros = ablation_values(model, ioi.tokens, "zero")
    ours = ablation_head_effects(model, ioi.tokens, layer, head, metric, zeros)
    reference = head_effects(model, ioi.tokens, layer, head, metric)
    for field in ("clean", "total", "direct", "indirect"):
        assert getattr(ours, field) == pytest.approx(getattr(reference, field), abs=1e-4)


def test_backup_analysis_bookkeeping(ioi_small):
    model, ioi, metric = ioi_small
    tokens = ioi.tokens
    directions = logit_difference_direction(model, ioi.answer_ids, ioi.wrong_ids)
    layer = model.cfg.n_layers // 2
    values = ablation_values(model, tokens, "zero")
    result = backup_analysis(model, tokens, metric, directions, [(layer, 1)], values)
    reference = head_effects(model, tokens, layer, 1, metric)  # zero ablation of one head
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
    together = backup_analysis(model, tokens, metric, directions, heads, values)
    with torch.no_grad():
        ablated = metric(model.run_with_hooks(tokens, fwd_hooks=zero_ablation_hooks(model, heads)))
    assert together.ablated == pytest.approx(float(ablated), abs=1e-4)


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
        ablation_hooks(model, [(0, model.cfg.n_heads)], values)
    with pytest.raises(ValueError, match="one entry per layer"):
        ablation_hooks(model, [(0, 0)], values[:1])
