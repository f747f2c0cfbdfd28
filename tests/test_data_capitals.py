"""Capital facts, knowledge conflicts, yes/no and multiple-choice prompts
(utils.data.capitals) on both architectures."""

from __future__ import annotations

import pytest
import torch

from data_checks import assert_prompt_set
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
    assert_prompt_set(facts, embedded_model)


def test_capital_facts_layout(any_model, unvalidated):
    facts = unvalidated
    assert len(facts) >= 10 and facts.tokens.shape[0] == len(facts)
    assert_prompt_set(facts, any_model, again=capital_facts(any_model, validate=False))
    rows = torch.arange(len(facts))
    for token, country in zip(facts.tokens[rows, facts.positions["subject"]], facts.countries):
        assert any_model.to_string(token[None]) == " " + country
    capital = any_model.to_string(facts.answer_ids[:1])
    assert capital == " " + facts.capitals[0]
    part = facts.subset([2, 0])
    assert part.countries == [facts.countries[2], facts.countries[0]] and part.n_candidates == facts.n_candidates
    with pytest.raises(AttributeError, match=r'positions\["subject"\]'):
        facts.subject_pos


def test_capital_facts_reject_bad_pairs(any_model):
    with pytest.raises(ValueError, match="tokens for this tokenizer"):
        capital_facts(any_model, [("France", "Paris"), ("Atlantis", "Poseidonopolisville")], validate=False)
    with pytest.raises(ValueError, match="only once"):
        capital_facts(any_model, [("France", "Paris"), ("France", "Lyon")], validate=False)
    with pytest.raises(TypeError, match="pairs"):
        capital_facts(any_model, [("France",)], validate=False)
    with pytest.raises(TypeError, match="pairs"):
        capital_facts(any_model, "France", validate=False)
    with pytest.raises(ValueError, match="no \\(country, capital\\) pair"):
        capital_facts(any_model, [], validate=False)


def test_knowledge_conflict_dataset(any_model, unvalidated):
    conflict = knowledge_conflict_dataset(any_model, unvalidated, seed=0)
    assert len(conflict) == len(unvalidated)
    assert_prompt_set(conflict, any_model, again=knowledge_conflict_dataset(any_model, unvalidated, seed=0))
    rows = torch.arange(len(conflict))
    assert bool((conflict.answer_ids != conflict.wrong_ids).all())
    assert torch.equal(conflict.tokens[rows, conflict.positions["counterfactual"]], conflict.wrong_ids)
    for name in ("subject_1", "subject_2"):
        mentions = conflict.tokens[rows, conflict.positions[name]]
        assert torch.equal(mentions, unvalidated.tokens[rows, unvalidated.positions["subject"]])
    # Every counterfactual is another fact's true capital.
    assert set(conflict.wrong_ids.tolist()) == set(conflict.answer_ids.tolist())
    assert not torch.equal(knowledge_conflict_dataset(any_model, unvalidated, seed=1).wrong_ids, conflict.wrong_ids)
    with pytest.raises(ValueError, match="at least two"):
        knowledge_conflict_dataset(any_model, capital_facts(any_model, [("France", "Paris")], validate=False))
    with pytest.raises(TypeError, match="CapitalFacts"):
        knowledge_conflict_dataset(any_model, [("France", "Paris")])
    with pytest.raises(ValueError, match="seed"):
        knowledge_conflict_dataset(any_model, unvalidated, seed="0")
    for old in ("memory_ids", "context_ids", "context_pos"):
        with pytest.raises(AttributeError, match="renamed"):
            getattr(conflict, old)


def test_yes_no_dataset(any_model, unvalidated):
    questions = yes_no_dataset(any_model, unvalidated, n_questions=6)
    assert len(questions) == 12 and questions.labels.sum().item() == 6
    assert_prompt_set(questions, any_model, again=yes_no_dataset(any_model, unvalidated, n_questions=6))
    rows = torch.arange(len(questions))
    assert bool((questions.tokens[rows, questions.positions["yes"]] == questions.yes_id).all())
    assert bool((questions.tokens[rows, questions.positions["no"]] == questions.no_id).all())
    # The options named by the last question come after both shot answers.
    assert bool((questions.positions["yes"] < questions.positions["no"]).all())
    assert "Answer Yes or No." in questions.prompts[0].split("\n")[-2]
    yes = questions.labels == 1
    assert bool((questions.answer_ids[yes] == questions.yes_id).all())
    assert bool((questions.answer_ids[~yes] == questions.no_id).all())
    assert bool((questions.wrong_ids[yes] == questions.no_id).all())
    with pytest.raises(ValueError, match="n_questions"):
        yes_no_dataset(any_model, unvalidated, n_questions=0)
    with pytest.raises(ValueError, match="n_questions"):
        yes_no_dataset(any_model, unvalidated, n_questions=True)
    few = capital_facts(any_model, COUNTRY_CAPITALS[:3], validate=False)
    with pytest.raises(ValueError, match="at least 4"):
        yes_no_dataset(any_model, few)


