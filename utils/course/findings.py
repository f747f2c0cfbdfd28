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

import html
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from utils.course.schema import DataError
from utils.course.registry import (
    DIR_ENV_VAR, EMBEDDED_KEY, EVIDENCE_LEVELS, Expectation, Finding, FindingFailed,
    FindingNotRegistered, GEMMA_KEY, Measured, RECORD_ENV_VAR, REGISTRY_DIR, Registry, TODO,
    TOY_KEY, UNKNOWN_ENV_VAR, _HEAD, _ID, _display_path, _is_number, load_registries,
    load_registry, model_keys, registry_dir, registry_key,
)
from utils.course.registry_files import (
    CheckReport, RecordReport, check_registry, dump_registry, main, record_into,
    write_registry,
)

__all__ = [
    "REGISTRY_DIR", "DIR_ENV_VAR", "RECORD_ENV_VAR", "UNKNOWN_ENV_VAR", "EMBEDDED_KEY",
    "GEMMA_KEY", "TOY_KEY", "EVIDENCE_LEVELS", "TODO", "DataError", "FindingFailed",
    "FindingNotRegistered", "Measured", "Expectation", "Finding", "Registry",
    "FindingResult", "FindingsTable", "registry_dir", "registry_key", "load_registry",
    "load_registries", "model_keys", "finding", "findings_log", "clear_findings_log",
    "findings_table", "dump_registry", "write_registry", "RecordReport", "record_into",
    "CheckReport", "check_registry", "main",
]

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


if __name__ == "__main__":
    sys.exit(main())
