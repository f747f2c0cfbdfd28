"""Tests for utils.knowledge_data: capital facts, knowledge conflicts, yes/no and
multiple-choice prompts."""

from __future__ import annotations

import pytest
import torch

from utils.data.capitals import (
    COUNTRY_CAPITALS,
    LETTERS,
    capital_facts,
    knowledge_conflict_dataset,
    multiple_choice_dataset,
    negative_bias,
    yes_no_dataset,
)

torch.set_grad_enabled(False)


@pytest.fixture(scope="module")
def unvalidated(any_model):
    return capital_facts(any_model, validate=False)


def test_capital_facts_are_validated_on_the_embedded_model(embedded_model):
    facts = capital_facts(embedded_model)
    assert facts.n_candidates == len(COUNTRY_CAPITALS)
    assert 10 <= len(facts) < facts.n_candidates
    predicted = embedded_model(facts.tokens)[:, -1].argmax(-1)
    assert torch.equal(predicted, facts.answer_ids)


def test_capital_facts_layout(any_model, unvalidated):
    facts = unvalidated
    assert len(facts) >= 10 and facts.tokens.shape[0] == len(facts)
    for row, country in zip(facts.tokens, facts.countries):
        assert any_model.to_string(row[facts.subject_pos : facts.subject_pos + 1]) == " " + country
    capital = any_model.to_string(facts.answer_ids[:1])
    assert capital == " " + facts.capitals[0]


def test_capital_facts_reject_bad_pairs(any_model):
    with pytest.raises(ValueError, match="tokens for this tokenizer"):
        capital_facts(any_model, [("France", "Paris"), ("Atlantis", "Poseidonopolisville")], validate=False)
    with pytest.raises(ValueError, match="only once"):
        capital_facts(any_model, [("France", "Paris"), ("France", "Lyon")], validate=False)
    with pytest.raises(TypeError, match="pairs"):
        capital_facts(any_model, [("France",)], validate=False)


def test_knowledge_conflict_dataset(any_model, unvalidated):
    conflict = knowledge_conflict_dataset(any_model, unvalidated, seed=0)
    assert len(conflict) == len(unvalidated)
    assert bool((conflict.memory_ids != conflict.context_ids).all())
    assert torch.equal(conflict.tokens[:, conflict.context_pos], conflict.context_ids)
    for position in conflict.subject_pos:
        assert torch.equal(conflict.tokens[:, position], unvalidated.tokens[:, unvalidated.subject_pos])
    # Every counterfactual is another fact's true capital.
    assert set(conflict.context_ids.tolist()) == set(conflict.memory_ids.tolist())
    with pytest.raises(ValueError, match="at least two"):
        knowledge_conflict_dataset(any_model, capital_facts(any_model, [("France", "Paris")], validate=False))


def test_yes_no_dataset(any_model, unvalidated):
    questions = yes_no_dataset(any_model, unvalidated, n_questions=6)
    assert len(questions) == 12 and questions.labels.sum().item() == 6
    rows = torch.arange(len(questions))
    assert bool((questions.tokens[rows, questions.yes_pos] == questions.yes_id).all())
    assert bool((questions.tokens[rows, questions.no_pos] == questions.no_id).all())
    # The options named by the last question come after both shot answers.
    assert bool((questions.yes_pos < questions.no_pos).all())
    assert "Answer Yes or No." in questions.prompts[0].split("\n")[-2]
    with pytest.raises(ValueError, match="n_questions"):
        yes_no_dataset(any_model, unvalidated, n_questions=0)
    few = capital_facts(any_model, COUNTRY_CAPITALS[:3], validate=False)
    with pytest.raises(ValueError, match="at least 4"):
        yes_no_dataset(any_model, few)


def test_negative_bias():
    logits = torch.zeros(2, 3, 10)
    logits[0, -1, 4], logits[1, -1, 5] = 2.0, 1.0
    assert negative_bias(logits, yes_id=4, no_id=5).tolist() == [-2.0, 1.0]
    with pytest.raises(ValueError, match="batch, pos, d_vocab"):
        negative_bias(logits[:, -1], 4, 5)


def test_multiple_choice_dataset(any_model, unvalidated):
    questions = multiple_choice_dataset(any_model, unvalidated, seed=0)
    assert len(questions) == len(unvalidated) - 1
    counts = torch.bincount(questions.correct, minlength=4)
    assert counts.max() - counts.min() <= 1
    rows = torch.arange(len(questions))
    for column, letter in enumerate(LETTERS):
        assert {any_model.to_string(t) for t in questions.tokens[rows, questions.letter_pos[:, column]]} == {letter}
    # The option after the correct letter is the asked country's capital.
    first = questions.prompts[0].split("\n\n")[1]
    line = [ln for ln in first.split("\n") if ln.startswith(LETTERS[int(questions.correct[0])] + ".")][0]
    assert line == f"{LETTERS[int(questions.correct[0])]}. {unvalidated.capitals[1]}"
    assert [any_model.to_string(i) for i in questions.letter_ids] == [" " + letter for letter in LETTERS]
    assert len(multiple_choice_dataset(any_model, unvalidated, n_questions=8)) == 8
    with pytest.raises(ValueError, match="n_questions"):
        multiple_choice_dataset(any_model, unvalidated, n_questions=len(unvalidated))
    few = capital_facts(any_model, COUNTRY_CAPITALS[:4], validate=False)
    with pytest.raises(ValueError, match="at least 5"):
        multiple_choice_dataset(any_model, few)
