"""Writing the findings registry's files in canonical form, the ``record`` command
(measurements of a run into a model's file) and the ``check`` command (every file
validated, what is incomplete listed). The command line is ``python -m utils.course.findings``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from utils.course.schema import DataError
from utils.course.registry import (
    _round, DIR_ENV_VAR, EMBEDDED_KEY, Finding, GEMMA_KEY, Measured, RECORD_ENV_VAR,
    Registry, TODO, TOY_KEY, _ID, _TODO_ABLE, _display_path, load_registries, load_registry,
    model_keys, registry_dir, registry_key,
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
