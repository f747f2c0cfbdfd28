"""Acronym prompts ("The Central Intelligence Agency (C"), for letter-mover heads.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from utils.data.tokens import is_single_token, single_token_id

# ---------------------------------------------------------------------------
# Acronyms
# ---------------------------------------------------------------------------

ACRONYM_WORDS = (
    "Central",
    "Data",
    "Institute",
    "National",
    "Research",
    "Council",
    "Federal",
    "Energy",
    "Agency",
    "World",
    "Health",
    "Organization",
    "Public",
    "Safety",
    "Office",
    "American",
    "Science",
    "Foundation",
    "General",
    "Motors",
    "Company",
    "Digital",
    "Media",
    "Group",
    "Global",
    "Trade",
    "Network",
    "International",
    "Space",
    "Station",
    "Royal",
    "Navy",
    "Service",
    "Local",
    "Water",
    "Board",
    "Joint",
    "Security",
    "Team",
    "Modern",
    "Art",
    "Museum",
    "Bank",
    "Union",
    "Press",
)


CAPITAL_LETTERS = string.ascii_uppercase


@dataclass
class AcronymDataset:
    """Prompts "The W1 W2 W3 (L1L2" whose next letter is ``answers[i]`` = L3.

    ``word_pos[:, j]`` is the position (BOS counted) of the first token of word ``j``;
    ``answer_ids`` are the single-token capital letters to predict and
    ``letter_ids`` all 26 capital-letter tokens (the candidates the letter accuracy
    chooses among). All prompts share one token length.
    """

    prompts: list[str]
    tokens: Tensor
    word_pos: Tensor
    answer_ids: Tensor
    answers: list[str]
    letter_ids: Tensor
    n_candidates: int

    def __len__(self) -> int:
        return len(self.prompts)

    def letter_accuracy(self, logits: Tensor) -> float:
        """Fraction of prompts whose highest-scoring capital letter at the last position
        is the right one."""
        if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[0] != len(self):
            raise ValueError(f"logits must have shape ({len(self)}, pos, d_vocab)")
        letters = self.letter_ids.to(logits.device)
        chosen = letters[logits[:, -1, letters].argmax(dim=-1)]
        return float((chosen == self.answer_ids.to(logits.device)).float().mean())

    def letter_directions(self, model: Any) -> Tensor:
        """Per prompt, the unembedding of the right letter minus the mean unembedding of
        all capital letters: ``(batch, d_model)``, for direct logit attribution."""
        W_U = model.W_U
        mean_letter = W_U[:, self.letter_ids].mean(dim=1)
        return (W_U[:, self.answer_ids] - mean_letter[:, None]).T


def acronym_dataset(model: Any, n_prompts: int = 16, *, seed: int = 0) -> AcronymDataset:
    """Three-word names with distinct initials, ending after the acronym's first two letters.

    Words are drawn from :data:`ACRONYM_WORDS` (kept if one token with a leading space).
    The two letters are tokenised as the tokenizer likes (often as one merged token);
    prompts whose length differs from the most common length are dropped, and so are
    names that repeat. ``n_candidates`` says how many were drawn.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
    letters = [c for c in CAPITAL_LETTERS if is_single_token(model, c)]
    if len(letters) != len(CAPITAL_LETTERS):
        raise ValueError("this tokenizer does not have every capital letter as a single token")
    words = [w for w in ACRONYM_WORDS if is_single_token(model, " " + w)]
    if len({w[0] for w in words}) < 3:
        raise ValueError("too few single-token words with distinct initials for this tokenizer")
    rng = random.Random(seed)
    n_candidates = 3 * n_prompts
    drawn, seen = [], set()
    while len(drawn) < n_candidates:
        triple = tuple(rng.sample(words, 3))
        if len({w[0] for w in triple}) == 3 and triple not in seen:
            seen.add(triple)
            drawn.append(triple)
    prompts = [f"The {' '.join(t)} ({t[0][0]}{t[1][0]}" for t in drawn]
    lengths = [model.to_tokens(p).shape[-1] for p in prompts]
    common_length = Counter(lengths).most_common(1)[0][0]
    keep = [i for i, n in enumerate(lengths) if n == common_length][:n_prompts]
    if len(keep) < n_prompts:
        raise ValueError(f"only {len(keep)} acronym prompts share one token length")
    prompts = [prompts[i] for i in keep]
    triples = [drawn[i] for i in keep]
    word_pos = []
    for prompt, triple in zip(prompts, triples):
        encoding = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        shift = common_length - len(encoding["input_ids"])
        positions, search_from = [], 0
        for word in triple:
            start = prompt.index(" " + word, search_from) + 1
            search_from = start
            index = next(i for i, (lo, hi) in enumerate(encoding["offset_mapping"]) if lo <= start < hi)
            positions.append(index + shift)
        word_pos.append(positions)
    answers = [t[2][0] for t in triples]
    return AcronymDataset(
        prompts=prompts,
        tokens=model.to_tokens(prompts),
        word_pos=torch.tensor(word_pos),
        answer_ids=torch.tensor([single_token_id(model, a) for a in answers]),
        answers=answers,
        letter_ids=torch.tensor([single_token_id(model, c) for c in CAPITAL_LETTERS]),
        n_candidates=n_candidates,
    )
