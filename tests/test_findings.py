"""The findings registry (utils.course.findings): the schema of its files, the one call a
chapter makes per finding, record mode and the record and check commands.

Model-free: the tests use a copy of the fixture registry in tests/findings_fixture/
(``$COURSE_FINDINGS_DIR``) and models given by name or as a stand-in with a ``cfg``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from utils.course import findings as fd
from utils.course import registry as registry_module
from utils.course.findings import (
    DataError,
    FindingFailed,
    FindingNotRegistered,
    finding,
    findings_table,
    load_registries,
    load_registry,
)

FIXTURE = Path(__file__).resolve().parent / "findings_fixture"
SMOL, GEMMA = fd.EMBEDDED_KEY, fd.GEMMA_KEY
NAME_MOVERS = "02.ioi.name_movers_ablation"


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """No switch from the environment leaks in, and every test starts with an empty log."""
    for name in (fd.DIR_ENV_VAR, fd.RECORD_ENV_VAR, fd.UNKNOWN_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    fd.clear_findings_log()
    yield
    fd.clear_findings_log()


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """A copy of the fixture registry, in use through $COURSE_FINDINGS_DIR."""
    folder = tmp_path / "registry"
    shutil.copytree(FIXTURE, folder)
    monkeypatch.setenv(fd.DIR_ENV_VAR, str(folder))
    return folder


def edit(folder: Path, key: str, change) -> Path:
    """Apply ``change`` to the parsed data of ``key``'s file and write it back."""
    path = folder / f"{key}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def model_named(name: str):
    """A stand-in for a loaded model: only ``cfg.model_name`` is read."""
    return SimpleNamespace(cfg=SimpleNamespace(model_name=name))


# --- which registry a model uses ---------------------------------------------------------


def test_the_embedded_key_is_the_embedded_models_name():
    from utils.core.models import EMBEDDED_MODEL_NAME

    assert fd.EMBEDDED_KEY == EMBEDDED_MODEL_NAME
    assert (fd.REGISTRY_DIR / f"{fd.EMBEDDED_KEY}.yaml").is_file()
    assert (fd.REGISTRY_DIR / f"{fd.GEMMA_KEY}.yaml").is_file()


@pytest.mark.parametrize(
    "name, key",
    [
        ("/root/.cache/attention-heads-course/SmolLM2-135M-Instruct", SMOL),  # cfg.model_name
        ("SmolLM2-135M-Instruct", SMOL),
        ("smollm2-135m-instruct", SMOL),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", SMOL),
        ("embedded", SMOL),
        ("gemma-3-270m", GEMMA),
        ("google/gemma-3-270m", GEMMA),
        ("/cache/gemma3_270m/", GEMMA),
        ("gpt2", "gpt2"),
        ("EleutherAI/pythia-160m", "pythia-160m"),
        ("SmolLM2-135M", "SmolLM2-135M"),  # the base model is another model
        ("toy", fd.TOY_KEY),
    ],
)
def test_registry_key_of_a_name(name, key):
    assert fd.registry_key(name) == key
    assert fd.registry_key(model_named(name)) == key


def test_registry_key_of_a_toy_model_and_of_nonsense():
    from utils.toy.model import ToyConfig, ToyTransformer

    toy = ToyTransformer(ToyConfig(n_layers=1, n_heads=1, d_model=8, d_head=8, d_vocab=5, n_ctx=4))
    assert fd.registry_key(toy) == fd.TOY_KEY
    with pytest.raises(TypeError, match="loaded model or its name"):
        fd.registry_key(42)


# --- a finding on a model the registry knows ---------------------------------------------


def test_a_finding_that_holds_prints_a_tick(registry, capsys):
    result = finding(NAME_MOVERS, 0.9, ci=(0.7, 1.1), n=48, heads=[(23, 3), (29, 1)], model=SMOL)
    line = capsys.readouterr().out.strip()
    assert line == f"✓ {NAME_MOVERS}  0.900 [0.700, 1.10] (n=48)  expected ≥ 0.5, heads include L23H3  · causal"
    assert result.verdict == "held" and result.heads == ("L23H3", "L29H1")
    assert result.entry is not None and result.entry.model == SMOL
    assert fd.findings_log() == [result]


