"""The page ``book/two_models.md``, "Two models side by side", rendered from the registry.

For every finding id of the findings registry (:mod:`utils.course.findings`), grouped by
chapter: the claim and, per model, the evidence level, the heads, the measured value with
its interval, and whether the finding transfers from one model to the other. The toy
models of chapter 16 have their own table.

Run ``python -m utils.course.two_models_page`` after changing a registry file
(``utils/course/findings/*.yaml``); ``tests/test_two_models_page.py`` fails while the
committed page is stale.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from utils.course.chapters import REPO_ROOT, chapter_link, chapters
from utils.course.findings import (
    EVIDENCE_LEVELS,
    REGISTRY_DIR,
    TOY_KEY,
    Finding,
    Registry,
    load_registries,
)
from utils.course.taxonomy import COURSE_PLAN_CHAPTERS

__all__ = ["PAGE_PATH", "transfer", "render_two_models_markdown", "write_two_models_page", "main"]

#: The page this module writes.
PAGE_PATH: Path = REPO_ROOT / "book" / "two_models.md"

_POSITIVE = ("causal", "score")


def _cell(text: str) -> str:
    """Text safe for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _sign(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return (value > 0) - (value < 0)


def _meets(measured: Finding, expected: Finding) -> bool | None:
    """Whether ``measured``'s registered value meets ``expected``'s bounds (heads aside);
    ``None`` when ``expected`` has no bound on the value."""
    if expected.expect is None:
        return None
    rules = expected.expect.numeric()
    if not rules.rules:
        return None
    return not rules.failures(measured.measured.value, measured.measured.ci, None)


def transfer(first: Finding, second: Finding) -> str:
    """Whether a finding transfers between two models' entries of the same id.

    * ``"both hold"``: evidence on both (causal or score), and each model's measurement
      meets the other model's expectation as well as its own (head indices aside);
    * ``"same sign"``: evidence on both, the sizes differ but the values have the same
      sign (the same value, for a bool or a string);
    * ``"absent on both"`` / ``"needs scale on both"``: the same negative result;
    * ``"differs"``: anything else - opposite signs, or evidence on one model only.
    """
    if first.evidence in _POSITIVE and second.evidence in _POSITIVE:
        there, back = _meets(first, second), _meets(second, first)
        if there is not False and back is not False and (there or back):
            return "both hold"
        a, b = first.measured.value, second.measured.value
        if _sign(a) is not None and _sign(b) is not None:
            return "same sign" if _sign(a) == _sign(b) != 0 else "differs"
        return "same sign" if a == b and type(a) is type(b) else "differs"
    if first.evidence == second.evidence == "not found":
        return "absent on both"
    if first.evidence == second.evidence == "needs scale":
        return "needs scale on both"
    return "differs"


def _result(entry: Finding | None) -> str:
    """One model's cell: evidence, heads, value [CI] (n), and power or model to use."""
    if entry is None:
        return "not registered"
    parts = [f"**{entry.evidence}**"]
    if entry.heads:
        parts.append(", ".join(entry.heads))
    parts.append(str(entry.measured))
    if entry.evidence == "not found" and entry.power is not None:
        parts.append(f"power: {entry.power}")
    if entry.evidence == "needs scale" and entry.model_to_use:
        parts.append(f"use {entry.model_to_use}")
    return _cell(" · ".join(parts))


def _chapter_heading(number: str, root: Path) -> tuple[str, str]:
    """(heading, link or slug) of a chapter by number, from _toc.yml or the course plan."""
    in_book = {c.number: c for c in chapters(root)}
    if number in in_book:
        chapter = in_book[number]
        return f"Chapter {number} · {chapter.title}", chapter_link(chapter.slug)
    slug = next((s for s in COURSE_PLAN_CHAPTERS if s.split("/")[-1].startswith(number + "_")), None)
    title = slug.split("/")[-1][3:].replace("_", " ").capitalize() if slug else "not in the course plan"
    return f"Chapter {number} · {title}", f"`{slug}.ipynb` (coming)" if slug else ""


def render_two_models_markdown(
    registries: dict[str, Registry] | None = None, root: Path = REPO_ROOT
) -> str:
    """Render the page: an introduction, one table per chapter, the toy models' table.

    Args:
        registries: by key, as :func:`utils.course.findings.load_registries` returns them;
            by default the committed registry (``utils/course/findings/``, not
            ``$COURSE_FINDINGS_DIR``).
        root: the repository, for the chapter list of ``_toc.yml``.

    Returns:
        The page, ending in a newline.
    """
    if registries is None:
        registries = load_registries(REGISTRY_DIR)
    models = [r for r in registries.values() if not r.is_toy]
    toy = registries.get(TOY_KEY)
    ids = sorted({fid for r in models for fid in r.entries})
    lines: list[str] = []
    add = lines.append
    add("% This page is generated from utils/course/findings/*.yaml by utils.course.two_models_page.")
    add("% Do not edit it by hand: edit the registry and run `python -m utils.course.two_models_page`.")
    add("")
    add("(two-models)=")
    add("# Two models side by side")
    add("")
    names = " and ".join(f"**{r.label}**" for r in models) or "the course's models"
    add(
        "Every finding a chapter states is an entry of the course's findings registry, one "
        "file per model in `utils/course/findings/`: the claim, the heads found, the value "
        "measured with its 95% bootstrap interval and the number of prompts, the evidence "
        "level, and the bound a run must meet for the claim to stand. Each chapter runs on "
        f"{names}, and asserts its findings on both. This page puts the two models' entries "
        "side by side, chapter by chapter, and says whether each finding transfers."
    )
    add("")
    add(
        "*Evidence*: **causal** - an intervention (ablation, patching, steering) against a "
        "control; **score** - attention patterns, attribution or weights only; **not found** "
        "- measured and absent, with the effect size the test could have detected (its "
        "power); **needs scale** - the task cannot be done at this size, and the entry "
        "names the model to use. Head indices are the model's own: they never carry over."
    )
    add("")
    add(
        "*Transfer*: **both hold** - evidence on both models, and each model's value also "
        "meets the other model's bound; **same sign** - evidence on both, the same direction "
        "but sizes the other bound rejects; **absent on both** or **needs scale on both** - "
        "the same negative result; **differs** - opposite signs, or evidence on one model "
        "only."
    )
    add("")
    if len(models) >= 2 and ids:
        verdicts = [
            transfer(models[0].entries[fid], models[1].entries[fid])
            for fid in ids
            if fid in models[0].entries and fid in models[1].entries
        ]
        tally = ", ".join(
            f"{verdicts.count(word)} {word}"
            for word in ("both hold", "same sign", "absent on both", "needs scale on both", "differs")
            if verdicts.count(word)
        )
        add(
            f"The registry holds {len(ids)} finding{'s' if len(ids) != 1 else ''} on the two "
            f"models" + (f" ({tally})" if tally else "") + "."
        )
        add("")
    if not ids:
        add(
            "No finding is registered on the two models yet. A chapter states a finding with "
            "`utils.course.findings.finding`, and its entries appear here once they are in "
            "both models' files (the README's *How to state a finding*)."
        )
        add("")
    for number in sorted({fid[:2] for fid in ids}):
        heading, where = _chapter_heading(number, root)
        add(f"(two-models-{number})=")
        add(f"## {heading}")
        add("")
        if where:
            add(f"In the book: {where}.")
            add("")
        header = ["Finding", "Claim", *(r.label for r in models)]
        if len(models) >= 2:
            header.append("Transfer")
        add("| " + " | ".join(header) + " |")
        add("|" + "---|" * len(header))
        for fid in (i for i in ids if i[:2] == number):
            entries = [r.entries.get(fid) for r in models]
            claim = next(e.claim for e in entries if e is not None)
            row = [f"`{fid}`", _cell(claim), *(_result(e) for e in entries)]
            if len(models) >= 2:
                pair = entries[0], entries[1]
                row.append(transfer(*pair) if None not in pair else "not registered on both")
            add("| " + " | ".join(row) + " |")
        add("")
    if toy is not None and toy.entries:
        add("(two-models-toy)=")
        add("## The toy models")
        add("")
        numbers = sorted({e.chapter for e in toy.entries.values()})
        where = ", ".join(_chapter_heading(n, root)[1] or f"chapter {n}" for n in numbers)
        add(
            f"The small transformers trained from scratch ({where}) do not depend on the "
            "loaded model: they are trained from fixed seeds, so the registry keeps their "
            "findings once, under the key `toy`, and every run asserts them."
        )
        add("")
        add("| Finding | Claim | Evidence | Heads | Measured | Expected |")
        add("|---|---|---|---|---|---|")
        ranked = sorted(toy.entries.values(), key=lambda e: e.id)
        for entry in ranked:
            expected = entry.expect.describe() if entry.expect is not None else "TODO"
            add(
                f"| `{entry.id}` | {_cell(entry.claim)} | {entry.evidence} | "
                f"{', '.join(entry.heads) or '-'} | {entry.measured} | {_cell(expected)} |"
            )
        add("")
        counts = {level: sum(e.evidence == level for e in ranked) for level in EVIDENCE_LEVELS}
        add(
            "Evidence on the toy models: "
            + ", ".join(f"{count} {level}" for level, count in counts.items() if count)
            + "."
        )
        add("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_two_models_page(path: Path = PAGE_PATH) -> None:
    """Write :func:`render_two_models_markdown` to ``path`` (UTF-8)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render_two_models_markdown(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write ``book/two_models.md``; with ``--check``, only say whether it is stale."""
    parser = argparse.ArgumentParser(description="Render book/two_models.md from the findings registry.")
    parser.add_argument("--check", action="store_true", help="only report a stale page")
    options = parser.parse_args(argv)
    if options.check:
        page = render_two_models_markdown()
        fresh = PAGE_PATH.is_file() and PAGE_PATH.read_text(encoding="utf-8") == page
        advice = "up to date" if fresh else "stale: run python -m utils.course.two_models_page"
        print(f"{PAGE_PATH} is {advice}")
        return 0 if fresh else 1
    write_two_models_page()
    print(f"wrote {PAGE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
