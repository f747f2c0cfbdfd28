"""ICI scores on hand-made attention patterns, the retrieval rows on both models, the
head pickers, the ablation comparison and the figure."""

from transformer_lens.utilities import get_act_name
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils.interventions.ablation import ablation_values  # noqa: E402
from utils.attribution.circuits import ov_copying_scores# noqa: E402
from utils.core.cache import attention_and_dla_filter  # noqa: E402
from utils.scores.patterns import (
    attention_between,
    attention_received,
    first_token_score,
    fixed_offset_score,
    positional_baseline_accuracy,
    relation_accuracy,
    subword_merge_score,
)
from utils.interventions.runner import PrefixRun
from utils.scores.retrieval import attention_rows, attention_rows_after_prefix, retrieval_scores
from utils.analysis.classify import classify_movers
from utils.viz.plots import plot_score_and_pattern
from utils.core.cache import single_position_cache
from utils.core.models import attention_weight  # noqa: E402
from utils.attribution.dla import (
    head_direct_logit_attribution,
    logit_difference_direction,
)# noqa: E402
from utils.scores.patterns import previous_token_score
from utils.scores.retrieval import retrieval_score# noqa: E402

from patterns import one_hot_pattern, uniform_pattern  # noqa: E402


def test_first_token_score():
    # head 0 sinks on position 0, head 1 attends to itself
    pattern = one_hot_pattern(2, 2, 5, lambda h, i: [0, i][h])
    assert first_token_score(pattern).tolist() == pytest.approx([1.0, 0.0])
    assert first_token_score(uniform_pattern(1, 1, 3)).item() == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_first_token_score_bad_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        first_token_score([[1.0]])
    with pytest.raises(ValueError, match="batch, n_heads"):
        first_token_score(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="two query"):
        first_token_score(torch.ones(1, 1, 1, 1))


def test_fixed_offset_score():
    pattern = one_hot_pattern(1, 3, 8, lambda h, i: i - (h + 1))
    assert fixed_offset_score(pattern, 2)[1].item() == pytest.approx(1.0)
    assert fixed_offset_score(pattern, 3)[2].item() == pytest.approx(1.0)
    assert fixed_offset_score(pattern, 2)[0].item() == pytest.approx(0.0)
    random_pattern = torch.rand(2, 4, 6, 6).tril().softmax(-1)
    assert torch.allclose(fixed_offset_score(random_pattern, 1), previous_token_score(random_pattern))


def test_fixed_offset_score_bad_input():
    pattern = uniform_pattern(1, 1, 5)
    with pytest.raises(ValueError, match="offset"):
        fixed_offset_score(pattern, 0)
    with pytest.raises(ValueError, match="offset"):
        fixed_offset_score(pattern, 5)
    with pytest.raises(TypeError, match="offset"):
        fixed_offset_score(pattern, 1.0)
    with pytest.raises(ValueError, match="square"):
        fixed_offset_score(torch.ones(1, 1, 2, 5), 1)


def test_attention_between_single_and_several_keys():
    pattern = uniform_pattern(2, 1, 4)
    query = torch.tensor([3, 1])
    assert attention_between(pattern, query, torch.tensor([0, 1])).item() == pytest.approx((0.25 + 0.5) / 2)
    two_keys = torch.tensor([[0, 1], [0, 1]])
    assert attention_between(pattern, query, two_keys).item() == pytest.approx((0.5 + 1.0) / 2)


