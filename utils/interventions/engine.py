"""The fast engine: cache a run once, then resume it at any block with a batch of
edited copies of its residual stream.

The copies of one sweep are split into resumed runs whose logits fit
:func:`utils.interventions.runner.logits_budget` (:func:`copy_chunks`), so a large
vocabulary (Gemma 3's 262,144 tokens) does not run out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from utils.core.heads import check_layer
from utils.core.metrics import Metric, metric_value
from utils.core.positions import check_positions
from utils.interventions.runner import rows_per_run

# ---------------------------------------------------------------------------
# The engine: resume a cached run at block L with a batch of edited copies
# ---------------------------------------------------------------------------


@dataclass
class CachedRun:
    """What a run leaves behind for resuming it at any block.

    ``resid_pre[l]`` is the residual stream entering block ``l``, ``z[l]`` every head's
    output there (``(batch, pos, n_heads, d_head)``), ``block_inputs[l]`` the other
    arguments the block received (attention mask, rotary embeddings, ...).
    """

    tokens: Tensor
    logits: Tensor
    resid_pre: list[Tensor]
    z: list[Tensor]
    block_inputs: list[tuple[tuple, dict]]

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])


def cache_run(model: Any, tokens: Tensor, *, last_position_only: bool = False) -> CachedRun:
    """Run ``tokens`` once and keep what :func:`run_from_layer` needs to resume the run.

    Args:
        last_position_only: keep (and compute) the logits of the last position only,
            ``(batch, 1, d_vocab)``, when nothing reads the others (HF's ``logits_to_keep``).
    """
    n_layers = model.cfg.n_layers
    block_inputs: list[tuple[tuple, dict]] = [((), {})] * n_layers
    handles = []

    def make_capture(layer: int) -> Callable[..., None]:
        def capture(module: Any, args: tuple, kwargs: dict) -> None:
            block_inputs[layer] = (args, kwargs)

        return capture

    names = [get_act_name("resid_pre", layer) for layer in range(n_layers)]
    names += [get_act_name("z", layer) for layer in range(n_layers)]
    try:
        for layer in range(n_layers):
            handles.append(
                model.blocks[layer].register_forward_pre_hook(make_capture(layer), with_kwargs=True)
            )
        with torch.no_grad():
            if last_position_only:
                try:
                    logits, cache = model.run_with_cache(tokens, names_filter=names, logits_to_keep=1)
                except TypeError:  # a model that does not take logits_to_keep
                    logits, cache = model.run_with_cache(tokens, names_filter=names)
                logits = logits[:, -1:]
            else:
                logits, cache = model.run_with_cache(tokens, names_filter=names)
    finally:
        for handle in handles:
            handle.remove()
    return CachedRun(
        tokens=tokens,
        logits=logits,
        resid_pre=[cache[get_act_name("resid_pre", layer)] for layer in range(n_layers)],
        z=[cache[get_act_name("z", layer)] for layer in range(n_layers)],
        block_inputs=block_inputs,
    )


def _is_kv_cache(value: Any) -> bool:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover - transformers always ships it
        return False
    return isinstance(value, Cache)


def _repeat_batch(value: Any, batch: int, copies: int) -> Any:
    """Repeat every per-prompt tensor (first dim ``batch``) ``copies`` times along dim 0."""
    if _is_kv_cache(value):
        return None  # a key/value cache would make the resumed blocks attend to stale keys
    if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.ndim - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat_batch(item, batch, copies) for item in value)
    return value


def run_from_layer(
    model: Any,
    run: CachedRun,
    layer: int,
    resid: Tensor,
    *,
    fwd_hooks: Sequence[tuple[str, Callable[..., Any]]] = (),
    last_position_only: bool = False,
    logit_positions: Tensor | None = None,
) -> Tensor:
    """Resume ``run`` at block ``layer`` from the residual ``resid`` and return the logits.

    ``resid`` stacks ``copies`` edited versions of the run's residual stream:
    ``(copies * batch, pos, d_model)``, copy ``c`` in rows ``c * batch`` to
    ``(c + 1) * batch``. Blocks before ``layer`` are not run at all.

    Args:
        last_position_only: unembed only the last position (logits of shape
            ``(copies * batch, 1, d_vocab)``), which saves much of the work when the
            metric reads nothing else.
        logit_positions: ``LongTensor[batch, k]``, unembed only these ``k`` positions of
            each prompt (the same for every copy): logits ``(copies * batch, k, d_vocab)``,
            for a metric that reads a few positions that differ between prompts (the
            tokens after a word). Not together with ``last_position_only``.
    """
    check_layer(model, layer)
    logit_positions = check_logit_positions(run, logit_positions, last_position_only)
    expected = run.resid_pre[layer].shape
    if resid.ndim != 3 or resid.shape[0] % run.batch or resid.shape[1:] != expected[1:]:
        raise ValueError(
            f"resid must stack copies of the run's residual {tuple(expected)}, "
            f"got {tuple(resid.shape)}"
        )
    copies = resid.shape[0] // run.batch
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for current in range(layer, model.cfg.n_layers):
            args, kwargs = run.block_inputs[current]
            kwargs = {key: _repeat_batch(value, run.batch, copies) for key, value in kwargs.items()}
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            if args:
                rest = tuple(_repeat_batch(value, run.batch, copies) for value in args[1:])
                out = model.blocks[current](resid, *rest, **kwargs)
            else:
                kwargs["hidden_states"] = resid
                out = model.blocks[current](**kwargs)
            resid = out[0] if isinstance(out, tuple) else out
        if last_position_only:
            resid = resid[:, -1:]
        elif logit_positions is not None:
            at = logit_positions.to(resid.device).repeat(copies, 1)
            resid = resid[torch.arange(resid.shape[0], device=resid.device)[:, None], at]
        return model.unembed(model.ln_final(resid))


def check_logit_positions(run: CachedRun, logit_positions: Tensor | None, last_position_only: bool = False) -> Tensor | None:
    """``logit_positions`` checked against ``run``: a ``LongTensor[batch, k]`` of positions
    inside the prompts (``None`` passes through).

    Raises:
        ValueError: the wrong shape or type, a position out of range, or both
            ``logit_positions`` and ``last_position_only``.
    """
    if logit_positions is None:
        return None
    if last_position_only:
        raise ValueError("give logit_positions or last_position_only, not both")
    n_positions = int(run.tokens.shape[1])
    if (not isinstance(logit_positions, Tensor) or logit_positions.ndim != 2
            or logit_positions.shape[0] != run.batch or logit_positions.dtype != torch.long):
        raise ValueError(f"logit_positions must be a LongTensor[{run.batch}, k] (k positions per prompt)")
    if bool((logit_positions < 0).any()) or bool((logit_positions >= n_positions).any()):
        raise ValueError(f"logit_positions must lie in [0, {n_positions - 1}]")
    return logit_positions


def copy_chunks(
    model: Any, items: Sequence[Any], run: CachedRun, *, last_position_only: bool = False, n_positions: int | None = None
) -> list[list[Any]]:
    """``items`` (one per edited copy of ``run``) in consecutive groups small enough for
    one resumed run: each group's logits fit the logits budget (``n_positions``
    unembedded positions per prompt when given, e.g. ``logit_positions``' ``k``)."""
    n_out = 1 if last_position_only else int(run.tokens.shape[1]) if n_positions is None else n_positions
    size = rows_per_run(model, n_out, rows_per_item=run.batch)
    items = list(items)
    return [items[start : start + size] for start in range(0, len(items), size)]


def _metric_per_copy(metric: Metric, logits: Tensor, batch: int) -> list[float]:
    return [float(metric_value(metric, chunk)) for chunk in logits.split(batch, dim=0)]


def replace_heads_sweep(
    model: Any,
    run: CachedRun,
    replacement_z: Sequence[Tensor],
    metric: Metric,
    *,
    layers: Sequence[int] | None = None,
    positions: Tensor | None = None,
    last_position_only: bool = False,
) -> Tensor:
    """For every head, ``metric`` on ``run`` with that head's output replaced.

    The engine behind exact patching and per-head ablation.

    Args:
        run: the base run, from :func:`cache_run`.
        replacement_z: per layer, the value to write into ``hook_z``, broadcastable to
            ``(batch, pos, n_heads, d_head)`` (a source run's ``z``, zeros, a mean, ...).
        layers: the layers to sweep; all by default.
        positions: replace only at each prompt's positions, ``LongTensor[batch]`` (or
            ``LongTensor[batch, k]`` for several per prompt), as
            :mod:`utils.core.positions` prescribes; every position by default.
        last_position_only: see :func:`utils.interventions.patching.head_patching_sweep`.

    Returns:
        ``Tensor[len(layers), n_heads]``.
    """
    layers = _check_layers(model, layers)
    n_heads, batch, n_pos = model.cfg.n_heads, run.batch, run.tokens.shape[1]
    rows, columns = position_index(positions, batch, n_pos, device=run.z[0].device)
    if len(replacement_z) != model.cfg.n_layers:
        raise ValueError(
            f"replacement_z needs one entry per layer ({model.cfg.n_layers}), "
            f"got {len(replacement_z)}"
        )
    results = torch.zeros(len(layers), n_heads)
    with torch.no_grad():
        for row, layer in enumerate(layers):
            base_z = run.z[layer]
            new = replacement_z[layer].to(base_z.device, base_z.dtype).expand_as(base_z)
            for heads in copy_chunks(model, range(n_heads), run, last_position_only=last_position_only):

                def patch(z: Tensor, hook: Any, new: Tensor = new, heads: list[int] = heads) -> Tensor:
                    z = z.contiguous()  # so that the view below shares z's memory
                    stacked = z.view(len(heads), batch, *z.shape[1:])
                    for copy, head in enumerate(heads):
                        # stacked[copy] is a view, so this writes into z itself
                        stacked[copy][rows, columns, head] = new[rows, columns, head]
                    return z

                resid = run.resid_pre[layer].repeat(len(heads), 1, 1)
                logits = run_from_layer(
                    model, run, layer, resid, fwd_hooks=[(get_act_name("z", layer), patch)],
                    last_position_only=last_position_only,
                )
                results[row, heads] = torch.tensor(_metric_per_copy(metric, logits, batch))
    return results


def _check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.cfg.n_layers))
    checked = [check_layer(model, layer) for layer in layers]
    if not checked:
        raise ValueError("layers is empty")
    return checked


def position_index(
    positions: Tensor | None, batch: int, n_pos: int, *, device: Any = None
) -> tuple[Any, Any]:
    """An index ``(rows, columns)`` into the first two axes of a ``(batch, pos, ...)``
    activation that selects each prompt's ``positions`` (checked with
    :func:`utils.core.positions.check_positions`); every position for ``None``."""
    if positions is None:
        return slice(None), slice(None)
    checked = check_positions("positions", positions, batch, n_pos).to(device)
    rows = torch.arange(batch, device=checked.device)
    return (rows if checked.ndim == 1 else rows[:, None]), checked
