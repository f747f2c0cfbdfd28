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
    the same token length, position by position. ``prompt_templates`` names each
    prompt's template; ``template`` is the first (the only one by default).
    """

    corrupted_prompts: list[str]
    corrupted_tokens: Tensor
    io_names: list[str]
    subject_names: list[str]
    template: str
    prompt_templates: list[str]
    names_kept: int = 0

    PER_PROMPT: ClassVar[tuple[str, ...]] = (
        "corrupted_prompts", "io_names", "subject_names", "prompt_templates",
    )
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


def _template_length(model: Any, template: str) -> int:
    return len(encode(model, _fill(template, "X", "Y", "X", "store", "drink")))


def templates_of_one_length(model: Any, minimum: int = 3) -> list[str]:
    """The :data:`IOI_TEMPLATES` that share the most common token length for this
    tokenizer, in their order: prompts from them batch together, and since every
    template puts its names after the same number of tokens, the positions of IO, S1,
    S2 and the end agree across them too (checked by :func:`ioi_dataset`).

    Raises:
        ValueError: fewer than ``minimum`` templates share one length.
    """
    check_count("minimum", minimum)
    lengths = [_template_length(model, t) for t in IOI_TEMPLATES]
    common, count = Counter(lengths).most_common(1)[0]
    if count < minimum:
        raise ValueError(
            f"only {count} IOI templates share a token length for this tokenizer "
            f"(lengths {lengths}); {minimum} were asked for"
        )
    return [t for t, n in zip(IOI_TEMPLATES, lengths) if n == common]


def ioi_dataset(
    model: Any,
    n_prompts: int = 16,
    *,
    seed: int = 0,
    template: str | None = None,
    templates: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> IOIDataset:
    """Build IOI prompts, half ABBA and half BABA, and ABC-corrupted versions.

    The corrupted prompt keeps the template, place and object but uses three fresh
    names, so it carries no information about which name is the indirect object.
    Deterministic for a given ``seed``.

    Args:
        template: one of :data:`IOI_TEMPLATES` or a string with the same fields; by
            default one template is used so that every prompt has the same length.
        templates: several templates instead of one (e.g.
            :func:`templates_of_one_length`): prompt ``i`` uses ``templates[(i // 2) %
            len(templates)]``, so every template gets ABBA and BABA prompts. They must
            give prompts of one token length with the names at the same positions;
            ``prompt_templates`` records each prompt's template and ``template`` is the
            first one.
        names: names to use (without leading space); each must be one token with its
            leading space. By default :data:`NAMES`, filtered to single tokens.

    Raises:
        ValueError: ``n_prompts`` < 1, an unknown template, a name that is several
            tokens, fewer than 5 distinct names, no single-token place or object,
            both ``template`` and ``templates``, or templates whose prompts differ in
            length or name positions.
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
    if templates is not None:
        if template is not None:
            raise ValueError("pass either template or templates, not both")
        if isinstance(templates, str):
            raise TypeError("templates must be a list of templates, not one string")
        chosen = [_check_template(t) for t in templates]
        if not chosen:
            raise ValueError("templates is empty")
    else:
        chosen = [_choose_template(model, IOI_TEMPLATES) if template is None else _check_template(template)]
    rng = random.Random(seed)
    used = []
    prompts, corrupted, io_names, s_names = [], [], [], []
    for i in range(n_prompts):
        io, s, c1, c2, c3 = rng.sample(pool, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        first, second = (io, s) if i % 2 == 0 else (s, io)
        template = chosen[(i // 2) % len(chosen)]
        used.append(template)
        prompts.append(_fill(template, first, second, s, place, obj))
        corrupted.append(_fill(template, c1, c2, c3, place, obj))
        io_names.append(io)
        s_names.append(s)
    clean_tokens, corrupted_tokens = tokens_of_equal_length(model, prompts, corrupted)
    correct = torch.tensor([single_token_id(model, " " + n) for n in io_names])
    incorrect = torch.tensor([single_token_id(model, " " + n) for n in s_names])
    positions = _ioi_positions(clean_tokens, correct, incorrect)
    if len(chosen) > 1:
        # ABBA and BABA swap IO and S1, so compare the pair of first-name positions.
        first_two = torch.stack([positions["IO"], positions["S1"]]).sort(dim=0).values
        if (first_two != first_two[:, :1]).any() or (positions["S2"] != positions["S2"][0]).any():
            raise ValueError("these templates put the names at different positions; "
                             "use templates_of_one_length(model)")
    return IOIDataset(
        prompts=prompts,
        tokens=clean_tokens,
        answer_ids=correct,
        wrong_ids=incorrect,
        positions=positions,
        corrupted_prompts=corrupted,
        corrupted_tokens=corrupted_tokens,
        io_names=io_names,
        subject_names=s_names,
        template=chosen[0],
        names_kept=len(pool),
        prompt_templates=used,
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
