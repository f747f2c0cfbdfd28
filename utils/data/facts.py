"""Factual-recall prompts (subject, relation, attribute) kept only when the model
recalls the attribute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from utils.data.base import PromptSet
from utils.data.tokens import encode, is_single_token, single_token_id, to_tokens
from utils.interventions.runner import forward_logits


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


@dataclass(kw_only=True)
class FactualRecallDataset(PromptSet):
    """Facts the loaded model completes correctly (its top-1 next token is the answer).

    Prompts differ in length, so ``tokens`` is right-padded to the longest one (with the
    BOS id) and ``lengths`` gives each prompt's real length. Attention is causal, so the
    padding after a prompt changes nothing at its real positions, and all facts share one
    forward pass; read the prediction at ``positions["END"]`` (the last real token), e.g.
    ``logits[torch.arange(len(facts)), facts.positions["END"]]``, never at ``-1``.

    ``positions["subject_first"]`` and ``positions["subject_last"]`` bound the subject's
    tokens (inclusive, BOS counted); :attr:`subject_mask` marks them. ``facts.facts[i]``
    is the :class:`Fact` of prompt ``i``; ``rejected`` lists the candidates that were left
    out (wrong top-1 prediction, or an answer that is not one token).
    """

    facts: list[Fact]
    n_candidates: int
    rejected: list[Fact]

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("facts",)
    RENAMED: ClassVar[dict[str, str]] = {"subject_positions": 'subject_mask, or positions["subject_first"] / ["subject_last"]'}

    @property
    def subject_mask(self) -> Tensor:
        """``BoolTensor[batch, pos]``: true at the subject's tokens."""
        keys = torch.arange(self.tokens.shape[1])
        first, last = self.positions["subject_first"], self.positions["subject_last"]
        return (keys >= first[:, None]) & (keys <= last[:, None])

    def subject_span(self, row: int) -> list[int]:
        """The subject's token positions in prompt ``row``."""
        first, last = int(self.positions["subject_first"][row]), int(self.positions["subject_last"][row])
        return list(range(first, last + 1))


def subject_token_positions(model: Any, prompt: str, subject: str) -> list[int]:
    """Token positions (BOS counted) covered by the first occurrence of ``subject``.

    Raises:
        ValueError: ``subject`` does not occur in ``prompt``.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    start = prompt.find(subject)
    if start < 0:
        raise ValueError(f"subject {subject!r} does not occur in {prompt!r}")
    end = start + len(subject)
    encoding = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(encode(model, prompt)) - len(encoding["input_ids"])  # the BOS in front
    return [
        i + offset
        for i, (lo, hi) in enumerate(encoding["offset_mapping"])
        if lo < end and hi > start
    ]


def factual_recall_dataset(
    model: Any, facts: Sequence[Fact] | None = None, *, validate: bool = True
) -> FactualRecallDataset:
    """Keep the facts whose answer the loaded model predicts as its top next token.

    All candidates run in one right-padded batch; the prediction is read at each
    prompt's last real token.

    Args:
        facts: facts to validate; by default :data:`FACTS` (answers that are not one
            token for this tokenizer are dropped). Facts passed explicitly must have
            single-token answers, else ``ValueError``.
        validate: keep only the facts the model gets right; ``False`` keeps every
            candidate with a single-token answer (for tests on an untrained model).

    Raises:
        ValueError: a passed fact has a multi-token answer or a subject missing from its
            prompt, or no fact is kept.
    """
    explicit = facts is not None
    if explicit and (isinstance(facts, (str, Fact)) or not isinstance(facts, Sequence)):
        raise TypeError("facts must be a sequence of Fact")
    candidates = list(FACTS if facts is None else facts)
    if not candidates:
        raise ValueError("no facts given")
    for fact in candidates:
        if not isinstance(fact, Fact):
            raise TypeError(f"facts must hold Fact instances, got {fact!r}")
    usable, answers, spans = [], [], []  # usable: indices into candidates
    for index, fact in enumerate(candidates):
        if not explicit and not is_single_token(model, fact.answer):
            continue
        answers.append(single_token_id(model, fact.answer))
        span = subject_token_positions(model, fact.prompt, fact.subject)
        spans.append((span[0], span[-1]))
        usable.append(index)
    if not usable:
        raise ValueError("no candidate fact has a single-token answer for this tokenizer")
    tokens, lengths = to_tokens(model, [candidates[i].prompt for i in usable])
    end = lengths - 1
    answer_ids = torch.tensor(answers, dtype=torch.long)
    keep = torch.ones(len(usable), dtype=torch.bool)
    if validate:
        # One prompt at a time, cut to its length; only its last position is unembedded.
        predicted = torch.stack([
            forward_logits(model, tokens[row : row + 1, : int(end[row]) + 1], last_position_only=True)[0, -1]
            .argmax()
            .cpu()
            for row in range(len(usable))
        ])
        keep = predicted == answer_ids
    if not bool(keep.any()):
        raise ValueError(f"the model predicts none of the {len(usable)} facts' answers as its top token")
    kept = {usable[row] for row in keep.nonzero().flatten().tolist()}
    span_tensor = torch.tensor(spans, dtype=torch.long)
    dataset = FactualRecallDataset(
        prompts=[candidates[i].prompt for i in usable],
        tokens=tokens,
        lengths=lengths,
        answer_ids=answer_ids,
        positions={"subject_first": span_tensor[:, 0], "subject_last": span_tensor[:, 1], "END": end},
        facts=[candidates[i] for i in usable],
        n_candidates=len(candidates),
        rejected=[],
    )
    rejected = [fact for i, fact in enumerate(candidates) if i not in kept]
    return dataclasses.replace(dataset.subset(keep), rejected=rejected)
