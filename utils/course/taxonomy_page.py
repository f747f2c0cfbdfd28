"""The page ``book/taxonomy.md``, rendered from the taxonomy's data and the findings
registry.

The taxonomy (``utils/course/taxonomy.yaml``) gives each head type's stage, description,
papers and chapter; the findings registry (:mod:`utils.course.findings`) gives what the
course measured: for each head type and model, the strongest evidence level among the
registry's entries of that head type and the top head of that entry. A head type counts
as measured only when the registry holds an experiment for it on every model (any level,
*not found* and *needs scale* included); otherwise the page says "not yet measured".

Run ``python -m utils.course.taxonomy`` (or this module) after editing
``utils/course/taxonomy.yaml`` or a registry file; ``tests/test_taxonomy.py`` fails while
the committed page is stale.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from utils.course.chapters import chapter_label, chapter_link, chapter_slugs
from utils.course.findings import EVIDENCE_LEVELS, REGISTRY_DIR, Finding, Registry, load_registries
from utils.course.taxonomy import (
    BENCHMARKS,
    HEAD_TYPES,
    METHODS,
    PAGE_PATH,
    STAGE_CODES,
    STAGES,
    SURVEY_KEY,
    head_types_by_stage,
)

__all__ = [
    "coverage_counts", "render_taxonomy_markdown", "write_taxonomy_page", "strongest_finding",
    "head_type_evidence", "scores_tested_without_effect",
]


def _cell(text: str) -> str:
    """Make text safe for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _cite(keys: Iterable[str]) -> str:
    """Return a MyST ``{cite}`` role for the given keys (empty string if none)."""
    keys = tuple(keys)
    return f"{{cite}}`{','.join(keys)}`" if keys else ""


def _where(
    chapter: str | None, section: str | None, planned: tuple[str, ...], covered: frozenset[str]
) -> str:
    """Return the 'where in the course' cell: a link if the chapter is in the book."""
    if chapter is not None and chapter in covered:
        return chapter_link(chapter, section)
    text = "no chapter yet"
    if planned:
        text += " (planned: " + ", ".join(chapter_label(p) for p in planned) + ")"
    return text


def strongest_finding(registry: Registry | None, head_type: str) -> Finding | None:
    """The entry of ``registry`` with the strongest evidence for ``head_type`` (causal
    before score before not found before needs scale; then the one with heads, then by
    id), or ``None`` when the registry has none."""
    if registry is None:
        return None
    entries = [e for e in registry.entries.values() if e.head_type == head_type]
    if not entries:
        return None
    return min(entries, key=lambda e: (EVIDENCE_LEVELS.index(e.evidence), not e.heads, e.id))


def _not_found_beside_score(registry: Registry | None, head_type: str) -> int:
    """How many *not found* entries ``registry`` holds for a head type whose strongest
    evidence is a score: the pattern is there, and a further test of it (an ablation,
    say) found nothing. Zero when the strongest level is anything but score."""
    strongest = strongest_finding(registry, head_type)
    if strongest is None or strongest.evidence != "score":
        return 0
    return sum(e.head_type == head_type and e.evidence == "not found" for e in registry.entries.values())


def _level(entry: Finding, not_found: int = 0) -> str:
    text = entry.evidence
    if entry.heads:
        text += f", {entry.heads[0]}"
    if entry.evidence == "needs scale" and entry.model_to_use:
        text += f" (use {entry.model_to_use})"
    if not_found:
        text += f" ({not_found} further {'test' if not_found == 1 else 'tests'} found no effect)"
    return text


def head_type_evidence(head_type: str, registries: dict[str, Registry]) -> tuple[bool, str]:
    """Whether a head type is measured on every model, and the page's cell for it.

    The cell gives, per model, the strongest evidence and the top head
    (:func:`strongest_finding`) - or "not yet measured" followed by what partial results
    there are - and the toy models' result when they have one (which does not count).
    """
    models = [r for r in registries.values() if not r.is_toy]
    found = [(r, strongest_finding(r, head_type)) for r in models]
    measured = bool(models) and all(entry is not None for _, entry in found)
    parts = [f"{r.label}: {_level(e, _not_found_beside_score(r, head_type))}" for r, e in found if e is not None]
    if measured:
        text = "; ".join(parts)
    else:
        text = "not yet measured" + (f" (so far {'; '.join(parts)})" if parts else "")
    toy = strongest_finding(next((r for r in registries.values() if r.is_toy), None), head_type)
    if toy is not None:
        text += f"; toy models: {_level(toy)}"
    return measured, text


def coverage_counts(registries: dict[str, Registry]) -> dict[str, int]:
    """How many head types stand at each evidence level, for the page's summary.

    A head type measured on every (non-toy) model counts under the strongest level any
    model gives it (one causal experiment on one model makes it ``"causal"``); a head
    type not measured on every model counts as ``"not yet measured"``. The toy models do
    not count. :func:`scores_tested_without_effect` splits the ``"score"`` count.
    """
    counts = {level: 0 for level in EVIDENCE_LEVELS}
    counts["not yet measured"] = 0
    models = [r for r in registries.values() if not r.is_toy]
    for head in HEAD_TYPES:
        entries = [strongest_finding(r, head.name) for r in models]
        if not models or any(entry is None for entry in entries):
            counts["not yet measured"] += 1
            continue
        counts[min((e.evidence for e in entries), key=EVIDENCE_LEVELS.index)] += 1
    return counts


