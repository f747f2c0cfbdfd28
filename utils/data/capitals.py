"""Country capitals as a prompt family: plain recall, knowledge conflicts, yes/no
questions and multiple-choice questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from utils.data.tokens import is_single_token, single_token_id
from utils.interventions.runner import forward_logits

COUNTRY_CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Germany", "Berlin"),
    ("Spain", "Madrid"), ("Russia", "Moscow"), ("England", "London"), ("Egypt", "Cairo"),
    ("China", "Beijing"), ("Greece", "Athens"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Cuba", "Havana"), ("Korea", "Seoul"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
    ("Netherlands", "Amsterdam"), ("Denmark", "Copenhagen"), ("Finland", "Helsinki"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Scotland", "Edinburgh"),
    ("Wales", "Cardiff"), ("Israel", "Jerusalem"), ("Chile", "Santiago"),
    ("Switzerland", "Bern"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Ukraine", "Kyiv"), ("Lebanon", "Beirut"),
)


CAPITAL_TEMPLATE = "The capital of {country} is"


CONFLICT_TEMPLATE = "The capital of {country} is {counterfactual}. The capital of {country} is the city of"


YES_NO_QUESTION = "Q: Is {city} the capital of {country}? Answer Yes or No.\nA:"


MULTIPLE_CHOICE_QUESTION = "Question: What is the capital of {country}?\n{options}Answer:"


LETTERS = ("A", "B", "C", "D")


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    checked = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"pairs must be (country, capital) string pairs, got {pair!r}")
        checked.append((pair[0], pair[1]))
    if len({country for country, _ in checked}) != len(checked):
        raise ValueError("each country may appear only once")
    return checked


@dataclass
class CapitalFacts:
    """Country -> capital facts of one template; ``tokens`` is ``(batch, pos)``."""

    countries: list[str]
    capitals: list[str]
    prompts: list[str]
    tokens: Tensor
    answer_ids: Tensor
    subject_pos: int
    n_candidates: int

    def __len__(self) -> int:
        return len(self.countries)


def capital_facts(
    model: Any,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    validate: bool = True,
) -> CapitalFacts:
    """Capital facts whose country and capital are single tokens (with a leading space),
    kept only if the model's top next token is the capital (``validate``).

    Built-in pairs (:data:`COUNTRY_CAPITALS`) that are not single tokens are dropped;
    pairs passed explicitly must be single tokens, else ``ValueError``.
    """
    explicit = pairs is not None
    candidates = _check_pairs(COUNTRY_CAPITALS if pairs is None else pairs)
    usable = []
    for country, capital in candidates:
        if explicit:
            single_token_id(model, " " + country)
            single_token_id(model, " " + capital)
            usable.append((country, capital))
        elif is_single_token(model, " " + country) and is_single_token(model, " " + capital):
            usable.append((country, capital))
    if not usable:
        raise ValueError("no (country, capital) pair is a pair of single tokens for this tokenizer")
    prompts = [CAPITAL_TEMPLATE.format(country=country) for country, _ in usable]
    tokens = model.to_tokens(prompts)
    answers = torch.tensor([single_token_id(model, " " + capital) for _, capital in usable])
    if validate:
        # Only the last position is unembedded (a large vocabulary makes full logits big).
        predicted = forward_logits(model, tokens, last_position_only=True)[:, -1].argmax(-1).cpu()
        keep = (predicted == answers).tolist()
        usable = [pair for pair, kept in zip(usable, keep) if kept]
        prompts = [prompt for prompt, kept in zip(prompts, keep) if kept]
        tokens, answers = tokens[torch.tensor(keep)], answers[torch.tensor(keep)]
    prefix = CAPITAL_TEMPLATE.split("{country}")[0].rstrip()
    return CapitalFacts(
        countries=[country for country, _ in usable],
        capitals=[capital for _, capital in usable],
        prompts=prompts,
        tokens=tokens,
        answer_ids=answers,
        subject_pos=model.to_tokens(prefix).shape[-1],
        n_candidates=len(candidates),
    )


def _derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point: item ``i`` is paired with ``order[i] != i``."""
    if n < 2:
        raise ValueError("need at least two facts to pair each with a different one")
    shift = random.Random(seed).randrange(1, n)
    return [(i + shift) % n for i in range(n)]


