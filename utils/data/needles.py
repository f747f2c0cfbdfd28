"""Needle-in-a-haystack prompts for retrieval heads.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from utils.data.base import PromptSet, check_count
from utils.data.tokens import encode, piece_ids

# ---------------------------------------------------------------------------
# Needle in a haystack
# ---------------------------------------------------------------------------

FILLER_SENTENCES = (
    "The grass in the valley grows tall in the spring.",
    "Many people enjoy walking along the river in the evening.",
    "The old library keeps its rare maps in a quiet room.",
    "Farmers check the weather before they plant their crops.",
    "A small boat drifted slowly across the calm lake.",
    "The baker opens his shop long before sunrise.",
    "Children played football in the park after school.",
    "The museum added a new wing for modern art last year.",
    "Trains leave the central station every ten minutes.",
    "The mountain road is closed when the snow is deep.",
    "Birds gather on the roof of the barn each morning.",
    "The market sells fresh fruit and vegetables on Saturdays.",
    "Her grandmother told long stories by the fire.",
    "The factory makes parts for bicycles and cars.",
    "A light rain fell on the village during the night.",
    "The students wrote essays about the history of the town.",
    "Tourists often take photos of the old stone bridge.",
    "The garden behind the house is full of roses.",
    "The teacher asked the class to read the first chapter.",
    "Fishermen return to the harbour in the late afternoon.",
)


HAYSTACK_INTRO = "Read the notes below."


NEEDLE_TEMPLATE = " The secret code is{CODE}."


HAYSTACK_QUESTION = " What is the secret code? The secret code is"


@dataclass(kw_only=True)
class NeedleHaystack(PromptSet):
    """Needle-in-a-haystack prompts, teacher-forced with their answer.

    ``tokens[b]`` is the intro, filler sentences with the needle sentence at depth
    ``depths[b]`` (its index among the sentences), the question and then the code, so
    the prompt goes on after ``positions["END"]`` (the question's last token). For copy
    step ``s`` the model, at ``positions["queries"][b, s]``, must predict
    ``step_ids[b, s]``, which is the token at ``positions["targets"][b, s]`` inside the
    needle; ``answer_ids`` is the first step's token and ``positions["needle"]`` its
    place in the needle. Whitespace-only tokens of the code are not counted as steps.
    """

    step_ids: Tensor
    codes: list[str]
    depths: list[int]

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("step_ids", "codes", "depths")
    RENAMED: ClassVar[dict[str, str]] = {
        "query_pos": 'positions["queries"]',
        "target_pos": 'positions["targets"]',
    }

    def _check_logits(self, logits: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[:2] != self.tokens.shape:
            raise ValueError(
                f"logits must have shape (batch, pos, d_vocab) with (batch, pos) = "
                f"{tuple(self.tokens.shape)}"
            )

    def step_correct(self, logits: Tensor) -> Tensor:
        """``BoolTensor[batch, steps]``: whether the top prediction at each step is right."""
        self._check_logits(logits)
        rows = torch.arange(len(self))[:, None]
        predicted = logits[rows, self.positions["queries"].to(logits.device)].argmax(dim=-1).cpu()
        return predicted == self.step_ids

    def answered(self, logits: Tensor) -> Tensor:
        """``BoolTensor[batch]``: the model reproduces the whole code (greedy decoding
        would generate it, since every step is teacher-forced with the right prefix)."""
        return self.step_correct(logits).all(dim=-1)


def needle_in_a_haystack(
    model: Any,
    n_prompts: int = 8,
    *,
    n_filler: int = 16,
    code_digits: int = 4,
    seed: int = 0,
) -> NeedleHaystack:
    """Build needle-in-a-haystack prompts of one token length.

    Every prompt uses the same ``n_filler`` filler sentences (from
    :data:`FILLER_SENTENCES`) in a seeded random order, hides "The secret code is
    NNNN." among them and ends with the question and the code. Pieces are tokenised
    separately, so all prompts have the same length and the needle's code tokens sit at
    known positions. Codes whose token count differs from the first code's (possible
    with tokenizers that merge digits) are redrawn.

    Raises:
        ValueError: ``n_prompts``, ``n_filler`` or ``code_digits`` out of range, or no
            codes of one token length can be drawn.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(n_filler, bool) or not isinstance(n_filler, int) or not 2 <= n_filler <= len(FILLER_SENTENCES):
        raise ValueError(f"n_filler must be an int in [2, {len(FILLER_SENTENCES)}], got {n_filler!r}")
    if isinstance(code_digits, bool) or not isinstance(code_digits, int) or not 1 <= code_digits <= 12:
        raise ValueError(f"code_digits must be an int in [1, 12], got {code_digits!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    code_length = None
    rows, queries, targets, answers, codes, depths = [], [], [], [], [], []
    for _ in range(n_prompts):
        for _attempt in range(100):
            code = "".join(rng.choice(string.digits) for _ in range(code_digits))
            code_ids = piece_ids(model, " " + code)
            if code_length is None or len(code_ids) == code_length:
                code_length = len(code_ids)
                break
        else:
            raise ValueError("could not draw codes of one token length for this tokenizer")
        sentences = list(FILLER_SENTENCES[:n_filler])
        rng.shuffle(sentences)
        depth = rng.randrange(1, n_filler)
        tokens = encode(model, HAYSTACK_INTRO)
        needle_code_start = None
        for index in range(n_filler + 1):
            if index == depth:
                prefix, suffix = NEEDLE_TEMPLATE.split("{CODE}")
                tokens += piece_ids(model, prefix)
                needle_code_start = len(tokens)
                tokens += code_ids + piece_ids(model, suffix)
            sentence = sentences[index] if index < n_filler else None
            if sentence is not None:
                tokens += piece_ids(model, " " + sentence)
        tokens += piece_ids(model, HAYSTACK_QUESTION)
        answer_start = len(tokens)
        tokens += code_ids
        steps = [i for i, t in enumerate(code_ids) if model.tokenizer.decode([t]).strip()]
        if not steps:
            raise ValueError("the code has no non-whitespace token for this tokenizer")
        rows.append(tokens)
        queries.append([answer_start + i - 1 for i in steps])
        targets.append([needle_code_start + i for i in steps])
        answers.append([code_ids[i] for i in steps])
        codes.append(code)
        depths.append(depth)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("prompts came out with different token lengths")
    token_tensor = torch.tensor(rows)
    query_pos, target_pos, step_ids = torch.tensor(queries), torch.tensor(targets), torch.tensor(answers)
    return NeedleHaystack(
        prompts=[model.tokenizer.decode(row[1:]) for row in rows],
        tokens=token_tensor,
        answer_ids=step_ids[:, 0].clone(),
        positions={
            "needle": target_pos[:, 0].clone(),
            "queries": query_pos,
            "targets": target_pos,
            "END": query_pos[:, 0].clone(),
        },
        step_ids=step_ids,
        codes=codes,
        depths=depths,
    )