def test_a_finding_that_fails_raises_naming_everything(registry, capsys):
    with pytest.raises(FindingFailed) as excinfo:
        finding(NAME_MOVERS, 0.3, ci=(0.2, 0.45), n=48, heads=["L23H3"], model=model_named(SMOL))
    message = str(excinfo.value)
    assert isinstance(excinfo.value, AssertionError)
    assert f"finding {NAME_MOVERS} does not hold on {SMOL}" in message
    assert "Mean-ablating the name movers lowers the IOI logit difference." in message
    assert "measured:   0.300 [0.200, 0.450] (n=48), heads L23H3" in message
    assert "expected:   ≥ 0.5, heads include L23H3 - CI lower bound 0.2 is below 0.5" in message
    assert "registered: 0.940 [0.810, 1.07] (n=48), causal, heads L23H3, L29H1" in message
    assert "SmolLM2-135M-Instruct.yaml" in message
    assert capsys.readouterr().out == ""  # nothing printed: the error says it all
    assert [r.verdict for r in fd.findings_log()] == ["failed"]


def test_gemma_is_checked_against_its_own_file(registry):
    assert finding(NAME_MOVERS, 0.9, ci=(0.7, 1.1), heads=["L15H2"], model="google/gemma-3-270m").verdict == "held"
    with pytest.raises(FindingFailed, match="heads L15H2 not among the heads found"):
        finding(NAME_MOVERS, 0.9, ci=(0.7, 1.1), heads=["L23H3"], model=GEMMA)


def test_an_id_missing_from_a_known_models_file_is_an_error(registry):
    edit(registry, GEMMA, lambda d: d["findings"].pop("02.ioi.previous_token_score"))
    with pytest.raises(FindingNotRegistered) as excinfo:
        finding("02.ioi.previous_token_score", 0.8, model=GEMMA)
    assert "not in the registry of gemma-3-270m" in str(excinfo.value)
    assert "gemma-3-270m.yaml" in str(excinfo.value)
    assert "SmolLM2-135M-Instruct has it" in str(excinfo.value)


@pytest.mark.parametrize("model", [SMOL, "gpt2"])
def test_an_id_no_registry_has_is_an_error_on_any_model(registry, model):
    with pytest.raises(FindingNotRegistered, match="'02.ioi.nothing' is in no registry file"):
        finding("02.ioi.nothing", 1.0, model=model)


@pytest.mark.parametrize("bad", ["ioi.name_movers", "2.ioi.x", "02", "02.IOI.x", "02.ioi..x"])
def test_a_malformed_id_is_refused(registry, bad):
    with pytest.raises(ValueError, match="prefixed by its chapter"):
        finding(bad, 1.0, model=SMOL)


# --- a finding on a model the registry does not know --------------------------------------


def test_an_unknown_model_is_reported_beside_the_embedded_model_and_published_heads(registry, capsys):
    gpt2 = SimpleNamespace(cfg=SimpleNamespace(model_name="gpt2", n_layers=12, n_heads=12, d_model=768, d_vocab=50257))
    result = finding(NAME_MOVERS, -5.0, ci=(-6.0, -4.0), n=48, heads=[(9, 9)], model=gpt2)  # would fail
    out = capsys.readouterr().out
    assert result.verdict == "reported" and result.entry is None
    assert result.reference is not None and result.reference.model == SMOL
    assert out.startswith(f"reported {NAME_MOVERS}  -5.00 [-6.00, -4.00] (n=48)  heads L9H9  on gpt2")
    assert "SmolLM2-135M-Instruct: 0.940 [0.810, 1.07] (n=48) (causal, L23H3, L29H1)" in out
    assert "published for gpt2-small: L9H9, L9H6, L10H0 (wang2022interpretability)" in out


