"""The one shape of a prompt set, which every generator in :mod:`utils.data` returns.

A :class:`PromptSet` holds, for ``batch`` prompts:

- ``prompts``: the text of each prompt;
- ``tokens``: ``LongTensor[batch, pos]``, BOS first (added by
  :func:`utils.data.tokens.encode`), right-padded where prompts differ in length;
- ``lengths``: ``LongTensor[batch]``, the real (unpadded) number of tokens of each prompt;
- ``answer_ids``: ``LongTensor[batch]``, the correct token after ``positions["END"]``;
- ``wrong_ids``: ``LongTensor[batch]`` or ``None``, a contrast answer where the task has one
  (IOI's subject, the stated capital of a knowledge conflict, ...);
- ``positions``: named positions, each ``LongTensor[batch]`` (one per prompt) or
  ``LongTensor[batch, k]`` (several), as :mod:`utils.core.positions` prescribes.
  ``"END"`` is always there: where the model predicts ``answer_ids``.

Subclasses add task-specific fields. Those with one entry per prompt are named in
``PER_PROMPT`` (and those shaped like ``tokens`` in ``TOKEN_FIELDS``), so that
:meth:`PromptSet.subset` and :meth:`PromptSet.split` return the same type with every
per-prompt field cut to the chosen rows.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence, TypeVar

import torch
from torch import Tensor

from utils.core.positions import check_positions

__all__ = ["PromptSet", "answers_by_label", "check_count"]

P = TypeVar("P", bound="PromptSet")


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum`` (bools are not counts), else raise.

    Raises:
        ValueError: naming ``name`` and the value received.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def answers_by_label(labels: Tensor, positive_id: int | Tensor, negative_id: int | Tensor) -> tuple[Tensor, Tensor]:
    """``(answer_ids, wrong_ids)`` of a two-class task: ``positive_id`` where a label is 1
    and ``negative_id`` where it is 0, and the other one as the contrast.

    Raises:
        ValueError: ``labels`` is not a 1-D tensor of 0s and 1s.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1 or not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be a 1-D tensor of 0s and 1s, got {_describe(labels)}")
    positive, negative = torch.as_tensor(positive_id, dtype=torch.long), torch.as_tensor(negative_id, dtype=torch.long)
    is_positive = labels == 1
    return torch.where(is_positive, positive, negative), torch.where(is_positive, negative, positive)


def _is_long(value: Any) -> bool:
    return isinstance(value, Tensor) and value.dtype in (torch.int64, torch.int32)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


