"""Acronym prompts ("The Central Intelligence Agency (C"), for letter-mover heads.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from utils.core.positions import same_position
from utils.data.base import PromptSet, check_count
from utils.data.tokens import encode, is_single_token, single_token_id, to_tokens

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


@dataclass(kw_only=True)
class AcronymDataset(PromptSet):
    """Prompts "The W1 W2 W3 (L1L2" whose next letter is ``answers[i]`` = L3.

    ``positions["words"][:, j]`` is the position (BOS counted) of the first token of
    word ``j``; ``answer_ids`` are the single-token capital letters to predict and
    ``letter_ids`` all 26 capital-letter tokens (the candidates the letter accuracy
    chooses among). All prompts share one token length.
    """

    answers: list[str]
    letter_ids: Tensor
    n_candidates: int

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("answers",)
    RENAMED: ClassVar[dict[str, str]] = {"word_pos": 'positions["words"]'}

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
    names that repeat. ``n_candidates`` says how many were drawn. Deterministic for a
    given ``seed``.

    Raises:
        ValueError: bad ``n_prompts``, a tokenizer without single-token capital letters
            or with too few usable words, or too few prompts of one length.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    letters = [c for c in CAPITAL_LETTERS if is_single_token(model, c)]
    if len(letters) != len(CAPITAL_LETTERS):
        raise ValueError("this tokenizer does not have every capital letter as a single token")
    words = [w for w in ACRONYM_WORDS if is_single_token(model, " " + w)]
    if len({w[0] for w in words}) < 3:
        raise ValueError("too few single-token words with distinct initials for this tokenizer")
    rng = random.Random(seed)
    n_candidates = 3 * n_prompts
    # Ordered triples of words with three different initials: e3 of the initials' counts, times 3!.
    e1 = e2 = e3 = 0
    for count in Counter(w[0] for w in words).values():
        e1, e2, e3 = e1 + count, e2 + e1 * count, e3 + e2 * count
    if 6 * e3 < n_candidates:
        raise ValueError(
            f"could not draw {n_candidates} distinct three-word names for n_prompts={n_prompts}: "
            f"these words allow {6 * e3}"
        )
    drawn, seen = [], set()
    for _attempt in range(200 * n_candidates):
        if len(drawn) == n_candidates:
            break
        triple = tuple(rng.sample(words, 3))
        if len({w[0] for w in triple}) == 3 and triple not in seen:
            seen.add(triple)
            drawn.append(triple)
    else:
        # Without this bound, asking for more names than the words allow would never end.
        if len(drawn) < n_candidates:
            raise ValueError(f"could not draw {n_candidates} distinct three-word names for n_prompts={n_prompts}")
    prompts = [f"The {' '.join(t)} ({t[0][0]}{t[1][0]}" for t in drawn]
    lengths = [len(encode(model, p)) for p in prompts]
    common_length = Counter(lengths).most_common(1)[0][0]
    keep = [i for i, n in enumerate(lengths) if n == common_length][:n_prompts]
    if len(keep) < n_prompts:
        raise ValueError(f"only {len(keep)} acronym prompts share one token length")
    prompts = [prompts[i] for i in keep]
    triples = [drawn[i] for i in keep]
    word_pos = []
    for prompt, triple in zip(prompts, triples):
        encoding = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        shift = common_length - len(encoding["input_ids"])  # the BOS in front
        positions, search_from = [], 0
        for word in triple:
            start = prompt.index(" " + word, search_from) + 1
            search_from = start
            index = next(i for i, (lo, hi) in enumerate(encoding["offset_mapping"]) if lo <= start < hi)
            positions.append(index + shift)
        word_pos.append(positions)
    answers = [t[2][0] for t in triples]
    tokens, _ = to_tokens(model, prompts)
    return AcronymDataset(
        prompts=prompts,
        tokens=tokens,
        answer_ids=torch.tensor([single_token_id(model, a) for a in answers]),
        positions={
            "words": torch.tensor(word_pos),
            "END": same_position(n_prompts, common_length - 1),
        },
        answers=answers,
        letter_ids=torch.tensor([single_token_id(model, c) for c in CAPITAL_LETTERS]),
        n_candidates=n_candidates,
    )