def test_the_switch_hides_a_known_models_entries(registry, monkeypatch, capsys):
    monkeypatch.setenv(fd.UNKNOWN_ENV_VAR, "1")
    result = finding(NAME_MOVERS, -5.0, model=GEMMA)  # would fail on Gemma's entry
    assert result.verdict == "reported" and result.reference.model == SMOL
    assert "reported" in capsys.readouterr().out
    monkeypatch.setenv(fd.UNKNOWN_ENV_VAR, "0")
    with pytest.raises(FindingFailed):
        finding(NAME_MOVERS, -5.0, model=GEMMA)


def test_a_toy_only_finding_is_reported_beside_the_toy_entry(registry, monkeypatch):
    monkeypatch.setenv(fd.UNKNOWN_ENV_VAR, "1")
    result = finding("16.induction.previous_token_ablation", 0.1, model="toy")
    assert result.verdict == "reported" and result.reference.model == fd.TOY_KEY


# --- expectations ----------------------------------------------------------------------


def expectation(**rules) -> fd.Expectation:
    return registry_module._expectation(rules, "test")


@pytest.mark.parametrize(
    "rules, value, ci, heads, holds",
    [
        ({"at_least": 0.5}, 0.5, None, None, True),  # exactly at the bound, no CI
        ({"at_least": 0.5}, 0.4999, None, None, False),
        ({"at_least": 0.5}, 0.9, (0.5, 1.3), None, True),  # CI lower bound exactly at it
        ({"at_least": 0.5}, 0.9, (0.49, 1.3), None, False),  # the value passes, the CI not
        ({"at_most": 0.2}, 0.2, None, None, True),
        ({"at_most": 0.2}, 0.1, (0.0, 0.2), None, True),
        ({"at_most": 0.2}, 0.1, (0.0, 0.21), None, False),
        ({"between": [0.2, 0.8]}, 0.5, (0.2, 0.8), None, True),
        ({"between": [0.2, 0.8]}, 0.5, (0.1, 0.6), None, False),
        ({"between": [0.2, 0.8]}, 0.9, None, None, False),
        ({"sign": "+"}, 0.1, (0.01, 0.2), None, True),
        ({"sign": "+"}, 0.1, (0.0, 0.2), None, False),  # the CI must exclude 0
        ({"sign": "+"}, 0.1, None, None, True),
        ({"sign": "+"}, 0.0, None, None, False),
        ({"sign": "-"}, -0.1, (-0.2, -0.01), None, True),
        ({"sign": "-"}, -0.1, (-0.2, 0.01), None, False),
        ({"equals": True}, True, None, None, True),
        ({"equals": True}, False, None, None, False),
        ({"equals": 1}, True, None, None, False),  # a bool is not an int
        ({"equals": 3}, 3, None, None, True),
        ({"equals": "A"}, "A", None, None, True),
        ({"equals": "A"}, "B", None, None, False),
        ({"at_least": 0.5}, "A", None, None, False),  # a bound on a string fails
        ({"at_least": 0.5}, True, None, None, False),
        ({"heads_include": ["L1H2"]}, 0.0, None, ("L1H2", "L3H4"), True),
        ({"heads_include": ["L1H2", "L3H4"]}, 0.0, None, ("L1H2",), False),
        ({"heads_include": ["L1H2"]}, 0.0, None, None, False),  # no heads passed
        ({"at_least": 0.0, "at_most": 1.0}, 0.5, (0.1, 0.9), None, True),
        ({"at_least": 0.0, "at_most": 1.0}, 0.5, (0.1, 1.2), None, False),
        ({"at_least": 0.5}, float("nan"), None, None, False),
    ],
)
def test_every_kind_of_expectation(rules, value, ci, heads, holds):
    failures = expectation(**rules).failures(value, ci, heads)
    assert (not failures) is holds, failures


