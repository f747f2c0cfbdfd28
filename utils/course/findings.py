"""The findings registry: every claim a chapter states, as data, one YAML file per model.

A chapter does not assert a bare threshold; it states a *finding*::

    finding("02.ioi.name_movers_ablation", samples=drops, heads=name_movers, model=model)

and the registry says what was measured for it, on which heads, how strongly the
evidence supports it and what a run must show for the claim to stand. The files live in
``utils/course/findings/`` (package data, so a Colab install has them), one per model,
named by its registry key: ``SmolLM2-135M-Instruct.yaml``, ``gemma-3-270m.yaml``, and
``toy.yaml`` for the small models that chapter 16 trains from scratch.

**An entry** (the key is the finding's id, dotted and prefixed by its chapter)::

    02.ioi.name_movers_ablation:
      chapter: '02'
      claim: Mean-ablating the name movers lowers the IOI logit difference.
      head_type: Name mover head          # a taxonomy name, or null
      evidence: causal                    # causal | score | not found | needs scale
      heads: [L23H3, L29H1]               # the heads found, as utils.core.heads.Head prints
      measured: {value: 0.94, ci: [0.81, 1.07], n: 48}
      expect: {at_least: 0.5}             # checked against the CI when there is one
      margin: measured 0.94 (CI 0.81-1.07); the bound keeps half of it
      note: ...                           # optional

``expect`` combines any of ``at_least: x`` (the CI's lower bound, or the value when there
is no CI, is ``>= x``), ``at_most: x`` (upper bound ``<= x``), ``between: [a, b]``
(both), ``sign: "+"`` or ``"-"`` (the CI excludes 0 on that side), ``equals: v`` (bools,
ints, strings) and ``heads_include: [...]`` (the heads passed by the run include these).
A ``not found`` entry adds ``power`` (the effect the test could have detected); a
``needs scale`` entry adds ``model_to_use`` and ``why``.

**Evidence levels.** *causal*: an intervention (ablation, patching, steering) against a
control; *score*: attention patterns, attribution or weights only; *not found*: measured
and absent, with the power of the test; *needs scale*: the task cannot be done at this
size, and the entry names the model to use.

**What a call does.** On a model the registry knows, :func:`finding` checks the run's
measurement against the entry's expectation and prints ``✓ ...`` or raises
:class:`FindingFailed`; a known model with an id missing from its file is an error (the
registry of a known model is complete). On any other model (``gpt2`` on Colab), or with
``COURSE_FINDINGS_UNKNOWN=1``, nothing is asserted: the value is *reported* beside the
embedded model's registered one (and beside published heads where
:mod:`utils.course.published` has them). ``COURSE_FINDINGS_RECORD=<file.jsonl>`` makes
every call append its measurement to that file and never raise; then
``python -m utils.course.findings record <file.jsonl> --model <key>`` writes the values
into the model's file, creating missing entries with ``TODO`` markers for a human to
choose the evidence level and the expectation. ``python -m utils.course.findings check``
validates every file and reports what is incomplete. ``COURSE_FINDINGS_DIR`` points the
whole module at another registry folder (the tests use it).

The taxonomy page and the page "Two models side by side" (:mod:`~utils.course.two_models_page`)
are rendered from the committed registry. The library never imports this module.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from utils.course.schema import DataError
from utils.course.taxonomy import COURSE_PLAN_CHAPTERS, HEAD_TYPES, get_head_type

__all__ = [
    "REGISTRY_DIR",
    "DIR_ENV_VAR",
    "RECORD_ENV_VAR",
    "UNKNOWN_ENV_VAR",
    "EMBEDDED_KEY",
    "GEMMA_KEY",
    "TOY_KEY",
    "EVIDENCE_LEVELS",
    "TODO",
    "DataError",
    "FindingFailed",
    "FindingNotRegistered",
    "Measured",
    "Expectation",
    "Finding",
    "Registry",
    "FindingResult",
    "FindingsTable",
    "registry_dir",
    "registry_key",
    "load_registry",
    "load_registries",
    "model_keys",
    "finding",
    "findings_log",
    "clear_findings_log",
    "findings_table",
    "dump_registry",
    "write_registry",
    "RecordReport",
    "record_into",
    "CheckReport",
    "check_registry",
    "main",
]

#: The committed registry: one YAML file per model (package data).
REGISTRY_DIR: Path = Path(__file__).with_name("findings")

#: Environment variable naming another registry folder (tests use a temporary one).
DIR_ENV_VAR = "COURSE_FINDINGS_DIR"
#: Environment variable naming a JSON-lines file: record every call there, never raise.
RECORD_ENV_VAR = "COURSE_FINDINGS_RECORD"
#: Environment variable that, set to 1, treats the loaded model as unknown to the registry.
UNKNOWN_ENV_VAR = "COURSE_FINDINGS_UNKNOWN"

#: Registry key of the embedded model; equals ``utils.core.models.EMBEDDED_MODEL_NAME``
#: (a test checks it; the constant is repeated so that this module does not import
#: TransformerLens).
EMBEDDED_KEY = "SmolLM2-135M-Instruct"
#: Registry key of the second model, Gemma 3 270M (base).
GEMMA_KEY = "gemma-3-270m"
#: Registry key of the small models trained from scratch in chapter 16.
TOY_KEY = "toy"

#: The evidence levels, strongest first.
EVIDENCE_LEVELS: tuple[str, ...] = ("causal", "score", "not found", "needs scale")

#: A field the record command could not fill: a human must choose it.
TODO = "TODO"

_ID = re.compile(r"(\d\d)(\.[a-z][a-z0-9_]*)+")
_HEAD = re.compile(r"L(\d+)H(\d+)")
_PLAN_NUMBERS = frozenset(slug.split("/")[-1][:2] for slug in COURSE_PLAN_CHAPTERS)
_FIELDS = (
    "chapter", "claim", "head_type", "evidence", "heads", "measured", "expect", "margin",
    "power", "model_to_use", "why", "note",
)
_REQUIRED = ("chapter", "claim", "head_type", "evidence", "heads", "measured", "expect", "margin")
_EXPECT_KEYS = ("at_least", "at_most", "between", "sign", "equals", "heads_include")
_TODO_ABLE = ("claim", "head_type", "evidence", "expect", "margin", "power", "model_to_use", "why")

# Other spellings under which a registry model is loaded or named (compared after
# dropping case and every character that is not a letter or a digit).
_ALIASES = {
    "embedded": EMBEDDED_KEY,
    "default": EMBEDDED_KEY,
    "huggingfacetbsmollm2135minstruct": EMBEDDED_KEY,
    "googlegemma3270m": GEMMA_KEY,
}


class FindingFailed(AssertionError):
    """A run's measurement does not meet the registered expectation of a finding."""


