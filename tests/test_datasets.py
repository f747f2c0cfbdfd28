"""Prompt sets: shapes, positions, single-token checks and errors."""

import pytest
import torch

from utils.data.facts import (
    FACTS,
    Fact,
    factual_recall_dataset,
    subject_token_positions,
)
from utils.data.ioi import ioi_dataset
from utils.data.tokens import is_single_token, single_token_id, tokens_of_equal_length
from utils.data.repeated import repeated_random_tokens


def test_repeated_random_tokens_repeat_with_the_period(any_model):
    tokens = repeated_random_tokens(any_model, 3, 7, seed=1)
    assert tokens.shape == (3, 15)
    assert torch.equal(tokens[:, 1:8], tokens[:, 8:15])
    assert (tokens[:, 0] == any_model.tokenizer.bos_token_id).all()
    assert torch.equal(tokens, repeated_random_tokens(any_model, 3, 7, seed=1))
    assert not torch.equal(tokens, repeated_random_tokens(any_model, 3, 7, seed=2))
    assert repeated_random_tokens(any_model, 2, 5, n_repeats=3, prepend_bos=False).shape == (2, 15)
    with pytest.raises(ValueError):
        repeated_random_tokens(any_model, 2, 1)


def test_ioi_dataset_structure(any_model):
    data = ioi_dataset(any_model, 8, seed=0)
    assert len(data) == 8
    assert data.clean_tokens.shape == data.corrupted_tokens.shape
    tokens = data.clean_tokens
    rows = torch.arange(8)
    assert torch.equal(tokens[rows, data.positions["IO"]], data.correct_ids)
    assert torch.equal(tokens[rows, data.positions["S1"]], data.incorrect_ids)
    assert torch.equal(tokens[rows, data.positions["S2"]], data.incorrect_ids)
    assert (data.positions["S1"] < data.positions["S2"]).all()
    # half ABBA (IO first), half BABA
    assert (data.positions["IO"] < data.positions["S1"]).sum() == 4
    for clean, corrupted, io, s in zip(data.prompts, data.corrupted_prompts, data.io_names, data.subject_names):
        assert io in clean and s in clean
        assert io not in corrupted.split() and s not in corrupted.split()
    assert data.names_kept >= 5
    assert ioi_dataset(any_model, 8, seed=0).prompts == data.prompts


def test_ioi_rejects_multi_token_names(any_model):
    long_name = "Bartholomewtrudeauski"
    assert not is_single_token(any_model, " " + long_name)
    with pytest.raises(ValueError, match="Bartholomewtrudeauski.*tokens"):
        ioi_dataset(any_model, 4, names=["Mary", "John", "Alice", "Bob", long_name])


def test_single_token_id(any_model):
    assert any_model.tokenizer.decode([single_token_id(any_model, " Mary")]) == " Mary"
    with pytest.raises(ValueError, match="must be one token"):
        single_token_id(any_model, " Constantinople and beyond")
    with pytest.raises(TypeError):
        single_token_id(any_model, 5)


def test_clean_and_corrupted_of_different_lengths(any_model):
    with pytest.raises(ValueError, match="same token length"):
        tokens_of_equal_length(any_model, ["When Mary left"], ["When Mary and John left the room"])
    with pytest.raises(ValueError, match="2 clean prompts but 1"):
        tokens_of_equal_length(any_model, ["a", "b"], ["c"])
    clean, corrupted = tokens_of_equal_length(any_model, ["When Mary left"], ["When John left"])
    assert clean.shape == corrupted.shape


def test_subject_positions(any_model):
    prompt = "The capital of France is"
    positions = subject_token_positions(any_model, prompt, "France")
    tokens = any_model.to_str_tokens(prompt)
    assert "".join(tokens[p] for p in positions).strip() == "France"
    with pytest.raises(ValueError, match="does not occur"):
        subject_token_positions(any_model, prompt, "Spain")


def test_factual_recall_keeps_only_what_the_model_gets_right(embedded_model):
    facts = [Fact("The capital of France is", "France", " Paris"), Fact("The capital of France is", "France", " Berlin")]
    data = factual_recall_dataset(embedded_model, facts)
    assert [f.answer for f in data.facts] == [" Paris"]
    assert data.n_candidates == 2 and len(data.rejected) == 1
    assert data.answer_ids.tolist() == [embedded_model.to_single_token(" Paris")]
    with pytest.raises(ValueError, match="must be one token"):
        factual_recall_dataset(embedded_model, [Fact("The Statue of Liberty is in", "The Statue of Liberty", " New York")])


def test_builtin_facts_are_well_formed():
    assert len(FACTS) >= 30
    for fact in FACTS:
        assert fact.subject in fact.prompt and fact.answer.startswith(" ")


def test_toy_movie_reviews(any_model):
    from utils.data.sentiment import sentiment_score, toy_movie_reviews

    data = toy_movie_reviews(any_model, 8, seed=0)
    assert len(data) == 8 and data.labels.tolist() == [1, 0] * 4
    rows = torch.arange(8)
    adjectives = [any_model.tokenizer.decode([t]).strip() for t in data.tokens[rows, data.adjective_pos]]
    assert all(a in p for a, p in zip(adjectives, data.prompts))
    verbs = [any_model.tokenizer.decode([t]).strip() for t in data.tokens[rows, data.verb_pos]]
    assert all(v.endswith("ed") for v in verbs)
    with pytest.raises(ValueError, match="even"):
        toy_movie_reviews(any_model, 3)
    logits = torch.zeros(2, 1, any_model.cfg.d_vocab)
    logits[0, 0, data.positive_ids] = 1.0
    assert sentiment_score(logits, data.positive_ids, data.negative_ids).tolist() == [1.0, 0.0]


def test_embedded_model_follows_review_sentiment(embedded_model):
    from utils.data.sentiment import sentiment_score, toy_movie_reviews

    data = toy_movie_reviews(embedded_model, 16, seed=0)
    with torch.no_grad():
        scores = sentiment_score(embedded_model(data.tokens), data.positive_ids, data.negative_ids)
    positive, negative = scores[data.labels == 1], scores[data.labels == 0]
    print(f"positive reviews {positive.mean():.2f}, negative reviews {negative.mean():.2f}")
    assert positive.mean() - negative.mean() > 1.0
