"""The cache of processed weights (utils.core.weights_cache): a cached boot gives the
very model a fresh boot gives (state dict, config, hooks, parameter names and tying,
logits), on both test architectures and on Gemma 3; and any change to what the
processing depends on gives another file, so a stale one is never read."""

from __future__ import annotations

import gc
import hashlib

import pytest
import torch

from tests.conftest import build_random_gpt2, gemma_available
from utils.core.models import GEMMA_MODEL_NAME, resolve_model_name
from utils.core.weights_cache import (
    WEIGHTS_CACHE_ENV_VAR,
    boot_bridge,
    cache_key,
    cached_tokenizer,
    processed_weights_cache,
)

PROMPTS = ["When Mary and John went to the store, John gave a drink to", "The capital of France is"]


def signature(model) -> dict:
    """Everything a cached boot must reproduce exactly, reduced to comparable values."""
    state = model.state_dict()
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode() + str(value.dtype).encode() + str(tuple(value.shape)).encode())
        digest.update(value.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    tied: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        tied.setdefault(parameter.data_ptr(), []).append(name)
    tokens = model.to_tokens(PROMPTS)
    tokenizer = model.tokenizer
    texts = PROMPTS + [" leading space", "Ünïcödé, emoji 🙂 and\ttabs\n\nnew lines", "<bos> <eos>", ""]
    settings = {
        name: str(getattr(tokenizer, name, None))
        for name in ("padding_side", "truncation_side", "bos_token", "eos_token", "pad_token",
                     "unk_token", "model_max_length", "add_bos_token", "add_eos_token")
    }
    with torch.no_grad():
        logits = model(tokens)
    return {
        "state": digest.hexdigest(),
        "cfg": repr(model.cfg),
        "hooks": list(model.hook_dict),
        "parameters": [name for name, _ in model.named_parameters(remove_duplicate=False)],
        "tied": sorted(tuple(names) for names in tied.values()),
        "logits": hashlib.sha256(logits.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest(),
        "compatibility": (model.compatibility_mode, model._weights_processed, model.training),
        "tokenizer": (
            type(tokenizer).__qualname__,
            tokenizer.backend_tokenizer.to_str(),
            settings,
            [tokenizer(text)["input_ids"] for text in texts],
            tokenizer.decode(tokens[0]),
            sorted(tokenizer.special_tokens_map.items(), key=str),
            tokens.tolist(),
        ),
    }


def fresh_then_cached(source: str, folder) -> tuple[dict, dict, list]:
    """The signatures of a first boot (which processes afresh and writes the file) and
    of a second one (which reads it), and the files the first one left; one model in
    memory at a time."""
    first = boot_bridge(source, device="cpu", weights_cache=folder)
    fresh = signature(first)
    del first
    gc.collect()
    files = sorted(folder.glob("processed-*.safetensors"))
    second = boot_bridge(source, device="cpu", weights_cache=folder)
    cached = signature(second)
    del second
    gc.collect()
    return fresh, cached, files


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return build_random_gpt2(tmp_path_factory.mktemp("gpt2-cache"))


@pytest.mark.parametrize("which", ["embedded", "gpt2_random", "gemma"])
def test_cached_boot_is_identical_to_a_fresh_one(which, gpt2_folder, tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_CACHE_ENV_VAR, raising=False)
    if which == "gemma":
        if not gemma_available():
            pytest.skip("Gemma 3 270M is not installed (`make setup` installs it)")
        source = resolve_model_name(GEMMA_MODEL_NAME)
    else:
        source = resolve_model_name(None) if which == "embedded" else str(gpt2_folder)
    folder = tmp_path / "processed"
    fresh, cached, files = fresh_then_cached(source, folder)
    assert len(files) == 1, "the first boot must write exactly one weights file"
    assert len(list(folder.glob("tokenizer-*.pickle"))) == 1
    assert cached == fresh
    # and a boot without any cache agrees as well (the first boot processed afresh)
    if which == "gpt2_random":
        assert signature(boot_bridge(source, device="cpu")) == fresh


def test_second_boot_reads_the_file(gpt2_folder, tmp_path, monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    monkeypatch.delenv(WEIGHTS_CACHE_ENV_VAR, raising=False)
    outcomes = []
    for _ in range(2):
        model = TransformerBridge.boot_transformers(str(gpt2_folder), device="cpu")
        with processed_weights_cache(tmp_path) as record:
            model.enable_compatibility_mode(disable_warnings=True)
        outcomes.append((record["hit"], record["written"]))
    assert outcomes == [(False, True), (True, False)]
    monkeypatch.setenv(WEIGHTS_CACHE_ENV_VAR, "0")
    model = TransformerBridge.boot_transformers(str(gpt2_folder), device="cpu")
    with processed_weights_cache(tmp_path) as record:
        model.enable_compatibility_mode(disable_warnings=True)
    assert (record["hit"], record["written"], record["path"]) == (False, False, None)


def test_key_changes_with_everything_the_processing_depends_on(gpt2_random, monkeypatch):
    import utils.core.weights_cache as weights_cache

    state = {key: value.clone() for key, value in gpt2_random.state_dict().items()}
    options = {"fold_ln": True, "center_writing_weights": True}
    adapter = gpt2_random.adapter
    base = cache_key(state, gpt2_random.cfg, adapter, options)
    assert cache_key(state, gpt2_random.cfg, adapter, options) == base  # deterministic

    key = next(iter(state))
    changed = dict(state)
    changed[key] = state[key].clone()
    changed[key].view(-1)[0] += 1e-6  # one value, barely
    assert cache_key(changed, gpt2_random.cfg, adapter, options) != base
    assert cache_key(state, gpt2_random.cfg, adapter, {**options, "fold_ln": False}) != base
    assert cache_key(state, gpt2_random.cfg, None, options) != base
    renamed = {("x" + k if k == key else k): v for k, v in state.items()}
    assert cache_key(renamed, gpt2_random.cfg, adapter, options) != base
    tied = dict(state)
    second = list(state)[1]
    if state[second].shape == state[key].shape:
        tied[second] = tied[key]
    else:
        tied[second] = state[second].clone()
        tied[second] = tied[second].to(torch.float64)
    assert cache_key(tied, gpt2_random.cfg, adapter, options) != base
    real = weights_cache._package_version
    monkeypatch.setattr(
        weights_cache, "_package_version",
        lambda name: "0.0.0" if name == "transformer_lens" else real(name),
    )
    assert cache_key(state, gpt2_random.cfg, adapter, options) != base


def test_bad_input():
    with pytest.raises(TypeError, match="folder"):
        with processed_weights_cache(3):
            pass
    with pytest.raises(TypeError, match="not a tensor"):
        cache_key({"a": 1.0}, object(), None, {})
    with pytest.raises(TypeError, match="source"):
        boot_bridge(None, device="cpu")
    with pytest.raises(ValueError, match="local model folder"):
        cached_tokenizer("/no/such/folder", None)


def test_tokenizer_pickle_is_named_by_the_files(gpt2_folder, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv(WEIGHTS_CACHE_ENV_VAR, raising=False)
    source = tmp_path / "model"
    shutil.copytree(gpt2_folder, source)
    cache = tmp_path / "cache"
    first = cached_tokenizer(source, cache)
    pickles = list(cache.glob("tokenizer-*.pickle"))
    assert len(pickles) == 1
    again = cached_tokenizer(source, cache)
    assert again.backend_tokenizer.to_str() == first.backend_tokenizer.to_str()
    assert list(cache.glob("tokenizer-*.pickle")) == pickles
    config = source / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")  # the same settings, other bytes
    cached_tokenizer(source, cache)
    renamed = list(cache.glob("tokenizer-*.pickle"))
    assert len(renamed) == 1 and renamed != pickles, "a changed file must give another pickle"
