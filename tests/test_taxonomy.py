"""The taxonomy's data and schema (utils/course/taxonomy.yaml, utils.course.taxonomy), its
page (book/taxonomy.md) and book/references.bib.

Fast and model-free; paths are resolved from this file, not the working directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pybtex.database import parse_file  # noqa: E402

from utils.course import chapters as ch  # noqa: E402
from utils.course import taxonomy as tx  # noqa: E402
from utils.course.schema import DataError  # noqa: E402
from utils.course.taxonomy_page import render_taxonomy_markdown, write_taxonomy_page  # noqa: E402

BIB_PATH = REPO_ROOT / "book" / "references.bib"
PAGE_PATH = REPO_ROOT / "book" / "taxonomy.md"

#: Keys that chapters are promised to be able to cite (see the course brief).
REQUIRED_KEYS = {
    "zheng2024attention",
    "elhage2021mathematical",
    "olsson2022context",
    "wang2022interpretability",
    "nostalgebraist2020logitlens",
    "geva2023dissecting",
    "meng2022locating",
    "vig2020causal",
    "heimersheim2024patching",
    "zhang2024best",
    "nanda2023attribution",
    "syed2023attribution",
    "ferrando2024information",
    "wu2024retrieval",
    "yu2024correcting",
    "todd2024function",
    "gould2024successor",
    "mcdougall2024copy",
    "li2023inference",
    "lieberum2023circuit",
    "tigges2023linear",
    "allal2025smollm2",
    "nanda2022transformerlens",
    "conmy2023towards",
    "radford2019language",
    "vaswani2017attention",
}


@pytest.fixture(scope="module")
def bib_keys() -> set[str]:
    """All BibTeX keys of book/references.bib (parsed with pybtex)."""
    return set(parse_file(str(BIB_PATH)).entries.keys())


# --- stages -----------------------------------------------------------------


def test_stage_codes_and_chapter_slugs() -> None:
    assert tuple(tx.STAGES) == ("KR", "ICI", "LR", "EP") == tx.STAGE_CODES
    assert tx.STAGES["KR"].chapter == "notebooks/01_knowledge_recalling"
    assert tx.STAGES["ICI"].chapter == "notebooks/02_in_context_identification"
    assert tx.STAGES["LR"].chapter == "notebooks/03_latent_reasoning"
    assert tx.STAGES["EP"].chapter == "notebooks/04_expression_preparation"
    assert [s.section for s in tx.STAGES.values()] == ["3.2", "3.3", "3.4", "3.5"]
    for code, stage in tx.STAGES.items():
        assert stage.code == code
        assert stage.name and len(stage.description) > 100


@pytest.mark.parametrize("stage", tx.STAGE_CODES)
def test_every_stage_has_head_types(stage: str) -> None:
    heads = tx.head_types_by_stage(stage)
    assert heads, f"stage {stage} has no head types"
    assert all(h.stage == stage for h in heads)


def test_head_types_by_stage_rejects_unknown_stage() -> None:
    with pytest.raises(ValueError) as excinfo:
        tx.head_types_by_stage("XYZ")
    for code in tx.STAGE_CODES:
        assert code in str(excinfo.value)


def test_head_types_by_stage_partitions_all_heads() -> None:
    total = sum(len(tx.head_types_by_stage(s)) for s in tx.STAGE_CODES)
    assert total == len(tx.HEAD_TYPES)


# --- head types ---------------------------------------------------------------


def test_head_type_names_unique() -> None:
    names = [h.name for h in tx.HEAD_TYPES]
    assert len(names) == len(set(names))
    # aliases must not collide with another head's name or alias either
    seen: dict[str, str] = {}
    for head in tx.HEAD_TYPES:
        for label in (head.name, *head.aliases):
            key = label.lower()
            assert seen.setdefault(key, head.name) == head.name, f"{label!r} is ambiguous"


def test_head_type_fields_are_well_formed() -> None:
    for head in tx.HEAD_TYPES:
        assert head.stage in tx.STAGES, head.name
        assert head.subcategory in tx.STAGES[head.stage].subcategories, head.name
        assert head.description.strip(), head.name
        assert head.papers, f"{head.name} cites no paper"
        assert isinstance(head.papers, tuple)
        assert all(s in tx.STAGES and s != head.stage for s in head.other_stages)
        if head.section is not None:
            assert head.chapter is not None, f"{head.name}: section without chapter"
        for slug in head.planned_chapters:
            assert slug in tx.COURSE_PLAN_CHAPTERS, f"{head.name}: unknown planned chapter {slug}"


def test_survey_figure_7_heads_present() -> None:
    """Every head type of Figure 7 (and the in-context head of 3.4.1) is listed."""
    expected = {
        "KR": {"Associative memories head", "Memory head", "Constant head",
               "Single letter head", "Negative head"},
        "ICI": {"Previous head", "Positional head", "Rare words head",
                "Duplicate token head", "Retrieval head", "Global retrieval head",
                "Subword merge head", "Syntactic head", "Mover head", "Name mover head",
                "Backup name mover head", "Letter mover head", "Negative name mover head",
                "Context head", "Content gatherer head", "Sentiment summarizer",
                "Semantic induction head", "Subject head", "Relation head"},
        "LR": {"Summary reader", "Function vector head", "Induction head",
               "In-context head", "Truthfulness head", "Accuracy head", "Vulnerable head",
               "Correct letter head", "Iteration head", "Successor head",
               "S-inhibition head"},
        "EP": {"Mixed head", "Amplification head", "Correct head", "Coherence head",
               "Faithfulness head"},
    }
    for stage, names in expected.items():
        assert {h.name for h in tx.head_types_by_stage(stage)} == names, stage


def test_get_head_type_accepts_aliases() -> None:
    assert tx.get_head_type("previous-token heads").name == "Previous head"
    assert tx.get_head_type("name mover").name == "Name mover head"  # papers' short names
    assert tx.get_head_type("Copy suppression heads").name == "Negative name mover head"
    assert tx.get_head_type("Duplicate head").name == "Duplicate token head"
    assert tx.get_head_type("inhibition head").name == "S-inhibition head"
    assert tx.get_head_type("Induction head").stage == "LR"
    with pytest.raises(KeyError):
        tx.get_head_type("Quantum head")


# --- the data file and its schema ---------------------------------------------------


def _edited_copy(tmp_path: Path, edit) -> Path:
    """A copy of taxonomy.yaml with ``edit`` applied to its parsed data."""
    data = yaml.safe_load(tx.DATA_PATH.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_the_data_file_is_what_the_module_serves(tmp_path: Path) -> None:
    copy = tx.load_taxonomy(_edited_copy(tmp_path, lambda data: None))
    assert copy.head_types == tx.HEAD_TYPES and copy.stages == tx.STAGES
    assert copy.methods == tx.METHODS and copy.benchmarks == tx.BENCHMARKS
    assert all(isinstance(head.papers, tuple) for head in tx.HEAD_TYPES)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["head_types"][0].update(stage="XX"),
         "head_types[0] ('Associative memories head'): stage 'XX' is not one of"),
        (lambda d: d["head_types"][0].update(subcategory="Syntactic information"),
         "sub-category 'Syntactic information' is not one of stage KR's"),
        (lambda d: d["head_types"][0].update(colour="red"), "unknown field(s) ['colour']"),
        (lambda d: d["head_types"][0].pop("papers"), "missing field 'papers'"),
        (lambda d: d["head_types"][0].update(papers="bietti2023birth"),
         "field 'papers': expected a list of strings"),
        (lambda d: d["head_types"][0].update(in_figure_7="yes"), "expected true or false"),
        (lambda d: d["head_types"][0].update(description=" "), "field 'description': expected a string"),
        (lambda d: d["head_types"][1].update(aliases=["Associative memory heads"]),
         "'Associative memory heads' also names 'Associative memories head'"),
        (lambda d: d["head_types"][0].update(planned_chapters=["notebooks/99_nothing"]),
         "'notebooks/99_nothing' is not in course_plan_chapters"),
        (lambda d: d["head_types"][0].update(section="x", chapter=None), "a section is given but no chapter"),
        (lambda d: d["methods"][0].update(family="Modeling-Optional"), "family/group"),
        (lambda d: d["benchmarks"][0].update(kind="vibes"), "kind 'vibes' is not one of"),
        (lambda d: d["stages"].reverse(), "stages must be ['KR', 'ICI', 'LR', 'EP']"),
        (lambda d: d.pop("methods"), "the top level must have exactly"),
        (lambda d: d.update(head_types=[]), "head_types: expected a non-empty list"),
    ],
)
def test_a_bad_data_file_is_refused_naming_the_record(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(DataError) as excinfo:
        tx.load_taxonomy(_edited_copy(tmp_path, edit))
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith("taxonomy.yaml")


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text("stages: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        tx.load_taxonomy(path)


# --- references ---------------------------------------------------------------


def test_bibliography_parses_and_has_required_keys(bib_keys: set[str]) -> None:
    missing = REQUIRED_KEYS - bib_keys
    assert not missing, f"missing BibTeX entries: {sorted(missing)}"


def test_every_cited_key_exists(bib_keys: set[str]) -> None:
    missing = tx.cited_keys() - bib_keys
    assert not missing, f"cited but not in references.bib: {sorted(missing)}"


def test_book_pages_cite_only_known_keys(bib_keys: set[str]) -> None:
    """Every {cite} role in book/*.md names keys that exist."""
    pattern = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
    for page in sorted((REPO_ROOT / "book").glob("*.md")):
        for match in pattern.finditer(page.read_text(encoding="utf-8")):
            for key in match.group(1).split(","):
                assert key.strip() in bib_keys, f"{page.name}: unknown key {key!r}"


def test_bib_entries_have_author_title_year() -> None:
    db = parse_file(str(BIB_PATH))
    for key, entry in db.entries.items():
        assert entry.persons.get("author"), f"{key} has no author"
        assert entry.fields.get("title"), f"{key} has no title"
        assert re.fullmatch(r"\d{4}", entry.fields.get("year", "")), f"{key} has no year"


# --- chapters -----------------------------------------------------------------


def test_chapter_exists_checks_the_file(tmp_path: Path) -> None:
    assert not ch.chapter_exists("notebooks/99_missing", root=tmp_path)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "99_missing.ipynb").write_text("{}")
    assert ch.chapter_exists("notebooks/99_missing", root=tmp_path)


def test_every_non_none_chapter_is_in_the_book() -> None:
    covered = ch.chapter_slugs()
    for item in [*tx.HEAD_TYPES, *tx.METHODS]:
        if item.chapter is not None:
            assert item.chapter in covered, f"{item.name}: {item.chapter} is not in _toc.yml"
            assert ch.chapter_exists(item.chapter), f"{item.name}: {item.chapter} missing"


def test_every_chapter_of_the_book_is_in_the_course_plan() -> None:
    for chapter in ch.chapters():
        assert chapter.slug in tx.COURSE_PLAN_CHAPTERS, (
            f"{chapter.slug} is in _toc.yml but not in course_plan_chapters of taxonomy.yaml"
        )


def test_chapter_link_format() -> None:
    link = ch.chapter_link("notebooks/03_latent_reasoning")
    assert link == "[chapter 03](../notebooks/03_latent_reasoning.ipynb)"
    assert ch.chapter_link("notebooks/03_latent_reasoning", "induction").endswith(
        ".ipynb#induction)"
    )


# --- methods and benchmarks ----------------------------------------------------


def test_methods_cover_both_families() -> None:
    families = {m.family for m in tx.METHODS}
    assert families == {"Modeling-Free", "Modeling-Required"}
    assert {m.subfamily for m in tx.methods_by_family("Modeling-Free")} == {
        "Modification-based",
        "Replacement-based",
    }
    assert {m.subfamily for m in tx.methods_by_family("Modeling-Required")} == {
        "Training-free",
        "Training-required",
    }
    with pytest.raises(ValueError):
        tx.methods_by_family("Modeling-Optional")
    assert len({m.name for m in tx.METHODS}) == len(tx.METHODS)
    assert all(m.papers for m in tx.METHODS)


def test_benchmarks_cover_both_kinds() -> None:
    assert {b.kind for b in tx.BENCHMARKS} == {"mechanism exploration", "common evaluation"}
    assert len(tx.benchmarks_by_kind("mechanism exploration")) == 7  # Table 3
    assert len(tx.benchmarks_by_kind("common evaluation")) == 7  # Table 4
    with pytest.raises(ValueError):
        tx.benchmarks_by_kind("vibes")
    assert all(b.papers and b.task and b.source for b in tx.BENCHMARKS)


# --- rendered page ------------------------------------------------------------


def test_rendered_page_contains_every_name() -> None:
    page = render_taxonomy_markdown()
    assert page.splitlines()[4].startswith("# ")
    for item in (*tx.HEAD_TYPES, *tx.METHODS, *tx.BENCHMARKS):
        assert item.name in page, item.name
    for stage in tx.STAGES.values():
        assert f"## {stage.name}" in page


def test_rendered_page_links_only_to_existing_chapters() -> None:
    page = render_taxonomy_markdown()
    for target in re.findall(r"\]\((\.\./[^)#]+)", page):
        assert (REPO_ROOT / "book" / target).resolve().is_file(), target
    without_chapter = [item for item in (*tx.HEAD_TYPES, *tx.METHODS) if item.chapter is None]
    assert page.count("no chapter yet") == len(without_chapter) + page.count("*no chapter yet*")


def test_taxonomy_page_is_up_to_date() -> None:
    assert PAGE_PATH == tx.PAGE_PATH
    assert PAGE_PATH.is_file(), "run `python -m utils.course.taxonomy` to create book/taxonomy.md"
    assert PAGE_PATH.read_text(encoding="utf-8") == render_taxonomy_markdown(), (
        "book/taxonomy.md is stale: run `python -m utils.course.taxonomy`"
    )


def test_write_taxonomy_page(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "taxonomy.md"
    write_taxonomy_page(target)
    assert target.read_text(encoding="utf-8") == render_taxonomy_markdown()


# --- other book pages ------------------------------------------------------------


def _glossary_entries() -> list[list[str]]:
    """Parse book/glossary.md into entries, each a list of its term lines."""
    text = (REPO_ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    body = text.split("```{glossary}", 1)[1].split("```", 1)[0]
    entries: list[list[str]] = []
    previous_was_term = False
    for line in body.splitlines():
        if line and not line[0].isspace() and not line.startswith(":"):
            if previous_was_term:
                entries[-1].append(line.strip())
            else:
                entries.append([line.strip()])
            previous_was_term = True
        else:
            previous_was_term = False
    return entries


def test_glossary_is_alphabetical_and_complete() -> None:
    entries = _glossary_entries()
    firsts = [e[0].lower() for e in entries]
    assert firsts == sorted(firsts), "glossary entries must be alphabetical"
    terms = {t.lower() for e in entries for t in e}
    for needed in [
        "circuit", "residual stream", "knowledge circuit", "activation patching",
        "ablation", "direct effect", "indirect effect", "total effect", "logit lens",
        "attention pattern", "qk circuit", "ov circuit", "hook_z",
        "direct logit attribution", "zero ablation", "mean ablation",
        "resample ablation", "logit difference", "clean run", "corrupted run",
        "grouped-query attention", "rope", "rmsnorm", "bos token", "attention sink",
    ]:
        assert needed in terms, needed


def test_bibliography_page_has_directive() -> None:
    text = (REPO_ROOT / "book" / "bibliography.md").read_text(encoding="utf-8")
    assert "# Bibliography" in text
    assert "```{bibliography}" in text


def test_coverage_follows_the_table_of_contents() -> None:
    """A chapter's items are linked once the chapter is in the book, and only then."""
    link = "[chapter 02](../notebooks/02_in_context_identification.ipynb)"
    assert link in render_taxonomy_markdown()
    without = render_taxonomy_markdown(covered=ch.chapter_slugs() - {"notebooks/02_in_context_identification"})
    assert link not in without and "chapter 02 (coming)" in without
