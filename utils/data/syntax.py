"""Templated sentences with known syntactic roles (subject, verb, object), and word spans.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from utils.data.base import PromptSet, check_count
from utils.data.tokens import bos_id, encode, is_single_token, pad_right, piece_ids, single_token_id

# ---------------------------------------------------------------------------
# Words and their pieces
# ---------------------------------------------------------------------------


def word_spans(model: Any, text: str) -> list[tuple[int, int]]:
    """The words of ``text`` as inclusive ``(first, last)`` token positions, BOS counted.

    A token continues the current word when it starts exactly where the previous token
    ended and both sides of that boundary are letters; anything else (a leading space,
    punctuation, a digit) starts a new item. Punctuation tokens are left out.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(encode(model, text)) - len(encoding["input_ids"])  # the BOS in front
    spans: list[list[int]] = []
    previous_end = None
    for index, (start, end) in enumerate(encoding["offset_mapping"]):
        piece = text[start:end]
        continues = (
            previous_end == start
            and start > 0
            and text[start - 1].isalpha()
            and piece[:1].isalpha()
            and bool(spans)
        )
        if continues:
            spans[-1][1] = index + offset
        elif piece.strip() and piece.strip()[0].isalpha():
            spans.append([index + offset, index + offset])
        previous_end = end
    return [(first, last) for first, last in spans]


# ---------------------------------------------------------------------------
# Syntax
# ---------------------------------------------------------------------------

SUBJECT_NOUNS = ("dog", "girl", "farmer", "teacher", "doctor", "boy", "soldier", "king", "student", "man")


OBJECT_NOUNS = ("cat", "letter", "car", "horse", "book", "door", "boat", "ball", "bird", "bag")


PLACE_NOUNS = ("house", "river", "church", "market", "bridge", "station", "school", "garden")


ADJECTIVES = ("old", "young", "small", "big", "tall", "quiet", "happy", "red", "little", "brave")


VERBS = ("chased", "found", "watched", "saw", "followed", "visited", "helped", "carried", "pushed", "liked")


PREPOSITIONS = ("near", "behind", "from", "beside")


@dataclass(kw_only=True)
class SyntaxDataset(PromptSet):
    """Templated sentences "The (ADJ) NOUN (PREP the PLACE) VERB the (ADJ) NOUN." with
    known positions (BOS counted) of ``"subject"``, ``"verb"`` and ``"object"`` in
    ``positions``, and of the nearest noun before the verb in ``"nearest_noun"`` (the
    place noun when there is a prepositional phrase, else the subject). Right-padded;
    ``lengths`` are the real lengths. The task is reading, not predicting, so
    ``answer_ids`` is the final full stop, predicted at ``positions["END"]``, the
    object."""

    RENAMED: ClassVar[dict[str, str]] = {"sentences": "prompts", "roles": "positions"}


def syntactic_sentences(model: Any, n_prompts: int = 24, *, seed: int = 0) -> SyntaxDataset:
    """Random sentences whose subject-verb distance varies (adjectives and a
    prepositional phrase come and go), so that no fixed offset finds the subject.

    Words that are not single tokens (with a leading space) are left out of the pools.
    Deterministic for a given ``seed``.

    Raises:
        ValueError: bad ``n_prompts``, a word pool with no single-token word, or "The"
            or "." not one token.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    def singles(words: Sequence[str]) -> list[str]:
        kept = [w for w in words if is_single_token(model, " " + w)]
        if not kept:
            raise ValueError(f"no single-token words among {words} for this tokenizer")
        return kept

    subjects, objects, places = singles(SUBJECT_NOUNS), singles(OBJECT_NOUNS), singles(PLACE_NOUNS)
    adjectives, verbs, prepositions = singles(ADJECTIVES), singles(VERBS), singles(PREPOSITIONS)
    full_stop = piece_ids(model, ".")
    if len(full_stop) != 1:
        raise ValueError("'.' is not a single token for this tokenizer")
    rng = random.Random(seed)
    sentences, sequences = [], []
    roles: dict[str, list[int]] = {"subject": [], "verb": [], "object": [], "nearest_noun": []}
    for index in range(n_prompts):
        words = ["The"]
        if rng.random() < 0.5:
            words.append(rng.choice(adjectives))
        words.append(rng.choice(subjects))
        subject = len(words) - 1
        nearest = subject
        if index % 2 == 0:  # half the sentences put a distracting noun before the verb
            words += [rng.choice(prepositions), "the"]
            if rng.random() < 0.5:
                words.append(rng.choice(adjectives))
            words.append(rng.choice(places))
            nearest = len(words) - 1
        words.append(rng.choice(verbs))
        verb = len(words) - 1
        words.append("the")
        if rng.random() < 0.5:
            words.append(rng.choice(adjectives))
        words.append(rng.choice(objects))
        obj = len(words) - 1
        # one token per word: BOS, then "The", then " word" pieces, then "."
        ids = encode(model, words[0])
        if len(ids) != 2:
            raise ValueError("'The' is not a single token for this tokenizer")
        ids += [single_token_id(model, " " + w) for w in words[1:]]
        ids += full_stop
        sequences.append(ids)
        sentences.append(" ".join(words) + ".")
        for name, word_index in (
            ("subject", subject),
            ("verb", verb),
            ("object", obj),
            ("nearest_noun", nearest),
        ):
            roles[name].append(word_index + 1)  # + 1 for BOS
    tokens, lengths = pad_right(sequences, bos_id(model))
    positions = {name: torch.tensor(values) for name, values in roles.items()}
    positions["END"] = lengths - 2  # the object, before the full stop
    return SyntaxDataset(
        prompts=sentences,
        tokens=tokens,
        lengths=lengths,
        answer_ids=torch.full((n_prompts,), full_stop[0], dtype=torch.long),
        positions=positions,
    )
