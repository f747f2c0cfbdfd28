"""Rare-word prompts and the rarity proxy (utils.data.rare_words) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.rare_words import RareWordPrompts, rare_word_prompts, token_rarity


def decode(model, token_id) -> str:
    return model.tokenizer.decode([int(token_id)])


def test_token_rarity(any_model):
    rarity = token_rarity(any_model, "house")
    assert rarity.rank == pytest.approx(rarity.token_id / any_model.cfg.d_vocab)
    with pytest.raises(ValueError, match="one token"):
        token_rarity(any_model, "house of cards")


def test_rare_word_prompts_differ_only_in_the_slot(any_model):
    data = rare_word_prompts(any_model, 6, seed=0)
    assert isinstance(data, RareWordPrompts) and len(data) == 6
    assert_prompt_set(data, any_model, again=rare_word_prompts(any_model, 6, seed=0), text_is_tokens=False)
    rows = torch.arange(6)
    word = data.positions["word"]
    for other in (data.common_tokens, data.control_tokens):
        differs = data.tokens != other
        assert differs.sum(dim=1).tolist() == [1] * 6
        assert differs[rows, word].all()
    assert (data.rare_ranks > 0.4).all() and (data.common_ranks < 0.15).all()
    assert decode(any_model, data.tokens[0, word[0]]).strip() == data.rare_words[0]
    assert all(" " + w in p for w, p in zip(data.rare_words, data.prompts))
    assert data.common_words != data.control_words
    assert (data.lengths <= data.tokens.shape[1]).all()
    assert decode(any_model, data.answer_ids[0]) == "."
    part = data.subset([4, 5])
    assert part.common_tokens.shape == part.tokens.shape and part.rare_words == data.rare_words[4:]
    with pytest.raises(AttributeError, match="use .tokens"):
        data.rare_tokens


def test_rare_word_prompts_bad_arguments(any_model):
    with pytest.raises(ValueError, match="common_below"):
        rare_word_prompts(any_model, 4, rare_above=0.1, common_below=0.2)
    with pytest.raises(ValueError, match="too few words"):
        rare_word_prompts(any_model, 4, rare_above=0.999)
    with pytest.raises(ValueError, match="n_prompts"):
        rare_word_prompts(any_model, 0)
    with pytest.raises(ValueError, match="seed"):
        rare_word_prompts(any_model, 4, seed=[0])