def test_yes_no_dataset_no_first(any_model, unvalidated):
    swapped = yes_no_dataset(any_model, unvalidated, n_questions=6, no_first=True)
    plain = yes_no_dataset(any_model, unvalidated, n_questions=6)
    assert_prompt_set(swapped, any_model)
    assert "Answer No or Yes." in swapped.prompts[0].split("\n")[-2]
    assert bool((swapped.positions["no"] < swapped.positions["yes"]).all())
    assert torch.equal(swapped.labels, plain.labels) and torch.equal(swapped.answer_ids, plain.answer_ids)
    rows = torch.arange(len(swapped))
    assert bool((swapped.tokens[rows, swapped.positions["yes"]] == swapped.yes_id).all())
    with pytest.raises(TypeError, match="no_first"):
        yes_no_dataset(any_model, unvalidated, n_questions=6, no_first=1)


def test_negative_bias():
    logits = torch.zeros(2, 3, 10)
    logits[0, -1, 4], logits[1, -1, 5] = 2.0, 1.0
    assert negative_bias(logits, yes_id=4, no_id=5).tolist() == [-2.0, 1.0]
    with pytest.raises(ValueError, match="batch, pos, d_vocab"):
        negative_bias(logits[:, -1], 4, 5)


def test_multiple_choice_dataset(any_model, unvalidated):
    questions = multiple_choice_dataset(any_model, unvalidated, seed=0)
    assert len(questions) == len(unvalidated) - 1
    assert_prompt_set(questions, any_model, again=multiple_choice_dataset(any_model, unvalidated, seed=0))
    counts = torch.bincount(questions.correct, minlength=4)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(questions.answer_ids, questions.letter_ids[questions.correct])
    rows = torch.arange(len(questions))
    letters = questions.positions["letters"]
    assert letters.shape == (len(questions), 4)
    for column, letter in enumerate(LETTERS):
        assert {any_model.to_string(t) for t in questions.tokens[rows, letters[:, column]]} == {letter}
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


def test_extended_capital_facts_and_several_counterfactuals(any_model, unvalidated):
    more = capital_facts(any_model, validate=False, extended=True)
    assert len(more) > len(unvalidated) and more.countries[: len(unvalidated)] == unvalidated.countries
    assert all(fact.subject in fact.prompt and fact.answer == " " + capital
               for fact, capital in zip(more.as_facts(), more.capitals))
    with pytest.raises(ValueError):
        capital_facts(any_model, [("France", "Paris")], extended=True)
    with pytest.raises(TypeError):
        capital_facts(any_model, extended="yes")
    one = knowledge_conflict_dataset(any_model, unvalidated, seed=0)
    three = knowledge_conflict_dataset(any_model, unvalidated, seed=0, n_counterfactuals=3)
    n = len(unvalidated)
    assert len(three) == 3 * n and three.prompts[:n] == one.prompts
    assert torch.equal(three.answer_ids, unvalidated.answer_ids.repeat(3))
    assert bool((three.wrong_ids != three.answer_ids).all())
    # each fact gets three different counterfactuals
    per_fact = three.wrong_ids.view(3, n)
    assert all(len(set(per_fact[:, i].tolist())) == 3 for i in range(n))
    for bad in (0, n, True, 1.5):
        with pytest.raises(ValueError):
            knowledge_conflict_dataset(any_model, unvalidated, n_counterfactuals=bad)


def test_capital_facts_max_facts(any_model):
    more = capital_facts(any_model, validate=False, extended=True)
    first = capital_facts(any_model, validate=False, extended=True, max_facts=5)
    assert first.countries == more.countries[:5] and first.n_candidates == more.n_candidates
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="max_facts"):
            capital_facts(any_model, validate=False, max_facts=bad)


def test_capital_facts_max_facts_validated(embedded_model):
    # Validated: the first known facts, in the candidates' order, the same as without a cap.
    known = capital_facts(embedded_model, extended=True)
    capped = capital_facts(embedded_model, extended=True, max_facts=12)
    assert capped.countries == known.countries[:12]
    assert torch.equal(capped.answer_ids, known.answer_ids[:12])
    # A cap above what the model knows keeps every known fact.
    assert capital_facts(embedded_model, max_facts=10_000).countries == capital_facts(embedded_model).countries
    assert "the city of" in known.prompts[0]
