"""The scores on hand-made attention patterns whose answers are known."""

from transformer_lens.utilities import get_act_name
import math

import pytest
import torch

from utils.scores.patterns import (
    duplicate_token_score,
    head_scores,
    induction_score,
    previous_token_score,
)
from utils.core.metrics import logit_diff
from utils.scores.retrieval import negative_attention_score, retrieval_score

from patterns import one_hot_pattern


def test_logit_diff_known_values():
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[0, -1, 2] = 3.0, 1.0
    logits[1, -1, 4], logits[1, -1, 0] = 0.5, 2.5
    value = logit_diff(logits, torch.tensor([1, 4]), torch.tensor([2, 0]))
    assert value.ndim == 0
    assert value.item() == pytest.approx((2.0 - 2.0) / 2)
    logits[0, 0, 1] = 100.0  # earlier positions do not count
    assert logit_diff(logits, torch.tensor([1, 4]), torch.tensor([2, 0])).item() == pytest.approx(0.0)


def test_logit_diff_bad_shapes():
    with pytest.raises(ValueError, match="batch, pos, d_vocab"):
        logit_diff(torch.zeros(2, 5), torch.tensor([0, 1]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="correct_ids"):
        logit_diff(torch.zeros(2, 3, 5), torch.tensor([0]), torch.tensor([1, 0]))


def test_previous_token_score_separates_heads():
    # head 0 attends to the previous token, head 1 to itself, head 2 to position 0
    pattern = one_hot_pattern(2, 3, 6, lambda h, i: [i - 1, i, 0][h])
    scores = previous_token_score(pattern)
    assert scores.shape == (3,)
    assert scores.tolist() == pytest.approx([1.0, 0.0, 1 / 5])  # head 2 hits i-1 only at i=1


def test_duplicate_and_induction_scores():
    period, seq = 4, 9  # positions 0..8, repeated block of 4
    duplicate = lambda h, i: i - period  # noqa: E731
    induction = lambda h, i: i - period + 1  # noqa: E731
    pattern = torch.cat(
        [one_hot_pattern(1, 1, seq, duplicate), one_hot_pattern(1, 1, seq, induction)], dim=1
    )
    assert duplicate_token_score(pattern, period).tolist() == pytest.approx([1.0, 0.0])
    assert induction_score(pattern, period).tolist() == pytest.approx([0.0, 1.0])


def test_scores_average_over_batch():
    pattern = torch.stack([one_hot_pattern(1, 1, 5, lambda h, i: i - 1)[0], one_hot_pattern(1, 1, 5, lambda h, i: i)[0]])
    assert previous_token_score(pattern).item() == pytest.approx(0.5)


def test_period_validation():
    pattern = torch.full((1, 2, 6, 6), 1 / 6)
    with pytest.raises(ValueError, match="period"):
        induction_score(pattern, 1)
    with pytest.raises(ValueError, match="period"):
        duplicate_token_score(pattern, 6)
    with pytest.raises(TypeError, match="period"):
        duplicate_token_score(pattern, 2.0)


@pytest.mark.parametrize("score", [previous_token_score, lambda p: induction_score(p, 2)])
def test_wrong_rank_rejected(score):
    with pytest.raises(ValueError, match="batch, n_heads, query_pos, key_pos"):
        score(torch.zeros(3, 5, 5))
    with pytest.raises(TypeError):
        score([[[[1.0]]]])


def test_retrieval_score():
    pattern = torch.zeros(2, 2, 4, 4)
    pattern[:, :, :, 0] = 1.0  # everything on position 0 ...
    pattern[0, 0, 3] = torch.tensor([0.1, 0.2, 0.6, 0.1])  # ... but head 0, item 0 retrieves 2
    pattern[1, 0, 3] = torch.tensor([0.1, 0.7, 0.1, 0.1])  # and item 1 retrieves 1
    scores = retrieval_score(pattern, torch.tensor([3, 3]), torch.tensor([2, 1]))
    assert scores.tolist() == pytest.approx([1.0, 0.0])
    scores = retrieval_score(pattern, torch.tensor([3, 3]), torch.tensor([2, 2]))
    assert scores.tolist() == pytest.approx([0.5, 0.0])


def test_retrieval_score_bad_positions():
    pattern = torch.full((2, 1, 4, 4), 0.25)
    with pytest.raises(ValueError, match="target_pos"):
        retrieval_score(pattern, torch.tensor([3, 3]), torch.tensor([2, 4]))
    with pytest.raises(ValueError, match="query_pos"):
        retrieval_score(pattern, torch.tensor([3]), torch.tensor([2, 1]))
    with pytest.raises(TypeError, match="LongTensor"):
        retrieval_score(pattern, torch.tensor([3.0, 3.0]), torch.tensor([2, 1]))


def test_negative_attention_score_matches_formula():
    # one item, t_yes = 1, t_no = 2, queries 2 and 3 count
    pattern = torch.zeros(1, 2, 4, 4)
    pattern[0, 0, 2] = torch.tensor([0.2, 0.1, 0.7, 0.0])
    pattern[0, 0, 3] = torch.tensor([0.1, 0.3, 0.3, 0.3])
    pattern[0, 1, 2] = torch.tensor([0.2, 0.7, 0.1, 0.0])
    pattern[0, 1, 3] = torch.tensor([0.4, 0.3, 0.3, 0.0])
    pattern[0, :, 0, 0] = 1.0
    pattern[0, :, 1] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # query 1 < max(t) must not count
    eps = 1e-9
    expected_head0 = (0.1 + 0.7) * math.log((0.7 + eps) / (0.1 + eps)) + (0.3 + 0.3) * math.log(1.0)
    expected_head1 = (0.7 + 0.1) * math.log((0.1 + eps) / (0.7 + eps)) + 0.0
    scores = negative_attention_score(pattern, torch.tensor([1]), torch.tensor([2]))
    assert scores.tolist() == pytest.approx([expected_head0, expected_head1], rel=1e-5)
    assert scores[0] > 0 > scores[1]


def test_negative_attention_score_epsilon_guard_and_batch_mean():
    pattern = torch.zeros(2, 1, 3, 3)
    pattern[:, 0, :, 0] = 1.0  # never attends to yes (1) or no (2): every term is 0 * ln(1)
    assert negative_attention_score(pattern, torch.tensor([1, 2]), torch.tensor([2, 1])).item() == 0.0
    pattern[0, 0, 2] = torch.tensor([0.0, 0.0, 1.0])  # item 0 attends only to "no"
    score = negative_attention_score(pattern, torch.tensor([1, 1]), torch.tensor([2, 2]))
    assert torch.isfinite(score).all()
    assert score.item() == pytest.approx(math.log(1.0 / 1e-9) / 2, rel=1e-4)


def test_negative_attention_score_rejects_same_position():
    with pytest.raises(ValueError, match="differ"):
        negative_attention_score(torch.full((1, 1, 3, 3), 1 / 3), torch.tensor([1]), torch.tensor([1]))


def test_head_scores_stacks_layers_and_drops_bos():
    cache = {get_act_name("pattern", layer): one_hot_pattern(1, 2, 5, lambda h, i: i - 1) for layer in range(3)}
    scores = head_scores(cache, previous_token_score)
    assert scores.shape == (3, 2)
    assert torch.allclose(scores, torch.ones(3, 2))
    assert head_scores(cache, previous_token_score, drop_first=1).shape == (3, 2)
    with pytest.raises(ValueError, match="no blocks"):
        head_scores({}, previous_token_score)
    with pytest.raises(ValueError, match="drop_first"):
        head_scores(cache, previous_token_score, drop_first=-1)


def test_transformer_lens_per_token_loss_on_the_bridge(any_model):
    """The library has no loss of its own: TransformerLens's per-token loss from given
    logits agrees with the bridge's own ``return_type="loss"``, ``(batch, pos - 1)``."""
    from transformer_lens.utilities import lm_cross_entropy_loss

    tokens = any_model.to_tokens(["The cat sat on the mat.", "A dog ran in the park."])
    with torch.no_grad():
        logits = any_model(tokens)
        from_model = any_model(tokens, return_type="loss", loss_per_token=True)
    from_logits = lm_cross_entropy_loss(logits, tokens, per_token=True)
    assert from_logits.shape == from_model.shape == (2, tokens.shape[1] - 1)
    assert torch.allclose(from_logits, from_model, atol=1e-5)
    # entry [b, i] is the loss of predicting tokens[b, i + 1] from position i
    known = torch.zeros(1, 3, 4)
    known[0, 0, 2] = 10.0
    loss = lm_cross_entropy_loss(known, torch.tensor([[0, 2, 1]]), per_token=True)
    assert loss[0, 0] < 0.01 and loss[0, 1] == pytest.approx(math.log(4))


def test_logit_diffs_are_per_prompt_and_logit_diff_is_their_mean():
    from utils.core.metrics import logit_diffs

    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[0, -1, 2] = 3.0, 1.0
    logits[1, -1, 4], logits[1, -1, 0] = 0.5, 2.5
    values = logit_diffs(logits, torch.tensor([1, 4]), torch.tensor([2, 0]))
    assert values.tolist() == pytest.approx([2.0, -2.0])
    assert logit_diff(logits, torch.tensor([1, 4]), torch.tensor([2, 0])).item() == pytest.approx(values.mean().item())
    with pytest.raises(ValueError, match="correct_ids"):
        logit_diffs(torch.zeros(2, 3, 5), torch.tensor([0]), torch.tensor([1, 0]))
