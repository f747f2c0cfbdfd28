"""Prompts with a rare and a common word, and the token-rarity proxy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from utils.data.tokens import _bos, _encode, is_single_token, pad_right, single_token_id

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


@dataclass
class RareWordPrompts:
    """Matched prompts that differ only in one word, at ``slot_pos`` (BOS counted).

    ``rare_tokens[i]`` holds a rare word and ``common_tokens[i]`` a common one in the
    same template; ``control_tokens[i]`` holds another common word, to measure how much
    any change of word moves attention. Prompts are right-padded; ``lengths`` are their
    real lengths.
    """

    rare_tokens: Tensor
    common_tokens: Tensor
    control_tokens: Tensor
    slot_pos: Tensor
    lengths: Tensor
    rare_words: list[str]
    common_words: list[str]
    control_words: list[str]
    rare_ranks: Tensor
    common_ranks: Tensor

    def __len__(self) -> int:
        return self.rare_tokens.shape[0]


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
    ``common_below``.

    Raises:
        ValueError: too few words pass the filters for ``n_prompts`` prompts.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
    if not 0 <= common_below < rare_above <= 1:
        raise ValueError("need 0 <= common_below < rare_above <= 1")
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
    slots = []
    for index in range(n_prompts):
        template = RARE_WORD_TEMPLATES[index % len(RARE_WORD_TEMPLATES)]
        before, after = template.split("{WORD}")
        prefix = [_bos(model)] + _encode(model, before)
        suffix = _encode(model, after)
        chosen = {"rare": rng.choice(rare)}
        chosen["common"], chosen["control"] = rng.sample(common, 2)
        for kind, word in chosen.items():
            sequences[kind].append(prefix + [single_token_id(model, " " + word)] + suffix)
            words[kind].append(word)
        slots.append(len(prefix))
    pad = _bos(model)
    rare_tokens, lengths = pad_right(sequences["rare"], pad)
    common_tokens, _ = pad_right(sequences["common"], pad)
    control_tokens, _ = pad_right(sequences["control"], pad)
    return RareWordPrompts(
        rare_tokens=rare_tokens,
        common_tokens=common_tokens,
        control_tokens=control_tokens,
        slot_pos=torch.tensor(slots),
        lengths=lengths,
        rare_words=words["rare"],
        common_words=words["common"],
        control_words=words["control"],
        rare_ranks=torch.tensor([token_rarity(model, w).rank for w in words["rare"]]),
        common_ranks=torch.tensor([token_rarity(model, w).rank for w in words["common"]]),
    )
