"""compare_ablation_at_last: the layer-matched null on a shared prefix, equal to
compare_ablation with the last position ablated, on both test architectures."""

import pytest
import torch

from utils.interventions.runner import PrefixRun

from utils.core.metrics import logit_diffs
from utils.data.ioi import ioi_dataset
from utils.interventions.ablation import ablation_values, compare_ablation
from utils.interventions.engine import cache_run
from utils.interventions.nulls import compare_ablation_at_last


def test_compare_ablation_at_last_equals_compare_ablation(any_model):
    model = any_model
    ioi = ioi_dataset(model, 4, seed=2)
    tokens = ioi.tokens
    values = ablation_values(model, tokens, "mean")
    n_layers = model.cfg.n_layers
    chosen = [(n_layers - 1, 0), (n_layers // 2, 1)]
    exclude = [(n_layers - 1, 1)]
    last = torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long)

    fast = compare_ablation_at_last(
        model, tokens, chosen, values, lambda final: logit_diffs(final[:, None], ioi.answer_ids, ioi.wrong_ids),
        n_draws=5, seed=3, exclude=exclude,
    )
    run = cache_run(model, tokens, last_position_only=True)
    slow = compare_ablation(
        model, run, chosen, values, lambda logits: logit_diffs(logits, ioi.answer_ids, ioi.wrong_ids),
        n_draws=5, seed=3, exclude=exclude, positions=last, last_position_only=True,
    )
    assert fast.null_sets == slow.null_sets and fast.chosen_heads == slow.chosen_heads
    assert fast.null.shape == (5, tokens.shape[0])
    assert torch.allclose(fast.clean, slow.clean, atol=1e-3)
    assert torch.allclose(fast.chosen, slow.chosen, atol=1e-3)
    assert torch.allclose(fast.null, slow.null, atol=1e-3)
    assert fast.percentile == pytest.approx(slow.percentile)
    # a prefix computed once and shared by two tests gives the same numbers
    shared = PrefixRun(model, tokens, tokens.shape[1] - 1)
    for _ in range(2):
        again = compare_ablation_at_last(
            model, tokens, chosen, values, lambda final: logit_diffs(final[:, None], ioi.answer_ids, ioi.wrong_ids),
            n_draws=5, seed=3, exclude=exclude, prefix=shared,
        )
        assert torch.allclose(again.null, fast.null, atol=1e-5) and torch.allclose(again.chosen, fast.chosen, atol=1e-5)
    # several metrics read from the same runs
    both = compare_ablation_at_last(
        model, tokens, chosen, values,
        {"diff": lambda final: logit_diffs(final[:, None], ioi.answer_ids, ioi.wrong_ids),
         "answer": lambda final: final.gather(-1, ioi.answer_ids[:, None])[:, 0]},
        n_draws=5, seed=3, exclude=exclude, prefix=shared,
    )
    assert set(both) == {"diff", "answer"}
    assert torch.allclose(both["diff"].null, fast.null, atol=1e-5)
    assert not torch.allclose(both["answer"].clean, both["diff"].clean)


def test_compare_ablation_at_last_clear_errors(gpt2_random):
    model = gpt2_random
    ioi = ioi_dataset(model, 2, seed=0)
    values = ablation_values(model, ioi.tokens, "mean")

    def metric(final):
        return logit_diffs(final[:, None], ioi.answer_ids, ioi.wrong_ids)

    with pytest.raises(ValueError, match="n_draws"):
        compare_ablation_at_last(model, ioi.tokens, [(0, 0)], values, metric, n_draws=0)
    with pytest.raises(ValueError, match="at least one head"):
        compare_ablation_at_last(model, ioi.tokens, [], values, metric)
    with pytest.raises(ValueError, match="out of range"):
        compare_ablation_at_last(model, ioi.tokens, [(0, model.cfg.n_heads)], values, metric)
    with pytest.raises(ValueError, match="pos >= 2"):
        compare_ablation_at_last(model, ioi.tokens[:, :1], [(0, 0)], values, metric)
    with pytest.raises(ValueError, match="one value per prompt"):
        compare_ablation_at_last(model, ioi.tokens, [(0, 0)], values, lambda final: final.sum(), n_draws=1)
    with pytest.raises(ValueError, match="prefix must be"):
        compare_ablation_at_last(model, ioi.tokens, [(0, 0)], values, metric, prefix=PrefixRun(model, ioi.tokens, 1))


def test_last_position_means_from_other_prompts(any_model):
    """Values from a cache of other prompts equal the mean at their last position, and
    ablating with them at the last position matches a plain hooked run."""
    from utils.interventions.hooks import replace_heads_hooks
    from transformer_lens.utilities import get_act_name
    from utils.interventions.nulls import last_position_means

    model = any_model
    reference = ioi_dataset(model, 3, seed=5).tokens
    evaluation = ioi_dataset(model, 4, seed=2)
    _, cache = model.run_with_cache(reference, names_filter=lambda name: name.endswith("hook_z"))
    length = evaluation.tokens.shape[1]
    values = last_position_means(model, cache, length)
    assert len(values) == model.cfg.n_layers and values[0].shape == (1, length, model.cfg.n_heads, model.cfg.d_head)
    assert torch.allclose(values[0][0, 0], cache[get_act_name("z", 0)][:, -1].mean(0))
    chosen = [(model.cfg.n_layers - 1, 0)]

    def metric(final):
        return logit_diffs(final[:, None], evaluation.answer_ids, evaluation.wrong_ids)

    result = compare_ablation_at_last(model, evaluation.tokens, chosen, values, metric, n_draws=2)
    last = torch.full((evaluation.tokens.shape[0],), length - 1, dtype=torch.long)
    with torch.no_grad():
        hooked = model.run_with_hooks(evaluation.tokens,
                                      fwd_hooks=replace_heads_hooks(model, chosen, values, positions=last))
    assert torch.allclose(result.chosen, metric(hooked[:, -1]), atol=1e-3)
    with pytest.raises(ValueError, match="length"):
        last_position_means(model, cache, 1)
    with pytest.raises(ValueError, match="lacks"):
        last_position_means(model, {}, length)
