"""A cache of TransformerLens's processed weights (and of the tokenizer), so that a
model boots without re-processing them.

``TransformerBridge.enable_compatibility_mode`` folds the norms and centres the writing
weights and the unembedding (``ProcessWeights.process_weights``). That step is a pure
function of the bridge's state dict, its config, the architecture adapter and the
processing options, and it is most of a model's load time (about 7 s of SmolLM2's 11 s
and 18 s of Gemma 3's 28 s of CPU time): it clones the whole state dict several times.

:func:`processed_weights_cache` wraps that one function while a bridge is put into
compatibility mode. On the first boot it runs the processing and saves the result as a
safetensors file in the given folder; on every later boot it returns the saved result
instead, and everything else (the input state dict, the adapter's pre- and
post-processing, distributing the weights to the components, the hooks) runs as before.

The file's name is a sha256 over everything the result depends on: the versions of
torch, transformers, transformer_lens and safetensors, the processing options, the
adapter's class, the config's fields, and the *content* of the input state dict (names,
shapes, dtypes, which tensors share memory, and a sha256 of every byte). A change to
any of them gives another name, so a stale file is never read; the content hash costs
about 0.4 s per GB. A file is written beside its target and renamed, so a reader never
sees half a file, and older files of the same folder are removed when a new one is
written. ``COURSE_WEIGHTS_CACHE=0`` turns the cache off.

:func:`cached_tokenizer` does the same for the tokenizer (a pickle of what
``AutoTokenizer.from_pretrained`` builds, named by a sha256 over the tokenizer's files
and library versions), and :func:`boot_bridge` uses both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

WEIGHTS_CACHE_ENV_VAR = "COURSE_WEIGHTS_CACHE"

#: Bumped when the file layout or the key changes.
FORMAT_VERSION = 1

_PREFIX = "processed-"
_SUFFIX = ".safetensors"
_PACKAGES = ("torch", "transformers", "transformer_lens", "safetensors")


def weights_cache_enabled() -> bool:
    """Whether ``$COURSE_WEIGHTS_CACHE`` leaves the cache on (it is on unless set to
    ``0``, ``off``, ``false`` or ``no``)."""
    value = os.environ.get(WEIGHTS_CACHE_ENV_VAR, "1").strip().lower()
    return value not in {"0", "off", "false", "no"}


def _package_version(name: str) -> str:
    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        module = __import__(name)
        return str(getattr(module, "__version__", "unknown"))


def _plain(value: Any) -> Any:
    """A JSON-able rendering of a config value (types other than plain data by name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return type(value).__qualname__


def _config_fields(cfg: Any) -> dict[str, Any]:
    fields = vars(cfg) if hasattr(cfg, "__dict__") else {}
    return {name: _plain(value) for name, value in sorted(fields.items()) if not name.startswith("_")}


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _alias_groups(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, str], bool]:
    """Each key mapped to the first key holding the same tensor (same memory, shape,
    stride, dtype), and whether any *other* memory overlap exists (views)."""
    first: dict[tuple, str] = {}
    owner: dict[str, str] = {}
    pointers: dict[int, tuple] = {}
    partial = False
    for key, tensor in state_dict.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)
        if identity in first:
            owner[key] = first[identity]
            continue
        first[identity] = key
        owner[key] = key
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if storage is not None:
            if storage in pointers and pointers[storage] != identity:
                partial = True
            pointers.setdefault(storage, identity)
    return owner, partial


def cache_key(state_dict: dict[str, torch.Tensor], cfg: Any, adapter: Any, options: dict[str, Any]) -> str:
    """The sha256 (hex) naming the processed weights of ``state_dict``: see the module
    docstring for what it covers.

    Raises:
        TypeError: a value of ``state_dict`` is not a tensor.
    """
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
    owner, _ = _alias_groups(state_dict)
    header = {
        "format": FORMAT_VERSION,
        "versions": {name: _package_version(name) for name in _PACKAGES},
        "options": _plain(options),
        "adapter": type(adapter).__module__ + "." + type(adapter).__qualname__ if adapter is not None else None,
        "cfg": _config_fields(cfg),
        "tensors": [
            [key, list(value.shape), str(value.dtype), owner[key]] for key, value in state_dict.items()
        ],
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for key, value in state_dict.items():
        if owner[key] == key:
            digest.update(key.encode() + b"\0")
            digest.update(_tensor_bytes(value))
    return digest.hexdigest()


def _save(path: Path, state_dict: dict[str, torch.Tensor]) -> bool:
    """Write ``state_dict`` to ``path`` atomically; ``False`` (nothing written) when it
    holds tensors that are views of one another, which safetensors cannot store."""
    from safetensors.torch import save_file

    owner, partial = _alias_groups(state_dict)
    if partial:
        return False
    unique = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items() if owner[key] == key}
    layout = {"keys": list(state_dict), "owner": owner}
    _write_replacing(path, _PREFIX, _SUFFIX, lambda staging: save_file(unique, staging, metadata={"layout": json.dumps(layout)}))
    return True


