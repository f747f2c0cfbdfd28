"""Prompt sets with known answers, built for whichever tokenizer the loaded model has.

Everything that must be a single token (names, answers) is checked against the loaded
tokenizer: the built-in lists are filtered silently (the result says how many were
kept), while items a caller passes in explicitly raise a ``ValueError`` if they do not
fit.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

# Common first names; each is kept only if it is one token (with its leading space).
NAMES = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "David", "Anna", "Mike",
    "Paul", "Lisa", "Mark", "Emma", "Kate", "Peter", "Laura", "Daniel", "Rachel", "Chris",
    "Jessica", "Steve", "Susan", "George", "Karen", "Robert", "Linda", "Michael", "Amy",
    "Jack", "Adam", "Ben", "Helen", "Jane", "Sam", "Max", "Lucy", "Ryan", "Kevin", "Anne",
    "Eric", "Emily", "Richard", "Paula", "Frank", "Grace", "Henry", "Julia", "Martin", "Rose",
)
PLACES = ("store", "park", "school", "office", "garden", "station", "restaurant", "hospital",
          "beach", "library", "market", "church")
OBJECTS = ("drink", "book", "ring", "gift", "letter", "ball", "key", "bag", "card", "pen",
           "bottle", "flower")

# {A} and {B} are the first mentions; {S} repeats the subject. ABBA puts the indirect
# object first ({A}=IO, {B}=S), BABA the subject first.
IOI_TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {A} and {B} arrived at the {PLACE}, {S} handed a {OBJECT} to",
    "While {A} and {B} were at the {PLACE}, {S} gave a {OBJECT} to",
    "After {A} and {B} left the {PLACE}, {S} passed a {OBJECT} to",
    "Then {A} and {B} went to the {PLACE}, and {S} gave a {OBJECT} to",
)


def single_token_id(model: Any, text: str) -> int:
    """Id of ``text`` if the loaded tokenizer makes it exactly one token.

    Raises:
        ValueError: ``text`` is several tokens (the message lists them) or none.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}); it must be one token"
        )
    return int(ids[0])


def is_single_token(model: Any, text: str) -> bool:
    """Whether ``text`` is exactly one token for the loaded tokenizer."""
    return len(model.tokenizer.encode(text, add_special_tokens=False)) == 1