class FindingNotRegistered(LookupError):
    """A finding id is missing from the registry of the loaded model, or from every one."""


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A measurement: ``value`` (a number, bool or string), its 95% ``ci`` as
    ``(low, high)`` or ``None``, and ``n``, the number of prompts or samples."""

    value: Any
    ci: tuple[float, float] | None = None
    n: int | None = None

    def __str__(self) -> str:
        text = _fmt_value(self.value)
        if self.ci is not None:
            text += f" [{_fmt_value(self.ci[0])}, {_fmt_value(self.ci[1])}]"
        if self.n is not None:
            text += f" (n={self.n})"
        return text


@dataclass(frozen=True)
class Expectation:
    """What a run must show: the rules of an entry's ``expect``, in a fixed order.

    ``rules`` holds ``(kind, bound)`` pairs, ``kind`` one of ``at_least``, ``at_most``,
    ``between``, ``sign``, ``equals`` and ``heads_include``.
    """

    rules: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {kind: (list(bound) if isinstance(bound, tuple) else bound) for kind, bound in self.rules}

    def numeric(self) -> "Expectation":
        """The same expectation without ``heads_include`` (head indices never transfer)."""
        return Expectation(tuple(rule for rule in self.rules if rule[0] != "heads_include"))

    def describe(self) -> str:
        """E.g. ``"≥ 0.5"``, ``"in [0.2, 0.8], heads include L23H3"``."""
        parts = []
        for kind, bound in self.rules:
            if kind == "at_least":
                parts.append(f"≥ {_fmt_bound(bound)}")
            elif kind == "at_most":
                parts.append(f"≤ {_fmt_bound(bound)}")
            elif kind == "between":
                parts.append(f"in [{_fmt_bound(bound[0])}, {_fmt_bound(bound[1])}]")
            elif kind == "sign":
                parts.append("> 0" if bound == "+" else "< 0")
            elif kind == "equals":
                parts.append(f"= {_fmt_bound(bound)}")
            else:
                parts.append("heads include " + ", ".join(bound))
        return ", ".join(parts)

    def failures(
        self, value: Any, ci: tuple[float, float] | None, heads: Sequence[str] | None
    ) -> list[str]:
        """Why a measurement does not meet the expectation (an empty list: it does).

        Interval rules use the CI when there is one (its lower bound for ``at_least``
        and ``sign: "+"``, its upper bound for ``at_most`` and ``sign: "-"``), else the
        value itself; a value exactly at a bound meets it, and ``sign`` needs the CI to
        exclude 0. A rule that needs a number fails on a bool or a string.
        """
        reasons = []
        for kind, bound in self.rules:
            if kind == "heads_include":
                found = set(heads or ())
                missing = [h for h in bound if h not in found]
                if missing:
                    got = ", ".join(heads) if heads else "none passed"
                    reasons.append(f"heads {', '.join(missing)} not among the heads found ({got})")
                continue
            if kind == "equals":
                if not _same(value, bound):
                    reasons.append(f"value {_fmt_exact(value)} is not {_fmt_bound(bound)}")
                continue
            if not _is_number(value):
                reasons.append(f"'{kind}' needs a number, got {value!r}")
                continue
            low, high = ci if ci is not None else (value, value)
            what_low = "CI lower bound" if ci is not None else "value (no CI)"
            what_high = "CI upper bound" if ci is not None else "value (no CI)"
            if kind == "at_least" and not low >= bound:
                reasons.append(f"{what_low} {_fmt_exact(low)} is below {_fmt_bound(bound)}")
            elif kind == "at_most" and not high <= bound:
                reasons.append(f"{what_high} {_fmt_exact(high)} is above {_fmt_bound(bound)}")
            elif kind == "between":
                if not low >= bound[0]:
                    reasons.append(f"{what_low} {_fmt_exact(low)} is below {_fmt_bound(bound[0])}")
                if not high <= bound[1]:
                    reasons.append(f"{what_high} {_fmt_exact(high)} is above {_fmt_bound(bound[1])}")
            elif kind == "sign" and bound == "+" and not low > 0:
                reasons.append(f"{what_low} {_fmt_exact(low)} is not above 0")
            elif kind == "sign" and bound == "-" and not high < 0:
                reasons.append(f"{what_high} {_fmt_exact(high)} is not below 0")
        return reasons


@dataclass(frozen=True)
class Finding:
    """One entry of a model's registry file (see the module docstring for the fields).

    ``todo`` names the fields still holding a ``TODO`` marker; such an entry is only
    loaded with ``allow_todo=True`` (by the record and check commands), and then
    ``expect`` is ``None`` when it is one of them.
    """

    id: str
    model: str
    chapter: str
    claim: str
    head_type: str | None
    evidence: str
    heads: tuple[str, ...]
    measured: Measured
    expect: Expectation | None
    margin: str
    power: str | float | None = None
    model_to_use: str | None = None
    why: str | None = None
    note: str | None = None
    todo: tuple[str, ...] = ()

    def holds(self) -> bool:
        """Whether the registered measurement meets the registered expectation."""
        return self.expect is not None and not self.expect.failures(
            self.measured.value, self.measured.ci, self.heads
        )


@dataclass(frozen=True)
class Registry:
    """One model's file: its registry ``key``, a display ``label`` and its entries by id."""

    key: str
    label: str
    path: Path
    entries: dict[str, Finding] = field(default_factory=dict)

    @property
    def is_toy(self) -> bool:
        return self.key == TOY_KEY

    def chapter(self, chapter: str) -> list[Finding]:
        """The entries of one chapter (``"02"``), sorted by id."""
        return [self.entries[i] for i in sorted(self.entries) if self.entries[i].chapter == chapter]


