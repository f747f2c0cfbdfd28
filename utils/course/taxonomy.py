"""The survey's taxonomy of attention heads, discovery methods and benchmarks, as data.

This module turns the classification scheme of *Attention Heads of Large Language
Models: A Survey* (Zheng et al., 2024, arXiv:2409.03752; BibTeX key
``zheng2024attention``) into typed, importable data:

* :data:`STAGES` - the four stages of the survey's framework (section 3, Figure 6);
* :data:`HEAD_TYPES` - every special head type the survey names (Figure 7 and
  sections 3.2-3.5), each with its stage, sub-category, a paraphrased description,
  the papers that introduced it and the course chapter that demonstrates it;
* :data:`METHODS` - the discovery methods of Tables 1 and 2 (section 4);
* :data:`BENCHMARKS` - the benchmarks of Tables 3 and 4 (section 5).

It also renders the whole taxonomy as a MyST Markdown page
(:func:`render_taxonomy_markdown`, written to ``book/taxonomy.md`` by
:func:`write_taxonomy_page`).

All descriptions are written in our own words; names, numbers and attributions are
taken from the survey. The ``papers`` fields hold BibTeX keys of ``book/references.bib``.

A ``chapter`` field is a notebook slug such as ``"notebooks/03_latent_reasoning"``
(the notebook file is the slug plus ``.ipynb``). It is set only once that chapter
really demonstrates the item; until then it is ``None`` and the page says "not yet
covered". The ``planned_chapters`` field records where the course plan
(``COURSE_PLAN.md``) intends to cover the item.

Regenerate the page after editing this file::

    python -m utils.course.taxonomy            # writes book/taxonomy.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = [
    "REPO_ROOT",
    "SURVEY_KEY",
    "STAGE_CODES",
    "StageInfo",
    "STAGES",
    "HeadType",
    "HEAD_TYPES",
    "Method",
    "METHODS",
    "METHOD_FAMILIES",
    "Benchmark",
    "BENCHMARKS",
    "BENCHMARK_KINDS",
    "COVERED_CHAPTERS",
    "CHAPTER_TITLES",
    "chapter_exists",
    "chapter_label",
    "chapter_link",
    "head_types_by_stage",
    "get_head_type",
    "methods_by_family",
    "benchmarks_by_kind",
    "cited_keys",
    "render_taxonomy_markdown",
    "write_taxonomy_page",
]

#: Root of the repository (the Jupyter Book root): the parent of ``utils/``.
REPO_ROOT: Path = Path(__file__).resolve().parents[1]

#: BibTeX key of the survey the course follows.
SURVEY_KEY: str = "zheng2024attention"

#: The four stage codes, in the survey's order.
STAGE_CODES: tuple[str, ...] = ("KR", "ICI", "LR", "EP")

# ---------------------------------------------------------------------------
# Chapters
# ---------------------------------------------------------------------------

#: Slug -> short title of every chapter in the course plan (whether written or not).
CHAPTER_TITLES: dict[str, str] = {
    "notebooks/00_background": "Background and tools",
    "notebooks/01_knowledge_recalling": "Knowledge Recalling",
    "notebooks/02_in_context_identification": "In-Context Identification",
    "notebooks/03_latent_reasoning": "Latent Reasoning",
    "notebooks/04_expression_preparation": "Expression Preparation",
    "notebooks/05_heads_working_together": "Heads working together",
    "notebooks/10_activation_patching": "Activation patching",
    "notebooks/11_ablation": "Ablation",
    "notebooks/12_directional_addition_subtraction": "Directional addition and subtraction",
    "notebooks/13_scores": "Scores (training-free)",
    "notebooks/14_information_flow_routes": "Information-flow routes",
    "notebooks/15_probing": "Probing",
    "notebooks/16_simplified_model_training": "Simplified-model training",
    "notebooks/20_evaluation": "Evaluation",
    "notebooks/21_beyond_heads_and_transfer": "Beyond heads, and transfer",
}

#: Notebook slugs of the chapters that exist in the book today. Update this set when
#: a chapter is added; :func:`chapter_exists` checks the file system itself.
COVERED_CHAPTERS: frozenset[str] = frozenset(
    {
        "notebooks/00_background",
        "notebooks/01_knowledge_recalling",
        "notebooks/02_in_context_identification",
        "notebooks/10_activation_patching",
        "notebooks/11_ablation",
        "notebooks/12_directional_addition_subtraction",
    }
)

_KR = "notebooks/01_knowledge_recalling"
_ICI = "notebooks/02_in_context_identification"
_LR = "notebooks/03_latent_reasoning"
_EP = "notebooks/04_expression_preparation"
_TOGETHER = "notebooks/05_heads_working_together"
_PATCH = "notebooks/10_activation_patching"
_ABL = "notebooks/11_ablation"
_DIR = "notebooks/12_directional_addition_subtraction"
_SCORES = "notebooks/13_scores"
_FLOW = "notebooks/14_information_flow_routes"
_PROBE = "notebooks/15_probing"
_TOY = "notebooks/16_simplified_model_training"
_EVAL = "notebooks/20_evaluation"


def chapter_exists(slug: str, root: Path = REPO_ROOT) -> bool:
    """Return whether the notebook of a chapter exists on disk.

    Args:
        slug: Chapter slug relative to the book root, e.g. ``"notebooks/03_latent_reasoning"``.
        root: Book (repository) root; defaults to :data:`REPO_ROOT`.

    Returns:
        ``True`` if ``root / (slug + ".ipynb")`` is a file.
    """
    return (Path(root) / f"{slug}.ipynb").is_file()


def chapter_label(slug: str) -> str:
    """Return the short human label of a chapter slug, e.g. ``"chapter 03"``.

    Args:
        slug: Chapter slug such as ``"notebooks/03_latent_reasoning"``.

    Returns:
        ``"chapter NN"`` where ``NN`` is the numeric prefix of the notebook name.

    Raises:
        ValueError: If the slug's file name does not start with a number.
    """
    stem = slug.rsplit("/", 1)[-1]
    match = re.match(r"(\d+)_", stem)
    if match is None:
        raise ValueError(f"chapter slug {slug!r} has no numeric prefix like '03_'")
    return f"chapter {match.group(1)}"


def chapter_link(slug: str, section: str | None = None, *, from_dir: str = "book") -> str:
    """Return a MyST Markdown link to a chapter notebook.

    Args:
        slug: Chapter slug such as ``"notebooks/03_latent_reasoning"``.
        section: Optional anchor inside the chapter (appended after ``#``).
        from_dir: Directory, relative to the book root, of the page holding the link.

    Returns:
        e.g. ``"[chapter 03](../notebooks/03_latent_reasoning.ipynb)"``.
    """
    depth = len([p for p in from_dir.split("/") if p])
    target = "../" * depth + f"{slug}.ipynb"
    if section:
        target += f"#{section}"
    return f"[{chapter_label(slug)}]({target})"


# ---------------------------------------------------------------------------
# Stages
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
            not exist yet; see :func:`chapter_exists`).
        subcategories: The survey's sub-groupings of heads within the stage, in the
            order of Figure 7.
    """

    code: str
    name: str
    section: str
    description: str
    chapter: str
    subcategories: tuple[str, ...]


STAGES: dict[str, StageInfo] = {
    "KR": StageInfo(
        code="KR",
        name="Knowledge Recalling",
        section="3.2",
        description=(
            "The model brings in what it already knows. Knowledge absorbed during "
            "pre-training or fine-tuning lives in the weights (parametric knowledge); "
            "heads of this stage fetch the part of it that bears on the current input, "
            "either by making a first guess or by attending to cues in the prompt, and "
            "write it into the residual stream as raw material for later stages. Some "
            "of them also carry learned biases, such as a preference for answering "
            "'No' to yes/no questions."
        ),
        chapter=_KR,
        subcategories=("General tasks", "Specific tasks"),
    ),
    "ICI": StageInfo(
        code="ICI",
        name="In-Context Identification",
        section="3.3",
        description=(
            "The model reads the prompt itself. Heads of this stage use their QK "
            "circuit to pick out positions that matter - neighbouring or repeated "
            "tokens, syntactic roles, names, sentiment-bearing words, a needle in a "
            "long context - and their OV circuit to copy what they found into the "
            "residual stream, often to the final position where the next token is "
            "predicted. The survey groups them by the kind of information they pick "
            "out: overall structure, syntax, or meaning."
        ),
        chapter=_ICI,
        subcategories=(
            "Overall structural information",
            "Syntactic information",
            "Semantic information",
        ),
    ),
    "LR": StageInfo(
        code="LR",
        name="Latent Reasoning",
        section="3.4",
        description=(
            "The model combines what was recalled and what was read into a "
            "conclusion. Heads of this stage compare information already in the "
            "residual stream (QK) and write the result of that implicit computation "
            "back (OV): continuing a pattern seen earlier in the context, inferring "
            "the task from few-shot examples, incrementing an ordinal, suppressing a "
            "wrong candidate or choosing the right option. The survey splits them "
            "into in-context learning, heads tied to how well the model reasons, and "
            "task-specific heads."
        ),
        chapter=_LR,
        subcategories=("In-context learning", "Effective reasoning", "Task-specific reasoning"),
    ),
    "EP": StageInfo(
        code="EP",
        name="Expression Preparation",
        section="3.5",
        description=(
            "The model turns its internal answer into the token it will emit. Heads "
            "of this stage gather the signals written by earlier stages, amplify the "
            "one that should be said so that it wins after the unembedding and "
            "softmax, and keep the output aligned with the instruction, for example "
            "in the user's language. For easy prompts this stage may be skipped: the "
            "answer written earlier is already the most likely token."
        ),
        chapter=_EP,
        subcategories=("Information aggregation", "Signal amplification", "Instruction alignment"),
    ),
}


# ---------------------------------------------------------------------------
# Head types
# ---------------------------------------------------------------------------


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


HEAD_TYPES: tuple[HeadType, ...] = (
    # ----- Knowledge Recalling (3.2) -------------------------------------------
    HeadType(
        name="Associative memories head",
        stage="KR",
        subcategory="General tasks",
        description=(
            "Its weight matrices behave like an associative memory: training writes "
            "pairs of embeddings into them, and at inference the head returns the "
            "stored partner of whatever it attends to."
        ),
        papers=("bietti2023birth",),
        aliases=("Associative memory head", "Associative memories"),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    HeadType(
        name="Memory head",
        stage="KR",
        subcategory="General tasks",
        description=(
            "Pulls question-relevant content out of parametric knowledge into the "
            "residual stream; when the prompt contradicts what the model memorised, "
            "it pushes the memorised answer against the one given in context."
        ),
        papers=("jin2024cutting",),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    HeadType(
        name="Constant head",
        stage="KR",
        subcategory="Specific tasks",
        description=(
            "On multiple-choice prompts it spreads its attention roughly evenly over "
            "all answer options, so that every candidate stays available downstream."
        ),
        papers=("lieberum2023circuit",),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    HeadType(
        name="Single letter head",
        stage="KR",
        subcategory="Specific tasks",
        description=(
            "On multiple-choice prompts it concentrates its attention on a single "
            "option letter and gives the others little weight."
        ),
        papers=("lieberum2023circuit",),
        aliases=("Single-letter head",),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    HeadType(
        name="Negative head",
        stage="KR",
        subcategory="Specific tasks",
        description=(
            "In binary (yes/no) decisions it attends far more to the negative answer "
            "token than to the positive one and so tilts the model towards 'No' "
            "whatever the truth; it is found with the negative attention score (NAS), "
            "and realigning these heads reduces the bias."
        ),
        papers=("yu2024correcting",),
        chapter=_KR,
        planned_chapters=(_KR, _SCORES),
    ),
    # ----- In-Context Identification (3.3): overall structure ------------------
    HeadType(
        name="Previous head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "Attends from each token to the one just before it and copies that "
            "token's identity forward, so every position knows its predecessor; "
            "induction heads build on it."
        ),
        papers=("olsson2022context",),
        aliases=("Previous token head", "Previous-token head"),
        other_stages=("LR",),
        chapter=_ICI,
        planned_chapters=(_ICI, _LR),
    ),
    HeadType(
        name="Positional head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "Attends by relative position rather than content, typically to an "
            "adjacent token; Ferrando and Voita use the name for heads that track the "
            "previous position, overlapping with the previous head."
        ),
        papers=("ferrando2024information", "voita2019analyzing"),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Rare words head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "Attends to the least frequent tokens of the input, making rare or "
            "unusual words stand out."
        ),
        papers=("voita2019analyzing",),
        aliases=("Rare word head", "Rare-word head"),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Duplicate token head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "Attends from a token to its earlier copies and signals that it is a "
            "repeat; in the IOI circuit it marks the name that occurs twice."
        ),
        papers=("wang2022interpretability",),
        aliases=("Duplicate head", "Duplicate-token head"),
        chapter=_ICI,
        planned_chapters=(_ICI, _TOGETHER),
    ),
    HeadType(
        name="Retrieval head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "In long inputs it finds and copies the exact tokens that answer the "
            "query (a needle in a haystack); its retrieval score is how often its "
            "strongest attention lands on the token being copied."
        ),
        papers=("wu2024retrieval",),
        chapter=_ICI,
        planned_chapters=(_ICI, _SCORES),
    ),
    HeadType(
        name="Global retrieval head",
        stage="ICI",
        subcategory="Overall structural information",
        description=(
            "A retrieval head whose attention reaches the whole context rather than "
            "a local window; KV-cache compression can keep the full cache for these "
            "heads and truncate it for the rest."
        ),
        papers=("tang2024razorattention", "fu2024moa"),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    # ----- ICI: syntactic information ------------------------------------------
    HeadType(
        name="Subword merge head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "Attends across the pieces of a word that the tokenizer split (such as "
            "'happi' + 'ness') so that later layers can treat them as one word."
        ),
        papers=("ferrando2024information",),
        aliases=("Subword-merge head",),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Syntactic head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "Attends from a word to its grammatical partner - a verb to its nominal "
            "subject or direct object, a noun to its adjectival modifier - in effect "
            "marking dependency relations."
        ),
        papers=("voita2019analyzing",),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Mover head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "A family of 'argument parser' heads that copy key facts about the "
            "sentence, such as the subject or its position, to the final position."
        ),
        papers=("yao2024knowledge",),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Name mover head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "Attends to names in the context and copies the attended name to the "
            "final position, raising its logit; in IOI sentences it moves the "
            "indirect object."
        ),
        papers=("wang2022interpretability", "mcdougall2024copy"),
        chapter=_ICI,
        planned_chapters=(_ICI, _TOGETHER),
    ),
    HeadType(
        name="Backup name mover head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "Contributes little normally but takes over the name-moving job when the "
            "main name movers are knocked out, one source of self-repair."
        ),
        papers=("wang2022interpretability", "mcdougall2024copy"),
        chapter=_ICI,
        planned_chapters=(_ICI, _ABL),
    ),
    HeadType(
        name="Negative name mover head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "Attends to names like a name mover but writes against the attended "
            "name, lowering its logit and so keeping name information from "
            "dominating the final position; McDougall et al. explain such heads as "
            "copy suppression."
        ),
        papers=("wang2022interpretability", "mcdougall2024copy"),
        chapter=_ICI,
        planned_chapters=(_ICI, _EP),
    ),
    HeadType(
        name="Letter mover head",
        stage="ICI",
        subcategory="Syntactic information",
        description=(
            "In acronym prompts it attends to the capital first letters of the "
            "preceding words and moves them to the final position, so the next "
            "letter of the acronym can be produced."
        ),
        papers=("garciacarrasco2024acronyms",),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    # ----- ICI: semantic information -------------------------------------------
    HeadType(
        name="Context head",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Extracts task-relevant information from the prompt itself; when the "
            "context contradicts the model's memory, it favours the answer the "
            "context states (the counterpart of the memory head)."
        ),
        papers=("jin2024cutting",),
        chapter=_KR,
        planned_chapters=(_KR, _ICI),
    ),
    HeadType(
        name="Content gatherer head",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Moves the tokens of the correct answer's text to the final position, "
            "where later heads can map that content onto the matching option letter."
        ),
        papers=("lieberum2023circuit", "merullo2024circuit"),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Sentiment summarizer",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Collects the sentiment carried by adjectives and verbs and writes a "
            "summary of it at an intermediate summary position near the end, where "
            "later heads can read it off."
        ),
        papers=("tigges2023linear",),
        aliases=("Sentiment summariser", "Sentiment summarizer head"),
        chapter=_ICI,
        planned_chapters=(_ICI, _DIR),
    ),
    HeadType(
        name="Semantic induction head",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Captures semantic relations between words - part-whole, usage, "
            "category-instance - by attending from one word to its related partner "
            "and raising that partner's logit."
        ),
        papers=("ren2024identifying",),
        chapter=_ICI,
        planned_chapters=(_ICI,),
    ),
    HeadType(
        name="Subject head",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Attends to the subject of a factual prompt and writes attributes of the "
            "subject into the residual stream."
        ),
        papers=("chughtai2024summing",),
        other_stages=("KR",),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    HeadType(
        name="Relation head",
        stage="ICI",
        subcategory="Semantic information",
        description=(
            "Attends to the relation words of a factual prompt (such as 'capital "
            "of') and writes attributes that fit the relation, largely independent "
            "of the subject."
        ),
        papers=("chughtai2024summing",),
        other_stages=("KR",),
        chapter=_KR,
        planned_chapters=(_KR,),
    ),
    # ----- Latent Reasoning (3.4): in-context learning -------------------------
    HeadType(
        name="Summary reader",
        stage="LR",
        subcategory="In-context learning",
        description=(
            "Reads the sentiment summary that a sentiment summarizer stored at the "
            "summary position and turns it into the sentiment label (task "
            "recognition)."
        ),
        papers=("tigges2023linear",),
        aliases=("Summary reader head",),
        planned_chapters=(_LR,),
    ),
    HeadType(
        name="Function vector head",
        stage="LR",
        subcategory="In-context learning",
        description=(
            "One of a few mid-layer heads whose summed outputs form a function "
            "vector: a compact encoding of the task shown by the few-shot examples "
            "that, added to a new context, makes the model carry out that task."
        ),
        papers=("todd2024function",),
        aliases=("Function vector", "Function vector heads"),
        planned_chapters=(_LR,),
    ),
    HeadType(
        name="Induction head",
        stage="LR",
        subcategory="In-context learning",
        description=(
            "Continues patterns of the form `A B ... A` -> `B`: at the current "
            "token it attends to the token that followed an earlier occurrence of "
            "the same token and predicts it, using what previous heads wrote "
            "(task learning)."
        ),
        papers=(
            "olsson2022context",
            "edelman2024evolution",
            "singh2024needs",
            "jian2024linking",
            "crosbie2024induction",
        ),
        other_stages=("ICI",),
        planned_chapters=(_LR, _TOY),
    ),
    HeadType(
        name="In-context head",
        stage="LR",
        subcategory="In-context learning",
        description=(
            "Its QK circuit scores how similar the final position is to each "
            "demonstration label and its OV circuit writes a similarity-weighted mix "
            "of label features, so the answer weighs all labels instead of copying "
            "one. Named in the survey's text (3.4.1) but not in Figure 7."
        ),
        papers=("yu2024incontext",),
        in_figure_7=False,
        planned_chapters=(_LR,),
    ),
    # ----- LR: effective reasoning ---------------------------------------------
    HeadType(
        name="Truthfulness head",
        stage="LR",
        subcategory="Effective reasoning",
        description=(
            "Heads whose activations separate true from false answers; shifting "
            "their outputs along that direction at inference makes answers more "
            "truthful."
        ),
        papers=("li2023inference", "hoscilowicz2024nliti"),
        planned_chapters=(_LR, _PROBE),
    ),
    HeadType(
        name="Accuracy head",
        stage="LR",
        subcategory="Effective reasoning",
        description=(
            "Heads whose activity tracks whether an answer is correct; steering the "
            "model along their activation direction improves accuracy, shown for "
            "cross-lingual information retrieval."
        ),
        papers=("guo2024steering",),
        planned_chapters=(_LR,),
    ),
    HeadType(
        name="Vulnerable head",
        stage="LR",
        subcategory="Effective reasoning",
        description=(
            "Heads that are oversensitive to particular input forms, so irrelevant "
            "changes routed through them can flip the answer; limiting their "
            "influence makes reasoning more robust."
        ),
        papers=("garciacarrasco2024detecting",),
        planned_chapters=(_LR,),
    ),
    # ----- LR: task-specific reasoning -----------------------------------------
    HeadType(
        name="Correct letter head",
        stage="LR",
        subcategory="Task-specific reasoning",
        description=(
            "On multiple-choice prompts it matches the gathered answer text against "
            "the options, using each option's position in the list, and selects the "
            "letter of the matching one."
        ),
        papers=("lieberum2023circuit",),
        aliases=("Correct-letter head",),
        planned_chapters=(_LR,),
    ),
    HeadType(
        name="Iteration head",
        stage="LR",
        subcategory="Task-specific reasoning",
        description=(
            "In step-by-step sequence tasks it attends to the input element needed "
            "for the next step and combines it with the current intermediate state; "
            "studied on the parity problem in small trained transformers."
        ),
        papers=("cabannes2024iteration",),
        planned_chapters=(_LR, _TOY),
    ),
    HeadType(
        name="Successor head",
        stage="LR",
        subcategory="Task-specific reasoning",
        description=(
            "Increments tokens of an ordered series - numbers, days, months - so "
            "that 'Monday' leads to 'Tuesday'; found across models of many sizes."
        ),
        papers=("gould2024successor",),
        planned_chapters=(_LR,),
    ),
    HeadType(
        name="S-inhibition head",
        stage="LR",
        subcategory="Task-specific reasoning",
        description=(
            "In IOI sentences it notices that the subject's name is repeated and "
            "writes a signal that steers the name movers away from it, suppressing "
            "the subject so the other name wins."
        ),
        papers=("wang2022interpretability",),
        aliases=("Inhibition head", "Subject inhibition head"),
        planned_chapters=(_LR, _TOGETHER),
    ),
    # ----- Expression Preparation (3.5) ----------------------------------------
    HeadType(
        name="Mixed head",
        stage="EP",
        subcategory="Information aggregation",
        description=(
            "Linearly combines what subject, relation and other earlier heads wrote "
            "into the residual stream and maps the aggregate onto vocabulary logits."
        ),
        papers=("chughtai2024summing",),
        chapter=_KR,
        planned_chapters=(_KR, _EP),
    ),
    HeadType(
        name="Amplification head",
        stage="EP",
        subcategory="Signal amplification",
        description=(
            "Near the final position it boosts the signal of the correct option "
            "letter so that, after unembedding and softmax, that letter is the most "
            "probable output."
        ),
        papers=("lieberum2023circuit",),
        planned_chapters=(_EP,),
    ),
    HeadType(
        name="Correct head",
        stage="EP",
        subcategory="Signal amplification",
        description=(
            "Late heads that promote the correct answer symbol of a multiple-choice "
            "question at the final position."
        ),
        papers=("wiegreffe2024answer",),
        planned_chapters=(_EP,),
    ),
    HeadType(
        name="Coherence head",
        stage="EP",
        subcategory="Instruction alignment",
        description=(
            "With multilingual input it keeps the reply in the language of the "
            "user's query."
        ),
        papers=("guo2024steering",),
        planned_chapters=(_EP,),
    ),
    HeadType(
        name="Faithfulness head",
        stage="EP",
        subcategory="Instruction alignment",
        description=(
            "Heads associated with whether a chain of thought reflects the model's "
            "actual reasoning; the survey presents boosting them as a way to align "
            "stated reasoning with the answer, while the source paper stresses how "
            "hard faithful reasoning is to obtain."
        ),
        papers=("tanneru2024difficulty",),
        planned_chapters=(_EP,),
    ),
)