def tokens_of_equal_length(
    model: Any, clean_prompts: Sequence[str], corrupted_prompts: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Tokenise clean and corrupted prompts that must align position by position.

    Raises:
        ValueError: the lists differ in size, or any prompt pair (or any two prompts in
            the batch) differ in token length; the message names the first offender.
    """
    if len(clean_prompts) != len(corrupted_prompts):
        raise ValueError(
            f"{len(clean_prompts)} clean prompts but {len(corrupted_prompts)} corrupted prompts"
        )
    if not clean_prompts:
        raise ValueError("no prompts given")
    lengths = []
    for clean, corrupted in zip(clean_prompts, corrupted_prompts):
        n_clean = model.to_tokens(clean).shape[-1]
        n_corrupted = model.to_tokens(corrupted).shape[-1]
        if n_clean != n_corrupted:
            raise ValueError(
                "clean and corrupted prompts must have the same token length, but "
                f"{clean!r} has {n_clean} tokens and {corrupted!r} has {n_corrupted}"
            )
        lengths.append(n_clean)
    if len(set(lengths)) != 1:
        raise ValueError(
            f"all prompts in a batch must have the same token length, got lengths {sorted(set(lengths))}"
        )
    return model.to_tokens(list(clean_prompts)), model.to_tokens(list(corrupted_prompts))


def repeated_random_tokens(
    model: Any,
    n_prompts: int,
    period: int,
    *,
    n_repeats: int = 2,
    seed: int = 0,
    prepend_bos: bool = True,
) -> Tensor:
    """Random token blocks repeated ``n_repeats`` times, the standard induction probe.

    Token ``i`` equals token ``i - period`` inside the repeated part. With
    ``prepend_bos`` the BOS token comes first, so score the patterns with
    ``head_scores(..., drop_first=1)``.

    Returns:
        ``(n_prompts, [1 +] period * n_repeats)`` token ids.
    """
    if n_prompts < 1 or period < 2 or n_repeats < 2:
        raise ValueError("need n_prompts >= 1, period >= 2 and n_repeats >= 2")
    generator = torch.Generator().manual_seed(seed)
    special = set(model.tokenizer.all_special_ids)
    low, high = min(1000, model.cfg.d_vocab // 4), model.cfg.d_vocab
    block = torch.randint(low, high, (n_prompts, period), generator=generator)
    for special_id in special:
        block[block == special_id] = low
    tokens = block.repeat(1, n_repeats)
    if prepend_bos:
        bos = model.tokenizer.bos_token_id
        if bos is None:
            raise ValueError("this tokenizer has no BOS token; pass prepend_bos=False")
        tokens = torch.cat([torch.full((n_prompts, 1), bos), tokens], dim=1)
    return tokens


@dataclass
class IOIDataset:
    """Indirect-object-identification prompts with their ABC-corrupted twins.

    ``correct_ids`` are the indirect object (IO), ``incorrect_ids`` the subject (S).
    ``positions`` maps ``"IO"``, ``"S1"``, ``"S2"`` and ``"end"`` to ``LongTensor[batch]``
    token positions in the clean prompts (BOS included).
    """

    prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: Tensor
    corrupted_tokens: Tensor
    correct_ids: Tensor
    incorrect_ids: Tensor
    io_names: list[str]
    subject_names: list[str]
    template: str
    positions: dict[str, Tensor] = field(default_factory=dict)
    names_kept: int = 0

    def __len__(self) -> int:
        return len(self.prompts)


def _fill(template: str, a: str, b: str, s: str, place: str, obj: str) -> str:
    return template.format(A=a, B=b, S=s, PLACE=place, OBJECT=obj)


def _choose_template(model: Any, templates: Sequence[str]) -> str:
    lengths = {t: model.to_tokens(_fill(t, "X", "Y", "X", "store", "drink")).shape[-1] for t in templates}
    # Prefer the template whose token length is shared by most templates: it is the most
    # ordinary phrasing for this tokenizer.
    counts = Counter(lengths.values())
    return max(templates, key=lambda t: (counts[lengths[t]], -templates.index(t)))


def ioi_dataset(
    model: Any,
    n_prompts: int = 16,
    *,
    seed: int = 0,
    template: str | None = None,
    names: Sequence[str] | None = None,
) -> IOIDataset:
    """Build IOI prompts, half ABBA and half BABA, and ABC-corrupted versions.

    The corrupted prompt keeps the template, place and object but uses three fresh
    names, so it carries no information about which name is the indirect object.

    Args:
        template: one of :data:`IOI_TEMPLATES` or a string with the same fields; by
            default one template is used so that every prompt has the same length.
        names: names to use (without leading space); each must be one token with its
            leading space. By default :data:`NAMES`, filtered to single tokens.
    """
    if n_prompts < 1:
        raise ValueError("n_prompts must be at least 1")
    if names is None:
        pool = [n for n in NAMES if is_single_token(model, " " + n)]
    else:
        pool = list(names)
        for name in pool:
            single_token_id(model, " " + name)
    if len(set(pool)) < 5:
        raise ValueError(f"need at least 5 distinct single-token names, have {len(set(pool))}")
    places = [p for p in PLACES if is_single_token(model, " " + p)]
    objects = [o for o in OBJECTS if is_single_token(model, " " + o)]
    template = template or _choose_template(model, IOI_TEMPLATES)
    rng = random.Random(seed)
    prompts, corrupted, io_names, s_names = [], [], [], []
    for i in range(n_prompts):
        io, s, c1, c2, c3 = rng.sample(pool, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        first, second = (io, s) if i % 2 == 0 else (s, io)
        prompts.append(_fill(template, first, second, s, place, obj))
        corrupted.append(_fill(template, c1, c2, c3, place, obj))
        io_names.append(io)
        s_names.append(s)
    clean_tokens, corrupted_tokens = tokens_of_equal_length(model, prompts, corrupted)
    correct = torch.tensor([single_token_id(model, " " + n) for n in io_names])
    incorrect = torch.tensor([single_token_id(model, " " + n) for n in s_names])
    positions = _ioi_positions(clean_tokens, correct, incorrect)
    return IOIDataset(
        prompts=prompts,
        corrupted_prompts=corrupted,
        clean_tokens=clean_tokens,
        corrupted_tokens=corrupted_tokens,
        correct_ids=correct,
        incorrect_ids=incorrect,
        io_names=io_names,
        subject_names=s_names,
        template=template,
        positions=positions,
        names_kept=len(pool),
    )


def _ioi_positions(tokens: Tensor, io_ids: Tensor, s_ids: Tensor) -> dict[str, Tensor]:
    io_pos, s1_pos, s2_pos = [], [], []
    for row, io, s in zip(tokens, io_ids, s_ids):
        io_pos.append(int((row == io).nonzero()[0]))
        s_hits = (row == s).nonzero().flatten()
        s1_pos.append(int(s_hits[0]))
        s2_pos.append(int(s_hits[1]))
    end = torch.full((tokens.shape[0],), tokens.shape[1] - 1)
    return {
        "IO": torch.tensor(io_pos),
        "S1": torch.tensor(s1_pos),
        "S2": torch.tensor(s2_pos),
        "end": end,
    }


@dataclass(frozen=True)
class Fact:
    """A factual-recall prompt: the model should continue ``prompt`` with ``answer``."""

    prompt: str
    subject: str
    answer: str


FACTS = (
    Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"),
    Fact("The Colosseum is located in the city of", "The Colosseum", " Rome"),
    Fact("The Statue of Liberty is located in the city of", "The Statue of Liberty", " New"),
    Fact("Big Ben is located in the city of", "Big Ben", " London"),
    Fact("The capital of France is", "France", " Paris"),
    Fact("The capital of Italy is", "Italy", " Rome"),
    Fact("The capital of Japan is", "Japan", " Tokyo"),
    Fact("The capital of Germany is", "Germany", " Berlin"),
    Fact("The capital of Spain is", "Spain", " Madrid"),
    Fact("The capital of Russia is", "Russia", " Moscow"),
    Fact("The capital of England is", "England", " London"),
    Fact("The capital of Egypt is", "Egypt", " Cairo"),
    Fact("Rome is the capital of", "Rome", " Italy"),
    Fact("Paris is the capital of", "Paris", " France"),
    Fact("Tokyo is the capital of", "Tokyo", " Japan"),
    Fact("Berlin is the capital of", "Berlin", " Germany"),
    Fact("Madrid is the capital of", "Madrid", " Spain"),
    Fact("The official language of France is", "France", " French"),
    Fact("The official language of Germany is", "Germany", " German"),
    Fact("The official language of Spain is", "Spain", " Spanish"),
    Fact("The official language of Italy is", "Italy", " Italian"),
    Fact("The official language of Japan is", "Japan", " Japanese"),
    Fact("The Great Wall is located in", "The Great Wall", " China"),
    Fact("The Taj Mahal is located in", "The Taj Mahal", " India"),
    Fact("The pyramids of Giza are located in", "The pyramids of Giza", " Egypt"),
    Fact("Mount Fuji is located in", "Mount Fuji", " Japan"),
    Fact("The Amazon rainforest is located in", "The Amazon rainforest", " South"),
    Fact("Albert Einstein was born in", "Albert Einstein", " Germany"),
    Fact("Barack Obama was born in", "Barack Obama", " Hawaii"),
    Fact("William Shakespeare was born in", "William Shakespeare", " Strat"),
    Fact("The iPhone is made by", "The iPhone", " Apple"),
    Fact("Windows is an operating system made by", "Windows", " Microsoft"),
    Fact("The PlayStation is made by", "The PlayStation", " Sony"),
    Fact("The Mustang is a car made by", "The Mustang", " Ford"),
    Fact("Lionel Messi plays the sport of", "Lionel Messi", " football"),
    Fact("Serena Williams plays the sport of", "Serena Williams", " tennis"),
    Fact("Michael Jordan played the sport of", "Michael Jordan", " basketball"),
    Fact("The Beatles were a band from", "The Beatles", " Liverpool"),
    Fact("The currency of Japan is the", "Japan", " yen"),
    Fact("The currency of the United Kingdom is the", "the United Kingdom", " pound"),
    Fact("The chemical symbol for gold is", "gold", " Au"),
    Fact("Romeo and Juliet was written by", "Romeo and Juliet", " William"),
)


@dataclass
class FactualRecallDataset:
    """Facts the loaded model completes correctly (its top-1 next token is the answer).

    ``tokens[i]`` is ``(1, pos_i)``; prompts differ in length, so they are kept apart.
    ``subject_positions[i]`` lists the token positions of the subject in ``tokens[i]``.
    """

    facts: list[Fact]
    tokens: list[Tensor]
    answer_ids: Tensor
    subject_positions: list[list[int]]
    n_candidates: int
    rejected: list[Fact]

    def __len__(self) -> int:
        return len(self.facts)


def subject_token_positions(model: Any, prompt: str, subject: str) -> list[int]:
    """Token positions (BOS counted) covered by the first occurrence of ``subject``.

    Raises:
        ValueError: ``subject`` does not occur in ``prompt``.
    """
    start = prompt.find(subject)
    if start < 0:
        raise ValueError(f"subject {subject!r} does not occur in {prompt!r}")
    end = start + len(subject)
    encoding = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offset = model.to_tokens(prompt).shape[-1] - len(encoding["input_ids"])
    return [
        i + offset
        for i, (lo, hi) in enumerate(encoding["offset_mapping"])
        if lo < end and hi > start
    ]


def factual_recall_dataset(model: Any, facts: Sequence[Fact] | None = None) -> FactualRecallDataset:
    """Keep the facts whose answer the loaded model predicts as its top next token.

    Args:
        facts: facts to validate; by default :data:`FACTS` (answers that are not one
            token for this tokenizer are dropped). Facts passed explicitly must have
            single-token answers, else ``ValueError``.
    """
    explicit = facts is not None
    candidates = list(FACTS if facts is None else facts)
    kept, rejected, tokens, answers, subjects = [], [], [], [], []
    for fact in candidates:
        if not explicit and not is_single_token(model, fact.answer):
            rejected.append(fact)
            continue
        answer_id = single_token_id(model, fact.answer)
        prompt_tokens = model.to_tokens(fact.prompt)
        with torch.no_grad():
            logits = model(prompt_tokens)
        if int(logits[0, -1].argmax()) == answer_id:
            kept.append(fact)
            tokens.append(prompt_tokens)
            answers.append(answer_id)
            subjects.append(subject_token_positions(model, fact.prompt, fact.subject))
        else:
            rejected.append(fact)
    return FactualRecallDataset(
        facts=kept,
        tokens=tokens,
        answer_ids=torch.tensor(answers, dtype=torch.long),
        subject_positions=subjects,
        n_candidates=len(candidates),
        rejected=rejected,
    )


POSITIVE_ADJECTIVES = ("good", "great", "amazing", "excellent", "wonderful", "fantastic",
                       "perfect", "brilliant", "beautiful", "lovely")
NEGATIVE_ADJECTIVES = ("bad", "terrible", "awful", "horrible", "boring", "dreadful",
                       "poor", "stupid", "ugly", "weak")
POSITIVE_VERBS = ("loved", "enjoyed", "liked", "adored")
NEGATIVE_VERBS = ("hated", "disliked", "despised", "loathed")
# After "This movie is", these words carry the verdict.
POSITIVE_ANSWERS = (" great", " amazing", " good", " excellent", " awesome")
NEGATIVE_ANSWERS = (" terrible", " bad", " awful", " boring", " horrible")
MOVIE_REVIEW_TEMPLATE = "I thought this movie was {ADJ}, I {VERB} it. Conclusion: This movie is"


@dataclass
class SentimentDataset:
    """ToyMovieReview prompts (Tigges et al., 2023): a review whose adjective and verb
    carry its sentiment, ending where the model states a verdict.

    ``labels`` is 1 for positive and 0 for negative reviews; ``adjective_pos`` and
    ``verb_pos`` are the positions (BOS counted) of the sentiment words.
    ``positive_ids`` / ``negative_ids`` are single-token verdict words.
    """

    prompts: list[str]
    tokens: Tensor
    labels: Tensor
    adjective_pos: int
    verb_pos: int
    positive_ids: Tensor
    negative_ids: Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def sentiment_score(logits: Tensor, positive_ids: Tensor, negative_ids: Tensor) -> Tensor:
    """Per prompt, mean logit of the positive verdict words minus mean of the negative
    ones at the last position: ``(batch,)``. Positive means the model leans positive."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be (batch, pos, d_vocab), got {tuple(logits.shape)}")
    last = logits[:, -1]
    return last[:, positive_ids.to(last.device)].mean(-1) - last[:, negative_ids.to(last.device)].mean(-1)