def test_expectations_describe_themselves():
    assert expectation(at_least=0.5).describe() == "≥ 0.5"
    assert expectation(at_most=0.2, sign="-").describe() == "≤ 0.2, < 0"
    assert expectation(between=[1, 2.5], heads_include=["L1H2"]).describe() == "in [1, 2.5], heads include L1H2"
    assert expectation(equals=False).describe() == "= false"


def test_a_failure_says_which_bound_broke():
    (reason,) = expectation(at_least=0.5).failures(0.9, (0.4, 1.2), None)
    assert reason == "CI lower bound 0.4 is below 0.5"
    (reason,) = expectation(at_most=0.2).failures(0.3, None, None)
    assert reason == "value (no CI) 0.3 is above 0.2"


# --- what a call accepts -------------------------------------------------------------


def test_samples_give_the_mean_and_a_seeded_bootstrap_interval(registry):
    import torch

    from utils.analysis.stats import bootstrap_ci

    samples = torch.linspace(0.6, 1.2, 40)
    first = finding(NAME_MOVERS, samples=samples, heads=["L23H3"], model=SMOL)
    second = finding(NAME_MOVERS, samples=samples.tolist(), heads=["L23H3"], model=SMOL)
    mean, low, high = bootstrap_ci(samples, seed=0)
    assert first.measured == second.measured
    assert first.measured.value == pytest.approx(mean) and first.measured.ci == pytest.approx((low, high))
    assert first.measured.n == 40 and low < mean < high
    with pytest.raises(FindingFailed, match="CI lower bound"):
        finding(NAME_MOVERS, samples=samples - 0.6, heads=["L23H3"], model=SMOL)


def test_tensors_and_numpy_values_become_plain_numbers(registry):
    import numpy as np
    import torch

    result = finding("02.ioi.previous_token_score", torch.tensor(0.8), model=SMOL)
    assert type(result.measured.value) is float
    result = finding("02.ioi.previous_token_score", np.float32(0.8), heads=[(np.int64(0), 4)], model=SMOL)
    assert type(result.measured.value) is float and result.heads == ("L0H4",)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, TypeError, "pass a value or samples"),
        ({"value": 1.0, "samples": [1.0, 2.0]}, TypeError, "not both"),
        ({"value": 1.0, "ci": (2.0, 1.0)}, ValueError, "above high"),
        ({"value": "x", "ci": (0.0, 1.0)}, TypeError, "has no interval"),
        ({"value": [1.0, 2.0]}, TypeError, "must be a number"),
        ({"value": 1.0, "n": 0}, ValueError, "positive int"),
        ({"value": 1.0, "heads": ["23.3"]}, ValueError, "heads must be"),
    ],
)
def test_bad_arguments_are_refused(registry, kwargs, error, message):
    with pytest.raises(error, match=message):
        finding(NAME_MOVERS, model=SMOL, **kwargs)


