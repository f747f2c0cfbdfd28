"""Head indices reported in the literature, kept as data with their source.

Published indices belong to one model (mostly GPT-2 small); they do not transfer to
another model. Chapters discover heads on the loaded model and, when that model is the
one a paper studied, print the published heads beside the discovered ones with
:func:`compare_with_published`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

Head = tuple[int, int]


@dataclass(frozen=True)
class PublishedHeads:
    """Heads of one type reported for one model by one paper (BibTeX key ``source``)."""

    head_type: str
    model: str
    heads: tuple[Head, ...]
    source: str
    note: str = ""


GPT2_SMALL = "gpt2-small"

PUBLISHED_HEADS: tuple[PublishedHeads, ...] = (
    PublishedHeads("name mover", GPT2_SMALL, ((9, 9), (9, 6), (10, 0)), "wang2022interpretability"),
    PublishedHeads(
        "backup name mover",
        GPT2_SMALL,
        ((9, 0), (9, 7), (10, 1), (10, 2), (10, 6), (10, 10), (11, 2), (11, 9)),
        "wang2022interpretability",
    ),
    PublishedHeads("negative name mover", GPT2_SMALL, ((10, 7), (11, 10)), "wang2022interpretability"),
    PublishedHeads("S-inhibition", GPT2_SMALL, ((7, 3), (7, 9), (8, 6), (8, 10)), "wang2022interpretability"),
    PublishedHeads("induction", GPT2_SMALL, ((5, 5), (5, 8), (5, 9), (6, 9)), "wang2022interpretability"),
    PublishedHeads("duplicate token", GPT2_SMALL, ((0, 1), (0, 10), (3, 0)), "wang2022interpretability"),
    PublishedHeads("previous token", GPT2_SMALL, ((2, 2), (4, 11)), "wang2022interpretability"),
    PublishedHeads("successor", GPT2_SMALL, ((9, 1),), "gould2024successor"),
    PublishedHeads("copy suppression", GPT2_SMALL, ((10, 7),), "mcdougall2024copy"),
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


def published_heads(head_type: str, model: str = GPT2_SMALL) -> PublishedHeads:
    """The published entry for ``head_type`` on ``model``.

    Raises:
        ValueError: nothing is recorded for that pair (the message lists what is).
    """
    for entry in PUBLISHED_HEADS:
        if entry.head_type == head_type and entry.model == model:
            return entry
    known = sorted({e.head_type for e in PUBLISHED_HEADS if e.model == model})
    raise ValueError(f"no published {head_type!r} heads for {model}; recorded: {known}")


def compare_with_published(
    model: Any, head_type: str, discovered: Iterable[Head], *, studied_on: str | None = None
) -> str:
    """A short report: discovered heads, and the published ones when they apply.

    On GPT-2 small it lists the paper's heads, the overlap and the source; on any other
    model it says that published indices do not transfer. Head types that no paper
    located in GPT-2 small (most were studied on larger models) are reported as such,
    naming ``studied_on`` (e.g. ``"Pythia-2.8B (chughtai2024summing)"``) when given.
    """
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
    try:
        entry = published_heads(head_type, key)
    except ValueError:
        lines.append(f"No published {head_type} heads are recorded for {key}{where}.")
        return "\n".join(lines)
    overlap = sorted(set(found) & set(entry.heads))
    lines.append(f"published for {key} ({entry.source}): {_fmt(entry.heads)}")
    lines.append(f"in both: {_fmt(overlap)} ({len(overlap)} of {len(entry.heads)} published)")
    return "\n".join(lines)


def _fmt(heads: Iterable[Head]) -> str:
    heads = list(heads)
    return ", ".join(f"{layer}.{head}" for layer, head in heads) if heads else "none"