def test_attention_between_bad_input():
    pattern = uniform_pattern(2, 1, 4)
    with pytest.raises(ValueError, match="outside"):
        attention_between(pattern, torch.tensor([3, 4]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        attention_between(pattern, torch.tensor([3]), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="LongTensor"):
        attention_between(pattern, torch.tensor([3.0, 2.0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="query_pos"):
        attention_between(pattern, torch.tensor([[3], [2]]), torch.tensor([0, 0]))


def test_attention_received_counts_only_later_real_positions():
    pattern = uniform_pattern(1, 1, 5)
    # queries 2, 3, 4 pay 1/3, 1/4, 1/5 to key 1
    assert attention_received(pattern, torch.tensor([1])).item() == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)
    # with real length 4 the padded query 4 is ignored
    value = attention_received(pattern, torch.tensor([1]), torch.tensor([4]))
    assert value.item() == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_attention_received_bad_input():
    pattern = uniform_pattern(1, 1, 5)
    with pytest.raises(ValueError, match="later query"):
        attention_received(pattern, torch.tensor([4]))
    with pytest.raises(ValueError, match="key_pos"):
        attention_received(pattern, torch.tensor([[1]]))
    with pytest.raises(ValueError, match="lengths"):
        attention_received(pattern, torch.tensor([1]), torch.tensor([9]))


def test_relation_accuracy_skips_bos_and_scores_argmax():
    pattern = torch.zeros(2, 2, 5, 5)
    pattern[:, :, :, 0] = 0.6  # a BOS sink that must not count
    pattern[:, 0, 4, 2] = 0.3  # head 0: partner at 2 wins after the sink
    pattern[:, 0, 4, 3] = 0.1
    pattern[:, 1, 4, 3] = 0.4  # head 1: attends to 3
    dependent, partner = torch.tensor([4, 4]), torch.tensor([2, 2])
    assert relation_accuracy(pattern, dependent, partner).tolist() == pytest.approx([1.0, 0.0])
    assert relation_accuracy(pattern, dependent, torch.tensor([3, 2])).tolist() == pytest.approx([0.5, 0.5])


def test_relation_accuracy_bad_input():
    pattern = uniform_pattern(2, 1, 5)
    with pytest.raises(ValueError, match="skipped"):
        relation_accuracy(pattern, torch.tensor([4, 4]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="skip_first"):
        relation_accuracy(pattern, torch.tensor([4, 4]), torch.tensor([1, 2]), skip_first=-1)
    with pytest.raises(ValueError, match="outside"):
        relation_accuracy(pattern, torch.tensor([5, 4]), torch.tensor([1, 2]))


def test_positional_baseline_accuracy():
    dependent = torch.tensor([5, 6, 7, 9])
    partner = torch.tensor([4, 5, 3, 8])  # offsets 1, 1, 4, 1
    assert positional_baseline_accuracy(dependent, partner) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one shape"):
        positional_baseline_accuracy(dependent, partner[:2])
    with pytest.raises(TypeError):
        positional_baseline_accuracy([1], [0])


def test_subword_merge_score_removes_previous_token_attention():
    # positions: 0 BOS, 1 word, 2-3 one split word, 4 word, 5 word
    spans = [[(1, 1), (2, 3), (4, 4), (5, 5)]]
    previous = one_hot_pattern(1, 1, 6, lambda h, i: i - 1)
    merger = previous.clone()
    merger[0, 0, 4, :] = 0.0
    merger[0, 0, 5, :] = 0.0
    merger[0, 0, 4, 4] = merger[0, 0, 5, 5] = 1.0  # whole words attend to themselves
    pattern = torch.cat([previous, merger], dim=1)
    scores = subword_merge_score(pattern, spans)
    assert scores.tolist() == pytest.approx([0.0, 1.0])


def test_subword_merge_score_bad_input():
    pattern = uniform_pattern(1, 1, 6)
    with pytest.raises(ValueError, match="no word is split"):
        subword_merge_score(pattern, [[(1, 1), (2, 2)]])
    with pytest.raises(ValueError, match="outside"):
        subword_merge_score(pattern, [[(1, 1), (4, 7)]])
    with pytest.raises(ValueError, match="span lists"):
        subword_merge_score(pattern, [[(1, 1)], [(2, 3)]])


def test_attention_rows_match_the_cache(any_model):
    tokens = any_model.to_tokens(
        ["The cat sat on the mat and the dog", "A bird flew over the old red house to"]
    )
    query_pos = torch.tensor([[3, 9], [5, 8]])
    with torch.no_grad():
        logits, cache = any_model.run_with_cache(tokens)
    kept_logits, rows = attention_rows(any_model, tokens, query_pos)
    n_layers, n_heads = any_model.cfg.n_layers, any_model.cfg.n_heads
    assert rows.shape == (n_layers, 2, n_heads, 2, tokens.shape[1])
    assert torch.allclose(kept_logits, logits, atol=1e-4)
    # Unembedding only the last positions: the same logits there, the same rows.
    last_logits, last_rows = attention_rows(any_model, tokens, query_pos, last_positions=3)
    assert last_logits.shape == (2, 3, any_model.cfg.d_vocab)
    assert torch.allclose(last_logits, logits[:, -3:], atol=1e-4)
    assert torch.allclose(last_rows, rows, atol=1e-6)
    for layer in (0, n_layers - 1):
        full = cache[get_act_name("pattern", layer)]
        assert torch.allclose(rows[layer, 1, :, 0], full[1, :, 5], atol=1e-5)
        assert torch.allclose(rows[layer, 0, :, 1], full[0, :, 9], atol=1e-5)
    targets = torch.tensor([[1, 2], [4, 0]])
    scores = retrieval_scores(rows, targets)
    assert scores.shape == (n_layers, n_heads)
    expected = torch.stack(
        [
            retrieval_score(
                cache[get_act_name("pattern", layer)][[0, 0, 1, 1]],
                torch.tensor([3, 9, 5, 8]),
                torch.tensor([1, 2, 4, 0]),
            )
            for layer in range(n_layers)
        ]
    )
    assert torch.allclose(scores, expected)


def test_attention_rows_after_prefix_match_a_full_run(any_model):
    tokens = any_model.to_tokens(
        ["The cat sat on the mat and the dog", "A bird flew over the old red house to"]
    )
    query_pos = torch.tensor([[7, 9], [8, 7]])
    full_logits, full_rows = attention_rows(any_model, tokens, query_pos)
    prefix = PrefixRun(any_model, tokens, 7)
    logits, rows = attention_rows_after_prefix(any_model, prefix, query_pos)
    assert logits.shape == (2, tokens.shape[1] - 7, any_model.cfg.d_vocab)
    assert torch.allclose(logits, full_logits[:, 7:], atol=1e-4)
    assert rows.shape == full_rows.shape
    assert torch.allclose(rows, full_rows, atol=1e-5)
    with pytest.raises(ValueError, match="after the prefix"):
        attention_rows_after_prefix(any_model, prefix, torch.tensor([[3], [8]]))
    with pytest.raises(ValueError, match="PrefixRun of one copy"):
        attention_rows_after_prefix(any_model, tokens, query_pos)


def test_attention_rows_bad_input(gpt2_random):
    tokens = gpt2_random.to_tokens(["one two three"])
    with pytest.raises(ValueError, match="n_queries"):
        attention_rows(gpt2_random, tokens, torch.tensor([1]))
    with pytest.raises(ValueError, match="outside"):
        attention_rows(gpt2_random, tokens, torch.tensor([[99]]))
    with pytest.raises(ValueError, match="batch, pos"):
        attention_rows(gpt2_random, tokens[0], torch.tensor([[1]]))
    with pytest.raises(ValueError, match="last_positions"):
        attention_rows(gpt2_random, tokens, torch.tensor([[1]]), last_positions=0)


def test_retrieval_scores_bad_input():
    rows = torch.rand(2, 3, 4, 2, 6)
    with pytest.raises(ValueError, match="n_layers"):
        retrieval_scores(rows[0], torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target_pos"):
        retrieval_scores(rows, torch.zeros(3, 1, dtype=torch.long))


def test_classify_movers():
    attention = torch.tensor([[0.8, 0.7, 0.1], [0.5, 0.9, 0.0]])
    dla = torch.tensor([[0.5, -0.9, 2.0], [1.5, 0.1, -3.0]])
    groups = classify_movers(attention, dla, min_attention=0.4, min_dla=0.3)
    assert groups["movers"] == [(1, 0), (0, 0)]
    assert groups["negative movers"] == [(0, 1)]
    with pytest.raises(ValueError, match="one shape"):
        classify_movers(attention, dla[:1], min_attention=0.4, min_dla=0.3)
    with pytest.raises(ValueError, match="non-negative"):
        classify_movers(attention, dla, min_attention=-0.1, min_dla=0.3)
    with pytest.raises(TypeError):
        classify_movers(attention.tolist(), dla, min_attention=0.4, min_dla=0.3)


def zero_head(head):
    def hook(z, hook):
        z[:, :, head] = 0.0
        return z

    return hook


def test_plot_score_and_pattern():
    figure = plot_score_and_pattern(
        torch.rand(3, 4),
        torch.eye(3),
        ["a", "b", "c"],
        score_title="s",
        pattern_title="p",
        highlight=[(0, 1)],
    )
    assert len(figure.axes) >= 2
    plt.close(figure)
    with pytest.raises(ValueError, match="n_layers"):
        plot_score_and_pattern(
            torch.rand(4), torch.eye(3), ["a", "b", "c"], score_title="s", pattern_title="p"
        )
    with pytest.raises(ValueError, match="token labels"):
        plot_score_and_pattern(torch.rand(3, 4), torch.eye(3), ["a"], score_title="s", pattern_title="p")


def test_single_position_cache_gives_the_same_attribution(any_model):
    tokens = any_model.to_tokens(
        ["When Mary and John went out, John gave it to", "When Anna and Tom went out, Tom gave it to"]
    )
    with torch.no_grad():
        _, cache = any_model.run_with_cache(tokens, names_filter=attention_and_dla_filter)
    assert any(name.endswith("hook_pattern") for name in cache.keys())
    assert not any(name.endswith("hook_resid_pre") for name in cache.keys())
    ids = torch.tensor([any_model.to_single_token(" Mary"), any_model.to_single_token(" Anna")])
    other = torch.tensor([any_model.to_single_token(" John"), any_model.to_single_token(" Tom")])
    directions = logit_difference_direction(any_model, ids, other)
    full = head_direct_logit_attribution(any_model, cache, directions)
    lean = head_direct_logit_attribution(any_model, single_position_cache(cache), directions)
    assert torch.allclose(full, lean, atol=1e-5)
    positions = torch.tensor([3, 5])  # one position per prompt
    middle = head_direct_logit_attribution(any_model, cache, directions, positions)
    assert torch.allclose(
        middle,
        head_direct_logit_attribution(any_model, single_position_cache(cache, positions), directions),
        atol=1e-5,
    )


def test_single_position_cache_bad_input():
    cache = {get_act_name("z", 0): torch.zeros(1, 4, 2, 3), get_act_name("scale"): torch.ones(1, 4, 1)}
    assert single_position_cache(cache)[get_act_name("z", 0)].shape == (1, 1, 2, 3)
    with pytest.raises(ValueError, match="outside"):
        single_position_cache(cache, torch.tensor([4]))
    with pytest.raises(TypeError, match="positions must be a LongTensor"):
        single_position_cache(cache, -1)
    with pytest.raises(ValueError, match="one position per prompt"):
        single_position_cache(cache, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="hook_z"):
        single_position_cache({get_act_name("scale"): torch.ones(1, 4, 1)})


def test_attention_weight_is_the_layers_slice_of_the_stacked_weight(any_model):
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_O"):
        stacked = getattr(any_model, name, None)
        for layer in range(any_model.cfg.n_layers):
            weight = attention_weight(any_model, name, layer)
            if stacked is None:
                assert weight is None, name
            else:
                assert torch.equal(weight, stacked[layer]), (name, layer)
    with pytest.raises(ValueError, match="unknown attention weight"):
        attention_weight(any_model, "W_U", 0)


def test_ov_copying_scores_read_weights_layer_by_layer(gpt2_random):
    ids = torch.arange(100, 120)
    stand_in = SimpleNamespace(
        cfg=gpt2_random.cfg, W_E=gpt2_random.W_E, W_U=gpt2_random.W_U, W_V=gpt2_random.W_V, W_O=gpt2_random.W_O
    )  # no blocks: the stacked weights are indexed instead
    assert torch.equal(ov_copying_scores(stand_in, ids), ov_copying_scores(gpt2_random, ids))