# --- the schema --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.update(evidence="strong"), "field 'evidence': 'strong' is not one of 'causal', 'score'"),
        (lambda e: e.update(head_type="Quantum head"), "'Quantum head' is not a head type of the taxonomy"),
        (lambda e: e.update(head_type="name mover"), "write the taxonomy's name 'Name mover head'"),
        (lambda e: e.update(evidence="TODO"), "field(s) ['evidence'] still hold a TODO marker"),
        (lambda e: e.update(expect="TODO", margin="TODO"), "['expect', 'margin'] still hold a TODO marker"),
        (lambda e: e.update(chapter="03"), "field 'chapter' must be '02'"),
        (lambda e: e.pop("margin"), "missing field 'margin'"),
        (lambda e: e.update(colour="red"), "unknown field(s) ['colour']"),
        (lambda e: e.update(evidence="not found"), "evidence 'not found' needs the field 'power'"),
        (lambda e: e.update(power=0.3), "field 'power' is only for evidence 'not found'"),
        (lambda e: e.update(evidence="needs scale"), "needs the field 'model_to_use'"),
        (lambda e: e.update(heads=["23.3"]), "'23.3' is not a head like 'L23H4'"),
        (lambda e: e.update(heads=["L1H1", "L1H1"]), "a head is listed twice"),
        (lambda e: e["measured"].update(ci=[1.2, 0.8]), "ci: low 1.2 is above high 0.8"),
        (lambda e: e["measured"].update(n=0), "n: expected a positive integer"),
        (lambda e: e["measured"].pop("n"), "exactly value, ci and n"),
        (lambda e: e.update(expect={}), "field 'expect': expected a non-empty mapping"),
        (lambda e: e.update(expect={"above": 1}), "unknown rule(s) ['above']"),
        (lambda e: e.update(expect={"sign": "positive"}), "expected '+' or '-'"),
        (lambda e: e.update(expect={"between": [2, 1]}), "between: low 2 is above high 1"),
        (lambda e: e.update(claim=" "), "field 'claim': expected a non-empty string"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_entry_and_field(registry, change, message):
    edit(registry, SMOL, lambda d: change(d["findings"][NAME_MOVERS]))
    with pytest.raises(DataError) as excinfo:
        load_registry(registry / f"{SMOL}.yaml")
    text = str(excinfo.value)
    assert message in text
    assert text.startswith(f"{SMOL}.yaml: findings['{NAME_MOVERS}']")


def test_todo_markers_load_only_when_allowed(registry):
    edit(registry, SMOL, lambda d: d["findings"][NAME_MOVERS].update(evidence="TODO", expect="TODO"))
    entry = load_registry(registry / f"{SMOL}.yaml", allow_todo=True).entries[NAME_MOVERS]
    assert entry.todo == ("evidence", "expect") and entry.expect is None
    with pytest.raises(DataError, match="TODO"):
        finding(NAME_MOVERS, 1.0, model=SMOL)  # chapters load strictly


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(model="gemma-3-270m"), "must be the file's name"),
        (lambda d: d.pop("label"), "exactly model, label and findings"),
        (lambda d: d["findings"].update({"ioi.x": {}}), "id 'ioi.x' is not dotted and prefixed"),
        (lambda d: d["findings"].update({"99.x.y": d["findings"][NAME_MOVERS] | {"chapter": "99"}}),
         "chapter '99' is not a chapter of the course plan"),
    ],
)
def test_a_bad_file_is_refused(registry, change, message):
    edit(registry, SMOL, change)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_registry(registry / f"{SMOL}.yaml")