def _normalise(name: str) -> str:
    """Lower-case a head name and drop hyphens, extra spaces and a trailing 's'."""
    text = re.sub(r"[\s\-_]+", " ", name.strip().lower())
    return text[:-1] if text.endswith("s") and not text.endswith("ss") else text


def head_types_by_stage(stage: str) -> list[HeadType]:
    """Return the head types that Figure 7 files under a stage, in the survey's order.

    Args:
        stage: Stage code, one of ``"KR"``, ``"ICI"``, ``"LR"``, ``"EP"``.

    Returns:
        The matching :class:`HeadType` objects (a new list).

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

    Matching ignores case, hyphens and a plural 's', so ``"previous-token heads"``
    finds ``"Previous head"``.

    Args:
        name: Name or alias, e.g. ``"Induction head"`` or ``"Duplicate head"``.

    Returns:
        The matching :class:`HeadType`.

    Raises:
        KeyError: If no head type has that name or alias.
    """
    wanted = _normalise(name)
    for head in HEAD_TYPES:
        if wanted in {_normalise(n) for n in (head.name, *head.aliases)}:
            return head
    raise KeyError(f"no head type named {name!r}")


# ---------------------------------------------------------------------------
# Discovery methods (Tables 1 and 2)
# ---------------------------------------------------------------------------

