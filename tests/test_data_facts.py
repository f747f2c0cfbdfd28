"""Factual-recall prompts (utils.data.facts) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.facts import (
    FACTS,
    Fact,
    FactualRecallDataset,
    factual_recall_dataset,
    subject_token_positions,
)

torch.set_grad_enabled(False)

SOME_FACTS = [
    Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"),
    Fact("The capital of France is", "France", " Paris"),
    Fact("Big Ben is located in the city of", "Big Ben", " London"),
    Fact("Rome is the capital of", "Rome", " Italy"),
]


def test_builtin_facts_are_well_formed():
    assert len(FACTS) >= 30
    for fact in FACTS:
        assert fact.subject in fact.prompt and fact.answer.startswith(" ")


def test_subject_positions(any_model):
    prompt = "The capital of France is"
    positions = subject_token_positions(any_model, prompt, "France")
    tokens = any_model.to_str_tokens(prompt)
    assert "".join(tokens[p] for p in positions).strip() == "France"
    with pytest.raises(ValueError, match="does not occur"):
        subject_token_positions(any_model, prompt, "Spain")
    with pytest.raises(ValueError, match="non-empty"):
        subject_token_positions(any_model, prompt, " ")


def test_facts_are_one_right_padded_batch(any_model):
    data = factual_recall_dataset(any_model, SOME_FACTS, validate=False)
    assert isinstance(data, FactualRecallDataset) and len(data) == 4
    assert_prompt_set(data, any_model, again=factual_recall_dataset(any_model, SOME_FACTS, validate=False))
    assert len(set(data.lengths.tolist())) > 1  # prompts of different lengths share one tensor
    assert torch.equal(data.positions["END"], data.lengths - 1)
    for row, fact in enumerate(data.facts):
        alone = any_model.to_tokens(fact.prompt)[0]
        assert data.tokens[row, : data.lengths[row]].tolist() == alone.tolist()
        span = data.subject_span(row)
        assert span == subject_token_positions(any_model, fact.prompt, fact.subject)
        assert data.subject_mask[row].nonzero().flatten().tolist() == span
    assert data.answer_ids.tolist() == [any_model.to_single_token(f.answer) for f in data.facts]
    assert data.n_candidates == 4 and data.rejected == []
    with pytest.raises(AttributeError, match="renamed"):
        data.subject_positions


def test_padding_changes_nothing_at_the_real_positions(any_model):
    data = factual_recall_dataset(any_model, SOME_FACTS, validate=False)
    logits = any_model(data.tokens)
    at_end = logits[torch.arange(len(data)), data.positions["END"]]
    for row, fact in enumerate(data.facts):
        alone = any_model(any_model.to_tokens(fact.prompt))[0, -1]
        assert torch.allclose(at_end[row], alone, atol=1e-3)


def test_factual_recall_keeps_only_what_the_model_gets_right(embedded_model):
    facts = [Fact("The capital of France is", "France", " Paris"), Fact("The capital of France is", "France", " Berlin")]
    data = factual_recall_dataset(embedded_model, facts)
    assert [f.answer for f in data.facts] == [" Paris"]
    assert data.n_candidates == 2 and data.rejected == [facts[1]]
    assert data.answer_ids.tolist() == [embedded_model.to_single_token(" Paris")]


def test_builtin_facts_on_the_embedded_model(embedded_model):
    data = factual_recall_dataset(embedded_model)
    assert 12 <= len(data) < data.n_candidates == len(FACTS)
    assert len(data) + len(data.rejected) == len(FACTS)
    assert_prompt_set(data, embedded_model)
    logits = embedded_model(data.tokens)
    predicted = logits[torch.arange(len(data)), data.positions["END"]].argmax(-1)
    assert torch.equal(predicted, data.answer_ids)


def test_factual_recall_on_a_random_model_keeps_what_it_predicts(gpt2_random):
    # An untrained model knows no fact, so make one whose answer is its own top token.
    for prompt in ("The capital of France is", "The capital of Italy is", "The capital of Spain is"):
        top = int(gpt2_random(gpt2_random.to_tokens(prompt))[0, -1].argmax())
        answer = gpt2_random.tokenizer.decode([top])
        if gpt2_random.tokenizer.encode(answer, add_special_tokens=False) == [top]:
            break
    else:
        pytest.skip("the random model's top tokens do not survive a round trip through text")
    facts = [Fact(prompt, prompt.split()[-2], answer), Fact("Rome is the capital of", "Rome", " Italy")]
    data = factual_recall_dataset(gpt2_random, facts)
    assert data.answer_ids.tolist() == [top] and len(data.rejected) <= 1
    with pytest.raises(ValueError, match="predicts none"):
        factual_recall_dataset(gpt2_random, facts[1:])


def test_factual_recall_rejects_bad_facts(any_model):
    with pytest.raises(ValueError, match="must be one token"):
        factual_recall_dataset(any_model, [Fact("The Statue of Liberty is in", "The Statue of Liberty", " New York")])
    with pytest.raises(ValueError, match="does not occur"):
        factual_recall_dataset(any_model, [Fact("The capital of France is", "Spain", " Paris")])
    with pytest.raises(TypeError, match="Fact instances"):
        factual_recall_dataset(any_model, [("The capital of France is", "France", " Paris")])
    with pytest.raises(TypeError, match="sequence of Fact"):
        factual_recall_dataset(any_model, SOME_FACTS[0])
    with pytest.raises(ValueError, match="no facts given"):
        factual_recall_dataset(any_model, [])