def test_invalid_yaml_is_refused(tmp_path):
    path = tmp_path / "gpt2.yaml"
    path.write_text("findings: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_registry(path)


def test_an_unknown_model_name_gets_no_registry_until_it_has_a_file(registry):
    assert "gpt2" not in load_registries()
    assert set(load_registries()) == {SMOL, GEMMA, fd.TOY_KEY}
    assert list(load_registries()) == [SMOL, GEMMA, fd.TOY_KEY]  # the page order


# --- files are written in one canonical form ------------------------------------------------


@pytest.mark.parametrize("folder", [fd.REGISTRY_DIR, FIXTURE], ids=["committed", "fixture"])
def test_files_are_in_canonical_form_and_round_trip(folder, tmp_path):
    for path in sorted(folder.glob("*.yaml")):
        registry = load_registry(path)
        assert path.read_text(encoding="utf-8") == fd.dump_registry(registry), (
            f"{path.name} is not in canonical form: run `python -m utils.course.findings format`"
        )
        copy = fd.write_registry(registry, tmp_path / path.name)  # the key is the file's stem
        again = load_registry(copy)
        assert again.entries == registry.entries and again.label == registry.label


def test_dump_rounds_floats_and_sorts_entries(tmp_path):
    (tmp_path / "toy.yaml").write_text(
        "model: toy\nlabel: toy models\nfindings:\n"
        "  16.b.x: {chapter: '16', claim: B, head_type: null, evidence: score, heads: [],"
        " measured: {value: 0.123456789, ci: [0.1111111, 0.2222222], n: 3}, expect: {at_least: 0.1},"
        " margin: m}\n"
        "  16.a.x: {chapter: '16', claim: A, head_type: null, evidence: score, heads: [],"
        " measured: {value: 12345.678, ci: null, n: null}, expect: {at_least: 0.1}, margin: m}\n"
    )
    text = fd.dump_registry(load_registry(tmp_path / "toy.yaml"))
    assert text.index("16.a.x") < text.index("16.b.x")
    assert "measured: {value: 0.1235, ci: [0.1111, 0.2222], n: 3}" in text
    assert "measured: {value: 12350.0, ci: null, n: null}" in text


# --- record mode and the record command ----------------------------------------------------


def test_record_mode_appends_every_call_and_never_raises(registry, tmp_path, monkeypatch, capsys):
    records = tmp_path / "out" / "gemma.jsonl"
    monkeypatch.setenv(fd.RECORD_ENV_VAR, str(records))
    failing = finding(NAME_MOVERS, 0.2, ci=(0.1, 0.3), n=48, heads=["L15H2", "L16H1"], model=GEMMA)
    new = finding("02.ioi.duplicate_token_score", 0.61, n=16, heads=[(3, 1)], model=GEMMA)
    nowhere = finding("02.ioi.brand_new", True, model=GEMMA)
    assert [r.verdict for r in (failing, new, nowhere)] == ["failed", "new", "new"]
    assert all(r.recorded for r in (failing, new, nowhere))
    out = capsys.readouterr().out
    assert f"recorded {NAME_MOVERS}  0.200 [0.100, 0.300] (n=48)  heads L15H2, L16H1  on gemma-3-270m  (FAILS)" in out
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert lines[0] == {"id": NAME_MOVERS, "model": GEMMA, "value": 0.2, "ci": [0.1, 0.3], "n": 48,
                        "heads": ["L15H2", "L16H1"]}
    assert [line["id"] for line in lines] == [NAME_MOVERS, "02.ioi.duplicate_token_score", "02.ioi.brand_new"]
    assert lines[2]["value"] is True and lines[2]["heads"] is None


def test_the_record_command_writes_values_and_todo_entries(registry, tmp_path, monkeypatch, capsys):
    records = tmp_path / "gemma.jsonl"
    monkeypatch.setenv(fd.RECORD_ENV_VAR, str(records))
    finding(NAME_MOVERS, 0.91234567, ci=(0.8, 1.0), n=48, heads=["L15H2", "L16H1"], model=GEMMA)
    finding("02.ioi.previous_token_score", 0.7, n=16, model=GEMMA)  # no heads: keep the registered
    finding(NAME_MOVERS, 0.5, model=SMOL)  # another model: not written into Gemma's file
    records.write_text(records.read_text() + json.dumps(
        {"id": "02.ioi.brand_new", "model": "google/gemma-3-270m", "value": 3, "ci": None, "n": None, "heads": []}
    ) + "\n")
    edit(registry, SMOL, lambda d: d["findings"].update({"02.ioi.smol_only": d["findings"][NAME_MOVERS]}))
    finding("02.ioi.smol_only", 0.9, model=GEMMA)
    monkeypatch.delenv(fd.RECORD_ENV_VAR)

    assert fd.main(["--dir", str(registry), "record", str(records), "--model", "gemma-3-270m"]) == 0
    out = capsys.readouterr().out
    assert "2 updated, 2 created" in out and "02.ioi.brand_new, 02.ioi.smol_only" in out
    gemma = load_registry(registry / f"{GEMMA}.yaml", allow_todo=True)
    movers = gemma.entries[NAME_MOVERS]
    assert movers.measured == fd.Measured(0.9123, (0.8, 1.0), 48)
    assert movers.heads == ("L15H2", "L16H1") and movers.evidence == "causal"  # the rest kept
    assert gemma.entries["02.ioi.previous_token_score"].heads == ("L1H0",)
    copied = gemma.entries["02.ioi.smol_only"]
    assert copied.claim == "Mean-ablating the name movers lowers the IOI logit difference."
    assert copied.head_type == "Name mover head" and copied.todo == ("evidence", "expect", "margin")
    assert copied.measured == fd.Measured(0.9, None, None)
    fresh = gemma.entries["02.ioi.brand_new"]
    assert fresh.todo == ("claim", "head_type", "evidence", "expect", "margin") and fresh.measured.value == 3
    text = (registry / f"{GEMMA}.yaml").read_text()
    assert "evidence: TODO" in text and "expect: TODO" in text
    assert text == fd.dump_registry(gemma)  # canonical
    with pytest.raises(DataError, match="TODO"):
        load_registry(registry / f"{GEMMA}.yaml")
    report = fd.check_registry(registry)
    assert any("02.ioi.smol_only: TODO marker(s) in evidence, expect, margin" in p for p in report.problems)
    assert any("SmolLM2-135M-Instruct.yaml lacks 1 id(s) other models have: 02.ioi.brand_new" in p
               for p in report.problems)


def test_the_record_command_reports_a_value_that_breaks_its_expectation(registry, tmp_path):
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps(
        {"id": NAME_MOVERS, "model": SMOL, "value": 0.2, "ci": [0.1, 0.3], "n": 48, "heads": ["L23H3"]}
    ) + "\n")
    report = fd.record_into(records, SMOL, directory=registry)
    assert report.updated == [NAME_MOVERS] and report.failing == [NAME_MOVERS]
    assert any("fails its own expectation" in p for p in fd.check_registry(registry).problems)


