"""Templated sentences and word spans (utils.data.syntax) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.syntax import SyntaxDataset, WordEndDataset, syntactic_sentences, word_end_prompts, word_spans


def decode(model, token_id) -> str:
    return model.tokenizer.decode([int(token_id)])


def test_word_spans(embedded_model):
    text = "The unbelievable story, told twice."
    spans = word_spans(embedded_model, text)
    tokens = embedded_model.to_str_tokens(text)
    words = ["".join(tokens[first : last + 1]).strip() for first, last in spans]
    assert words == ["The", "unbelievable", "story", "told", "twice"]
    assert any(last > first for first, last in spans)  # "unbelievable" is split by this tokenizer
    with pytest.raises(ValueError, match="non-empty"):
        word_spans(embedded_model, "  ")


def test_word_spans_on_both_tokenizers(any_model):
    text = "The old dog chased the cat."
    spans = word_spans(any_model, text)
    tokens = any_model.to_str_tokens(text)
    assert ["".join(tokens[a : b + 1]).strip() for a, b in spans] == text.rstrip(".").split()


def test_syntactic_sentences_roles(any_model):
    data = syntactic_sentences(any_model, 6, seed=2)
    assert isinstance(data, SyntaxDataset) and len(data) == 6
    assert_prompt_set(data, any_model, again=syntactic_sentences(any_model, 6, seed=2))
    positions = data.positions
    for i, sentence in enumerate(data.prompts):
        words = ["<bos>"] + sentence.rstrip(".").split(" ")
        assert data.lengths[i] == len(words) + 1  # + the final "."
        for role in ("subject", "verb", "object"):
            position = int(positions[role][i])
            assert decode(any_model, data.tokens[i, position]).strip() == words[position]
    assert (positions["subject"] < positions["verb"]).all()
    assert (positions["verb"] < positions["object"]).all()
    assert (positions["nearest_noun"] >= positions["subject"]).all()
    assert (positions["END"] == positions["object"]).all() and decode(any_model, data.answer_ids[0]) == "."
    assert syntactic_sentences(any_model, 6, seed=3).prompts != data.prompts
    with pytest.raises(AttributeError, match="use .positions"):
        data.roles


def test_syntactic_sentences_bad_arguments(any_model):
    with pytest.raises(ValueError, match="n_prompts"):
        syntactic_sentences(any_model, 0)
    with pytest.raises(ValueError, match="seed"):
        syntactic_sentences(any_model, 3, seed=0.5)


def test_agreement_sentences(any_model):
    from utils.data.syntax import AgreementDataset, agreement_sentences

    data = agreement_sentences(any_model, 8, seed=1)
    assert isinstance(data, AgreementDataset) and len(data) == 8
    assert_prompt_set(data, any_model, again=agreement_sentences(any_model, 8, seed=1))
    assert data.tokens.shape[1] == 7 and (data.lengths == 7).all()
    is_id, are_id = (any_model.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" is", " are"))
    for i, sentence in enumerate(data.prompts):
        words = ["<bos>"] + sentence.split(" ")
        subject = decode(any_model, data.tokens[i, data.positions["subject"][i]]).strip()
        assert subject == words[int(data.positions["subject"][i])]
        assert int(data.positions["attractor"][i]) == 6 == int(data.positions["END"][i])
        plural = bool(data.subject_plural[i])
        assert plural == (i % 2 == 1)
        assert bool(data.attractor_plural[i]) == (plural != ((i // 2) % 2 == 1))
        assert int(data.answer_ids[i]) == (are_id if plural else is_id)
        assert int(data.wrong_ids[i]) == (is_id if plural else are_id)
    assert set(data.positions["subject"].tolist()) <= {2, 3}
    assert data.subset(torch.tensor([0, 3])).subject_plural.tolist() == [False, True]
    with pytest.raises(ValueError, match="n_prompts"):
        agreement_sentences(any_model, 0)
    with pytest.raises(ValueError, match="seed"):
        agreement_sentences(any_model, 4, seed="a")


def test_word_end_prompts(any_model):
    data = word_end_prompts(any_model, 8, seed=0, exclude=["walrus", "Pelican"])
    assert isinstance(data, WordEndDataset) and len(data) == 16
    assert_prompt_set(data, any_model, again=word_end_prompts(any_model, 8, seed=0, exclude=["walrus", "Pelican"]))
    assert data.is_split.tolist() == [True] * 8 + [False] * 8
    assert not {"walrus", "pelican"} & set(data.words) and len(set(data.words)) == 16
    comma = any_model.to_single_token(",")
    assert bool((data.answer_ids == comma).all())
    end, first = data.positions["END"], data.positions["word"]
    assert bool((end == data.tokens.shape[1] - 1).all())
    assert ((end - first) == data.is_split.long()).all()  # two pieces when split, one when whole
    for row in (0, 8):
        word = any_model.tokenizer.decode(data.tokens[row, int(first[row]) : int(end[row]) + 1])
        assert word.strip() == data.words[row] and data.prompts[row].endswith(" " + data.words[row])
    # a matched pair shares its fillers
    assert data.prompts[0].split(",")[1:3] == data.prompts[8].split(",")[1:3]
    with pytest.raises(ValueError, match="splits"):
        word_end_prompts(any_model, 500)
    with pytest.raises(TypeError, match="exclude"):
        word_end_prompts(any_model, 4, exclude="walrus")