@dataclass(kw_only=True)
class PromptSet:
    """Prompts, their tokens, the answer after ``positions["END"]`` and named positions.

    Construction validates every invariant (shapes agree, positions inside each prompt's
    real tokens, ``"END"`` present) and raises ``TypeError`` / ``ValueError`` naming the
    field at fault. See the module docstring for the fields.
    """

    prompts: list[str]
    tokens: Tensor
    answer_ids: Tensor
    positions: dict[str, Tensor]
    wrong_ids: Tensor | None = None
    lengths: Tensor | None = field(default=None)

    #: Extra fields of a subclass with one entry per prompt (lists, tensors, prompt sets).
    PER_PROMPT: ClassVar[tuple[str, ...]] = ()
    #: Extra per-prompt fields shaped like ``tokens`` (cut to the same width by ``subset``).
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: Old attribute names and their replacements, for a clear error after a rename.
    RENAMED: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        kind = type(self).__name__
        if not isinstance(self.prompts, list) or not all(isinstance(p, str) for p in self.prompts):
            raise TypeError(f"{kind}.prompts must be a list of strings, got {_describe(self.prompts)}")
        batch = len(self.prompts)
        if batch == 0:
            raise ValueError(f"{kind} needs at least one prompt")
        if not _is_long(self.tokens) or self.tokens.ndim != 2 or self.tokens.shape[0] != batch:
            raise ValueError(
                f"{kind}.tokens must be a LongTensor of shape ({batch}, pos), one row per prompt, "
                f"got {_describe(self.tokens)}"
            )
        n_pos = self.tokens.shape[1]
        if self.lengths is None:
            self.lengths = torch.full((batch,), n_pos, dtype=torch.long)
        if not _is_long(self.lengths) or tuple(self.lengths.shape) != (batch,):
            raise ValueError(f"{kind}.lengths must be a LongTensor of shape ({batch},), got {_describe(self.lengths)}")
        if bool((self.lengths < 1).any()) or bool((self.lengths > n_pos).any()):
            raise ValueError(f"{kind}.lengths must lie in [1, {n_pos}] (the width of tokens)")
        for name in ("answer_ids", "wrong_ids"):
            ids = getattr(self, name)
            if ids is None and name == "wrong_ids":
                continue
            if not _is_long(ids) or tuple(ids.shape) != (batch,):
                raise ValueError(f"{kind}.{name} must be a LongTensor of shape ({batch},), got {_describe(ids)}")
            if bool((ids < 0).any()):
                raise ValueError(f"{kind}.{name} holds negative token ids")
        if not isinstance(self.positions, dict) or "END" not in self.positions:
            raise ValueError(f'{kind}.positions must be a dict with an "END" entry, got {_describe(self.positions)}')
        for name, value in self.positions.items():
            checked = check_positions(f'{kind}.positions["{name}"]', value, batch, n_pos)
            limit = self.lengths if checked.ndim == 1 else self.lengths[:, None]
            if bool((checked >= limit).any()):
                raise ValueError(f'{kind}.positions["{name}"] points past the end of a prompt (into its padding)')
            self.positions[name] = checked
        for name in self.TOKEN_FIELDS:
            value = getattr(self, name)
            if not _is_long(value) or value.shape != self.tokens.shape:
                raise ValueError(
                    f"{kind}.{name} must be a LongTensor shaped like tokens {tuple(self.tokens.shape)}, "
                    f"got {_describe(value)}"
                )
        for name in self.PER_PROMPT:
            value = getattr(self, name)
            size = value.shape[0] if isinstance(value, Tensor) and value.ndim else len(value)
            if size != batch:
                raise ValueError(f"{kind}.{name} has {size} entries for {batch} prompts")

    def __len__(self) -> int:
        return len(self.prompts)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: turn a stale name into a pointer to the new one.
        renamed = type(self).RENAMED.get(name)
        if renamed is not None:
            raise AttributeError(f"{type(self).__name__}.{name} was renamed: use .{renamed}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _rows(self, rows: Any) -> list[int]:
        n = len(self)
        if isinstance(rows, Tensor):
            if rows.dtype == torch.bool:
                if tuple(rows.shape) != (n,):
                    raise ValueError(f"a boolean row mask must have shape ({n},), got {tuple(rows.shape)}")
                return rows.nonzero().flatten().tolist()
            if not _is_long(rows) or rows.ndim != 1:
                raise TypeError(f"rows must be a 1-D LongTensor, a BoolTensor[{n}] or a list of ints, got {_describe(rows)}")
            rows = rows.tolist()
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TypeError(f"rows must be a sequence of ints or a tensor, got {_describe(rows)}")
        checked = []
        for row in rows:
            if isinstance(row, bool) or not isinstance(row, int):
                raise TypeError(f"rows must hold ints, got {row!r}")
            if not -n <= row < n:
                raise ValueError(f"row {row} is outside a set of {n} prompts")
            checked.append(row % n)
        if not checked:
            raise ValueError("no rows chosen: a prompt set needs at least one prompt")
        return checked

    def subset(self: P, rows: Any) -> P:
        """The prompts at ``rows`` (ints, a ``LongTensor`` or a ``BoolTensor[batch]``
        mask), in that order, as the same type; set-level fields are kept as they are.

        Padding columns that none of the chosen prompts needs are dropped.
        """
        index = self._rows(rows)
        assert self.lengths is not None  # set by __post_init__
        width = int(self.lengths[index].max())

        def cut(value: Any, token_shaped: bool = False) -> Any:
            if isinstance(value, PromptSet):
                return value.subset(index)
            if isinstance(value, Tensor):
                picked = value[index]
                return picked[:, :width] if token_shaped else picked
            if isinstance(value, dict):
                return {key: cut(item) for key, item in value.items()}
            return [value[i] for i in index]

        updates = {
            "prompts": cut(self.prompts),
            "tokens": cut(self.tokens, token_shaped=True),
            "lengths": cut(self.lengths),
            "answer_ids": cut(self.answer_ids),
            "wrong_ids": None if self.wrong_ids is None else cut(self.wrong_ids),
            "positions": cut(self.positions),
        }
        updates |= {name: cut(getattr(self, name), token_shaped=True) for name in self.TOKEN_FIELDS}
        updates |= {name: cut(getattr(self, name)) for name in self.PER_PROMPT}
        return dataclasses.replace(self, **updates)

    def split(self: P, fraction: float = 0.5, *, seed: int = 0) -> tuple[P, P]:
        """Two disjoint random parts (seeded), e.g. selection and evaluation prompts.

        The first part gets ``round(fraction * len(self))`` prompts, the second the rest;
        each keeps its prompts in their original order.

        Raises:
            ValueError: ``fraction`` is not in (0, 1) or would leave a part empty.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        n_first = round(fraction * len(self))
        if not 1 <= n_first < len(self):
            raise ValueError(
                f"a fraction of {fraction} of {len(self)} prompts leaves a part empty"
            )
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        return self.subset(sorted(order[:n_first])), self.subset(sorted(order[n_first:]))

    def held_out(self: P, used: "PromptSet | Sequence[str]", n: int) -> P:
        """The first ``n`` prompts of this set whose text is not one of ``used``'s and
        not a repeat of an earlier one: evaluation prompts held out from the prompts
        that selected some heads (generate this set with another seed, and more prompts
        than ``n``, since a template's prompts can repeat).

        Args:
            used: the selection prompts (a :class:`PromptSet` or their texts).
            n: how many held-out prompts to return.

        Raises:
            ValueError: ``n`` is not a count, or fewer than ``n`` prompts are new.
        """
        check_count("n", n)
        seen = set(used.prompts if isinstance(used, PromptSet) else used)
        rows = []
        for row, prompt in enumerate(self.prompts):
            if prompt not in seen:
                seen.add(prompt)
                rows.append(row)
        if len(rows) < n:
            raise ValueError(
                f"only {len(rows)} of {len(self)} prompts are new (not used, not repeated); "
                f"{n} were asked for: generate more"
            )
        return self.subset(rows[:n])