def test_the_record_command_creates_the_file_of_a_new_model(registry, tmp_path):
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps(
        {"id": NAME_MOVERS, "model": "gpt2", "value": 1.5, "ci": None, "n": 8, "heads": ["L9H9"]}
    ) + "\n")
    fd.record_into(records, "gpt2", directory=registry)
    created = load_registry(registry / "gpt2.yaml", allow_todo=True)
    assert created.key == "gpt2" and created.entries[NAME_MOVERS].todo


# --- the check command --------------------------------------------------------------


def test_the_committed_registry_passes_the_check():
    """Both models' files are complete: every finding a chapter states is registered, with
    its expectation, on SmolLM2 and on Gemma (and nothing is left as a TODO)."""
    report = fd.check_registry(fd.REGISTRY_DIR)
    registries = fd.load_registries(fd.REGISTRY_DIR)
    smol, gemma = registries["SmolLM2-135M-Instruct"].entries, registries["gemma-3-270m"].entries
    assert set(smol) == set(gemma), (
        f"ids only on SmolLM2: {sorted(set(smol) - set(gemma))}; only on Gemma: {sorted(set(gemma) - set(smol))}"
    )
    assert report.ok and report.problems == [], report.problems


def test_the_fixture_passes_the_check_and_counts_per_chapter():
    report = fd.check_registry(FIXTURE)
    assert report.ok, report.problems
    assert "  02 | 2 | 2 | 0" in report.lines and "  16 | 0 | 0 | 1" in report.lines


@pytest.mark.parametrize(
    "key, change, message",
    [
        (GEMMA, lambda d: d["findings"].pop("02.ioi.previous_token_score"),
         "gemma-3-270m.yaml lacks 1 id(s) other models have: 02.ioi.previous_token_score"),
        (SMOL, lambda d: d["findings"].update(
            {"16.induction.previous_token_ablation": d["findings"][NAME_MOVERS] | {"chapter": "16"}}),
         "toy-model ids also in a model's file: 16.induction.previous_token_ablation"),
        (SMOL, lambda d: d["findings"][NAME_MOVERS]["measured"].update(ci=[0.3, 0.6]),
         "the registered measurement fails its own expectation: CI lower bound 0.3 is below 0.5"),
        (SMOL, lambda d: d["findings"][NAME_MOVERS].update(evidence="strong"), "'strong' is not one of"),
        (SMOL, lambda d: None, "SmolLM2-135M-Instruct.yaml is not in canonical form"),
    ],
)
def test_the_check_finds_what_is_wrong(registry, capsys, key, change, message):
    edit(registry, key, change)
    report = fd.check_registry(registry)
    assert not report.ok
    assert any(message in problem for problem in report.problems), report.problems
    assert fd.main(["check"]) == 1  # $COURSE_FINDINGS_DIR is the edited copy
    assert message in capsys.readouterr().out