@dataclass
class ConflictDataset:
    """Knowledge-conflict prompts: the context states a wrong capital, then asks again.

    ``memory_ids`` are the true capitals (what the model memorised), ``context_ids`` the
    counterfactual capitals stated in the prompt; ``context_pos`` is the position of the
    counterfactual token and ``subject_pos`` of the two mentions of the country.
    """

    prompts: list[str]
    tokens: Tensor
    memory_ids: Tensor
    context_ids: Tensor
    context_pos: int
    subject_pos: tuple[int, int]

    def __len__(self) -> int:
        return len(self.prompts)


def knowledge_conflict_dataset(model: Any, facts: CapitalFacts, *, seed: int = 0) -> ConflictDataset:
    """Pair every fact with another fact's capital as the counterfactual statement."""
    if len(facts) < 2:
        raise ValueError("need at least two capital facts")
    partner = _derangement(len(facts), seed)
    prompts = [
        CONFLICT_TEMPLATE.format(country=country, counterfactual=facts.capitals[j])
        for country, j in zip(facts.countries, partner)
    ]
    tokens = model.to_tokens(prompts)
    lengths = {model.to_tokens(p).shape[-1] for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"conflict prompts differ in token length {sorted(lengths)}; use single-token countries")
    before_counterfactual = CONFLICT_TEMPLATE.split("{counterfactual}")[0].format(country=facts.countries[0]).rstrip()
    context_pos = model.to_tokens(before_counterfactual).shape[-1]
    second_prefix = CONFLICT_TEMPLATE.rsplit("{country}", 1)[0].format(
        country=facts.countries[0], counterfactual=facts.capitals[partner[0]]
    ).rstrip()
    return ConflictDataset(
        prompts=prompts,
        tokens=tokens,
        memory_ids=facts.answer_ids.clone(),
        context_ids=facts.answer_ids[partner].clone(),
        context_pos=context_pos,
        subject_pos=(facts.subject_pos, model.to_tokens(second_prefix).shape[-1]),
    )


@dataclass
class YesNoDataset:
    """Balanced yes/no questions with a two-shot prefix (one "Yes", one "No" example, in
    alternating order). ``labels`` is 1 where the true answer is "Yes"; ``yes_pos`` and
    ``no_pos`` (``LongTensor[batch]``) locate the options " Yes" and " No" that the last
    question's instruction names."""

    prompts: list[str]
    tokens: Tensor
    labels: Tensor
    yes_id: int
    no_id: int
    yes_pos: Tensor
    no_pos: Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def yes_no_dataset(model: Any, facts: CapitalFacts, *, n_questions: int | None = None, seed: int = 0) -> YesNoDataset:
    """True and false "Is <city> the capital of <country>?" questions, half of each.

    The first two facts serve as the shot examples (one true, one false) and are not
    asked. Each remaining country is asked twice: with its capital (answer Yes) and
    with another country's capital (answer No).

    Args:
        n_questions: keep this many countries (2 questions each); default all.
    """
    if len(facts) < 4:
        raise ValueError(f"need at least 4 capital facts (2 for the shots), got {len(facts)}")
    yes_id, no_id = single_token_id(model, " Yes"), single_token_id(model, " No")
    shot_true = YES_NO_QUESTION.format(city=facts.capitals[0], country=facts.countries[0]) + " Yes\n"
    shot_false = YES_NO_QUESTION.format(city=facts.capitals[0], country=facts.countries[1]) + " No\n"
    countries, capitals = facts.countries[2:], facts.capitals[2:]
    if n_questions is not None:
        if not 1 <= n_questions <= len(countries):
            raise ValueError(f"n_questions must lie in [1, {len(countries)}], got {n_questions}")
        countries, capitals = countries[:n_questions], capitals[:n_questions]
    if len(countries) < 2:
        raise ValueError("need at least two countries to ask about")
    wrong = _derangement(len(countries), seed)
    prompts, labels = [], []
    for i, country in enumerate(countries):
        shots = shot_true + shot_false if i % 2 == 0 else shot_false + shot_true
        for label, city in ((1, capitals[i]), (0, capitals[wrong[i]])):
            prompts.append(shots + YES_NO_QUESTION.format(city=city, country=country))
            labels.append(label)
    tokens = model.to_tokens(prompts)
    if len({model.to_tokens(p).shape[-1] for p in prompts}) != 1:
        raise ValueError("yes/no prompts differ in token length; use single-token countries and capitals")
    yes_pos = _last_position(tokens, yes_id, "' Yes'")
    no_pos = _last_position(tokens, no_id, "' No'")
    return YesNoDataset(prompts, tokens, torch.tensor(labels), yes_id, no_id, yes_pos, no_pos)