#: The two method families of section 4.
METHOD_FAMILIES: tuple[str, ...] = ("Modeling-Free", "Modeling-Required")


@dataclass(frozen=True)
class Method:
    """An experimental method for discovering what heads do (survey Tables 1-2).

    Attributes:
        name: Name used in the course, e.g. ``"Zero ablation"``.
        family: ``"Modeling-Free"`` (Table 1) or ``"Modeling-Required"`` (Table 2).
        subfamily: The survey's grouping within the family (the tables' *Type*
            column): ``"Modification-based"``, ``"Replacement-based"``,
            ``"Training-free"`` or ``"Training-required"``.
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
    survey_name: str = ""
    planned_chapters: tuple[str, ...] = ()


METHODS: tuple[Method, ...] = (
    # Table 1: Modeling-Free
    Method(
        name="Directional addition",
        family="Modeling-Free",
        subfamily="Modification-based",
        description=(
            "Keep a component's activation but add a vector along a chosen direction "
            "(e.g. the mean difference between positive and negative inputs) and "
            "watch how the output moves."
        ),
        papers=("tigges2023linear", "yu2024correcting", "turner2023activation"),
        survey_name="Directional Addition",
        chapter=_DIR,
        planned_chapters=(_DIR,),
    ),
    Method(
        name="Directional subtraction",
        family="Modeling-Free",
        subfamily="Modification-based",
        description=(
            "Keep a component's activation but remove its component along a chosen "
            "direction, to test whether that information matters and whether other "
            "heads restore it."
        ),
        papers=("tigges2023linear", "liang2024controllable"),
        survey_name="Directional Subtraction",
        chapter=_DIR,
        planned_chapters=(_DIR,),
    ),
    Method(
        name="Zero ablation",
        family="Modeling-Free",
        subfamily="Replacement-based",
        description=(
            "Replace a component's activation with zeros, removing it from the "
            "computation, and measure the change in the output."
        ),
        papers=(
            "wang2022interpretability",
            "yu2024incontext",
            "jin2024cutting",
            "yao2024knowledge",
        ),
        survey_name="Zero Ablation",
        chapter=_ABL,
        planned_chapters=(_ABL,),
    ),
    Method(
        name="Mean ablation",
        family="Modeling-Free",
        subfamily="Replacement-based",
        description=(
            "Replace a component's activation with its average over a reference "
            "dataset, removing input-specific information while keeping the typical "
            "scale."
        ),
        papers=("mcdougall2024copy", "wang2022interpretability"),
        survey_name="Mean Ablation",
        chapter=_ABL,
        planned_chapters=(_ABL,),
    ),
    Method(
        name="Naive activation patching",
        family="Modeling-Free",
        subfamily="Replacement-based",
        description=(
            "Run a clean and a minimally corrupted prompt, copy one component's "
            "activation from one run into the other, and measure how much of the "
            "behaviour moves with it."
        ),
        papers=(
            "merullo2024circuit",
            "todd2024function",
            "wang2022interpretability",
            "lieberum2023circuit",
            "wiegreffe2024answer",
            "heimersheim2024patching",
            "zhang2024best",
        ),
        survey_name="Naïve Activation Patching",
        chapter=_PATCH,
        planned_chapters=(_PATCH,),
    ),
    # Table 2: Modeling-Required
    Method(
        name="Scoring",
        family="Modeling-Required",
        subfamily="Training-free",
        description=(
            "Define a score that links a head's attention or output to a behaviour "
            "(retrieval score, negative attention score, induction score) and rank "
            "heads by it; no new model is trained."
        ),
        papers=(
            "jin2024cutting",
            "wu2024retrieval",
            "crosbie2024induction",
            "yu2024correcting",
            "jian2024linking",
        ),
        survey_name="Scoring",
        planned_chapters=(_SCORES,),
    ),
    Method(
        name="Information flow graph",
        family="Modeling-Required",
        subfamily="Training-free",
        description=(
            "Build a graph whose nodes are token representations and whose edges "
            "are transfers through heads and FFNs, weight each edge by its "
            "importance to its target, and keep the important edges as the route "
            "the model used."
        ),
        papers=("ferrando2024information",),
        survey_name="Others",
        planned_chapters=(_FLOW,),
    ),
    Method(
        name="Probing",
        family="Modeling-Required",
        subfamily="Training-required",
        description=(
            "Train a small classifier on head activations to detect a property "
            "(e.g. truthfulness); heads whose probes succeed are candidates for that "
            "function."
        ),
        papers=(
            "li2023inference",
            "hoscilowicz2024nliti",
            "gould2024successor",
            "guo2024steering",
            "yang2024enhancing",
        ),
        survey_name="Probing",
        planned_chapters=(_PROBE,),
    ),
    Method(
        name="Simplified model training",
        family="Modeling-Required",
        subfamily="Training-required",
        description=(
            "Train a small, controllable transformer on a clean task and study its "
            "heads, then ask whether the large model has heads that work the same way."
        ),
        papers=("edelman2024evolution", "cabannes2024iteration", "elhage2021mathematical"),
        survey_name="Simplified Model Training",
        planned_chapters=(_TOY,),
    ),
)


def methods_by_family(family: str) -> list[Method]:
    """Return the methods of one family, in the order of Tables 1 and 2.

    Args:
        family: ``"Modeling-Free"`` or ``"Modeling-Required"``.

    Returns:
        The matching :class:`Method` objects (a new list).

    Raises:
        ValueError: If ``family`` is not one of :data:`METHOD_FAMILIES`.
    """
    if family not in METHOD_FAMILIES:
        raise ValueError(
            f"unknown method family {family!r}; valid families are {', '.join(METHOD_FAMILIES)}"
        )
    return [m for m in METHODS if m.family == family]


# ---------------------------------------------------------------------------
# Benchmarks (Tables 3 and 4)
# ---------------------------------------------------------------------------

#: The two kinds of benchmark of section 5.
BENCHMARK_KINDS: tuple[str, ...] = ("mechanism exploration", "common evaluation")


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


BENCHMARKS: tuple[Benchmark, ...] = (
    # Table 3: mechanism exploration evaluation
    Benchmark(
        name="LRE",
        kind="mechanism exploration",
        task="Knowledge recalling",
        description=(
            "Subject-relation-object facts grouped by relation, used to study how "
            "models decode relations from subject representations."
        ),
        papers=("hernandez2023linearity",),
        source="MIT",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="ToyMovieReview",
        kind="mechanism exploration",
        task="Sentiment analysis",
        description=(
            "Templated one-line movie reviews whose sentiment comes from a single "
            "adjective and verb, ending in a 'This movie is' completion."
        ),
        papers=("tigges2023linear",),
        source="EleutherAI",
        planned_chapters=(_EVAL, _ICI),
    ),
    Benchmark(
        name="ToyMoodStory",
        kind="mechanism exploration",
        task="Sentiment analysis",
        description=(
            "Templated short stories in which two named people state how they feel "
            "about parties and are then invited to a gala; the model must complete "
            "how one of them feels."
        ),
        papers=("tigges2023linear",),
        source="EleutherAI",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="ICL-MC",
        kind="mechanism exploration",
        task="Token-level reasoning",
        description=(
            "In-context learning of Markov chains: each sequence is sampled from a "
            "fresh random transition matrix, and the model must infer the "
            "transition statistics from the context."
        ),
        papers=("edelman2024evolution",),
        source="Harvard",
        planned_chapters=(_EVAL, _TOY),
    ),
    Benchmark(
        name="Succession",
        kind="mechanism exploration",
        task="Arithmetic reasoning",
        description=(
            "Items of ordered series (numbers, number words, days of the week, "
            "months and the like) whose successor the model must produce."
        ),
        papers=("gould2024successor",),
        source="Cambridge",
        planned_chapters=(_EVAL, _LR),
    ),
    Benchmark(
        name="ColoredObject",
        kind="mechanism exploration",
        task="Word-level reasoning",
        description=(
            "A list of coloured objects followed by a question about the colour of "
            "one of them, answered with a single word."
        ),
        papers=("merullo2024circuit",),
        source="BrownU",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="IOI",
        kind="mechanism exploration",
        task="Word-level reasoning",
        description=(
            "Indirect object identification: sentences with two names, one repeated "
            "as the subject, where the model must complete with the other name."
        ),
        papers=("wang2022interpretability",),
        source="UCB",
        planned_chapters=(_EVAL, _TOGETHER),
    ),
    # Table 4: common evaluation
    Benchmark(
        name="MMLU",
        kind="common evaluation",
        task="Knowledge reasoning",
        description="Multiple-choice exam questions spanning 57 subjects.",
        papers=("hendrycks2020measuring",),
        source="UCB",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="TruthfulQA",
        kind="common evaluation",
        task="Knowledge reasoning",
        description=(
            "Questions written so that a common misconception is the tempting "
            "answer, measuring whether a model repeats falsehoods."
        ),
        papers=("lin2021truthfulqa",),
        source="Oxford",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="SST/SST2",
        kind="common evaluation",
        task="Sentiment analysis",
        description=(
            "Stanford Sentiment Treebank: movie-review sentences with fine-grained "
            "sentiment labels (SST) or binary positive/negative labels (SST-2)."
        ),
        papers=("socher2013recursive",),
        source="Stanford",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="Needle-in-a-Haystack",
        kind="common evaluation",
        task="Long context retrieval",
        description=(
            "A single fact is hidden at a chosen depth inside long filler text and "
            "the model is asked to retrieve it, across context lengths and depths."
        ),
        papers=("kamradt2023needle",),
        source="GitHub",
        planned_chapters=(_EVAL, _ICI),
    ),
    Benchmark(
        name="TriviaQA",
        kind="common evaluation",
        task="Text comprehension",
        description=(
            "Trivia questions paired with evidence documents gathered independently "
            "of the questions, for reading comprehension."
        ),
        papers=("joshi2017triviaqa",),
        source="UoW",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="AGENDA",
        kind="common evaluation",
        task="Text comprehension",
        description=(
            "Scientific abstracts paired with knowledge graphs of their entities and "
            "relations, for text generation from graphs."
        ),
        papers=("koncelkedziorski2019text",),
        source="UoW",
        planned_chapters=(_EVAL,),
    ),
    Benchmark(
        name="AGNews",
        kind="common evaluation",
        task="Text comprehension",
        description="News articles to be classified into four topic categories.",
        papers=("zhang2015character",),
        source="NYU",
        planned_chapters=(_EVAL,),
    ),
)


def benchmarks_by_kind(kind: str) -> list[Benchmark]:
    """Return the benchmarks of one kind, in table order.

    Args:
        kind: ``"mechanism exploration"`` (Table 3) or ``"common evaluation"`` (Table 4).

    Returns:
        The matching :class:`Benchmark` objects (a new list).

    Raises:
        ValueError: If ``kind`` is not one of :data:`BENCHMARK_KINDS`.
    """
    if kind not in BENCHMARK_KINDS:
        raise ValueError(
            f"unknown benchmark kind {kind!r}; valid kinds are {', '.join(BENCHMARK_KINDS)}"
        )
    return [b for b in BENCHMARKS if b.kind == kind]


def cited_keys() -> set[str]:
    """Return every BibTeX key the taxonomy cites (heads, methods, benchmarks, survey).

    Returns:
        The set of keys; each must exist in ``book/references.bib``.
    """
    keys = {SURVEY_KEY}
    for item in (*HEAD_TYPES, *METHODS, *BENCHMARKS):
        keys.update(item.papers)
    return keys


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Make text safe for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _cite(keys: Iterable[str]) -> str:
    """Return a MyST ``{cite}`` role for the given keys (empty string if none)."""
    keys = tuple(keys)
    return f"{{cite}}`{','.join(keys)}`" if keys else ""


def _where(chapter: str | None, section: str | None, planned: tuple[str, ...]) -> str:
    """Return the 'where in the course' cell: a link if the chapter is covered.

    Coverage is read from :data:`COVERED_CHAPTERS` rather than the file system, so
    the page does not change with unfinished notebooks lying in a working tree.
    """
    if chapter is not None and chapter in COVERED_CHAPTERS:
        return chapter_link(chapter, section)
    text = "not yet covered"
    if planned:
        text += " (planned: " + ", ".join(chapter_label(p) for p in planned) + ")"
    return text


def _stage_anchor(code: str) -> str:
    """Return the MyST label of a stage's table."""
    return f"taxonomy-{code.lower()}"


