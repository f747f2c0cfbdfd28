"""ICI prompt sets: positions point at the right tokens on both tokenizers, lengths
agree, seeds reproduce, and bad arguments raise clear errors."""

import pytest
import torch

from utils.data.acronyms import acronym_dataset
from utils.data.needles import needle_in_a_haystack
from utils.data.tokens import pad_right
from utils.data.rare_words import rare_word_prompts, token_rarity
from utils.data.syntax import syntactic_sentences, word_spans


def decode(model, token_id) -> str:
    return model.tokenizer.decode([int(token_id)])


def test_pad_right():
    tokens, lengths = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="no sequences"):
        pad_right([], 0)
    with pytest.raises(ValueError, match="at least one token"):
        pad_right([[1], []], 0)


def test_needle_positions_and_lengths(any_model):
    data = needle_in_a_haystack(any_model, 3, n_filler=6, seed=1)
    assert len(data) == 3 and data.tokens.ndim == 2
    rows = torch.arange(3)[:, None]
    # the needle holds the answer, and each answer token follows its query position
    assert torch.equal(data.tokens[rows, data.target_pos], data.answer_ids)
    assert torch.equal(data.tokens[rows, data.query_pos + 1], data.answer_ids)
    assert (data.target_pos < data.query_pos).all()
    assert (data.tokens[:, 0] == any_model.tokenizer.bos_token_id).all()
    text = any_model.tokenizer.decode(data.tokens[0, 1:])
    assert f"The secret code is {data.codes[0]}." in text
    assert text.endswith(f"The secret code is {data.codes[0]}")
    again = needle_in_a_haystack(any_model, 3, n_filler=6, seed=1)
    assert torch.equal(again.tokens, data.tokens)


def test_needle_scoring_and_subset(gpt2_random):
    data = needle_in_a_haystack(gpt2_random, 2, n_filler=4, code_digits=3, seed=0)
    logits = torch.zeros(*data.tokens.shape, gpt2_random.cfg.d_vocab)
    rows = torch.arange(2)[:, None]
    logits[rows, data.query_pos, data.answer_ids] = 1.0
    assert data.answered(logits).tolist() == [True, True]
    logits[0, data.query_pos[0, -1], data.answer_ids[0, -1]] = -1.0
    assert data.answered(logits).tolist() == [False, True]
    assert data.step_correct(logits).float().mean().item() < 1.0
    kept = data.subset(torch.tensor([False, True]))
    assert len(kept) == 1 and kept.codes == data.codes[1:]
    with pytest.raises(ValueError, match="logits"):
        data.answered(logits[:, :-1])
    with pytest.raises(ValueError, match="BoolTensor"):
        data.subset(torch.tensor([1, 0]))


def test_needle_bad_arguments(gpt2_random):
    with pytest.raises(ValueError, match="n_filler"):
        needle_in_a_haystack(gpt2_random, 2, n_filler=99)
    with pytest.raises(ValueError, match="n_prompts"):
        needle_in_a_haystack(gpt2_random, 0)
    with pytest.raises(ValueError, match="code_digits"):
        needle_in_a_haystack(gpt2_random, 2, code_digits=0)


def test_token_rarity(any_model):
    rarity = token_rarity(any_model, "house")
    assert rarity.rank == pytest.approx(rarity.token_id / any_model.cfg.d_vocab)
    with pytest.raises(ValueError, match="one token"):
        token_rarity(any_model, "house of cards")


def test_rare_word_prompts_differ_only_in_the_slot(any_model):
    data = rare_word_prompts(any_model, 6, seed=0)
    assert len(data) == 6
    rows = torch.arange(6)
    for other in (data.common_tokens, data.control_tokens):
        differs = data.rare_tokens != other
        assert differs.sum(dim=1).tolist() == [1] * 6
        assert differs[rows, data.slot_pos].all()
    assert (data.rare_ranks > 0.4).all() and (data.common_ranks < 0.15).all()
    assert decode(any_model, data.rare_tokens[0, data.slot_pos[0]]).strip() == data.rare_words[0]
    assert data.common_words != data.control_words
    assert (data.lengths <= data.rare_tokens.shape[1]).all()


def test_rare_word_prompts_bad_arguments(embedded_model):
    with pytest.raises(ValueError, match="common_below"):
        rare_word_prompts(embedded_model, 4, rare_above=0.1, common_below=0.2)
    with pytest.raises(ValueError, match="too few words"):
        rare_word_prompts(embedded_model, 4, rare_above=0.999)
    with pytest.raises(ValueError, match="n_prompts"):
        rare_word_prompts(embedded_model, 0)


def test_word_spans(embedded_model):
    text = "The unbelievable story, told twice."
    spans = word_spans(embedded_model, text)
    tokens = embedded_model.to_str_tokens(text)
    words = ["".join(tokens[first : last + 1]).strip() for first, last in spans]
    assert words == ["The", "unbelievable", "story", "told", "twice"]
    assert any(last > first for first, last in spans)  # "unbelievable" is split by this tokenizer
    with pytest.raises(ValueError, match="non-empty"):
        word_spans(embedded_model, "  ")


def test_syntactic_sentences_roles(any_model):
    data = syntactic_sentences(any_model, 6, seed=2)
    assert len(data) == 6
    for i, sentence in enumerate(data.sentences):
        words = ["<bos>"] + sentence.rstrip(".").split(" ")
        assert data.lengths[i] == len(words) + 1  # + the final "."
        for role in ("subject", "verb", "object"):
            position = int(data.roles[role][i])
            assert decode(any_model, data.tokens[i, position]).strip() == words[position]
    assert (data.roles["subject"] < data.roles["verb"]).all()
    assert (data.roles["verb"] < data.roles["object"]).all()
    assert (data.roles["nearest_noun"] >= data.roles["subject"]).all()
    with pytest.raises(ValueError, match="n_prompts"):
        syntactic_sentences(any_model, 0)


def test_acronym_dataset(any_model):
    data = acronym_dataset(any_model, 5, seed=0)
    assert len(data) == 5 and data.tokens.shape[0] == 5
    for i, prompt in enumerate(data.prompts):
        words = prompt.split(" (")[0].split(" ")[1:]
        assert data.answers[i] == words[2][0]
        for j, word in enumerate(words):
            assert decode(any_model, data.tokens[i, data.word_pos[i, j]]).strip() == word
    assert data.letter_ids.shape == (26,)
    logits = torch.zeros(5, data.tokens.shape[1], any_model.cfg.d_vocab)
    logits[torch.arange(5), -1, data.answer_ids] = 1.0
    assert data.letter_accuracy(logits) == pytest.approx(1.0)
    assert data.letter_directions(any_model).shape == (5, any_model.cfg.d_model)
    with pytest.raises(ValueError, match="logits"):
        data.letter_accuracy(logits[:2])
    with pytest.raises(ValueError, match="n_prompts"):
        acronym_dataset(any_model, 0)