def test_the_check_wants_a_file_for_both_models(registry):
    (registry / f"{GEMMA}.yaml").unlink()
    assert "no registry file for gemma-3-270m (gemma-3-270m.yaml)" in fd.check_registry(registry).problems


# --- the chapter's table -----------------------------------------------------------------


def test_findings_table_of_a_known_model(registry):
    finding(NAME_MOVERS, 0.9, ci=(0.7, 1.1), n=48, heads=["L23H3"], model=SMOL)
    table = findings_table("02")
    assert table.columns[0] == "finding" and table.columns[-1] == "verdict"
    assert table.verdicts() == {NAME_MOVERS: "held", "02.ioi.previous_token_score": "not run"}
    first = dict(zip(table.columns, table.rows[0]))
    assert first["measured [95% CI]"] == "0.900 [0.700, 1.10] (n=48)"
    assert first["expected"] == "≥ 0.5, heads include L23H3" and first["evidence"] == "causal"
    assert table.title == "Findings of chapter 02 on SmolLM2-135M-Instruct: 1 held, 1 not run"
    markdown = table._repr_markdown_()
    assert "| finding | claim |" in markdown and f"| {NAME_MOVERS} |" in markdown
    assert "<table>" in table._repr_html_() and "&lt;" not in table._repr_html_()
    assert list(table.to_frame()["verdict"]) == ["held", "not run"]
    assert findings_table("notebooks/02_in_context_identification", model=SMOL).rows == table.rows
    assert findings_table(2, model=GEMMA).verdicts() == {NAME_MOVERS: "not run", "02.ioi.previous_token_score": "not run"}


def test_findings_table_of_an_unknown_model_lists_the_embedded_entries(registry):
    finding("02.ioi.previous_token_score", 0.2, model="gpt2")
    table = findings_table("02")
    assert table.verdicts() == {NAME_MOVERS: "not run", "02.ioi.previous_token_score": "reported"}
    row = dict(zip(table.columns, table.rows[1]))
    assert row["expected"] == "≥ 0.7 (on SmolLM2-135M-Instruct)" and row["measured [95% CI]"] == "0.200"
    assert "gpt2 (not in the registry: reported beside SmolLM2-135M-Instruct)" in table.title


def test_findings_table_in_record_mode_shows_new_ids(registry, tmp_path, monkeypatch):
    monkeypatch.setenv(fd.RECORD_ENV_VAR, str(tmp_path / "r.jsonl"))
    finding("02.ioi.brand_new", 1.0, model=SMOL)
    verdicts = findings_table("02").verdicts()
    assert verdicts["02.ioi.brand_new"] == "new · recorded"


def test_findings_table_of_the_committed_toy_chapter(monkeypatch):
    table = findings_table("16", model="toy")
    toy_ids = {entry.id for entry in fd.load_registries()["toy"].chapter("16")}
    assert set(table.verdicts()) == toy_ids and set(table.verdicts().values()) == {"not run"}


# --- the committed registry ------------------------------------------------------------


def test_the_committed_toy_findings_hold_and_name_their_heads():
    registries = load_registries(fd.REGISTRY_DIR)
    toy = registries[fd.TOY_KEY]
    assert toy.entries and all(e.chapter == "16" for e in toy.entries.values())
    assert all(entry.holds() for entry in toy.entries.values())
    assert {e.evidence for e in toy.entries.values()} >= {"causal", "score", "not found"}
    assert toy.entries["16.parity.iteration_head_ablation"].head_type == "Iteration head"
    for key in (SMOL, GEMMA):
        assert not set(registries[key].entries) & set(toy.entries)
