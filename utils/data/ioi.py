"""Indirect object identification (IOI) prompts, Wang et al. (2022): several templates,
ABBA/BABA orders, corrupted counterparts and named positions.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from utils.core.positions import last_positions
from utils.data.base import PromptSet, check_count
from utils.data.tokens import encode, is_single_token, single_token_id, tokens_of_equal_length

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


@dataclass(kw_only=True)
class IOIDataset(PromptSet):
    """Indirect-object-identification prompts with their ABC-corrupted twins.

    ``answer_ids`` are the indirect object (IO), ``wrong_ids`` the subject (S).
    ``positions`` holds ``"IO"``, ``"S1"``, ``"S2"`` and ``"END"`` in the clean prompts
    (BOS counted). ``corrupted_prompts`` / ``corrupted_tokens`` are the ABC versions, of
    the same token length, position by position.
    """

    corrupted_prompts: list[str]
    corrupted_tokens: Tensor
    io_names: list[str]
    subject_names: list[str]
    template: str
    names_kept: int = 0

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("corrupted_prompts", "io_names", "subject_names")
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ("corrupted_tokens",)
    RENAMED: ClassVar[dict[str, str]] = {
        "clean_tokens": "tokens",
        "correct_ids": "answer_ids",
        "incorrect_ids": "wrong_ids",
    }


_TEMPLATE_FIELDS = ("{A}", "{B}", "{S}", "{PLACE}", "{OBJECT}")


def _fill(template: str, a: str, b: str, s: str, place: str, obj: str) -> str:
    return template.format(A=a, B=b, S=s, PLACE=place, OBJECT=obj)


def _check_template(template: Any) -> str:
    if not isinstance(template, str):
        raise TypeError(f"template must be a string, got {type(template).__name__}")
    missing = [f for f in _TEMPLATE_FIELDS if template.count(f) != 1]
    if missing:
        raise ValueError(
            f"unknown IOI template {template!r}: it needs each of {', '.join(_TEMPLATE_FIELDS)} "
            f"exactly once (missing or repeated: {', '.join(missing)}); see IOI_TEMPLATES"
        )
    return template


def _choose_template(model: Any, templates: Sequence[str]) -> str:
    lengths = {t: len(encode(model, _fill(t, "X", "Y", "X", "store", "drink"))) for t in templates}
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
    Deterministic for a given ``seed``.

    Args:
        template: one of :data:`IOI_TEMPLATES` or a string with the same fields; by
            default one template is used so that every prompt has the same length.
        names: names to use (without leading space); each must be one token with its
            leading space. By default :data:`NAMES`, filtered to single tokens.

    Raises:
        ValueError: ``n_prompts`` < 1, an unknown template, a name that is several
            tokens, fewer than 5 distinct names, or no single-token place or object.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if names is None:
        pool = [n for n in NAMES if is_single_token(model, " " + n)]
    else:
        if isinstance(names, str):
            raise TypeError("names must be a list of names, not one string")
        pool = list(dict.fromkeys(names))  # a repeated name could be drawn as IO and S
        for name in pool:
            single_token_id(model, " " + name)
    if len(set(pool)) < 5:
        raise ValueError(f"need at least 5 distinct single-token names, have {len(set(pool))}")
    places = [p for p in PLACES if is_single_token(model, " " + p)]
    objects = [o for o in OBJECTS if is_single_token(model, " " + o)]
    if not places or not objects:
        raise ValueError("no single-token place or object for this tokenizer")
    template = _choose_template(model, IOI_TEMPLATES) if template is None else _check_template(template)
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
    return IOIDataset(
        prompts=prompts,
        tokens=clean_tokens,
        answer_ids=correct,
        wrong_ids=incorrect,
        positions=_ioi_positions(clean_tokens, correct, incorrect),
        corrupted_prompts=corrupted,
        corrupted_tokens=corrupted_tokens,
        io_names=io_names,
        subject_names=s_names,
        template=template,
        names_kept=len(pool),
    )


def _ioi_positions(tokens: Tensor, io_ids: Tensor, s_ids: Tensor) -> dict[str, Tensor]:
    io_pos, s1_pos, s2_pos = [], [], []
    for row, io, s in zip(tokens, io_ids, s_ids):
        io_hits = (row == io).nonzero().flatten()
        s_hits = (row == s).nonzero().flatten()
        if io_hits.numel() != 1 or s_hits.numel() != 2:
            raise ValueError("an IOI prompt must name the IO once and the subject twice; check the template")
        io_pos.append(int(io_hits[0]))
        s1_pos.append(int(s_hits[0]))
        s2_pos.append(int(s_hits[1]))
    return {
        "IO": torch.tensor(io_pos),
        "S1": torch.tensor(s1_pos),
        "S2": torch.tensor(s2_pos),
        "END": last_positions(tokens),
    }