def toy_movie_reviews(model: Any, n_prompts: int = 16, *, seed: int = 0) -> SentimentDataset:
    """Balanced positive / negative ToyMovieReview prompts of one token length.

    Words that are not a single token (with their leading space) for the loaded
    tokenizer are left out, so every prompt has the same length.
    """
    if n_prompts < 2 or n_prompts % 2:
        raise ValueError("n_prompts must be an even number >= 2 (half positive, half negative)")

    def singles(words: Sequence[str]) -> list[str]:
        return [w for w in words if is_single_token(model, " " + w)]

    pools = {
        1: (singles(POSITIVE_ADJECTIVES), singles(POSITIVE_VERBS)),
        0: (singles(NEGATIVE_ADJECTIVES), singles(NEGATIVE_VERBS)),
    }
    for label, (adjectives, verbs) in pools.items():
        if not adjectives or not verbs:
            raise ValueError(f"no single-token {'positive' if label else 'negative'} words for this tokenizer")
    rng = random.Random(seed)
    prompts, labels = [], []
    for i in range(n_prompts):
        label = 1 - i % 2
        adjectives, verbs = pools[label]
        prompts.append(MOVIE_REVIEW_TEMPLATE.format(ADJ=rng.choice(adjectives), VERB=rng.choice(verbs)))
        labels.append(label)
    tokens, _ = tokens_of_equal_length(model, prompts, prompts)
    # The word's leading space belongs to its token, so the prefix is measured without it.
    prefix = MOVIE_REVIEW_TEMPLATE.split("{ADJ}")[0].rstrip()
    adjective_pos = model.to_tokens(prefix).shape[-1]
    verb_prefix = MOVIE_REVIEW_TEMPLATE.split("{VERB}")[0].format(ADJ=pools[1][0][0]).rstrip()
    verb_pos = model.to_tokens(verb_prefix).shape[-1]
    positive = [single_token_id(model, w) for w in POSITIVE_ANSWERS if is_single_token(model, w)]
    negative = [single_token_id(model, w) for w in NEGATIVE_ANSWERS if is_single_token(model, w)]
    return SentimentDataset(
        prompts=prompts,
        tokens=tokens,
        labels=torch.tensor(labels),
        adjective_pos=adjective_pos,
        verb_pos=verb_pos,
        positive_ids=torch.tensor(positive),
        negative_ids=torch.tensor(negative),
    )
