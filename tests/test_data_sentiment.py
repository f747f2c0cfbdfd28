"""ToyMovieReview prompts (utils.data.sentiment) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.sentiment import (
    MOVIE_REVIEW_TEMPLATE,
    REVIEW_NOUNS,
    SentimentDataset,
    sentiment_score,
    split_reviews_by_adjective,
    toy_movie_reviews,
)

torch.set_grad_enabled(False)


def test_toy_movie_reviews(any_model):
    data = toy_movie_reviews(any_model, 8, seed=0)
    assert isinstance(data, SentimentDataset)
    assert len(data) == 8 and data.labels.tolist() == [1, 0] * 4
    assert_prompt_set(data, any_model, again=toy_movie_reviews(any_model, 8, seed=0))
    rows = torch.arange(8)
    adjectives = [any_model.tokenizer.decode([t]).strip() for t in data.tokens[rows, data.positions["adjective"]]]
    assert all(a in p for a, p in zip(adjectives, data.prompts))
    verbs = [any_model.tokenizer.decode([t]).strip() for t in data.tokens[rows, data.positions["verb"]]]
    assert all(v.endswith("ed") for v in verbs)
    positive = data.labels == 1
    assert bool((data.answer_ids[positive] == data.positive_ids[0]).all())
    assert bool((data.answer_ids[~positive] == data.negative_ids[0]).all())
    assert torch.equal(data.subset([1]).labels, torch.tensor([0]))
    with pytest.raises(AttributeError, match=r'positions\["adjective"\]'):
        data.adjective_pos


def test_held_out_words_share_no_word_and_keep_the_shape(any_model):
    data = toy_movie_reviews(any_model, 8, seed=0)
    new = toy_movie_reviews(any_model, 40, seed=1, words="held out")
    assert_prompt_set(new, any_model, again=toy_movie_reviews(any_model, 40, seed=1, words="held out"))
    assert new.tokens.shape[1] == data.tokens.shape[1] and new.labels.tolist() == [1, 0] * 20
    for key in ("adjective", "verb", "END"):
        assert torch.equal(new.positions[key][:8], data.positions[key])
    old_words = {t for row in data.tokens[:, [int(data.positions["adjective"][0]), int(data.positions["verb"][0])]] for t in row.tolist()}
    new_words = {t for row in new.tokens[:, [int(new.positions["adjective"][0]), int(new.positions["verb"][0])]] for t in row.tolist()}
    assert not old_words & new_words
    assert len(new.held_out(data, 32)) == 32
    with pytest.raises(ValueError, match="held out"):
        toy_movie_reviews(any_model, 4, words="new")


def test_toy_movie_reviews_bad_arguments(any_model):
    for bad in (3, 0, True, 4.0):
        with pytest.raises(ValueError, match="even"):
            toy_movie_reviews(any_model, bad)
    with pytest.raises(ValueError, match="seed"):
        toy_movie_reviews(any_model, 4, seed=1.5)


def test_sentiment_score(any_model):
    data = toy_movie_reviews(any_model, 8, seed=0)
    logits = torch.zeros(2, 1, any_model.cfg.d_vocab)
    logits[0, 0, data.positive_ids] = 1.0
    assert sentiment_score(logits, data.positive_ids, data.negative_ids).tolist() == [1.0, 0.0]


def test_split_by_adjective_is_disjoint_deduplicated_and_keeps_the_type(embedded_model):
    reviews = toy_movie_reviews(embedded_model, 80, seed=0)
    train, test = split_reviews_by_adjective(reviews, seed=0)
    assert isinstance(train, SentimentDataset) and isinstance(test, SentimentDataset)
    for split in (train, test):
        assert len(set(split.prompts)) == len(split.prompts)
        assert set(split.labels.tolist()) == {0, 1}
        assert split.tokens.shape[0] == len(split.prompts) == split.labels.shape[0]
    rows = lambda split: torch.arange(len(split))  # noqa: E731
    train_adjectives = set(train.tokens[rows(train), train.positions["adjective"]].tolist())
    test_adjectives = set(test.tokens[rows(test), test.positions["adjective"]].tolist())
    assert train_adjectives and test_adjectives and not train_adjectives & test_adjectives
    assert split_reviews_by_adjective(reviews, seed=0)[0].prompts == train.prompts


def test_split_needs_two_adjectives_per_class(embedded_model):
    with pytest.raises(ValueError, match="distinct adjective"):
        split_reviews_by_adjective(toy_movie_reviews(embedded_model, 2, seed=0))
    with pytest.raises(TypeError, match="SentimentDataset"):
        split_reviews_by_adjective(["not a dataset"])


def test_embedded_model_follows_review_sentiment(embedded_model):
    data = toy_movie_reviews(embedded_model, 16, seed=0)
    scores = sentiment_score(embedded_model(data.tokens), data.positive_ids, data.negative_ids)
    positive, negative = scores[data.labels == 1], scores[data.labels == 0]
    print(f"positive reviews {positive.mean():.2f}, negative reviews {negative.mean():.2f}")
    assert positive.mean() - negative.mean() > 1.0


def test_toy_movie_reviews_distinct_with_nouns(any_model):
    data = toy_movie_reviews(any_model, 40, seed=1, nouns=REVIEW_NOUNS, distinct=True)
    assert len(set(data.prompts)) == 40 and data.labels.tolist() == [1, 0] * 20
    assert_prompt_set(data, any_model, again=toy_movie_reviews(any_model, 40, seed=1, nouns=REVIEW_NOUNS, distinct=True))
    rows = torch.arange(40)
    adjectives = [any_model.tokenizer.decode([t]).strip() for t in data.tokens[rows, data.positions["adjective"]]]
    assert all(f" was {a}," in p for a, p in zip(adjectives, data.prompts))
    # the noun sits at both places of the template, and several nouns are used
    used = {p.split()[3] for p in data.prompts}
    assert len(used) > 1 and used <= set(REVIEW_NOUNS)
    assert all(p.endswith(f"This {p.split()[3]} is") for p in data.prompts)
    # one noun and no distinctness: the survey's template, as before
    plain = toy_movie_reviews(any_model, 8, seed=0)
    assert all(p.startswith("I thought this movie was") and p.endswith("This movie is") for p in plain.prompts)
    assert toy_movie_reviews(any_model, 8, seed=0, nouns=["movie"]).prompts == plain.prompts
    assert MOVIE_REVIEW_TEMPLATE == "I thought this movie was {ADJ}, I {VERB} it. Conclusion: This movie is"
    with pytest.raises(ValueError, match="combinations"):
        toy_movie_reviews(any_model, 2 * 10**4, nouns=REVIEW_NOUNS, distinct=True)
    with pytest.raises(ValueError, match="nouns"):
        toy_movie_reviews(any_model, 4, nouns="movie")
