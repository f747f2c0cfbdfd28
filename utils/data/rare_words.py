"""Prompts with a rare and a common word, and the token-rarity proxy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from utils.data.base import PromptSet, check_count
from utils.data.tokens import bos_id, encode, is_single_token, pad_right, piece_ids, single_token_id

# ---------------------------------------------------------------------------
# Rare words
# ---------------------------------------------------------------------------

RARE_CANDIDATES = (
    "labyrinth",
    "volcano",
    "cactus",
    "lantern",
    "parrot",
    "tortoise",
    "anchor",
    "turquoise",
    "compass",
    "telescope",
    "saxophone",
    "walrus",
    "pelican",
    "harpoon",
    "chandelier",
    "platypus",
    "iguana",
    "raccoon",
    "flamingo",
    "armadillo",
    "kayak",
    "accordion",
    "hammock",
    "gondola",
    "sombrero",
    "trombone",
    "porcupine",
    "mongoose",
)


COMMON_CANDIDATES = (
    "house",
    "car",
    "book",
    "dog",
    "table",
    "door",
    "tree",
    "friend",
    "city",
    "school",
    "phone",
    "window",
    "chair",
    "letter",
    "bottle",
    "garden",
    "ball",
    "shop",
    "road",
    "picture",
    "box",
    "bag",
    "cup",
    "bike",
    "hat",
    "map",
    "key",
    "game",
)


RARE_WORD_TEMPLATES = (
    "Yesterday my neighbour showed me a{WORD} and we talked about it for the rest of the afternoon.",
    "In the story the children found a{WORD} near the river and took it back to their small village.",
    "She said that the{WORD} in the old photograph reminded her of a summer she spent with her family.",
    "When we arrived at the hotel there was a{WORD} in the hall and everybody wanted to look at it.",
)


@dataclass(frozen=True)
class RarityProxy:
    """How rare a token is, by the stated proxy.

    ``rank`` is the token id divided by the vocabulary size. BPE tokenizers number
    their tokens in the order the merges were learned, and the most frequent strings are
    merged first, so a high id marks a string that was rare in the tokenizer's training
    text. It is a proxy: reproducible from the tokenizer alone, but coarse.
    """

    token_id: int
    rank: float


def token_rarity(model: Any, word: str) -> RarityProxy:
    """Rarity proxy of a single-token word (with its leading space).

    Raises:
        ValueError: the word is not one token.
    """
    token_id = single_token_id(model, " " + word)
    return RarityProxy(token_id=token_id, rank=token_id / model.cfg.d_vocab)


@dataclass(kw_only=True)
class RareWordPrompts(PromptSet):
    """Matched prompts that differ only in one word, at ``positions["word"]`` (BOS
    counted).

    ``tokens[i]`` holds a rare word and ``common_tokens[i]`` a common one in the same
    template; ``control_tokens[i]`` holds another common word, to measure how much any
    change of word moves attention. ``prompts`` are the rare-word texts. Prompts are
    right-padded; ``lengths`` are their real lengths. The task is reading, not
    predicting, so ``answer_ids`` is each prompt's own final token (the full stop),
    predicted at ``positions["END"]``, the token before it.
    """

    common_tokens: Tensor
    control_tokens: Tensor
    rare_words: list[str]
    common_words: list[str]
    control_words: list[str]
    rare_ranks: Tensor
    common_ranks: Tensor

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("rare_words", "common_words", "control_words", "rare_ranks", "common_ranks")
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ("common_tokens", "control_tokens")
    RENAMED: ClassVar[dict[str, str]] = {"rare_tokens": "tokens", "slot_pos": 'positions["word"]'}


def rare_word_prompts(
    model: Any,
    n_prompts: int = 16,
    *,
    rare_above: float = 0.4,
    common_below: float = 0.15,
    seed: int = 0,
) -> RareWordPrompts:
    """Triples of prompts with a rare, a common and another common word in one slot.

    Candidate words are kept if they are one token (with a leading space); rare words
    need a rarity rank (:func:`token_rarity`) above ``rare_above``, common ones below
    ``common_below``. Deterministic for a given ``seed``.

    Raises:
        ValueError: bad ``n_prompts`` or thresholds, or too few words pass the filters.
    """
    check_count("n_prompts", n_prompts)
    if not 0 <= common_below < rare_above <= 1:
        raise ValueError("need 0 <= common_below < rare_above <= 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    rare = [w for w in RARE_CANDIDATES if is_single_token(model, " " + w)]
    rare = [w for w in rare if token_rarity(model, w).rank > rare_above]
    common = [w for w in COMMON_CANDIDATES if is_single_token(model, " " + w)]
    common = [w for w in common if token_rarity(model, w).rank < common_below]
    if len(rare) < 2 or len(common) < 3:
        raise ValueError(
            f"too few words pass the rarity filters for this tokenizer: {len(rare)} rare, "
            f"{len(common)} common"
        )
    rng = random.Random(seed)
    sequences: dict[str, list[list[int]]] = {"rare": [], "common": [], "control": []}
    words: dict[str, list[str]] = {"rare": [], "common": [], "control": []}
    prompts, slots = [], []
    for index in range(n_prompts):
        template = RARE_WORD_TEMPLATES[index % len(RARE_WORD_TEMPLATES)]
        before, after = template.split("{WORD}")
        prefix = encode(model, before)
        suffix = piece_ids(model, after)
        chosen = {"rare": rng.choice(rare)}
        chosen["common"], chosen["control"] = rng.sample(common, 2)
        for kind, word in chosen.items():
            sequences[kind].append(prefix + [single_token_id(model, " " + word)] + suffix)
            words[kind].append(word)
        prompts.append(before + " " + chosen["rare"] + after)
        slots.append(len(prefix))
    pad = bos_id(model)
    rare_tokens, lengths = pad_right(sequences["rare"], pad)
    common_tokens, _ = pad_right(sequences["common"], pad)
    control_tokens, _ = pad_right(sequences["control"], pad)
    end = lengths - 2
    return RareWordPrompts(
        prompts=prompts,
        tokens=rare_tokens,
        lengths=lengths,
        answer_ids=rare_tokens[torch.arange(n_prompts), end + 1],
        positions={"word": torch.tensor(slots), "END": end},
        common_tokens=common_tokens,
        control_tokens=control_tokens,
        rare_words=words["rare"],
        common_words=words["common"],
        control_words=words["control"],
        rare_ranks=torch.tensor([token_rarity(model, w).rank for w in words["rare"]]),
        common_ranks=torch.tensor([token_rarity(model, w).rank for w in words["common"]]),
    )