def _write_replacing(path: Path, prefix: str, suffix: str, write: Callable[[str], None]) -> None:
    """Write ``path`` atomically (``write`` fills a staging file in the same folder, which
    then replaces ``path``), and delete the folder's older ``prefix*suffix`` files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".writing-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    for old in path.parent.glob(f"{prefix}*{suffix}"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()


def _load(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        layout = json.loads(handle.metadata()["layout"])
        unique = {key: handle.get_tensor(key) for key in handle.keys()}
    return {key: unique[layout["owner"][key]] for key in layout["keys"]}


@contextlib.contextmanager
def processed_weights_cache(folder: Path | str | None) -> Iterator[dict[str, Any]]:
    """While active, ``ProcessWeights.process_weights`` reads its result from
    ``folder`` when a file for the same inputs is there, and writes it there otherwise.

    Yields a dict that records what happened: ``"hit"`` (a saved result was used),
    ``"written"`` (a result was saved), ``"path"``. ``folder=None`` or
    ``$COURSE_WEIGHTS_CACHE=0`` leaves the processing untouched.

    Raises:
        TypeError: ``folder`` is not a path, a string or ``None``.
    """
    if folder is not None and not isinstance(folder, (str, Path)):
        raise TypeError(f"folder must be a path, a string or None, got {type(folder).__name__}")
    record: dict[str, Any] = {"hit": False, "written": False, "path": None}
    if folder is None or not weights_cache_enabled():
        yield record
        return
    from transformer_lens.weight_processing import ProcessWeights

    original = ProcessWeights.__dict__["process_weights"]
    compute = original.__func__

    def cached(state_dict, cfg, *args: Any, **kwargs: Any):
        names = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                 "refactor_factored_attn_matrices", "adapter")
        options = dict(zip(names, args))
        options.update(kwargs)
        adapter = options.pop("adapter", None)
        if not state_dict or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
            return compute(state_dict, cfg, *args, **kwargs)
        device = next(iter(state_dict.values())).device
        path = Path(folder) / f"{_PREFIX}{cache_key(state_dict, cfg, adapter, options)}{_SUFFIX}"
        record["path"] = path
        if path.is_file():
            record["hit"] = True
            return _load(path, device)
        result = compute(state_dict, cfg, *args, **kwargs)
        if all(isinstance(value, torch.Tensor) for value in result.values()):
            with contextlib.suppress(OSError):
                record["written"] = _save(path, result)
        return result

    ProcessWeights.process_weights = staticmethod(cached)
    try:
        yield record
    finally:
        ProcessWeights.process_weights = original


#: The arguments TransformerLens's boot passes to ``AutoTokenizer.from_pretrained``
#: (``transformer_lens.model_bridge.sources.transformers.source.boot``), offline.
_TOKENIZER_ARGUMENTS = {
    "add_bos_token": True, "use_fast": True, "token": None, "trust_remote_code": False, "revision": None,
}
_TOKENIZER_PREFIX = "tokenizer-"
_TOKENIZER_SUFFIX = ".pickle"


def _tokenizer_key(source: Path) -> str:
    """sha256 over the versions of transformers and tokenizers, the arguments, and the
    name and content of every file of ``source`` the tokenizer may read (all but the
    weights and this module's own files)."""
    header = {
        "format": FORMAT_VERSION,
        "versions": {name: _package_version(name) for name in ("transformers", "tokenizers")},
        "arguments": _TOKENIZER_ARGUMENTS,
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.suffix == _SUFFIX or path.name.startswith((".", _TOKENIZER_PREFIX)):
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cached_tokenizer(source: Path | str, folder: Path | str | None) -> Any:
    """The tokenizer TransformerLens's boot would load from the local folder ``source``
    (``AutoTokenizer.from_pretrained`` with the boot's arguments), kept as a pickle in
    ``folder`` and read from there on later calls.

    Gemma 3's tokenizer class rebuilds its 262,144-token BPE from ``tokenizer.json``
    parsed in Python (about 6 s); unpickling the built tokenizer takes about half of
    that. The pickle's name is a sha256 over the versions of transformers and
    tokenizers, the arguments and every file of ``source`` the tokenizer may read, so a
    changed file or library gives another name. ``folder=None`` or
    ``$COURSE_WEIGHTS_CACHE=0``: loaded afresh, nothing kept.

    Raises:
        ValueError: ``source`` is not a folder.
    """
    import pickle

    from transformers import AutoTokenizer

    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"source must be a local model folder, got {str(source)!r}")
    if folder is None or not weights_cache_enabled():
        return AutoTokenizer.from_pretrained(str(source), **_TOKENIZER_ARGUMENTS)
    path = Path(folder) / f"{_TOKENIZER_PREFIX}{_tokenizer_key(source)}{_TOKENIZER_SUFFIX}"
    if path.is_file():
        with contextlib.suppress(Exception):  # an unreadable pickle is rebuilt below
            with path.open("rb") as handle:
                return pickle.load(handle)
    tokenizer = AutoTokenizer.from_pretrained(str(source), **_TOKENIZER_ARGUMENTS)
    with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):

        def dump(staging: str) -> None:
            with open(staging, "wb") as stream:
                pickle.dump(tokenizer, stream, protocol=pickle.HIGHEST_PROTOCOL)

        _write_replacing(path, _TOKENIZER_PREFIX, _TOKENIZER_SUFFIX, dump)
    return tokenizer


def boot_bridge(source: str, *, device: str, weights_cache: Path | str | None = None) -> Any:
    """Boot ``source`` (a local folder or a model name) as a ``TransformerBridge`` in
    compatibility mode and eval mode, reading and writing its processed weights and its
    tokenizer (:func:`cached_tokenizer`) in ``weights_cache``, which needs ``source`` to
    be a local folder (``None``: both built afresh, nothing cached).

    This is :func:`utils.core.models.load_model`'s boot step, which passes an offline
    model's own folder as ``weights_cache``.

    Raises:
        TypeError: ``source`` is not a string.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a string, got {type(source).__name__}")
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = cached_tokenizer(source, weights_cache) if weights_cache is not None else None
    model = TransformerBridge.boot_transformers(source, device=device, tokenizer=tokenizer)
    with processed_weights_cache(weights_cache):
        model.enable_compatibility_mode(disable_warnings=True)
    model.eval()
    return model

