"""Published head indices: data integrity and the comparison report."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from utils.course.published import PUBLISHED_HEADS, compare_with_published, model_key, published_heads
from utils.course.taxonomy import HEAD_TYPES, get_head_type

BIB = (Path(__file__).resolve().parents[1] / "book" / "references.bib").read_text()


def fake_model(name, shape=(12, 12, 768, 50257)):
    n_layers, n_heads, d_model, d_vocab = shape
    return SimpleNamespace(cfg=SimpleNamespace(model_name=name, n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_vocab=d_vocab))


def test_entries_are_valid_gpt2_small_heads_with_known_sources():
    for entry in PUBLISHED_HEADS:
        assert entry.heads and all(0 <= l < 12 and 0 <= h < 12 for l, h in entry.heads)
        assert "{" + entry.source + "," in BIB, f"{entry.source} missing from references.bib"


def test_every_published_key_is_a_taxonomy_head_type():
    names = {head.name for head in HEAD_TYPES}
    for entry in PUBLISHED_HEADS:
        assert entry.head_type in names, f"{entry.head_type!r} is not a head type's name in taxonomy.yaml"
        assert entry.source, f"{entry.head_type}: no source"
    # one entry per paper and head type
    pairs = [(e.head_type, e.model, e.source) for e in PUBLISHED_HEADS]
    assert len(pairs) == len(set(pairs))


def test_lookups_take_the_taxonomy_names_and_aliases():
    assert published_heads("name mover") == published_heads("Name mover head")
    (entry,) = published_heads("previous-token heads")
    assert entry.head_type == get_head_type("previous token").name == "Previous head"
    sources = {e.source for e in published_heads("copy suppression")}
    assert sources == {"wang2022interpretability", "mcdougall2024copy"}
    with pytest.raises(ValueError, match="recorded"):
        published_heads("Retrieval head")  # a head type, but no published GPT-2 heads
    with pytest.raises(ValueError, match="not a head type of the taxonomy"):
        published_heads("no such head")


def test_model_key():
    assert model_key(fake_model("gpt2")) == "gpt2-small"
    assert model_key(fake_model("openai-community/gpt2")) == "gpt2-small"
    assert model_key(fake_model("gpt2", shape=(3, 4, 64, 50257))) is None  # a random tiny GPT-2
    assert model_key(fake_model("/cache/SmolLM2-135M-Instruct", shape=(30, 9, 576, 49152))) is None


def test_compare_reports_overlap_on_gpt2_and_no_transfer_elsewhere(embedded_model):
    report = compare_with_published(fake_model("gpt2"), "name mover", [(9, 9), (3, 3)])
    assert "9.9, 9.6, 10.0" in report and "in both: 9.9 (1 of 3 published)" in report
    report = compare_with_published(embedded_model, "name mover", [(20, 1)])
    assert "20.1" in report and "do not transfer" in report
    with pytest.raises(ValueError, match="not a head type"):
        compare_with_published(embedded_model, "name-mover-ish", [(20, 1)])  # typos fail anywhere


def test_compare_reports_head_types_without_records():
    gpt2 = fake_model("gpt2")
    report = compare_with_published(gpt2, "subject", [(3, 4)], studied_on="Pythia-2.8B")
    assert "3.4" in report and "No published subject heads" in report and "Pythia-2.8B" in report
    report = compare_with_published(gpt2, "name mover", [(9, 9)], studied_on="x")
    assert "published for gpt2-small" in report
    report = compare_with_published(gpt2, "negative name mover", [(10, 7)])
    assert "(wang2022interpretability): 10.7, 11.10" in report
    assert "(mcdougall2024copy, as copy suppression heads): 10.7" in report
    elsewhere = fake_model("SmolLM2", shape=(30, 9, 576, 49152))
    report = compare_with_published(elsewhere, "subject", [(1, 2)], studied_on="Pythia-2.8B")
    assert "1.2" in report and "do not transfer" in report and "Pythia-2.8B" in report