def scores_tested_without_effect(registries: dict[str, Registry]) -> int:
    """Of the head types that :func:`coverage_counts` puts at ``"score"``, how many have
    a *not found* entry beside the score on some model: a further test (an ablation,
    say) found no effect. The page says so, so that a score the course tried to confirm
    and could not is not told as an untested one."""
    models = [r for r in registries.values() if not r.is_toy]
    total = 0
    for head in HEAD_TYPES:
        entries = [strongest_finding(r, head.name) for r in models]
        if not models or any(entry is None for entry in entries):
            continue
        if min((e.evidence for e in entries), key=EVIDENCE_LEVELS.index) == "score":
            total += any(_not_found_beside_score(r, head.name) for r in models)
    return total


def _untested(total: int, tested: int) -> str:
    """The summary's split of the score-level head types: untested, or tested and not
    confirmed."""
    if not tested:
        return "no intervention has tested them"
    return (f"for {tested} of them a further test found no effect, "
            f"{total - tested} {'has' if total - tested == 1 else 'have'} not been tested by one")


def _stage_anchor(code: str) -> str:
    """Return the MyST label of a stage's table."""
    return f"taxonomy-{code.lower()}"


def render_taxonomy_markdown(
    covered: Iterable[str] | None = None, registries: dict[str, Registry] | None = None
) -> str:
    """Render the full taxonomy as a MyST Markdown page.

    The page has a title, an introduction, one table of head types per stage
    (name, sub-category, what it does, papers as ``{cite}`` roles, where in the
    course, what the registry measured), a table of discovery methods and a table of
    benchmarks. An item's chapter is linked only if the chapter is in the book;
    otherwise the cell reads "no chapter yet". The measured column comes from the
    findings registry (:func:`head_type_evidence`).

    Args:
        covered: slugs of the chapters the book has; by default those of ``_toc.yml``
            (not the notebooks on disk, so that an unfinished notebook lying in a
            working tree does not change the page).
        registries: the findings registry by model key; by default the committed one
            (``utils/course/findings/``, not ``$COURSE_FINDINGS_DIR``).

    Returns:
        The page as a string ending in a newline.
    """
    covered = chapter_slugs() if covered is None else frozenset(covered)
    registries = load_registries(REGISTRY_DIR) if registries is None else registries
    evidence = {head.name: head_type_evidence(head.name, registries) for head in HEAD_TYPES}
    model_labels = " and ".join(r.label for r in registries.values() if not r.is_toy)
    lines: list[str] = []
    add = lines.append
    add("% Generated from utils/course/taxonomy.yaml and utils/course/findings/*.yaml by utils.course.taxonomy_page.")
    add("% Do not edit it by hand: edit the YAML files and run `python -m utils.course.taxonomy`.")
    add("")
    add("(taxonomy)=")
    add("# Taxonomy of attention heads")
    add("")
    add(
        "This page lists, as one reference table per stage, every kind of special "
        "attention head named by the survey this course follows "
        f"{_cite([SURVEY_KEY])}, followed by the methods used to discover such heads "
        "and the benchmarks used to study and evaluate them. The grouping into four "
        "stages - Knowledge Recalling, In-Context Identification, Latent Reasoning and "
        "Expression Preparation - is explained in [](framework.md). Descriptions are "
        "short paraphrases; follow the citations for the original evidence."
    )
    add("")
    add(
        "The column *Where in the course* links the chapter that demonstrates each item; "
        "items marked *no chapter yet* give the planned chapter in brackets. The column "
        "*Measured* comes from the course's findings registry (one file per model, "
        f"{model_labels}; see [](two_models.md)): for each model, the strongest evidence "
        "level among the registry's experiments on that head type - *causal* (an "
        "intervention against a control), *score* (attention or attribution only), "
        "*not found* (measured and absent) or *needs scale* (not testable at this size) - "
        "and the top head of that experiment; where a score stands beside tests that found "
        "no effect (an ablation, say), the cell says how many. A head type counts as measured only once "
        "the registry holds an experiment for it on both models; otherwise the cell says "
        "*not yet measured*. Results on the small models trained in chapter 16 are given "
        "beside, and do not count."
    )
    add("")
    n_measured = sum(measured for measured, _ in evidence.values())
    add(f"So far {n_measured} of the {len(HEAD_TYPES)} head types are measured on both models.")
    counts = coverage_counts(registries)
    add(
        f"Of those, {counts['causal']} have causal evidence on at least one model, "
        f"{counts['score']} rest on scores (attention or attribution; "
        f"{_untested(counts['score'], scores_tested_without_effect(registries))}), "
        f"{counts['not found']} were looked for and not found on either model, and "
        f"{counts['needs scale']} {'needs' if counts['needs scale'] == 1 else 'need'} a larger model."
    )
    add("")
    n_heads = len(HEAD_TYPES)
    counts = ", ".join(
        f"{len(head_types_by_stage(code))} {code}" for code in STAGE_CODES
    )
    text_only = [h.name.lower() for h in HEAD_TYPES if not h.in_figure_7]
    add(
        f"In total the survey names {n_heads} head types ({counts}); "
        f"{len(HEAD_TYPES) - len(text_only)} appear in its taxonomy figure (Figure 7) "
        f"and {len(text_only)} ({', '.join(text_only)}) only in its text. Figure 7 "
        "files each head under one stage, although some also act in another stage, "
        "for instance in the survey's walk-through of indirect object identification; "
        "the sub-category column notes those cases."
    )
    add("")

    for code in STAGE_CODES:
        stage = STAGES[code]
        add(f"({_stage_anchor(code)})=")
        add(f"## {stage.name} ({code})")
        add("")
        where_stage = (
            chapter_link(stage.chapter)
            if stage.chapter in covered
            else f"{chapter_label(stage.chapter)} (coming)"
        )
        add(
            f"{stage.description} Survey section {stage.section}; course chapter: "
            f"{where_stage}."
        )
        add("")
        add("| Head type | Sub-category | What it does | Papers | Where in the course | Measured |")
        add("|---|---|---|---|---|---|")
        for head in head_types_by_stage(code):
            name = head.name if head.in_figure_7 else f"{head.name} (text only)"
            if head.aliases:
                name_cell = f"**{_cell(name)}** (also: {_cell(', '.join(head.aliases))})"
            else:
                name_cell = f"**{_cell(name)}**"
            subcategory = head.subcategory
            if head.other_stages:
                subcategory += "; also active in " + ", ".join(head.other_stages)
            add(
                "| "
                + " | ".join(
                    [
                        name_cell,
                        _cell(subcategory),
                        _cell(head.description),
                        _cite(head.papers),
                        _where(head.chapter, head.section, head.planned_chapters, covered),
                        _cell(evidence[head.name][1]),
                    ]
                )
                + " |"
            )
        add("")

    add("(taxonomy-methods)=")
    add("## Discovery methods")
    add("")
    add(
        "The survey sorts the experimental methods used to find special heads by "
        "whether they need a new model (section 4). *Modeling-Free* methods alter an "
        "activation of the studied model and measure the effect on the output; they "
        "either modify the activation while keeping part of it, or replace it "
        "entirely. *Modeling-Required* methods build an extra model: a score or graph "
        "computed without training, or a trained probe or simplified transformer."
    )
    add("")
    add("| Method | Family | Group | Core operation | Representative works | Where in the course |")
    add("|---|---|---|---|---|---|")
    for method in METHODS:
        name = method.name
        if method.survey_name and method.survey_name.lower() != method.name.lower():
            name += f" (table label: *{method.survey_name}*)"
        add(
            "| "
            + " | ".join(
                [
                    f"**{_cell(name)}**",
                    method.family,
                    method.subfamily,
                    _cell(method.description),
                    _cite(method.papers),
                    _where(method.chapter, method.section, method.planned_chapters, covered),
                ]
            )
            + " |"
        )
    add("")

    add("(taxonomy-benchmarks)=")
    add("## Benchmarks")
    add("")
    add(
        "Section 5 of the survey separates *mechanism exploration* datasets, small "
        "simplified tasks with one-token answers built to expose how particular heads "
        "work (Table 3), from *common evaluation* benchmarks, on which researchers "
        "check whether strengthening or weakening a type of head improves a model "
        "overall (Table 4). The *Source* column repeats the survey's attribution."
    )
    add("")
    add("| Benchmark | Kind | Task type | Description | Source | Paper |")
    add("|---|---|---|---|---|---|")
    for bench in BENCHMARKS:
        add(
            "| "
            + " | ".join(
                [
                    f"**{_cell(bench.name)}**",
                    bench.kind,
                    bench.task,
                    _cell(bench.description),
                    bench.source,
                    _cite(bench.papers),
                ]
            )
            + " |"
        )
    add("")
    return "\n".join(lines)


def write_taxonomy_page(path: Path = PAGE_PATH) -> None:
    """Write :func:`render_taxonomy_markdown` to ``path`` (UTF-8, parents created).

    Args:
        path: Destination file, normally ``book/taxonomy.md``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_taxonomy_markdown(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write ``book/taxonomy.md``; with ``--check``, only say whether it is stale."""
    parser = argparse.ArgumentParser(description="Render book/taxonomy.md from taxonomy.yaml.")
    parser.add_argument("--check", action="store_true", help="only report a stale page")
    options = parser.parse_args(argv)
    if options.check:
        page = render_taxonomy_markdown()
        fresh = PAGE_PATH.is_file() and PAGE_PATH.read_text(encoding="utf-8") == page
        advice = "up to date" if fresh else "stale: run python -m utils.course.taxonomy"
        print(f"{PAGE_PATH} is {advice}")
        return 0 if fresh else 1
    write_taxonomy_page()
    print(f"wrote {PAGE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
