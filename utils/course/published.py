"""Head indices reported in the literature, kept as data with their source.

Published indices belong to one model (mostly GPT-2 small); they do not transfer to
another model. Chapters discover heads on the loaded model and, when that model is the
one a paper studied, print the published heads beside the discovered ones with
:func:`compare_with_published`.

Each entry is keyed by the name of its head type in the taxonomy
(:mod:`utils.course.taxonomy`, e.g. ``"Name mover head"``), so the published heads and
the taxonomy page speak of the same thing; lookups accept any name or alias the taxonomy
knows (``"name mover"``, ``"previous-token heads"``) and refuse the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from utils.core.heads import Head
from utils.course.taxonomy import get_head_type

__all__ = [
    "GPT2_SMALL",
    "PublishedHeads",
    "PUBLISHED_HEADS",
    "model_key",
    "published_heads",
    "compare_with_published",
]



@dataclass(frozen=True)
class PublishedHeads:
    """Heads of one type reported for one model by one paper.

    Attributes:
        head_type: the head type's name in the taxonomy (``HeadType.name``).
        model: the model the paper studied, e.g. :data:`GPT2_SMALL`.
        heads: ``(layer, head)`` pairs as the paper gives them.
        source: BibTeX key of the paper (in ``book/references.bib``).
        note: what the paper calls the heads, when it is not the taxonomy's name.
    """

    head_type: str
    model: str
    heads: tuple[Head, ...]
    source: str
    note: str = ""


GPT2_SMALL = "gpt2-small"

_IOI = "wang2022interpretability"

PUBLISHED_HEADS: tuple[PublishedHeads, ...] = (
    PublishedHeads("Name mover head", GPT2_SMALL, ((9, 9), (9, 6), (10, 0)), _IOI),
    PublishedHeads(
        "Backup name mover head",
        GPT2_SMALL,
        ((9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)),
        _IOI,
    ),
    PublishedHeads("Negative name mover head", GPT2_SMALL, ((10, 7), (11, 10)), _IOI),
    PublishedHeads("S-inhibition head", GPT2_SMALL, ((7, 3), (7, 9), (8, 6), (8, 10)), _IOI),
    PublishedHeads("Induction head", GPT2_SMALL, ((5, 5), (5, 8), (5, 9), (6, 9)), _IOI),
    PublishedHeads("Duplicate token head", GPT2_SMALL, ((0, 1), (0, 10), (3, 0)), _IOI),
    PublishedHeads("Previous head", GPT2_SMALL, ((2, 2), (4, 11)), _IOI, "previous-token"),
    PublishedHeads("Successor head", GPT2_SMALL, ((9, 1),), "gould2024successor"),
    # McDougall et al. call 10.7 a copy suppression head: the taxonomy's negative name
    # mover, explained (its alias "Copy suppression head").
    PublishedHeads(
        "Negative name mover head", GPT2_SMALL, ((10, 7),), "mcdougall2024copy", "copy suppression"
    ),
)

# Identifiers under which GPT-2 small is loaded (hub ids, TransformerLens names).
_GPT2_SMALL_NAMES = {"gpt2", "gpt2-small", "openai-community/gpt2"}


def model_key(model: Any) -> str | None:
    """``"gpt2-small"`` when the loaded model is GPT-2 small, else ``None``."""
    name = str(getattr(model.cfg, "model_name", "") or "").lower()
    cfg = model.cfg
    shape = (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab)
    if name.split("/")[-1] in {"gpt2", "gpt2-small"} or name in _GPT2_SMALL_NAMES:
        return GPT2_SMALL if shape == (12, 12, 768, 50257) else None
    return None


def _canonical(head_type: str) -> str:
    """The taxonomy's name for ``head_type`` (any name or alias it knows).

    Raises:
        ValueError: the taxonomy has no such head type.
    """
    try:
        return get_head_type(head_type).name
    except KeyError:
        raise ValueError(
            f"{head_type!r} is not a head type of the taxonomy (utils/course/taxonomy.yaml): "
            "use one of its names or aliases, e.g. 'name mover' or 'Induction head'"
        ) from None


def published_heads(head_type: str, model: str = GPT2_SMALL) -> tuple[PublishedHeads, ...]:
    """The published entries for ``head_type`` on ``model`` (one per paper).

    Args:
        head_type: a name or alias of a taxonomy head type, e.g. ``"name mover"``.
        model: the model key, e.g. :data:`GPT2_SMALL`.

    Raises:
        ValueError: ``head_type`` is not in the taxonomy, or nothing is recorded for it
            on ``model`` (the message lists what is).
    """
    name = _canonical(head_type)
    entries = tuple(e for e in PUBLISHED_HEADS if e.head_type == name and e.model == model)
    if not entries:
        known = sorted({e.head_type for e in PUBLISHED_HEADS if e.model == model})
        raise ValueError(f"no published {name!r} heads for {model}; recorded: {known}")
    return entries


def compare_with_published(
    model: Any, head_type: str, discovered: Iterable[Head], *, studied_on: str | None = None
) -> str:
    """A short report: discovered heads, and the published ones when they apply.

    On GPT-2 small it lists each paper's heads, the overlap and the source; on any other
    model it says that published indices do not transfer. Head types that no paper
    located in GPT-2 small (most were studied on larger models) are reported as such,
    naming ``studied_on`` (e.g. ``"Pythia-2.8B (chughtai2024summing)"``) when given.

    Args:
        model: the loaded model (its ``cfg`` tells whether it is GPT-2 small).
        head_type: a name or alias of a taxonomy head type, e.g. ``"name mover"``.
        discovered: the ``(layer, head)`` pairs found on ``model``.
        studied_on: where the head type was studied, when not on GPT-2 small.

    Raises:
        ValueError: ``head_type`` is not in the taxonomy (on any model, so that a typo
            fails where it is written).
    """
    name = _canonical(head_type)
    found = [tuple(h) for h in discovered]
    lines = [f"{head_type} heads found on this model: {_fmt(found)}"]
    where = f"; it was studied on {studied_on}" if studied_on else ""
    key = model_key(model)
    if key is None:
        lines.append(
            "Published indices were measured on other models (mostly GPT-2 small) and do not "
            f"transfer{where}. The heads above were discovered on the loaded model."
        )
        return "\n".join(lines)
    entries = [e for e in PUBLISHED_HEADS if e.head_type == name and e.model == key]
    if not entries:
        lines.append(f"No published {head_type} heads are recorded for {key}{where}.")
    for entry in entries:
        overlap = sorted(set(found) & set(entry.heads))
        called = f", as {entry.note} heads" if entry.note else ""
        lines.append(f"published for {key} ({entry.source}{called}): {_fmt(entry.heads)}")
        lines.append(f"in both: {_fmt(overlap)} ({len(overlap)} of {len(entry.heads)} published)")
    return "\n".join(lines)


def _fmt(heads: Iterable[Head]) -> str:
    heads = list(heads)
    return ", ".join(f"{layer}.{head}" for layer, head in heads) if heads else "none"
