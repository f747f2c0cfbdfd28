"""Country capitals as a prompt family: plain recall, knowledge conflicts, yes/no
questions and multiple-choice questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from utils.core.positions import same_position
from utils.data.base import PromptSet, answers_by_label
from utils.data.facts import Fact
from utils.data.tokens import encode, equal_length_tokens, is_single_token, single_token_id
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


# More capitals, for the chapters that need more facts than COUNTRY_CAPITALS gives (a
# held-out split of a knowledge conflict): further countries, and states and provinces
# whose capital is one word ("The capital of Texas is" -> " Austin"). Capitals that are
# the country's own name (Mexico, Panama) are left out: the answer would be a copy.
MORE_CAPITALS: tuple[tuple[str, str], ...] = (
    ("Brazil", "Brasilia"), ("Argentina", "Buenos"), ("India", "Delhi"), ("Pakistan", "Islamabad"),
    ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"), ("Bangladesh", "Dhaka"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("Taiwan", "Taipei"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"),
    ("Ecuador", "Quito"), ("Uruguay", "Montevideo"), ("Nigeria", "Abuja"), ("Ghana", "Accra"),
    ("Morocco", "Rabat"), ("Algeria", "Algiers"), ("Tunisia", "Tunis"), ("Libya", "Tripoli"),
    ("Sudan", "Khartoum"), ("Senegal", "Dakar"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"),
    ("Angola", "Luanda"), ("Somalia", "Mogadishu"), ("Jordan", "Amman"), ("Qatar", "Doha"),
    ("Oman", "Muscat"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Estonia", "Tallinn"), ("Belarus", "Minsk"), ("Iceland", "Reykjavik"),
    ("Albania", "Tirana"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"), ("Uzbekistan", "Tashkent"),
    ("Cyprus", "Nicosia"), ("Malta", "Valletta"), ("Jamaica", "Kingston"), ("Haiti", "Port"),
    ("Nicaragua", "Managua"), ("Cambodia", "Phnom"), ("Laos", "Vientiane"), ("Czechia", "Prague"),
    ("Zambia", "Lusaka"), ("Rwanda", "Kigali"), ("Mali", "Bamako"), ("Namibia", "Windhoek"),
    ("Fiji", "Suva"), ("Tibet", "Lhasa"), ("Bavaria", "Munich"), ("Catalonia", "Barcelona"),
    ("Texas", "Austin"), ("California", "Sacramento"), ("Ohio", "Columbus"), ("Massachusetts", "Boston"),
    ("Colorado", "Denver"), ("Arizona", "Phoenix"), ("Tennessee", "Nashville"), ("Ontario", "Toronto"),
    ("Hawaii", "Honolulu"), ("Utah", "Salt"), ("Virginia", "Richmond"), ("Indiana", "Indianapolis"),
    ("Queensland", "Brisbane"), ("Victoria", "Melbourne"), ("Alberta", "Edmonton"), ("Manitoba", "Winnipeg"),
    ("Wisconsin", "Madison"), ("Iowa", "Des"), ("Georgia", "Atlanta"), ("Minnesota", "Saint"),
)


# "... is the city of" rather than "... is": a base model (Gemma 3 270M) continues
# "The capital of France is" with " the" for most countries, and names the capital after
# "the city of" (80 of 105 single-token pairs against 13); SmolLM2 knows about as many
# either way. The conflict prompts end with the same words.
CAPITAL_TEMPLATE = "The capital of {country} is the city of"


CONFLICT_TEMPLATE = "The capital of {country} is {counterfactual}. The capital of {country} is the city of"


YES_NO_QUESTION = "Q: Is {city} the capital of {country}? Answer Yes or No.\nA:"
YES_NO_QUESTION_NO_FIRST = "Q: Is {city} the capital of {country}? Answer No or Yes.\nA:"


MULTIPLE_CHOICE_QUESTION = "Question: What is the capital of {country}?\n{options}Answer:"


LETTERS = ("A", "B", "C", "D")


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a sequence of (country, capital) string pairs, got {type(pairs).__name__}")
    checked = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"pairs must be (country, capital) string pairs, got {pair!r}")
        checked.append((pair[0], pair[1]))
    if len({country for country, _ in checked}) != len(checked):
        raise ValueError("each country may appear only once")
    return checked


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return seed


@dataclass(kw_only=True)
class CapitalFacts(PromptSet):
    """Country -> capital facts of one template ("The capital of France is" -> " Paris").

    ``answer_ids`` are the capitals; ``positions["subject"]`` is the country's token and
    ``positions["END"]`` the last one. All prompts share one token length.
    """

    countries: list[str]
    capitals: list[str]
    n_candidates: int

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("countries", "capitals")
    RENAMED: ClassVar[dict[str, str]] = {"subject_pos": 'positions["subject"]'}

    def as_facts(self) -> list[Fact]:
        """The prompts as :class:`utils.data.facts.Fact` (subject: the country), to join
        them with other facts in :func:`utils.data.facts.factual_recall_dataset`."""
        return [Fact(prompt, country, " " + capital)
                for prompt, country, capital in zip(self.prompts, self.countries, self.capitals)]


def capital_facts(
    model: Any,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    validate: bool = True,
    extended: bool = False,
    max_facts: int | None = None,
) -> CapitalFacts:
    """Capital facts whose country and capital are single tokens (with a leading space),
    kept only if the model's top next token is the capital (``validate``).

    Built-in pairs (:data:`COUNTRY_CAPITALS`) that are not single tokens are dropped;
    pairs passed explicitly must be single tokens, else ``ValueError``. ``extended``
    adds :data:`MORE_CAPITALS` to the built-in pairs (not to pairs passed explicitly).
    ``max_facts`` keeps only the first ``max_facts`` facts (in the candidates' order):
    validation runs in batches of 32 candidates and stops once that many are known, so
    a model that knows many capitals costs no more than one that knows just enough.

    Raises:
        ValueError: a passed pair is not single tokens, a country repeats, ``max_facts``
            is not a positive int, or no fact is left.
    """
    explicit = pairs is not None
    if not isinstance(extended, bool):
        raise TypeError(f"extended must be a bool, got {extended!r}")
    if max_facts is not None and (isinstance(max_facts, bool) or not isinstance(max_facts, int) or max_facts < 1):
        raise ValueError(f"max_facts must be a positive int or None, got {max_facts!r}")
    if explicit and extended:
        raise ValueError("extended adds to the built-in pairs: pass pairs or extended=True, not both")
    builtin = COUNTRY_CAPITALS + MORE_CAPITALS if extended else COUNTRY_CAPITALS
    candidates = _check_pairs(builtin if pairs is None else pairs)
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
    tokens = equal_length_tokens(model, prompts, "capital", "use single-token countries")
    answers = torch.tensor([single_token_id(model, " " + capital) for _, capital in usable])
    prefix = CAPITAL_TEMPLATE.split("{country}")[0].rstrip()
    facts = CapitalFacts(
        prompts=prompts,
        tokens=tokens,
        answer_ids=answers,
        positions={
            "subject": same_position(len(usable), len(encode(model, prefix))),
            "END": same_position(len(usable), tokens.shape[1] - 1),
        },
        countries=[country for country, _ in usable],
        capitals=[capital for _, capital in usable],
        n_candidates=len(candidates),
    )
    if not validate:
        return facts if max_facts is None else facts.subset(list(range(min(max_facts, len(facts)))))
    # In batches, until max_facts are known; only the last position is unembedded (a
    # large vocabulary makes full logits big).
    keep = torch.zeros(len(usable), dtype=torch.bool)
    for start in range(0, len(usable), _VALIDATION_BATCH):
        rows = slice(start, start + _VALIDATION_BATCH)
        predicted = forward_logits(model, tokens[rows], last_position_only=True)[:, -1].argmax(-1).cpu()
        keep[rows] = predicted == answers[rows]
        if max_facts is not None and int(keep.sum()) >= max_facts:
            break
    if not bool(keep.any()):
        raise ValueError(f"the model names none of the {len(usable)} capitals as its top next token")
    kept = keep.nonzero().flatten().tolist()
    return facts.subset(kept if max_facts is None else kept[:max_facts])


_VALIDATION_BATCH = 32


def _derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point: item ``i`` is paired with ``order[i] != i``."""
    if n < 2:
        raise ValueError("need at least two facts to pair each with a different one")
    shift = random.Random(seed).randrange(1, n)
    return [(i + shift) % n for i in range(n)]


@dataclass(kw_only=True)
class ConflictDataset(PromptSet):
    """Knowledge-conflict prompts: the context states a wrong capital, then asks again.

    ``answer_ids`` are the true capitals (what the model memorised), ``wrong_ids`` the
    counterfactual capitals stated in the prompt. ``positions["counterfactual"]`` is the
    stated capital's token, ``positions["subject_1"]`` and ``["subject_2"]`` the two
    mentions of the country.
    """

    RENAMED: ClassVar[dict[str, str]] = {
        "memory_ids": "answer_ids",
        "context_ids": "wrong_ids",
        "context_pos": 'positions["counterfactual"]',
        "subject_pos": 'positions["subject_1"] and positions["subject_2"]',
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.wrong_ids is None or bool((self.wrong_ids == self.answer_ids).any()):
            raise ValueError("ConflictDataset.wrong_ids must differ from answer_ids in every prompt")


def knowledge_conflict_dataset(
    model: Any, facts: CapitalFacts, *, seed: int = 0, n_counterfactuals: int = 1
) -> ConflictDataset:
    """Pair every fact with another fact's capital as the counterfactual statement.

    With ``n_counterfactuals`` = k, every fact is stated wrongly k times, each time with
    a different other capital: prompt ``i`` is about fact ``i % len(facts)`` (the first
    ``len(facts)`` prompts are those of k = 1), so a split by ``i % len(facts)`` keeps
    each country on one side.

    Raises:
        ValueError: fewer than two facts, ``n_counterfactuals`` not in
            ``[1, len(facts) - 1]``, or prompts of different token lengths.
    """
    if not isinstance(facts, CapitalFacts):
        raise TypeError(f"facts must be CapitalFacts, got {type(facts).__name__}")
    if len(facts) < 2:
        raise ValueError("need at least two capital facts")
    n = len(facts)
    if isinstance(n_counterfactuals, bool) or not isinstance(n_counterfactuals, int) or not 1 <= n_counterfactuals < n:
        raise ValueError(f"n_counterfactuals must be an int in [1, {n - 1}], got {n_counterfactuals!r}")
    rng = random.Random(_check_seed(seed))
    first_shift = rng.randrange(1, n)  # the same draw as _derangement(n, seed)
    other_shifts = [shift for shift in range(1, n) if shift != first_shift]
    rng.shuffle(other_shifts)
    shifts = [first_shift] + other_shifts[: n_counterfactuals - 1]
    partner = [(i + shift) % n for shift in shifts for i in range(n)]
    countries = list(facts.countries) * n_counterfactuals
    prompts = [
        CONFLICT_TEMPLATE.format(country=country, counterfactual=facts.capitals[j])
        for country, j in zip(countries, partner)
    ]
    tokens = equal_length_tokens(model, prompts, "conflict", "use single-token countries")
    before_counterfactual = CONFLICT_TEMPLATE.split("{counterfactual}")[0].format(country=facts.countries[0]).rstrip()
    second_prefix = CONFLICT_TEMPLATE.rsplit("{country}", 1)[0].format(
        country=facts.countries[0], counterfactual=facts.capitals[partner[0]]
    ).rstrip()
    batch = len(prompts)
    return ConflictDataset(
        prompts=prompts,
        tokens=tokens,
        answer_ids=facts.answer_ids.repeat(n_counterfactuals),
        wrong_ids=facts.answer_ids[partner].clone(),
        positions={
            "counterfactual": same_position(batch, len(encode(model, before_counterfactual))),
            "subject_1": facts.positions["subject"].repeat(n_counterfactuals),
            "subject_2": same_position(batch, len(encode(model, second_prefix))),
            "END": same_position(batch, tokens.shape[1] - 1),
        },
    )


@dataclass(kw_only=True)
class YesNoDataset(PromptSet):
    """Balanced yes/no questions with a two-shot prefix (one "Yes", one "No" example, in
    alternating order). ``labels`` is 1 where the true answer is "Yes"; ``answer_ids`` is
    then ``yes_id`` and ``wrong_ids`` ``no_id`` (the other way round for "No").
    ``positions["yes"]`` and ``positions["no"]`` locate the options " Yes" and " No"
    that the last question's instruction names."""

    labels: Tensor
    yes_id: int
    no_id: int

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("labels",)
    RENAMED: ClassVar[dict[str, str]] = {"yes_pos": 'positions["yes"]', "no_pos": 'positions["no"]'}


def yes_no_dataset(
    model: Any, facts: CapitalFacts, *, n_questions: int | None = None, seed: int = 0, no_first: bool = False
) -> YesNoDataset:
    """True and false "Is <city> the capital of <country>?" questions, half of each.

    The first two facts serve as the shot examples (one true, one false) and are not
    asked. Each remaining country is asked twice: with its capital (answer Yes) and
    with another country's capital (answer No).

    Args:
        n_questions: keep this many countries (2 questions each); default all.
        no_first: name the options "No or Yes" (in the shots and the question) instead
            of "Yes or No", so that " Yes" is the later option; with the default order
            and this one a chapter can counterbalance which option comes last.

    Raises:
        ValueError: fewer than 4 facts, ``n_questions`` out of range, or prompts of
            different token lengths.
    """
    if not isinstance(facts, CapitalFacts):
        raise TypeError(f"facts must be CapitalFacts, got {type(facts).__name__}")
    if not isinstance(no_first, bool):
        raise TypeError(f"no_first must be a bool, got {no_first!r}")
    question = YES_NO_QUESTION_NO_FIRST if no_first else YES_NO_QUESTION
    if len(facts) < 4:
        raise ValueError(f"need at least 4 capital facts (2 for the shots), got {len(facts)}")
    yes_id, no_id = single_token_id(model, " Yes"), single_token_id(model, " No")
    shot_true = question.format(city=facts.capitals[0], country=facts.countries[0]) + " Yes\n"
    shot_false = question.format(city=facts.capitals[0], country=facts.countries[1]) + " No\n"
    countries, capitals = facts.countries[2:], facts.capitals[2:]
    if n_questions is not None:
        if isinstance(n_questions, bool) or not isinstance(n_questions, int) or not 1 <= n_questions <= len(countries):
            raise ValueError(f"n_questions must be an int in [1, {len(countries)}], got {n_questions!r}")
        countries, capitals = countries[:n_questions], capitals[:n_questions]
    if len(countries) < 2:
        raise ValueError("need at least two countries to ask about")
    wrong = _derangement(len(countries), _check_seed(seed))
    prompts, labels = [], []
    for i, country in enumerate(countries):
        shots = shot_true + shot_false if i % 2 == 0 else shot_false + shot_true
        for label, city in ((1, capitals[i]), (0, capitals[wrong[i]])):
            prompts.append(shots + question.format(city=city, country=country))
            labels.append(label)
    tokens = equal_length_tokens(model, prompts, "yes/no", "use single-token countries and capitals")
    label_tensor = torch.tensor(labels)
    answer_ids, wrong_ids = answers_by_label(label_tensor, yes_id, no_id)
    return YesNoDataset(
        prompts=prompts,
        tokens=tokens,
        answer_ids=answer_ids,
        wrong_ids=wrong_ids,
        positions={
            "yes": _last_position(tokens, yes_id, "' Yes'"),
            "no": _last_position(tokens, no_id, "' No'"),
            "END": same_position(len(prompts), tokens.shape[1] - 1),
        },
        labels=label_tensor,
        yes_id=yes_id,
        no_id=no_id,
    )


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


@dataclass(kw_only=True)
class MultipleChoiceDataset(PromptSet):
    """Four-option questions; ``correct`` (``LongTensor[batch]``) indexes A-D and is
    balanced over the letters, and ``answer_ids`` is the correct letter's token
    (``letter_ids[correct]``). ``positions["letters"]`` is ``(batch, 4)``: where the
    letters of the asked question's options stand; ``letter_ids`` are the answer tokens
    " A".." D"."""

    correct: Tensor
    letter_ids: Tensor

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("correct",)
    RENAMED: ClassVar[dict[str, str]] = {"letter_pos": 'positions["letters"]'}


def _options_block(options: Sequence[str]) -> str:
    return "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, options))


def multiple_choice_dataset(
    model: Any, facts: CapitalFacts, *, n_questions: int | None = None, seed: int = 0
) -> MultipleChoiceDataset:
    """"What is the capital of <country>?" with the right capital and three others.

    The first fact is the one-shot example (answered with its letter); the next
    ``n_questions`` facts (default: all others) are asked once each, the correct letter
    cycling A, B, C, D. Distractors are drawn from all the facts' capitals.

    Raises:
        ValueError: fewer than 5 facts, ``n_questions`` out of range, or prompts of
            different token lengths.
    """
    if not isinstance(facts, CapitalFacts):
        raise TypeError(f"facts must be CapitalFacts, got {type(facts).__name__}")
    if len(facts) < 5:
        raise ValueError(f"need at least 5 capital facts, got {len(facts)}")
    n_asked = len(facts) - 1 if n_questions is None else n_questions
    if isinstance(n_asked, bool) or not isinstance(n_asked, int) or not 1 <= n_asked <= len(facts) - 1:
        raise ValueError(f"n_questions must be an int in [1, {len(facts) - 1}], got {n_questions!r}")
    rng = random.Random(_check_seed(seed))
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
    tokens = equal_length_tokens(model, prompts, "multiple-choice", "use single-token capitals")
    letter_pos = torch.stack(
        [_last_position(tokens, letter_id, repr(letter)) for letter_id, letter in zip(bare_letter_ids, LETTERS)],
        dim=1,
    )
    if not bool((letter_pos.diff(dim=1) > 0).all()):
        raise ValueError("option letters were not found in order A-D; check the tokenizer")
    correct_tensor = torch.tensor(correct)
    return MultipleChoiceDataset(
        prompts=prompts,
        tokens=tokens,
        answer_ids=letter_ids[correct_tensor],
        positions={"letters": letter_pos, "END": same_position(len(prompts), tokens.shape[1] - 1)},
        correct=correct_tensor,
        letter_ids=letter_ids,
    )
