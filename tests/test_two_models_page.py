"""The page "Two models side by side" (book/two_models.md, utils.course.two_models_page),
rendered from the findings registry, and the registry's column of the taxonomy page."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from utils.course import findings as fd
from utils.course import registry as registry_module
from utils.course.chapters import REPO_ROOT
from utils.course.taxonomy import HEAD_TYPES
from utils.course.taxonomy_page import (
    coverage_counts, head_type_evidence, render_taxonomy_markdown, scores_tested_without_effect,
    strongest_finding,
)
from utils.course.two_models_page import (
    PAGE_PATH,
    render_two_models_markdown,
    transfer,
    write_two_models_page,
)

FIXTURE = Path(__file__).resolve().parent / "findings_fixture"


@pytest.fixture(scope="module")
def fixture_registries() -> dict[str, fd.Registry]:
    return fd.load_registries(FIXTURE)


def test_two_models_page_is_up_to_date():
    assert PAGE_PATH.is_file(), "run `python -m utils.course.two_models_page` to create book/two_models.md"
    assert PAGE_PATH.read_text(encoding="utf-8") == render_two_models_markdown(), (
        "book/two_models.md is stale: run `python -m utils.course.two_models_page`"
    )


def test_the_page_is_in_the_book_next_to_the_taxonomy():
    toc = (REPO_ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert re.search(r"- file: book/taxonomy\n\s+- file: book/two_models\n", toc)


def test_the_committed_page_shows_the_toy_findings():
    page = PAGE_PATH.read_text(encoding="utf-8")
    toy = fd.load_registries(fd.REGISTRY_DIR)[fd.TOY_KEY]
    for fid in toy.entries:
        assert f"`{fid}`" in page, fid
    assert "| `16.induction.previous_token_ablation` |" in page
    assert "| causal | L0H0 | 2.58 [2.54, 2.62] (n=256) | ≥ 1 |" in page


def test_the_page_puts_the_models_side_by_side(fixture_registries):
    page = render_two_models_markdown(fixture_registries)
    assert page.splitlines()[4] == "# Two models side by side"
    assert "| Finding | Claim | SmolLM2-135M-Instruct | Gemma 3 270M | Transfer |" in page
    assert "## Chapter 02 · In-Context Identification" in page
    assert "[chapter 02](../notebooks/02_in_context_identification.ipynb)" in page
    row = next(line for line in page.splitlines() if line.startswith("| `02.ioi.name_movers_ablation`"))
    assert "**causal** · L23H3, L29H1 · 0.940 [0.810, 1.07] (n=48)" in row
    assert "**causal** · L15H2 · 1.10 [0.900, 1.30] (n=48)" in row
    assert row.endswith("| both hold |")
    mc = next(line for line in page.splitlines() if line.startswith("| `01.mc.letter_accuracy`"))
    assert "use Qwen2.5-1.5B" in mc and mc.endswith("| needs scale on both |")
    assert "The registry holds 3 findings on the two models (2 both hold, 1 needs scale on both)." in page
    assert page.index("## Chapter 01") < page.index("## Chapter 02") < page.index("## The toy models")
    target = REPO_ROOT / "book" / target_of(page)
    assert target.is_file()


def target_of(page: str) -> str:
    return re.search(r"\]\((\.\./notebooks/[^)#]+)\)", page).group(1)


def test_a_chapter_not_in_the_book_is_named_not_linked(fixture_registries):
    registries = dict(fixture_registries)
    for key in (fd.EMBEDDED_KEY, fd.GEMMA_KEY):
        entry = registries[key].entries["02.ioi.previous_token_score"]
        moved = replace(entry, id="03.induction.score", chapter="03")
        registries[key] = replace(registries[key], entries={"03.induction.score": moved})
    page = render_two_models_markdown(registries)
    assert "## Chapter 03 · Latent reasoning" in page
    assert "`notebooks/03_latent_reasoning.ipynb` (coming)" in page


def finding_with(entry: fd.Finding, evidence: str, value, ci=None, **expect) -> fd.Finding:
    rules = registry_module._expectation(expect, "test") if expect else entry.expect
    return replace(entry, evidence=evidence, measured=fd.Measured(value, ci, 16), expect=rules)


@pytest.mark.parametrize(
    "first, second, verdict",
    [
        (("causal", 0.9, (0.8, 1.0), {"at_least": 0.5}), ("causal", 0.7, (0.6, 0.8), {"at_least": 0.5}), "both hold"),
        (("causal", 0.9, (0.8, 1.0), {"at_least": 0.7}), ("score", 0.3, (0.2, 0.4), {"at_least": 0.1}), "same sign"),
        (("causal", 0.9, None, {"at_least": 0.5}), ("causal", -0.4, None, {"at_most": -0.1}), "differs"),
        (("causal", 0.9, None, {"at_least": 0.5}), ("not found", 0.01, None, {"at_most": 0.1}), "differs"),
        (("not found", 0.01, None, {"at_most": 0.1}), ("not found", 0.02, None, {"at_most": 0.1}), "absent on both"),
        (("needs scale", 0.25, None, {"at_most": 0.4}), ("needs scale", 0.3, None, {"at_most": 0.4}), "needs scale on both"),
        (("score", True, None, {"equals": True}), ("score", True, None, {"equals": True}), "both hold"),
        (("score", "A", None, {"heads_include": ["L1H1"]}), ("score", "A", None, {"heads_include": ["L2H2"]}), "same sign"),
        (("score", "A", None, {"heads_include": ["L1H1"]}), ("score", "B", None, {"heads_include": ["L2H2"]}), "differs"),
    ],
)
def test_transfer(fixture_registries, first, second, verdict):
    base = fixture_registries[fd.EMBEDDED_KEY].entries["02.ioi.previous_token_score"]
    a = finding_with(base, first[0], first[1], first[2], **first[3])
    b = finding_with(base, second[0], second[1], second[2], **second[3])
    assert transfer(a, b) == verdict
    assert transfer(b, a) == verdict


def test_write_two_models_page(tmp_path):
    target = tmp_path / "sub" / "two_models.md"
    write_two_models_page(target)
    assert target.read_text(encoding="utf-8") == render_two_models_markdown()


# --- the taxonomy page's column from the registry ------------------------------------------


def test_a_head_type_measured_on_both_models_shows_each_models_top_head(fixture_registries):
    measured, cell = head_type_evidence("Name mover head", fixture_registries)
    assert measured
    assert cell == "SmolLM2-135M-Instruct: causal, L23H3; Gemma 3 270M: causal, L15H2"
    measured, cell = head_type_evidence("Correct letter head", fixture_registries)
    assert measured and "needs scale (use Qwen2.5-1.5B)" in cell


def test_a_head_type_measured_on_one_model_is_not_yet_measured(fixture_registries):
    registries = dict(fixture_registries)
    gemma = registries[fd.GEMMA_KEY]
    registries[fd.GEMMA_KEY] = replace(
        gemma, entries={k: v for k, v in gemma.entries.items() if v.head_type != "Previous head"}
    )
    measured, cell = head_type_evidence("Previous head", registries)
    assert not measured
    assert cell == "not yet measured (so far SmolLM2-135M-Instruct: score, L0H4); toy models: causal, L0H0"
    measured, cell = head_type_evidence("Induction head", registries)
    assert (measured, cell) == (False, "not yet measured")


def test_the_strongest_evidence_is_shown(fixture_registries):
    smol = fixture_registries[fd.EMBEDDED_KEY]
    base = smol.entries["02.ioi.previous_token_score"]
    weaker = replace(base, id="02.ioi.a_weaker", evidence="not found", power="0.1", heads=("L9H9",))
    stronger = replace(base, id="02.ioi.z_stronger", evidence="causal", heads=("L1H1",))
    registry = replace(smol, entries={e.id: e for e in (weaker, base, stronger)})
    assert strongest_finding(registry, "Previous head") is stronger
    assert strongest_finding(registry, "Induction head") is None
    assert strongest_finding(None, "Previous head") is None


def test_the_taxonomy_page_counts_coverage_from_the_registry(fixture_registries):
    page = render_taxonomy_markdown(registries=fixture_registries)
    assert "So far 3 of the" in page  # name mover, previous-token and correct-letter heads
    counts = coverage_counts(fixture_registries)
    assert counts["not yet measured"] == len(HEAD_TYPES) - 3
    assert sum(counts.values()) == len(HEAD_TYPES)
    levels = {h: min((strongest_finding(r, h).evidence for r in fixture_registries.values() if not r.is_toy),
                     key=fd.EVIDENCE_LEVELS.index)
              for h in ("Name mover head", "Previous head", "Correct letter head")}
    assert counts["causal"] == sum(level == "causal" for level in levels.values())
    assert f"Of those, {counts['causal']} have causal evidence on at least one model" in page
    rows = [line for line in page.splitlines() if line.startswith("| **")]
    assert sum("not yet measured" in line for line in rows) == len(HEAD_TYPES) - 3
    row = next(line for line in page.splitlines() if line.startswith("| **Name mover head**"))
    assert row.endswith("| SmolLM2-135M-Instruct: causal, L23H3; Gemma 3 270M: causal, L15H2 |")
    committed = render_taxonomy_markdown()
    measured = sum(head_type_evidence(h.name, fd.load_registries(fd.REGISTRY_DIR))[0] for h in HEAD_TYPES)
    assert f"So far {measured} of the {len(HEAD_TYPES)} head types" in committed
    iteration = next(line for line in committed.splitlines() if line.startswith("| **Iteration head**"))
    assert "toy models: causal, L0H0" in iteration


def test_a_score_beside_tests_that_found_nothing_says_so(fixture_registries):
    registries = dict(fixture_registries)
    smol = registries[fd.EMBEDDED_KEY]
    base = smol.entries["02.ioi.previous_token_score"]
    assert strongest_finding(smol, "Previous head").evidence == "score"
    measured, before = head_type_evidence("Previous head", registries)
    assert "found no effect" not in before
    ablation = replace(base, id="02.ioi.previous_ablation", evidence="not found", power="0.1", heads=("L0H4",))
    registries[fd.EMBEDDED_KEY] = replace(smol, entries={**smol.entries, ablation.id: ablation})
    _, after = head_type_evidence("Previous head", registries)
    assert after.startswith("SmolLM2-135M-Instruct: score, L0H4 (1 further test found no effect); ")
    # the score stays the level; the count of such head types moves with the entry
    assert coverage_counts(registries) == coverage_counts(fixture_registries)
    levels = {h.name: [strongest_finding(r, h.name) for r in registries.values() if not r.is_toy] for h in HEAD_TYPES}
    at_score = [h for h, es in levels.items() if all(es) and min(
        (e.evidence for e in es), key=fd.EVIDENCE_LEVELS.index) == "score"]
    expected = int("Previous head" in at_score)
    assert scores_tested_without_effect(registries) == expected
    assert scores_tested_without_effect(fixture_registries) == 0
