"""The survey's taxonomy of attention heads, discovery methods and benchmarks.

The classification scheme of *Attention Heads of Large Language Models: A Survey*
(Zheng et al., 2024, arXiv:2409.03752; BibTeX key ``zheng2024attention``) is data, kept
in ``taxonomy.yaml`` beside this module; this module is its schema, loads and validates
it on import, answers questions about it and renders it:

* :data:`STAGES` - the four stages of the survey's framework (section 3, Figure 6);
* :data:`HEAD_TYPES` - every special head type the survey names (Figure 7 and
  sections 3.2-3.5), each with its stage, sub-category, a paraphrased description,
  the papers that introduced it and the course chapter that demonstrates it;
* :data:`METHODS` - the discovery methods of Tables 1 and 2 (section 4);
* :data:`BENCHMARKS` - the benchmarks of Tables 3 and 4 (section 5);
* the page ``book/taxonomy.md``, rendered by :mod:`utils.course.taxonomy_page`.

The schema: each record is one of the frozen dataclasses below (fields, types and
defaults; checked by :mod:`utils.course.schema`), and :func:`load_taxonomy` checks what
relates records to each other - stage codes and sub-categories, method families, unique
names and aliases, chapter slugs from the course plan. A bad file fails on import with a
message that names the record.

A ``chapter`` field is a notebook slug such as ``"notebooks/01_knowledge_recalling"``,
set only once that chapter really demonstrates the item; the page links it when the
chapter is in ``_toc.yml`` (:func:`utils.course.chapters.chapter_slugs`).
``planned_chapters`` records where the course plan intends to cover the item.

Regenerate the page after editing ``taxonomy.yaml``::

    python -m utils.course.taxonomy            # writes book/taxonomy.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from utils.course.chapters import REPO_ROOT
from utils.course.schema import DataError, records

__all__ = [
    "REPO_ROOT",
    "DATA_PATH",
    "PAGE_PATH",
    "SURVEY_KEY",
    "STAGE_CODES",
    "StageInfo",
    "STAGES",
    "HeadType",
    "HEAD_TYPES",
    "Method",
    "METHODS",
    "METHOD_FAMILIES",
    "METHOD_SUBFAMILIES",
    "Benchmark",
    "BENCHMARKS",
    "BENCHMARK_KINDS",
    "COURSE_PLAN_CHAPTERS",
    "Taxonomy",
    "load_taxonomy",
    "head_types_by_stage",
    "get_head_type",
    "methods_by_family",
    "benchmarks_by_kind",
    "cited_keys",
    "main",
]

#: The data file (package data: installed with the package).
DATA_PATH: Path = Path(__file__).with_name("taxonomy.yaml")

#: The page this module renders.
PAGE_PATH: Path = REPO_ROOT / "book" / "taxonomy.md"

#: BibTeX key of the survey the course follows.
SURVEY_KEY: str = "zheng2024attention"

#: The four stage codes, in the survey's order.
STAGE_CODES: tuple[str, ...] = ("KR", "ICI", "LR", "EP")

#: The two method families of section 4, each with its groups (the tables' *Type*).
METHOD_SUBFAMILIES: dict[str, tuple[str, ...]] = {
    "Modeling-Free": ("Modification-based", "Replacement-based"),
    "Modeling-Required": ("Training-free", "Training-required"),
}
METHOD_FAMILIES: tuple[str, ...] = tuple(METHOD_SUBFAMILIES)

#: The two kinds of benchmark of section 5.
BENCHMARK_KINDS: tuple[str, ...] = ("mechanism exploration", "common evaluation")

_CHAPTER_SLUG = re.compile(r"notebooks/\d\d_[a-z0-9_]+")


# ---------------------------------------------------------------------------
# The schema: one frozen dataclass per kind of record
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StageInfo:
    """One stage of the survey's four-stage framework.

    Attributes:
        code: Short code, one of ``"KR"``, ``"ICI"``, ``"LR"``, ``"EP"``.
        name: Full name, e.g. ``"Knowledge Recalling"``.
        section: Survey section that describes the stage, e.g. ``"3.2"``.
        description: One paraphrased paragraph on what the stage does.
        chapter: Slug of the course chapter devoted to the stage (the notebook may
            not exist yet).
        subcategories: The survey's sub-groupings of heads within the stage, in the
            order of Figure 7.
    """

    code: str
    name: str
    section: str
    description: str
    chapter: str
    subcategories: tuple[str, ...]


@dataclass(frozen=True)
class HeadType:
    """A kind of special attention head named by the survey.

    Attributes:
        name: Name as used in the course, e.g. ``"Induction head"`` (unique).
        stage: Stage code under which the survey's Figure 7 files the head
            (``"KR"``, ``"ICI"``, ``"LR"`` or ``"EP"``).
        subcategory: The survey's sub-grouping within the stage, one of
            ``STAGES[stage].subcategories``.
        description: One or two paraphrased sentences on what the head does.
        papers: BibTeX keys (in ``book/references.bib``) of the works the survey
            credits for the head.
        chapter: Slug of the course chapter that demonstrates the head, or ``None``
            if no existing chapter covers it yet.
        section: Anchor of the relevant section in that chapter, or ``None``.
        aliases: Other names for the same head (spelling in the survey's figure or
            text, or the common name in the literature).
        other_stages: Further stages the survey associates the head with outside
            Figure 7 (e.g. the IOI walk-through of section 3.6).
        in_figure_7: ``False`` for heads the survey names in its text but not in
            the Figure 7 taxonomy.
        planned_chapters: Chapters that the course plan assigns to the head.
    """

    name: str
    stage: str
    subcategory: str
    description: str
    papers: tuple[str, ...]
    chapter: str | None = None
    section: str | None = None
    aliases: tuple[str, ...] = ()
    other_stages: tuple[str, ...] = ()
    in_figure_7: bool = True
    planned_chapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Method:
    """An experimental method for discovering what heads do (survey Tables 1-2).

    Attributes:
        name: Name used in the course, e.g. ``"Zero ablation"``.
        family: ``"Modeling-Free"`` (Table 1) or ``"Modeling-Required"`` (Table 2).
        subfamily: The survey's grouping within the family (the tables' *Type*
            column), one of ``METHOD_SUBFAMILIES[family]``.
        description: Paraphrased description of the core operation.
        papers: BibTeX keys of the representative works listed by the survey.
        chapter: Slug of the course chapter that teaches the method, or ``None``.
        section: Anchor in that chapter, or ``None``.
        survey_name: The method's label in the survey's table (e.g. ``"Others"``).
        planned_chapters: Chapters the course plan assigns to the method.
    """

    name: str
    family: str
    subfamily: str
    description: str
    papers: tuple[str, ...]
    chapter: str | None = None
    section: str | None = None
    survey_name: str | None = None
    planned_chapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Benchmark:
    """A benchmark used to study or evaluate special heads (survey Tables 3-4).

    Attributes:
        name: Benchmark name as in the survey's table, e.g. ``"IOI"``.
        kind: ``"mechanism exploration"`` (Table 3) or ``"common evaluation"`` (Table 4).
        task: The table's *Type* column, e.g. ``"Word-level reasoning"``.
        description: Paraphrased description of the data.
        papers: BibTeX keys of the work the survey cites for the benchmark.
        source: The table's *Source* column (institution or host).
        planned_chapters: Chapters the course plan assigns to the benchmark.
    """

    name: str
    kind: str
    task: str
    description: str
    papers: tuple[str, ...]
    source: str
    planned_chapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    """The whole data file, validated (see :func:`load_taxonomy`)."""

    course_plan_chapters: tuple[str, ...]
    stages: dict[str, StageInfo]
    head_types: tuple[HeadType, ...]
    methods: tuple[Method, ...]
    benchmarks: tuple[Benchmark, ...]


# ---------------------------------------------------------------------------
# Loading and the rules across records
# ---------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """A head name for matching: lower case, no hyphens, no trailing 'head' or plural 's'.

    ``"Previous-token heads"``, ``"previous token head"`` and ``"previous token"`` all
    become ``"previous token"``, so chapters and published records can use the short
    names papers use ("name mover") for the taxonomy's "Name mover head".
    """
    text = re.sub(r"[\s\-_]+", " ", name.strip().lower())
    text = re.sub(r" heads?$", "", text)
    return text[:-1] if text.endswith("s") and not text.endswith("ss") else text


def _check_chapters(item: Any, where: str, plan: tuple[str, ...]) -> None:
    slugs = [getattr(item, "chapter", None), *getattr(item, "planned_chapters", ())]
    for slug in slugs:
        if slug is not None and slug not in plan:
            raise DataError(
                f"{where} ({item.name!r}): chapter {slug!r} is not in course_plan_chapters"
            )
    if getattr(item, "section", None) is not None and item.chapter is None:
        raise DataError(f"{where} ({item.name!r}): a section is given but no chapter")


def _check_rules(data: Taxonomy, where: str) -> None:
    """The rules that relate records to each other (DataError on the first broken one)."""
    plan = data.course_plan_chapters
    for slug in plan:
        if not _CHAPTER_SLUG.fullmatch(slug):
            raise DataError(f"{where}: course_plan_chapters: {slug!r} is not 'notebooks/NN_slug'")
    if tuple(data.stages) != STAGE_CODES:
        raise DataError(f"{where}: stages must be {list(STAGE_CODES)} in that order")
    for stage in data.stages.values():
        _check_chapters(stage, f"{where}: stages", plan)
    labels: dict[str, str] = {}
    for index, head in enumerate(data.head_types):
        at = f"{where}: head_types[{index}]"
        if head.stage not in data.stages:
            raise DataError(
                f"{at} ({head.name!r}): stage {head.stage!r} is not one of {list(STAGE_CODES)}"
            )
        allowed = data.stages[head.stage].subcategories
        if head.subcategory not in allowed:
            raise DataError(
                f"{at} ({head.name!r}): sub-category {head.subcategory!r} is not one of "
                f"stage {head.stage}'s {list(allowed)}"
            )
        for other in head.other_stages:
            if other not in data.stages or other == head.stage:
                raise DataError(f"{at} ({head.name!r}): other stage {other!r} is not another stage")
        for label in (head.name, *head.aliases):
            owner = labels.setdefault(_normalise(label), head.name)
            if owner != head.name:
                raise DataError(f"{at}: {label!r} also names {owner!r}")
        _check_chapters(head, at, plan)
    for kind, items in (("methods", data.methods), ("benchmarks", data.benchmarks)):
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise DataError(f"{where}: {kind} has duplicate names")
        for index, item in enumerate(items):
            _check_chapters(item, f"{where}: {kind}[{index}]", plan)
    for index, method in enumerate(data.methods):
        groups = METHOD_SUBFAMILIES.get(method.family)
        if groups is None or method.subfamily not in groups:
            raise DataError(
                f"{where}: methods[{index}] ({method.name!r}): family/group "
                f"{method.family!r}/{method.subfamily!r} is not one of {METHOD_SUBFAMILIES}"
            )
    for index, bench in enumerate(data.benchmarks):
        if bench.kind not in BENCHMARK_KINDS:
            raise DataError(
                f"{where}: benchmarks[{index}] ({bench.name!r}): kind {bench.kind!r} is not "
                f"one of {list(BENCHMARK_KINDS)}"
            )


def load_taxonomy(path: Path = DATA_PATH) -> Taxonomy:
    """Read and validate a taxonomy data file.

    Args:
        path: the YAML file; defaults to the package's ``taxonomy.yaml``.

    Raises:
        DataError: the file does not follow the schema (the message names the record).
    """
    path = Path(path)
    where = path.name
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is 10x faster
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as error:
        raise DataError(f"{where} is not valid YAML: {error}") from error
    sections = ("course_plan_chapters", "stages", "head_types", "methods", "benchmarks")
    if not isinstance(raw, dict) or sorted(raw) != sorted(sections):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{where}: the top level must have exactly {list(sections)}, not {found}")
    plan = raw["course_plan_chapters"]
    if not isinstance(plan, list) or not all(isinstance(slug, str) for slug in plan):
        raise DataError(f"{where}: course_plan_chapters must be a list of notebook slugs")
    stages = records(StageInfo, raw["stages"], f"{where}: stages")
    data = Taxonomy(
        course_plan_chapters=tuple(plan),
        stages={stage.code: stage for stage in stages},
        head_types=records(HeadType, raw["head_types"], f"{where}: head_types"),
        methods=records(Method, raw["methods"], f"{where}: methods"),
        benchmarks=records(Benchmark, raw["benchmarks"], f"{where}: benchmarks"),
    )
    if len(data.stages) != len(stages):
        raise DataError(f"{where}: stages has a duplicate code")
    _check_rules(data, where)
    return data


_DATA = load_taxonomy()

#: Every chapter of the course plan, written or not, as notebook slugs.
COURSE_PLAN_CHAPTERS: tuple[str, ...] = _DATA.course_plan_chapters
#: Stage code -> stage, in the survey's order.
STAGES: dict[str, StageInfo] = _DATA.stages
#: Every head type, in the order of the survey's Figure 7.
HEAD_TYPES: tuple[HeadType, ...] = _DATA.head_types
#: The discovery methods, Table 1 then Table 2.
METHODS: tuple[Method, ...] = _DATA.methods
#: The benchmarks, Table 3 then Table 4.
BENCHMARKS: tuple[Benchmark, ...] = _DATA.benchmarks


# ---------------------------------------------------------------------------
# Questions about the data
# ---------------------------------------------------------------------------


def head_types_by_stage(stage: str) -> list[HeadType]:
    """Return the head types that Figure 7 files under a stage, in the survey's order.

    Raises:
        ValueError: If ``stage`` is not a known stage code.
    """
    if stage not in STAGES:
        raise ValueError(
            f"unknown stage {stage!r}; valid stages are {', '.join(STAGE_CODES)}"
        )
    return [head for head in HEAD_TYPES if head.stage == stage]


def get_head_type(name: str) -> HeadType:
    """Look up a head type by its name or one of its aliases.

    Matching ignores case, hyphens, a trailing "head" and a plural 's', so
    ``"previous-token heads"`` finds ``"Previous head"`` and ``"name mover"`` finds
    ``"Name mover head"``.

    Raises:
        KeyError: If no head type has that name or alias.
    """
    wanted = _normalise(name)
    for head in HEAD_TYPES:
        if wanted in {_normalise(n) for n in (head.name, *head.aliases)}:
            return head
    raise KeyError(f"no head type named {name!r} in the taxonomy (utils/course/taxonomy.yaml)")


def methods_by_family(family: str) -> list[Method]:
    """Return the methods of one family, in the order of Tables 1 and 2.

    Raises:
        ValueError: If ``family`` is not one of :data:`METHOD_FAMILIES`.
    """
    if family not in METHOD_FAMILIES:
        raise ValueError(
            f"unknown method family {family!r}; valid families are {', '.join(METHOD_FAMILIES)}"
        )
    return [m for m in METHODS if m.family == family]


def benchmarks_by_kind(kind: str) -> list[Benchmark]:
    """Return the benchmarks of one kind, in table order.

    Raises:
        ValueError: If ``kind`` is not one of :data:`BENCHMARK_KINDS`.
    """
    if kind not in BENCHMARK_KINDS:
        raise ValueError(
            f"unknown benchmark kind {kind!r}; valid kinds are {', '.join(BENCHMARK_KINDS)}"
        )
    return [b for b in BENCHMARKS if b.kind == kind]


def cited_keys() -> set[str]:
    """Return every BibTeX key the taxonomy cites (heads, methods, benchmarks, survey)."""
    keys = {SURVEY_KEY}
    for item in (*HEAD_TYPES, *METHODS, *BENCHMARKS):
        keys.update(item.papers)
    return keys


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.course.taxonomy``: write ``book/taxonomy.md`` (``--check``: only
    report whether it is stale)."""
    # The page's code is its own module; imported here so that chapters importing the
    # data never load it.
    from utils.course.taxonomy_page import main as page_main

    return page_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