# ---------------------------------------------------------------------------
# Loading and validating
# ---------------------------------------------------------------------------


def registry_dir() -> Path:
    """The registry folder in use: ``$COURSE_FINDINGS_DIR``, else :data:`REGISTRY_DIR`."""
    configured = os.environ.get(DIR_ENV_VAR)
    return Path(configured) if configured else REGISTRY_DIR


def _is_todo(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith(TODO)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(value: Any, bound: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1``."""
    return isinstance(value, bool) == isinstance(bound, bool) and value == bound


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _number(value: Any, where: str) -> float | int:
    if not _is_number(value) or not math.isfinite(value):
        raise DataError(f"{where}: expected a finite number, got {value!r}")
    return value


def _head_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of heads like [L23H4], got {value!r}")
    for item in value:
        if not isinstance(item, str) or not _HEAD.fullmatch(item):
            raise DataError(f"{where}: {item!r} is not a head like 'L23H4'")
    if len(set(value)) != len(value):
        raise DataError(f"{where}: a head is listed twice")
    return tuple(value)


def _measured(raw: Any, where: str) -> Measured:
    if not isinstance(raw, Mapping) or set(raw) != {"value", "ci", "n"}:
        raise DataError(f"{where}: expected a mapping with exactly value, ci and n, got {raw!r}")
    value = raw["value"]
    if isinstance(value, bool) or isinstance(value, str):
        pass
    else:
        _number(value, f"{where}: value")
    ci = raw["ci"]
    if ci is not None:
        if not isinstance(ci, list) or len(ci) != 2:
            raise DataError(f"{where}: ci: expected [low, high] or null, got {ci!r}")
        low, high = (_number(v, f"{where}: ci") for v in ci)
        if low > high:
            raise DataError(f"{where}: ci: low {low} is above high {high}")
        if not _is_number(value):
            raise DataError(f"{where}: ci: a {type(value).__name__} value has no interval")
        ci = (low, high)
    n = raw["n"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise DataError(f"{where}: n: expected a positive integer or null, got {n!r}")
    return Measured(value, ci, n)


def _expectation(raw: Any, where: str) -> Expectation:
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(f"{where}: expected a non-empty mapping of {list(_EXPECT_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(_EXPECT_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown rule(s) {unknown}; the rules are {list(_EXPECT_KEYS)}")
    rules = []
    for kind in _EXPECT_KEYS:
        if kind not in raw:
            continue
        bound = raw[kind]
        at = f"{where}: {kind}"
        if kind in ("at_least", "at_most"):
            bound = _number(bound, at)
        elif kind == "between":
            if not isinstance(bound, list) or len(bound) != 2:
                raise DataError(f"{at}: expected [low, high], got {bound!r}")
            bound = tuple(_number(v, at) for v in bound)
            if bound[0] > bound[1]:
                raise DataError(f"{at}: low {bound[0]} is above high {bound[1]}")
        elif kind == "sign":
            if bound not in ("+", "-"):
                raise DataError(f"{at}: expected '+' or '-', got {bound!r}")
        elif kind == "equals":
            if not isinstance(bound, (bool, int, float, str)):
                raise DataError(f"{at}: expected a bool, number or string, got {bound!r}")
        else:
            bound = _head_list(bound, at)
            if not bound:
                raise DataError(f"{at}: expected at least one head")
        rules.append((kind, bound))
    return Expectation(tuple(rules))


def _head_type(value: Any, where: str) -> str | None:
    if value is None:
        return None
    name = _text(value, where)
    if name in {head.name for head in HEAD_TYPES}:
        return name
    try:
        canonical = get_head_type(name).name
    except KeyError:
        raise DataError(
            f"{where}: {name!r} is not a head type of the taxonomy (utils/course/taxonomy.yaml)"
        ) from None
    raise DataError(f"{where}: write the taxonomy's name {canonical!r}, not {name!r}")


def _entry(fid: Any, raw: Any, key: str, where: str, allow_todo: bool) -> Finding:
    if not isinstance(fid, str) or not _ID.fullmatch(fid):
        raise DataError(
            f"{where}: id {fid!r} is not dotted and prefixed by its chapter, like "
            "'02.ioi.name_movers_ablation'"
        )
    at = f"{where}[{fid!r}]"
    if not isinstance(raw, Mapping):
        raise DataError(f"{at}: expected a mapping of fields, got {raw!r}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise DataError(f"{at}: unknown field(s) {unknown}; the fields are {list(_FIELDS)}")
    for name in _REQUIRED:
        if name not in raw:
            raise DataError(f"{at}: missing field {name!r}")
    todo = tuple(name for name in _TODO_ABLE if _is_todo(raw.get(name)))
    if todo and not allow_todo:
        raise DataError(
            f"{at}: field(s) {list(todo)} still hold a TODO marker: choose them by hand "
            f"(evidence from {list(EVIDENCE_LEVELS)}, an expectation and its margin)"
        )
    chapter = raw["chapter"]
    if not isinstance(chapter, str) or chapter != fid[:2]:
        raise DataError(f"{at}: field 'chapter' must be {fid[:2]!r} (the id's prefix), got {chapter!r}")
    if chapter not in _PLAN_NUMBERS:
        raise DataError(f"{at}: chapter {chapter!r} is not a chapter of the course plan")
    evidence = raw["evidence"]
    if "evidence" not in todo and evidence not in EVIDENCE_LEVELS:
        raise DataError(
            f"{at}: field 'evidence': {evidence!r} is not one of {', '.join(map(repr, EVIDENCE_LEVELS))}"
        )
    extra = {"power": "not found", "model_to_use": "needs scale", "why": "needs scale"}
    for name, level in extra.items():
        present = raw.get(name) is not None
        if "evidence" in todo:
            continue
        if level == evidence and not present:
            raise DataError(f"{at}: evidence {level!r} needs the field {name!r}")
        if level != evidence and present:
            raise DataError(f"{at}: field {name!r} is only for evidence {level!r}")
    power = raw.get("power")
    if power is not None and "power" not in todo and not _is_number(power):
        power = _text(power, f"{at}: field 'power'")
    for name in ("model_to_use", "why", "note"):
        if raw.get(name) is not None and name not in todo:
            _text(raw[name], f"{at}: field {name!r}")
    return Finding(
        id=fid,
        model=key,
        chapter=chapter,
        claim=raw["claim"] if "claim" in todo else _text(raw["claim"], f"{at}: field 'claim'"),
        head_type=None if "head_type" in todo else _head_type(raw["head_type"], f"{at}: field 'head_type'"),
        evidence=evidence,
        heads=_head_list(raw["heads"], f"{at}: field 'heads'"),
        measured=_measured(raw["measured"], f"{at}: field 'measured'"),
        expect=None if "expect" in todo else _expectation(raw["expect"], f"{at}: field 'expect'"),
        margin=raw["margin"] if "margin" in todo else _text(raw["margin"], f"{at}: field 'margin'"),
        power=power,
        model_to_use=raw.get("model_to_use"),
        why=raw.get("why"),
        note=raw.get("note"),
        todo=todo,
    )


def load_registry(path: Path, *, allow_todo: bool = False) -> Registry:
    """Read and validate one model's file, ``<key>.yaml``.

    Args:
        path: the file; its stem is the model's registry key.
        allow_todo: accept entries whose fields hold ``TODO`` markers (the record and
            check commands do; chapters never do).

    Raises:
        DataError: the file does not follow the schema (the message names the entry and
            the field).
    """
    path = Path(path)
    where = path.name
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as error:
        raise DataError(f"{where} is not valid YAML: {error}") from error
    if not isinstance(raw, dict) or sorted(raw) != ["findings", "label", "model"]:
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{where}: the top level must have exactly model, label and findings, not {found}")
    if raw["model"] != path.stem:
        raise DataError(f"{where}: model {raw['model']!r} must be the file's name {path.stem!r}")
    label = _text(raw["label"], f"{where}: label")
    findings = raw["findings"] if raw["findings"] is not None else {}
    if not isinstance(findings, dict):
        raise DataError(f"{where}: findings must be a mapping of id -> entry")
    entries = {
        fid: _entry(fid, item, path.stem, f"{where}: findings", allow_todo)
        for fid, item in findings.items()
    }
    return Registry(key=path.stem, label=label, path=path, entries=entries)


_CACHE: dict[tuple[Path, bool], tuple[tuple, dict[str, Registry]]] = {}


def load_registries(directory: Path | None = None, *, allow_todo: bool = False) -> dict[str, Registry]:
    """Every model's registry in a folder (default :func:`registry_dir`), by key, in the
    order of :func:`model_keys`; cached until a file changes."""
    directory = Path(directory) if directory is not None else registry_dir()
    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    cached = _CACHE.get((directory, allow_todo))
    if cached is not None and cached[0] == signature:
        return cached[1]
    loaded = {p.stem: load_registry(p, allow_todo=allow_todo) for p in files}
    registries = {key: loaded[key] for key in model_keys(loaded)}
    _CACHE[(directory, allow_todo)] = (signature, registries)
    return registries


def model_keys(keys: Iterable[str]) -> list[str]:
    """Registry keys in page order: the embedded model, the other models, the toy models."""
    keys = list(keys)
    return sorted(keys, key=lambda k: (k == TOY_KEY, k != EMBEDDED_KEY, k != GEMMA_KEY, k.lower()))


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def registry_key(model_or_name: Any) -> str:
    """The registry key of a loaded model or a model name.

    The key is the model's name without its folder or organisation, matched without
    regard to case or punctuation against the registry's files and a few aliases:
    the embedded model (``cfg.model_name`` is the path of its converted folder, whose
    name is ``SmolLM2-135M-Instruct``) gives ``"SmolLM2-135M-Instruct"``,
    ``"google/gemma-3-270m"`` gives ``"gemma-3-270m"``, a model trained by
    :mod:`utils.toy` gives ``"toy"``. A model the registry does not know keeps its own
    name (``"gpt2"``), which is the key a new registry file for it would have.

    Args:
        model_or_name: a model with a ``cfg`` (``model_name``), or a string.

    Raises:
        TypeError: neither a string nor an object with a ``cfg``.
    """
    if isinstance(model_or_name, str):
        name = model_or_name
    else:
        cfg = getattr(model_or_name, "cfg", None)
        if cfg is None:
            raise TypeError(
                f"model must be a loaded model or its name, got {type(model_or_name).__name__}"
            )
        if type(model_or_name).__module__.startswith("utils.toy"):
            return TOY_KEY
        name = str(getattr(cfg, "model_name", "") or "")
    base = name.strip().rstrip("/").replace("\\", "/")
    squashed = _squash(base)
    if squashed in _ALIASES:
        return _ALIASES[squashed]
    base = base.rsplit("/", 1)[-1]
    known = {_squash(k): k for k in (EMBEDDED_KEY, GEMMA_KEY, TOY_KEY)}
    directory = registry_dir()
    if directory.is_dir():
        known.update({_squash(p.stem): p.stem for p in directory.glob("*.yaml")})
    return known.get(_squash(base), _ALIASES.get(_squash(base), base or "unnamed model"))


# ---------------------------------------------------------------------------
# One call per finding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingResult:
    """What one call of :func:`finding` measured and concluded.

    Attributes:
        verdict: ``"held"``, ``"failed"`` (the expectation was not met), ``"reported"``
            (the model is unknown to the registry: nothing was checked) or ``"new"``
            (record mode, an id the model's file does not have yet).
        entry: the registered entry checked against (``None`` unless known).
        reference: for a report, the entry of the embedded model (or of another
            registry) shown beside the measurement.
        reasons: why the expectation failed.
        recorded: whether the call was appended to ``$COURSE_FINDINGS_RECORD``.
    """

    id: str
    model: str
    measured: Measured
    heads: tuple[str, ...] | None
    verdict: str
    entry: Finding | None = None
    reference: Finding | None = None
    published: str = ""
    reasons: tuple[str, ...] = ()
    recorded: bool = False

    @property
    def chapter(self) -> str:
        return self.id[:2]

    def line(self) -> str:
        """The one line a call prints."""
        heads = f"  heads {', '.join(self.heads)}" if self.heads else ""
        if self.recorded:
            state = {"held": "holds", "failed": "FAILS", "new": "new entry", "reported": "unknown model"}
            return (
                f"recorded {self.id}  {self.measured}{heads}  on {self.model}  "
                f"({state[self.verdict]})"
            )
        if self.verdict == "held":
            assert self.entry is not None and self.entry.expect is not None
            return (
                f"✓ {self.id}  {self.measured}  expected {self.entry.expect.describe()}  "
                f"· {self.entry.evidence}"
            )
        if self.verdict == "failed":
            return f"✗ {self.id}  {self.measured}  " + "; ".join(self.reasons)
        text = f"reported {self.id}  {self.measured}{heads}  on {self.model}"
        if self.reference is not None:
            ref = self.reference
            ref_heads = f", {', '.join(ref.heads)}" if ref.heads else ""
            text += f"  · {ref.model}: {ref.measured} ({ref.evidence}{ref_heads})"
        if self.published:
            text += f"  · {self.published}"
        return text

    def failure_message(self) -> str:
        """The message of :class:`FindingFailed`."""
        entry = self.entry
        assert entry is not None and entry.expect is not None
        heads = f", heads {', '.join(self.heads)}" if self.heads else ""
        reg_heads = f", heads {', '.join(entry.heads)}" if entry.heads else ""
        path = _display_path(registry_dir() / f"{entry.model}.yaml")
        return "\n".join([
            f"finding {self.id} does not hold on {self.model}",
            f"  claim:      {entry.claim}",
            f"  measured:   {self.measured}{heads}",
            f"  expected:   {entry.expect.describe()} - {'; '.join(self.reasons)}",
            f"  margin:     {entry.margin}",
            f"  registered: {entry.measured}, {entry.evidence}{reg_heads} ({path})",
            "If the change is intended, re-measure with COURSE_FINDINGS_RECORD=<file.jsonl> and "
            "`python -m utils.course.findings record <file.jsonl> --model "
            f"{self.model}`, then review the expectation.",
        ])


_LOG: list[FindingResult] = []


def findings_log() -> list[FindingResult]:
    """Every call of :func:`finding` in this process, in order (a copy)."""
    return list(_LOG)


def clear_findings_log() -> None:
    """Forget the calls logged so far."""
    _LOG.clear()


def _scalar(value: Any, what: str) -> Any:
    """A plain Python bool, int, float or str from a tensor, array or number."""
    if hasattr(value, "item") and callable(value.item):
        size = getattr(value, "numel", None)
        count = size() if callable(size) else getattr(value, "size", 1)
        if count != 1:
            raise ValueError(f"{what} must be a single number, got {count} values")
        value = value.item()
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{what} must be a number, a bool or a string, got {type(value).__name__}")


def _heads_arg(heads: Any) -> tuple[str, ...] | None:
    if heads is None:
        return None
    out = []
    for head in heads:
        if isinstance(head, str) and _HEAD.fullmatch(head):
            out.append(head)
        elif isinstance(head, tuple) and len(head) == 2:
            layer, index = (int(_scalar(v, "a head's layer or index")) for v in head)
            out.append(f"L{layer}H{index}")
        else:
            raise ValueError(f"heads must be Head or (layer, head) pairs or 'L23H4' strings, got {head!r}")
    return tuple(out)


def _measurement(
    fid: str, value: Any, ci: Any, samples: Any, n: int | None
) -> Measured:
    if samples is not None:
        if value is not None or ci is not None:
            raise TypeError(f"finding {fid!r}: pass samples, or value (and ci), not both")
        values = samples.tolist() if hasattr(samples, "tolist") else list(samples)
        flat = _flatten(values)
        from utils.analysis.stats import bootstrap_ci  # torch and scipy, only when needed

        mean, low, high = bootstrap_ci(flat, seed=0)
        return Measured(mean, (low, high), len(flat) if n is None else n)
    if value is None:
        raise TypeError(f"finding {fid!r}: pass a value or samples")
    value = _scalar(value, f"finding {fid!r}: value")
    if ci is not None:
        low, high = (float(_scalar(v, f"finding {fid!r}: ci")) for v in ci)
        if not _is_number(value):
            raise TypeError(f"finding {fid!r}: a {type(value).__name__} value has no interval")
        if low > high:
            raise ValueError(f"finding {fid!r}: ci low {low} is above high {high}")
        ci = (low, high)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"finding {fid!r}: n must be a positive int, got {n!r}")
    return Measured(value, ci, n)


def _flatten(values: Any) -> list[float]:
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _flatten(v)]
    return [float(values)]


def _switch(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no"}


def _published(head_type: str | None, model: Any, key: str) -> str:
    """Published heads of ``head_type`` for the loaded model, when the literature has them."""
    if head_type is None:
        return ""
    from utils.course import published  # imports torch via utils.core.heads

    if isinstance(model, str):
        studied = published.GPT2_SMALL if key.lower() in {"gpt2", "gpt2-small"} else None
    else:
        try:
            studied = published.model_key(model)
        except AttributeError:
            studied = None
    if studied is None:
        return ""
    try:
        entries = published.published_heads(head_type, studied)
    except ValueError:
        return ""
    return "; ".join(
        f"published for {studied}: {', '.join(f'L{l}H{h}' for l, h in e.heads)} ({e.source})"
        for e in entries
    )


def _append_record(path: str, result: FindingResult) -> None:
    line = {
        "id": result.id,
        "model": result.model,
        "value": result.measured.value,
        "ci": list(result.measured.ci) if result.measured.ci is not None else None,
        "n": result.measured.n,
        "heads": list(result.heads) if result.heads is not None else None,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def finding(
    id: str,
    value: Any = None,
    *,
    model: Any,
    ci: Sequence[float] | None = None,
    samples: Any = None,
    heads: Iterable[Any] | None = None,
    n: int | None = None,
) -> FindingResult:
    """State one finding of a chapter: check it on a known model, report it on another.

    Args:
        id: the finding's id in the registry, e.g. ``"02.ioi.name_movers_ablation"``.
        value: the measured value (a number, bool, int or string; a one-element tensor
            is accepted). Omit it when passing ``samples``.
        model: the loaded model, or its name (see :func:`registry_key`).
        ci: the value's 95% interval ``(low, high)``, when computed elsewhere.
        samples: one value per prompt or sample: the value becomes their mean, the CI
            a seeded 95% percentile bootstrap (:func:`utils.analysis.stats.bootstrap_ci`)
            and ``n`` their number.
        heads: the heads the run found (``Head``, ``(layer, head)`` or ``"L23H4"``).
        n: the number of prompts or samples behind ``value``.

    Returns:
        The :class:`FindingResult`, also logged for :func:`findings_table`; one line is
        printed.

    Raises:
        FindingFailed: the model is known and the measurement does not meet the
            registered expectation (never in record mode).
        FindingNotRegistered: the model is known and its file has no such id, or no
            registry has it (never in record mode).
        DataError: a registry file is invalid.
    """
    if not isinstance(id, str) or not _ID.fullmatch(id):
        raise ValueError(f"finding id {id!r} is not dotted and prefixed by its chapter, like '02.ioi.name_movers'")
    measured = _measurement(id, value, ci, samples, n)
    found_heads = _heads_arg(heads)
    key = registry_key(model)
    record_path = os.environ.get(RECORD_ENV_VAR, "").strip()
    registries = load_registries(allow_todo=bool(record_path))
    known = key in registries and not _switch(UNKNOWN_ENV_VAR)
    entry = registries[key].entries.get(id) if known else None
    holders = [r for r in registries.values() if id in r.entries]

    def result_for(verdict: str, **extra: Any) -> FindingResult:
        return FindingResult(id, key, measured, found_heads, verdict, **extra)

    if record_path:
        if entry is not None and entry.expect is not None:
            reasons = tuple(entry.expect.failures(measured.value, measured.ci, found_heads))
            result = result_for("failed" if reasons else "held", entry=entry, reasons=reasons, recorded=True)
        else:
            result = result_for("new" if known else "reported", entry=entry, recorded=True)
        _append_record(record_path, result)
    elif not holders:
        target = registry_dir() / f"{key if known else EMBEDDED_KEY}.yaml"
        raise FindingNotRegistered(
            f"finding {id!r} is in no registry file of {_display_path(registry_dir())}: add it to "
            f"{_display_path(target)} and to every other model's file (measure it with "
            f"{RECORD_ENV_VAR}=<file.jsonl>, then `python -m utils.course.findings record`)"
        )
    elif known and entry is None:
        others = ", ".join(r.key for r in holders)
        raise FindingNotRegistered(
            f"finding {id!r} is not in the registry of {key}: add it to "
            f"{_display_path(registries[key].path)} (the registry of a known model must be "
            f"complete; {others} has it)"
        )
    elif known:
        assert entry is not None and entry.expect is not None
        reasons = tuple(entry.expect.failures(measured.value, measured.ci, found_heads))
        result = result_for("failed" if reasons else "held", entry=entry, reasons=reasons)
        if reasons:
            _LOG.append(result)
            raise FindingFailed(result.failure_message())
    else:
        by_key = {r.key: r for r in holders}
        reference = (by_key.get(EMBEDDED_KEY) or holders[0]).entries[id]
        result = result_for(
            "reported", reference=reference, published=_published(reference.head_type, model, key)
        )
    _LOG.append(result)
    print(result.line())
    return result


# ---------------------------------------------------------------------------
# The chapter's summary table
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingsTable:
    """A chapter's findings as a table; shows as HTML in a notebook.

    Attributes:
        title: one line: chapter, model and the count of each verdict.
        columns: the column names.
        rows: one tuple of strings per finding.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return " ".join(text.split()).replace("|", "\\|")

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_frame(self):
        """The rows as a pandas DataFrame (pandas imported only here)."""
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=list(self.columns))

    def verdicts(self) -> dict[str, str]:
        """Finding id -> verdict."""
        return {row[0]: row[-1] for row in self.rows}

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return (
            f"<p><strong>{html.escape(self.title)}</strong></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def __str__(self) -> str:
        return self.to_markdown()


def _chapter_number(chapter: Any) -> str:
    text = str(chapter).strip()
    match = re.search(r"(?:^|/)(\d{1,2})(?:_|$)", text)
    if match is None:
        raise ValueError(f"chapter must be a number like '02' or a slug, got {chapter!r}")
    return match.group(1).zfill(2)


def findings_table(chapter: Any, *, model: Any = None) -> FindingsTable:
    """Every finding of a chapter for the loaded model, with this run's verdicts.

    The rows are the chapter's entries in the loaded model's registry (for a model the
    registry does not know: in the embedded model's, or whichever registry has the
    chapter), each with the measurement of this run's last call for it, plus the calls
    whose id no entry has yet (record mode). The verdict is ``held``, ``failed``,
    ``reported`` or ``not run`` (no call in this process), ``recorded`` noted.

    Args:
        chapter: ``"02"``, ``2`` or a slug such as ``"notebooks/02_in_context_identification"``.
        model: the loaded model or its name; by default the model of the chapter's
            latest call (else the embedded model).
    """
    number = _chapter_number(chapter)
    calls = [r for r in _LOG if r.chapter == number]
    if model is not None:
        key = registry_key(model)
    else:
        key = calls[-1].model if calls else EMBEDDED_KEY
    calls = [r for r in calls if r.model == key]
    latest = {r.id: r for r in calls}
    registries = load_registries(allow_todo=bool(os.environ.get(RECORD_ENV_VAR, "").strip()))
    known = key in registries and not _switch(UNKNOWN_ENV_VAR)
    if known:
        source = registries[key]
    else:
        candidates = [r for r in registries.values() if r.chapter(number)]
        by_key = {r.key: r for r in candidates}
        source = by_key.get(EMBEDDED_KEY) or (candidates[0] if candidates else None)
    entries = {e.id: e for e in (source.chapter(number) if source is not None else [])}
    ids = sorted(set(entries) | set(latest))
    rows = []
    for fid in ids:
        entry, call = entries.get(fid), latest.get(fid)
        expectation = entry.expect.describe() if entry is not None and entry.expect else "TODO"
        if entry is not None and not known:
            expectation += f" (on {entry.model})"
        heads = call.heads if call is not None and call.heads is not None else (entry.heads if entry else ())
        verdict = call.verdict if call is not None else "not run"
        if call is not None and call.recorded:
            verdict += " · recorded"
        rows.append((
            fid,
            entry.claim if entry is not None else "(not in the registry yet)",
            entry.evidence if entry is not None else "TODO",
            ", ".join(heads) or "-",
            str(call.measured) if call is not None else "-",
            expectation,
            verdict,
        ))
    counts: dict[str, int] = {}
    for row in rows:
        word = row[-1].split(" · ")[0]
        counts[word] = counts.get(word, 0) + 1
    summary = ", ".join(f"{count} {word}" for word, count in counts.items()) or "no findings"
    where = key if known else f"{key} (not in the registry: reported beside {source.key if source else 'nothing'})"
    return FindingsTable(
        title=f"Findings of chapter {number} on {where}: {summary}",
        columns=("finding", "claim", "evidence", "heads", "measured [95% CI]", "expected", "verdict"),
        rows=tuple(rows),
    )


# ---------------------------------------------------------------------------
# Writing files, the record command and the check command
# ---------------------------------------------------------------------------


class _Flow(dict):
    """A mapping written on one line."""


class _FlowList(list):
    """A list written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True))
_Dumper.add_representer(
    str,
    # Long prose (claims, margins, notes) as folded blocks: no quotes, wrapped lines.
    lambda d, data: d.represent_scalar(
        "tag:yaml.org,2002:str", data,
        style=">" if len(data) > 80 and " " in data and "\n" not in data and data == data.strip() else None,
    ),
)
_Dumper.add_representer(_FlowList, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def _round(value: Any) -> Any:
    """Floats to 4 significant digits (ints, bools and strings as they are)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def _fmt_value(value: Any) -> str:
    """A measured value for humans: 3 significant digits (``1.10``, ``0.0183``, ``197``),
    ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return f"{value:g}"
        magnitude = math.floor(math.log10(abs(value)))
        if magnitude >= 4 or magnitude < -3:
            return f"{value:.3g}"
        return f"{value:.{max(0, 2 - magnitude)}f}"
    return str(value)


def _fmt_bound(value: Any) -> str:
    """A bound as written in the registry (``0.5``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fmt_exact(value: Any) -> str:
    """A measured value in a failure message, precise enough to compare with a bound."""
    return f"{value:.4g}" if isinstance(value, float) else _fmt_bound(value)


def _entry_dict(entry: Finding) -> dict[str, Any]:
    todo = set(entry.todo)

    def marked(name: str, value: Any) -> Any:
        return TODO if name in todo else value

    measured = entry.measured
    out: dict[str, Any] = {
        "chapter": entry.chapter,
        "claim": marked("claim", entry.claim),
        "head_type": marked("head_type", entry.head_type),
        "evidence": marked("evidence", entry.evidence),
        "heads": _FlowList(entry.heads),
        "measured": _Flow(
            value=_round(measured.value),
            ci=_FlowList(_round(v) for v in measured.ci) if measured.ci is not None else None,
            n=measured.n,
        ),
        "expect": TODO if "expect" in todo or entry.expect is None else _Flow(
            {k: (_FlowList(_round(x) for x in v) if isinstance(v, tuple) else _round(v))
             for k, v in entry.expect.as_dict().items()}
        ),
        "margin": marked("margin", entry.margin),
    }
    for name in ("power", "model_to_use", "why", "note"):
        value = getattr(entry, name)
        if value is not None or name in todo:
            out[name] = marked(name, _round(value))
    return out


def dump_registry(registry: Registry) -> str:
    """A registry as the text of its file: a fixed header, entries sorted by id, keys in
    schema order, floats to 4 significant digits (``load`` then ``dump`` is stable)."""
    header = [
        f"# Findings registry of {registry.label}: every finding the chapters state, with what",
        "# was measured on this model and what a run must show. Schema: utils/course/findings.py.",
        "# `python -m utils.course.findings record` writes measured values; choose evidence,",
        "# expect and margin by hand, then run `python -m utils.course.findings check`.",
    ]
    data = {
        "model": registry.key,
        "label": registry.label,
        "findings": {fid: _entry_dict(registry.entries[fid]) for fid in sorted(registry.entries)},
    }
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=80, default_flow_style=False
    )
    return "\n".join(header) + "\n" + body


def write_registry(registry: Registry, path: Path | None = None) -> Path:
    """Write :func:`dump_registry` to ``path`` (default: the registry's own file)."""
    target = Path(path) if path is not None else registry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dump_registry(registry), encoding="utf-8")
    return target


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return str(path)


@dataclass
class RecordReport:
    """What :func:`record_into` changed in one model's file."""

    path: Path
    updated: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{_display_path(self.path)}: {len(self.updated)} updated, {len(self.created)} created"]
        if self.created:
            out.append("  created with TODO markers (choose evidence, expect, margin): " + ", ".join(self.created))
        if self.failing:
            out.append("  the new measurement does not meet the registered expectation: " + ", ".join(self.failing))
        return out


def _read_records(path: Path, key: str) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not a JSON line: {error}") from error
        if not isinstance(item, dict) or not {"id", "model", "value", "ci", "n", "heads"} <= set(item):
            raise DataError(f"{path}:{number}: expected id, model, value, ci, n and heads")
        if registry_key(str(item["model"])) == key:
            records[item["id"]] = item  # a later call of the same id wins
    return records


def record_into(records: Path, model: str, *, directory: Path | None = None) -> RecordReport:
    """Write the measurements recorded in ``records`` (JSON lines) for ``model`` into
    that model's registry file.

    Existing entries get the new ``measured`` (value, ci, n) and, when the call passed
    heads, ``heads``. Missing entries are created: chapter, claim and head type copied
    from another registry's entry of the same id (the embedded model's first), evidence,
    expect and margin set to ``TODO`` (which fails validation until a human chooses
    them). A model without a file gets one.

    Args:
        records: the file ``$COURSE_FINDINGS_RECORD`` pointed at.
        model: the model's registry key or name.
        directory: the registry folder (default :func:`registry_dir`).
    """
    directory = Path(directory) if directory is not None else registry_dir()
    key = registry_key(model)
    others = {k: r for k, r in load_registries(directory, allow_todo=True).items() if k != key}
    path = directory / f"{key}.yaml"
    if path.is_file():
        registry = load_registry(path, allow_todo=True)
    else:
        label = {EMBEDDED_KEY: EMBEDDED_KEY, GEMMA_KEY: "Gemma 3 270M", TOY_KEY: "toy models"}.get(key, key)
        registry = Registry(key=key, label=label, path=path)
    entries = dict(registry.entries)
    report = RecordReport(path)
    for fid, item in sorted(_read_records(records, key).items()):
        if not _ID.fullmatch(str(fid)):
            raise DataError(f"{records}: id {fid!r} is not a finding id")
        ci = tuple(item["ci"]) if item["ci"] is not None else None
        measured = Measured(_round(item["value"]), tuple(_round(v) for v in ci) if ci else None, item["n"])
        heads = tuple(item["heads"]) if item["heads"] is not None else None
        if fid in entries:
            entry = replace(entries[fid], measured=measured, heads=heads if heads is not None else entries[fid].heads)
            report.updated.append(fid)
            if entry.expect is not None and not entry.holds():
                report.failing.append(fid)
        else:
            source = next((r.entries[fid] for r in others.values() if fid in r.entries), None)
            todo = ["evidence", "expect", "margin"]
            if source is None:
                todo += ["claim", "head_type"]
            entry = Finding(
                id=fid, model=key, chapter=fid[:2],
                claim=source.claim if source is not None else TODO,
                head_type=source.head_type if source is not None else None,
                evidence=TODO, heads=heads or (), measured=measured, expect=None, margin=TODO,
                todo=tuple(name for name in _TODO_ABLE if name in todo),
            )
            report.created.append(fid)
        entries[fid] = entry
    write_registry(replace(registry, entries=entries))
    return report


@dataclass
class CheckReport:
    """The findings of :func:`check_registry`: ``lines`` to print and ``problems``."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_registry(directory: Path | None = None) -> CheckReport:
    """Validate every file of a registry folder and report what is incomplete.

    Problems: a file that does not load (schema), ``TODO`` markers, an id that one
    model's file has and another's lacks (every model file must hold every model id),
    a toy-model id in a model's file, a registered measurement that does not meet its
    own expectation, a file not in canonical form (as :func:`dump_registry` writes it),
    no file for the embedded model or Gemma.
    """
    directory = Path(directory) if directory is not None else registry_dir()
    report = CheckReport()
    problem = report.problems.append
    registries: dict[str, Registry] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            registries[path.stem] = load_registry(path, allow_todo=True)
        except DataError as error:
            problem(str(error))
    for key in (EMBEDDED_KEY, GEMMA_KEY):
        if key not in registries and not (directory / f"{key}.yaml").is_file():
            problem(f"no registry file for {key} ({key}.yaml)")
    keys = model_keys(registries)
    models = [k for k in keys if k != TOY_KEY]
    report.lines.append(f"registry {_display_path(directory)}: " + ", ".join(
        f"{k} ({len(registries[k].entries)} entries)" for k in keys
    ))
    chapters = sorted({e.chapter for r in registries.values() for e in r.entries.values()})
    report.lines.append("entries per chapter: chapter | " + " | ".join(keys))
    for number in chapters:
        report.lines.append(
            f"  {number} | " + " | ".join(str(len(registries[k].chapter(number))) for k in keys)
        )
    model_ids = set().union(*(registries[k].entries for k in models)) if models else set()
    for key in models:
        missing = sorted(model_ids - set(registries[key].entries))
        if missing:
            problem(f"{key}.yaml lacks {len(missing)} id(s) other models have: {', '.join(missing)}")
    if TOY_KEY in registries:
        shared = sorted(model_ids & set(registries[TOY_KEY].entries))
        if shared:
            problem(f"toy-model ids also in a model's file: {', '.join(shared)}")
    for key in keys:
        registry = registries[key]
        for fid in sorted(registry.entries):
            entry = registry.entries[fid]
            if entry.todo:
                problem(f"{key}.yaml: {fid}: TODO marker(s) in {', '.join(entry.todo)}")
            elif not entry.holds():
                assert entry.expect is not None
                reasons = entry.expect.failures(entry.measured.value, entry.measured.ci, entry.heads)
                problem(f"{key}.yaml: {fid}: the registered measurement fails its own expectation: {'; '.join(reasons)}")
        if registry.path.read_text(encoding="utf-8") != dump_registry(registry):
            problem(f"{key}.yaml is not in canonical form: run `python -m utils.course.findings format`")
    report.lines.append("problems: none" if report.ok else f"problems: {len(report.problems)}")
    report.lines += [f"  - {p}" for p in report.problems]
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.course.findings check | record <file.jsonl> --model <key> | format``."""
    parser = argparse.ArgumentParser(prog="python -m utils.course.findings", description="The findings registry.")
    parser.add_argument("--dir", type=Path, default=None, help=f"registry folder (default ${DIR_ENV_VAR} or the package's)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate every file and report what is incomplete")
    record = commands.add_parser("record", help="write recorded measurements into a model's file")
    record.add_argument("records", type=Path, help=f"the JSON-lines file of ${RECORD_ENV_VAR}")
    record.add_argument("--model", required=True, help="the model's registry key or name")
    commands.add_parser("format", help="rewrite every file in canonical form")
    options = parser.parse_args(argv)
    directory = options.dir if options.dir is not None else registry_dir()
    if options.command == "record":
        report = record_into(options.records, options.model, directory=directory)
        print("\n".join(report.lines()))
        print("then: python -m utils.course.findings check; python -m utils.course.taxonomy; "
              "python -m utils.course.two_models_page")
        return 0
    if options.command == "format":
        for path in sorted(Path(directory).glob("*.yaml")):
            write_registry(load_registry(path, allow_todo=True))
            print(f"wrote {_display_path(path)}")
        return 0
    report = check_registry(directory)
    print("\n".join(report.lines))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
