"""Acronym prompts (utils.data.acronyms) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.acronyms import AcronymDataset, acronym_dataset


def decode(model, token_id) -> str:
    return model.tokenizer.decode([int(token_id)])


def test_acronym_dataset(any_model):
    data = acronym_dataset(any_model, 5, seed=0)
    assert isinstance(data, AcronymDataset) and len(data) == 5 and data.tokens.shape[0] == 5
    assert_prompt_set(data, any_model, again=acronym_dataset(any_model, 5, seed=0))
    words_at = data.positions["words"]
    assert words_at.shape == (5, 3)
    for i, prompt in enumerate(data.prompts):
        words = prompt.split(" (")[0].split(" ")[1:]
        assert data.answers[i] == words[2][0]
        for j, word in enumerate(words):
            assert decode(any_model, data.tokens[i, words_at[i, j]]).strip() == word
    assert data.letter_ids.shape == (26,)
    logits = torch.zeros(5, data.tokens.shape[1], any_model.cfg.d_vocab)
    logits[torch.arange(5), -1, data.answer_ids] = 1.0
    assert data.letter_accuracy(logits) == pytest.approx(1.0)
    assert data.letter_directions(any_model).shape == (5, any_model.cfg.d_model)
    assert data.subset([0, 1]).letter_ids.shape == (26,)  # set-level fields stay whole
    with pytest.raises(ValueError, match="logits"):
        data.letter_accuracy(logits[:2])
    with pytest.raises(AttributeError, match=r'positions\["words"\]'):
        data.word_pos


def test_acronym_dataset_bad_arguments(any_model):
    with pytest.raises(ValueError, match="n_prompts"):
        acronym_dataset(any_model, 0)
    with pytest.raises(ValueError, match="seed"):
        acronym_dataset(any_model, 2, seed="0")
    with pytest.raises(ValueError, match="could not draw"):
        acronym_dataset(any_model, 100_000)
