"""The findings registry's data: entries, their parsing and validation, and loading a
model's file (one YAML file per model in ``utils/course/findings/``).

The schema and the workflow are described in :mod:`utils.course.findings`, the module
chapters import; this one holds what the registry *is*, :mod:`utils.course.registry_files`
how it is written, recorded into and checked.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from utils.course.schema import DataError
from utils.course.taxonomy import COURSE_PLAN_CHAPTERS, HEAD_TYPES, get_head_type



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


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return str(path)


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