def render_taxonomy_markdown() -> str:
    """Render the full taxonomy as a MyST Markdown page.

    The page has a title, an introduction, one table of head types per stage
    (name, sub-category, what it does, papers as ``{cite}`` roles, where in the
    course), a table of discovery methods and a table of benchmarks. Chapters are
    linked only if their notebook exists; otherwise the cell reads
    "not yet covered".

    Returns:
        The page as a string ending in a newline.
    """
    lines: list[str] = []
    add = lines.append
    add("% This page is generated by utils/course/taxonomy.py (write_taxonomy_page).")
    add("% Do not edit it by hand: edit utils/course/taxonomy.py and run `python -m utils.course.taxonomy`.")
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
        "The last column says where the course demonstrates each item on a real "
        "model. Entries marked *not yet covered* have no chapter yet; the planned "
        "chapter is given in brackets."
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
            if stage.chapter in COVERED_CHAPTERS
            else f"{chapter_label(stage.chapter)} (coming)"
        )
        add(
            f"{stage.description} Survey section {stage.section}; course chapter: "
            f"{where_stage}."
        )
        add("")
        add("| Head type | Sub-category | What it does | Papers | Where in the course |")
        add("|---|---|---|---|---|")
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
                        _where(head.chapter, head.section, head.planned_chapters),
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
                    _where(method.chapter, method.section, method.planned_chapters),
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


def write_taxonomy_page(path: Path) -> None:
    """Write :func:`render_taxonomy_markdown` to ``path`` (UTF-8, parents created).

    Args:
        path: Destination file, normally ``REPO_ROOT / "book" / "taxonomy.md"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_taxonomy_markdown(), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover - convenience entry point
    target = REPO_ROOT / "book" / "taxonomy.md"
    write_taxonomy_page(target)
    print(f"wrote {target}")
