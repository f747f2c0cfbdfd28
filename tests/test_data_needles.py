"""Needle-in-a-haystack prompts (utils.data.needles) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.needles import NeedleHaystack, needle_in_a_haystack


def test_needle_positions_and_lengths(any_model):
    data = needle_in_a_haystack(any_model, 3, n_filler=6, seed=1)
    assert isinstance(data, NeedleHaystack) and len(data) == 3 and data.tokens.ndim == 2
    again = needle_in_a_haystack(any_model, 3, n_filler=6, seed=1)
    assert_prompt_set(data, any_model, again=again, text_is_tokens=False)
    queries, targets = data.positions["queries"], data.positions["targets"]
    rows = torch.arange(3)[:, None]
    # the needle holds the answer, and each answer token follows its query position
    assert torch.equal(data.tokens[rows, targets], data.step_ids)
    assert torch.equal(data.tokens[rows, queries + 1], data.step_ids)
    assert (targets < queries).all()
    assert torch.equal(data.answer_ids, data.step_ids[:, 0])
    assert torch.equal(data.positions["END"], queries[:, 0]) and torch.equal(data.positions["needle"], targets[:, 0])
    text = any_model.tokenizer.decode(data.tokens[0, 1:])
    assert text == data.prompts[0]
    assert f"The secret code is {data.codes[0]}." in text
    assert text.endswith(f"The secret code is {data.codes[0]}")
    assert needle_in_a_haystack(any_model, 3, n_filler=6, seed=2).codes != data.codes


def test_needle_scoring_and_subset(gpt2_random):
    data = needle_in_a_haystack(gpt2_random, 2, n_filler=4, code_digits=3, seed=0)
    queries = data.positions["queries"]
    logits = torch.zeros(*data.tokens.shape, gpt2_random.cfg.d_vocab)
    rows = torch.arange(2)[:, None]
    logits[rows, queries, data.step_ids] = 1.0
    assert data.answered(logits).tolist() == [True, True]
    logits[0, queries[0, -1], data.step_ids[0, -1]] = -1.0
    assert data.answered(logits).tolist() == [False, True]
    assert data.step_correct(logits).float().mean().item() < 1.0
    kept = data.subset(data.answered(logits))
    assert len(kept) == 1 and kept.codes == data.codes[1:] and kept.depths == data.depths[1:]
    assert torch.equal(kept.step_ids, data.step_ids[1:]) and torch.equal(kept.positions["queries"], queries[1:])
    with pytest.raises(ValueError, match="logits"):
        data.answered(logits[:, :-1])
    with pytest.raises(ValueError, match="row mask"):
        data.subset(torch.tensor([True]))
    with pytest.raises(AttributeError, match=r'positions\["queries"\]'):
        data.query_pos


def test_needle_bad_arguments(any_model):
    with pytest.raises(ValueError, match="n_filler"):
        needle_in_a_haystack(any_model, 2, n_filler=99)
    with pytest.raises(ValueError, match="n_prompts"):
        needle_in_a_haystack(any_model, 0)
    with pytest.raises(ValueError, match="code_digits"):
        needle_in_a_haystack(any_model, 2, code_digits=0)
    with pytest.raises(ValueError, match="seed"):
        needle_in_a_haystack(any_model, 2, seed=None)
