"""Hook factories for interventions on attention heads and the residual stream.

Every factory returns a list of ``(hook_name, hook_function)`` pairs, ready for
``model.run_with_hooks(tokens, fwd_hooks=...)`` or ``with model.hooks(fwd_hooks=...)``.
Lists compose by concatenation. Heads are ``(layer, head)`` pairs and are checked
against the model before any hook is built.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

Head = tuple[int, int]
HookList = list[tuple[str, Callable[..., Tensor]]]


def z_hook_name(layer: int) -> str:
    """Name of the hook holding every head's output before W_O: ``(batch, pos, head, d_head)``."""
    return f"blocks.{layer}.attn.hook_z"


def pattern_hook_name(layer: int) -> str:
    """Name of the hook holding the attention pattern: ``(batch, head, query_pos, key_pos)``."""
    return f"blocks.{layer}.attn.hook_pattern"


def check_layer(model: Any, layer: int, *, allow_end: bool = False) -> int:
    """Return ``layer`` if the model has it, else raise a ``ValueError`` naming the range.

    With ``allow_end=True``, ``n_layers`` itself is accepted (the residual after the
    last block).
    """
    n_layers = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    upper = n_layers if allow_end else n_layers - 1
    if not 0 <= layer <= upper:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0..{upper}")
    return layer


def check_heads(model: Any, heads: Iterable[Head]) -> list[Head]:
    """Validate ``(layer, head)`` pairs against the model and return them as a list."""
    checked = []
    for item in heads:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"heads must be (layer, head) pairs, got {item!r}")
        layer, head = item
        check_layer(model, layer)
        if isinstance(head, bool) or not isinstance(head, int):
            raise TypeError(f"head index must be an int, got {type(head).__name__}")
        if not 0 <= head < model.cfg.n_heads:
            raise ValueError(
                f"head {head} is out of range in layer {layer}: this model has heads "
                f"0..{model.cfg.n_heads - 1}"
            )
        checked.append((int(layer), int(head)))
    if not checked:
        raise ValueError("no heads given")
    return checked


def _by_layer(heads: Sequence[Head]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        grouped[layer].append(head)
    return dict(grouped)


def zero_ablation_hooks(model: Any, heads: Iterable[Head]) -> HookList:
    """Set the chosen heads' outputs (``hook_z``) to zero at every position."""
    grouped = _by_layer(check_heads(model, heads))

    def make(head_indices: list[int]) -> Callable[..., Tensor]:
        def hook(z: Tensor, hook: Any) -> Tensor:
            z[:, :, head_indices, :] = 0.0
            return z

        return hook

    return [(z_hook_name(layer), make(indices)) for layer, indices in grouped.items()]


def head_means(cache: Any, model: Any, *, per_position: bool = True) -> dict[int, Tensor]:
    """Mean ``hook_z`` of every layer over a reference batch.

    Returns ``{layer: Tensor}`` with shape ``(pos, n_heads, d_head)`` when
    ``per_position`` (the reference prompts must then share one template), else
    ``(n_heads, d_head)``, averaged over positions as well.
    """
    means = {}
    for layer in range(model.cfg.n_layers):
        z = cache[z_hook_name(layer)]
        means[layer] = z.mean(dim=0) if per_position else z.mean(dim=(0, 1))
    return means


def mean_ablation_hooks(model: Any, heads: Iterable[Head], means: dict[int, Tensor]) -> HookList:
    """Replace the chosen heads' outputs by their mean over a reference batch.

    Args:
        means: from :func:`head_means`. Per-position means need prompts of the same
            length as the reference prompts.
    """
    grouped = _by_layer(check_heads(model, heads))

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        mean = means[layer]

        def hook(z: Tensor, hook: Any) -> Tensor:
            if mean.ndim == 3 and mean.shape[0] != z.shape[1]:
                raise ValueError(
                    f"per-position means cover {mean.shape[0]} positions but the prompt has "
                    f"{z.shape[1]}; use head_means(..., per_position=False)"
                )
            replacement = mean.to(z.device, z.dtype)
            if replacement.ndim == 2:
                z[:, :, head_indices, :] = replacement[head_indices]
            else:
                z[:, :, head_indices, :] = replacement[:, head_indices]
            return z

        return hook

    missing = [layer for layer in grouped if layer not in means]
    if missing:
        raise ValueError(f"means lack layers {missing}")
    return [(z_hook_name(layer), make(layer, indices)) for layer, indices in grouped.items()]


def patch_head_hooks(
    model: Any,
    heads: Iterable[Head],
    source_cache: Any,
    *,
    positions: Sequence[int] | None = None,
) -> HookList:
    """Copy the chosen heads' outputs from another run (``source_cache``).

    Args:
        source_cache: a cache of the run to copy from; its prompts must have the
            same batch size and length as the run being patched.
        positions: patch only these positions; ``None`` patches every position.
    """
    grouped = _by_layer(check_heads(model, heads))

    def make(layer: int, head_indices: list[int]) -> Callable[..., Tensor]:
        source = source_cache[z_hook_name(layer)]

        def hook(z: Tensor, hook: Any) -> Tensor:
            if source.shape != z.shape:
                raise ValueError(
                    f"cannot patch layer {layer}: the source run has hook_z of shape "
                    f"{tuple(source.shape)} but this run has {tuple(z.shape)}; clean and "
                    "corrupted prompts must have the same batch size and token length"
                )
            where = slice(None) if positions is None else list(positions)
            z[:, where, head_indices, :] = source[:, where][:, :, head_indices].to(z.device)
            return z

        return hook

    return [(z_hook_name(layer), make(layer, indices)) for layer, indices in grouped.items()]


def add_to_residual_hooks(
    model: Any,
    layer: int,
    vector: Tensor,
    *,
    positions: Sequence[int] | None = None,
    scale: float = 1.0,
) -> HookList:
    """Add ``scale * vector`` to the residual stream entering block ``layer``.

    ``layer == n_layers`` adds it after the last block, just before the final norm.

    Args:
        vector: ``(d_model,)``.
        positions: add only at these positions; ``None`` adds at every position.
    """
    check_layer(model, layer, allow_end=True)
    if not isinstance(vector, Tensor) or vector.shape != (model.cfg.d_model,):
        raise ValueError(f"vector must be a tensor of shape ({model.cfg.d_model},)")
    name = (
        f"blocks.{layer}.hook_resid_pre"
        if layer < model.cfg.n_layers
        else f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    )

    def hook(resid: Tensor, hook: Any) -> Tensor:
        addition = scale * vector.to(resid.device, resid.dtype)
        if positions is None:
            resid = resid + addition
        else:
            resid = resid.clone()
            resid[:, list(positions)] += addition
        return resid

    return [(name, hook)]


def head_output(model: Any, z: Tensor, layer: int, head: int) -> Tensor:
    """What one head writes into the residual stream: ``z[..., head, :] @ W_O[layer, head]``.

    Args:
        z: ``hook_z`` of that layer, ``(batch, pos, n_heads, d_head)``.

    Returns:
        ``(batch, pos, d_model)``.
    """
    check_heads(model, [(layer, head)])
    return z[..., head, :] @ model.W_O[layer, head].to(z.device)


def all_head_outputs(model: Any, cache: Any, layer: int) -> Tensor:
    """Every head's write into the residual stream at ``layer``: ``(batch, pos, n_heads, d_model)``."""
    check_layer(model, layer)
    z = cache[z_hook_name(layer)]
    return torch.einsum("bphd,hdm->bphm", z, model.W_O[layer].to(z.device))