def _last_position(tokens: Tensor, token_id: int, name: str) -> Tensor:
    positions = []
    for row in tokens:
        hits = (row == token_id).nonzero().flatten()
        if hits.numel() == 0:
            raise ValueError(f"token {name} does not occur in a prompt")
        positions.append(int(hits[-1]))
    return torch.tensor(positions)


def negative_bias(logits: Tensor, yes_id: int, no_id: int) -> Tensor:
    """Per prompt, logit(" No") - logit(" Yes") at the last position: ``(batch,)``.

    On a balanced set, a mean above zero is a lean toward "No" whatever the truth."""
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(f"logits must be (batch, pos, d_vocab), got {getattr(logits, 'shape', logits)}")
    return logits[:, -1, no_id] - logits[:, -1, yes_id]


@dataclass
class MultipleChoiceDataset:
    """Four-option questions; ``correct`` (``LongTensor[batch]``) indexes A-D and is
    balanced over the letters. ``letter_pos`` is ``(batch, 4)``: where the letters of
    the asked question's options stand; ``letter_ids`` are the answer tokens " A".." D"."""

    prompts: list[str]
    tokens: Tensor
    correct: Tensor
    letter_pos: Tensor
    letter_ids: Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def _options_block(options: Sequence[str]) -> str:
    return "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, options))


def multiple_choice_dataset(
    model: Any, facts: CapitalFacts, *, n_questions: int | None = None, seed: int = 0
) -> MultipleChoiceDataset:
    """"What is the capital of <country>?" with the right capital and three others.

    The first fact is the one-shot example (answered with its letter); the next
    ``n_questions`` facts (default: all others) are asked once each, the correct letter
    cycling A, B, C, D. Distractors are drawn from all the facts' capitals.
    """
    if len(facts) < 5:
        raise ValueError(f"need at least 5 capital facts, got {len(facts)}")
    n_asked = len(facts) - 1 if n_questions is None else n_questions
    if isinstance(n_asked, bool) or not isinstance(n_asked, int) or not 1 <= n_asked <= len(facts) - 1:
        raise ValueError(f"n_questions must be an int in [1, {len(facts) - 1}], got {n_questions!r}")
    rng = random.Random(seed)
    letter_ids = torch.tensor([single_token_id(model, " " + letter) for letter in LETTERS])
    bare_letter_ids = [single_token_id(model, letter) for letter in LETTERS]
    shot_options = [facts.capitals[1], facts.capitals[0], facts.capitals[2], facts.capitals[3]]
    shot = MULTIPLE_CHOICE_QUESTION.format(country=facts.countries[0], options=_options_block(shot_options)) + " B\n\n"
    prompts, correct = [], []
    for i in range(1, n_asked + 1):
        distractors = rng.sample([c for j, c in enumerate(facts.capitals) if j != i], 3)
        slot = (i - 1) % len(LETTERS)
        options = distractors[:slot] + [facts.capitals[i]] + distractors[slot:]
        prompts.append(shot + MULTIPLE_CHOICE_QUESTION.format(country=facts.countries[i], options=_options_block(options)))
        correct.append(slot)
    tokens = model.to_tokens(prompts)
    if len({model.to_tokens(p).shape[-1] for p in prompts}) != 1:
        raise ValueError("multiple-choice prompts differ in token length; use single-token capitals")
    letter_pos = torch.stack(
        [_last_position(tokens, letter_id, repr(letter)) for letter_id, letter in zip(bare_letter_ids, LETTERS)],
        dim=1,
    )
    if not bool((letter_pos.diff(dim=1) > 0).all()):
        raise ValueError("option letters were not found in order A-D; check the tokenizer")
    return MultipleChoiceDataset(prompts, tokens, torch.tensor(correct), letter_pos, letter_ids)
