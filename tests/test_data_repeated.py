"""Repeated random tokens (utils.data.repeated) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.repeated import RepeatedTokens, repeated_random_tokens


def test_repeated_random_tokens_repeat_with_the_period(any_model):
    data = repeated_random_tokens(any_model, 3, 7, seed=1)
    assert isinstance(data, RepeatedTokens) and data.period == 7 and data.n_repeats == 2
    tokens = data.tokens
    assert tokens.shape == (3, 15)
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:15])
    assert_prompt_set(data, any_model, again=repeated_random_tokens(any_model, 3, 7, seed=1), text_is_tokens=False)
    assert torch.equal(data.answer_ids, tokens[:, 1])  # the pattern goes on with the block's first token
    assert (data.positions["repeat"] == 8).all() and (data.positions["END"] == 14).all()
    assert not torch.equal(tokens, repeated_random_tokens(any_model, 3, 7, seed=2).tokens)
    assert not set(tokens[:, 1:].flatten().tolist()) & set(any_model.tokenizer.all_special_ids)
    three = repeated_random_tokens(any_model, 2, 5, n_repeats=3)
    assert three.tokens.shape == (2, 16) and torch.equal(three.tokens[:, 1:6], three.tokens[:, 11:16])


def test_repeated_random_tokens_bad_arguments(any_model):
    with pytest.raises(ValueError, match="period must be an int >= 2"):
        repeated_random_tokens(any_model, 2, 1)
    with pytest.raises(ValueError, match="n_prompts must be an int >= 1"):
        repeated_random_tokens(any_model, 0, 5)
    with pytest.raises(ValueError, match="n_repeats must be an int >= 2"):
        repeated_random_tokens(any_model, 2, 5, n_repeats=1)
    with pytest.raises(ValueError, match="seed"):
        repeated_random_tokens(any_model, 2, 5, seed="x")
