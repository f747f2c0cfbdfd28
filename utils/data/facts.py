"""Factual-recall prompts (subject, relation, attribute) kept only when the model
recalls the attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from utils.data.tokens import is_single_token, single_token_id


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
