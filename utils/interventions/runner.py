"""Running batched variants of one batch of prompts: one row order for the whole library.

Several interventions on the same prompts run fastest as one large batch (on a CPU,
few big forward passes beat many small ones). The prompts are stacked once per variant,
**variant-major**: variant ``v`` holds rows ``v * batch`` to ``(v + 1) * batch - 1``.
:class:`Variants` hands each variant its rows (for the ``rows=`` argument of every hook
builder in :mod:`utils.interventions.hooks`) and splits results back;
:func:`run_variants` runs them, sharing a prefix when the interventions leave it alone
(:class:`PrefixRun`). The fast patching engine (:mod:`utils.interventions.engine`)
stacks its copies in the same order.

**Logits are the big tensor.** A forward pass holds ``rows * positions * d_vocab``
floats of logits: 0.67 GB for 32 prompts of 20 tokens on Gemma 3's 262,144-token
vocabulary. Runs here unembed only the last position when that is all that is read
(``last_position_only``, HF's ``logits_to_keep``), and split their variants into
forward passes whose logits fit :func:`logits_budget` (``$COURSE_LOGITS_BUDGET_MB``,
1024 MB by default); the fast engine (:mod:`utils.interventions.engine`) does the same.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from utils.core.hooks import HookList

__all__ = [
    "LOGITS_BUDGET_ENV_VAR",
    "PrefixRun",
    "Variants",
    "PREFIX_CACHE_BUDGET_BYTES",
    "forward_logits",
    "logits_budget",
    "prefix_variants_per_run",
    "rows_per_run",
    "run_prefix_variants",
    "run_variants",
]

#: Environment variable: megabytes of logits one batched forward pass may hold.
LOGITS_BUDGET_ENV_VAR = "COURSE_LOGITS_BUDGET_MB"

_DEFAULT_LOGITS_BUDGET_MB = 1024


def logits_budget() -> int:
    """Bytes of logits one batched forward pass may hold: ``$COURSE_LOGITS_BUDGET_MB``
    megabytes, 1024 by default."""
    configured = os.environ.get(LOGITS_BUDGET_ENV_VAR)
    try:
        megabytes = float(configured) if configured else _DEFAULT_LOGITS_BUDGET_MB
    except ValueError:
        raise ValueError(f"${LOGITS_BUDGET_ENV_VAR} must be a number of megabytes, got {configured!r}") from None
    return int(megabytes * 2**20)


def rows_per_run(model: Any, n_positions: int, *, rows_per_item: int = 1) -> int:
    """How many items of ``rows_per_item`` batch rows each (variants, patched copies)
    one forward pass can take so that its logits, ``n_positions`` positions of
    ``d_vocab`` float32 logits per row, fit :func:`logits_budget`; at least 1."""
    per_item = max(1, rows_per_item) * max(1, n_positions) * int(model.cfg.d_vocab) * 4
    return max(1, logits_budget() // per_item)


#: Bytes of expanded key-value cache one batched suffix pass over a :class:`PrefixRun`
#: may hold. Each variant of a prefix run gets its own copy of the prefix's keys and
#: values, and past a few hundred megabytes copying them costs more than the pass saves:
#: on 32 needle prompts of 194 prefix tokens, 21 variants took 25 s in one pass and
#: 12.5 s one or two at a time (SmolLM2, 2-core CPU, session 9).
PREFIX_CACHE_BUDGET_BYTES = 512 * 2**20


def prefix_variants_per_run(model: Any, batch: int, prefix_len: int) -> int:
    """How many variants of a :class:`PrefixRun` of ``batch`` prompts with a
    ``prefix_len``-token prefix one suffix pass should take, so that their copies of the
    prefix's keys and values (float32, every layer) fit
    :data:`PREFIX_CACHE_BUDGET_BYTES`; at least 1."""
    cfg = model.cfg
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_variant = cfg.n_layers * max(1, batch) * max(1, prefix_len) * kv_heads * cfg.d_head * 2 * 4
    return max(1, PREFIX_CACHE_BUDGET_BYTES // per_variant)


def forward_logits(
    model: Any, tokens: Tensor, fwd_hooks: HookList = (), *, last_position_only: bool = False, **kwargs: Any
) -> Tensor:
    """``model.run_with_hooks(tokens, fwd_hooks=...)``; with ``last_position_only`` only
    the last position is unembedded (``(batch, 1, d_vocab)``, via ``logits_to_keep=1``
    where the model takes it, else by slicing the full logits)."""
    hooks = list(fwd_hooks)
    with torch.no_grad():
        if last_position_only:
            try:
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks, logits_to_keep=1, **kwargs)
            except TypeError:  # a model that does not take logits_to_keep
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks, **kwargs)
            return logits[:, -1:]
        return model.run_with_hooks(tokens, fwd_hooks=hooks, **kwargs)


@dataclass(frozen=True)
class Variants:
    """``n`` variants of a batch of ``batch`` prompts, stacked variant-major."""

    batch: int
    n: int

    def __post_init__(self) -> None:
        for name in ("batch", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def rows(self, variant: int) -> Tensor:
        """The batch rows of ``variant``: ``LongTensor[batch]``."""
        if not 0 <= variant < self.n:
            raise ValueError(f"variant {variant} out of range 0..{self.n - 1}")
        return torch.arange(variant * self.batch, (variant + 1) * self.batch)

    def stack(self, tokens: Tensor) -> Tensor:
        """``tokens`` repeated once per variant, variant-major: ``(n * batch, ...)``."""
        if tokens.shape[0] != self.batch:
            raise ValueError(f"tokens hold {tokens.shape[0]} prompts, expected {self.batch}")
        return tokens.repeat(self.n, *([1] * (tokens.ndim - 1)))

    def split(self, values: Tensor) -> Tensor:
        """``(n * batch, ...)`` results -> ``(n, batch, ...)``."""
        if values.ndim == 0 or values.shape[0] != self.n * self.batch:
            raise ValueError(
                f"expected one value (or row) per stacked prompt, a leading dimension of "
                f"{self.n * self.batch}, got shape {tuple(values.shape)}"
            )
        return values.reshape(self.n, self.batch, *values.shape[1:])


def _prefix_cache(model: Any, tokens: Tensor, prefix_len: int) -> Any:
    """The keys and values of ``tokens[:, :prefix_len]`` (a ``DynamicCache``), or ``None``
    if the loaded model cannot run from cached keys and values."""
    try:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        with torch.no_grad():
            try:  # the prefix's logits are never read: unembed one position only
                model(tokens[:, :prefix_len], past_key_values=cache, logits_to_keep=1)
            except TypeError:
                cache = DynamicCache()
                model(tokens[:, :prefix_len], past_key_values=cache)
        return cache if cache.get_seq_length() == prefix_len else None
    except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
        return None


class PrefixRun:
    """Run hooked variants of one batch while computing a shared prefix only once.

    Attention is causal, so an intervention that only touches queries at positions
    ``>= prefix_len`` (blocking edges from the last position, changing what late queries
    attend to) leaves every earlier position exactly as in the clean run. The keys and
    values of the prefix are computed once; each call runs only the remaining positions.
    Hooks must therefore not change positions ``< prefix_len``; the hooks of
    :mod:`utils.interventions.hooks` handle runs whose queries start after position 0.

    If the loaded model cannot run from cached keys and values, every call runs the whole
    prompt instead (same result, slower).

    Args:
        tokens: ``(batch, pos)``.
        prefix_len: number of leading positions to compute once, ``1 <= prefix_len < pos``.
        copies: run the batch this many times per call, variant-major (:class:`Variants`).
    """

    def __init__(self, model: Any, tokens: Tensor, prefix_len: int, *, copies: int = 1) -> None:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, pos), got {getattr(tokens, 'shape', tokens)}")
        if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or not 1 <= prefix_len < tokens.shape[1]:
            raise ValueError(f"prefix_len must be an int in [1, {tokens.shape[1] - 1}], got {prefix_len!r}")
        self._setup(model, tokens, prefix_len, copies, _prefix_cache(model, tokens, prefix_len))

    def _setup(self, model: Any, tokens: Tensor, prefix_len: int, copies: int, base: Any) -> None:
        self.variants = Variants(int(tokens.shape[0]), copies)
        self.model, self.prefix_len = model, prefix_len
        self._prompts, self._prefix_cache = tokens, base
        self.tokens = self.variants.stack(tokens)

    def _fresh_cache(self) -> Any:
        """A copy of the prefix's keys and values for one call (a forward pass appends to
        it), repeated once per copy, variant-major; ``None`` if it cannot be repeated."""
        cache = copy.deepcopy(self._prefix_cache)
        copies = self.variants.n
        if copies > 1:
            # The cache repeats prompt by prompt; reorder it variant-major.
            batch = self.variants.batch
            try:
                cache.batch_repeat_interleave(copies)
                order = torch.arange(batch * copies).reshape(batch, copies).T.flatten()
                cache.batch_select_indices(order)
            except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError):
                return None
        return cache

    def with_copies(self, copies: int) -> "PrefixRun":
        """The same prompts and prefix, run ``copies`` times per call, without computing
        the prefix again (its keys and values are repeated)."""
        other = PrefixRun.__new__(PrefixRun)
        other._setup(self.model, self._prompts, self.prefix_len, copies, self._prefix_cache)
        return other

    @property
    def uses_cache(self) -> bool:
        """Whether calls reuse the prefix's keys and values."""
        return self._prefix_cache is not None

    def __call__(self, fwd_hooks: HookList = (), *, last_position_only: bool = False) -> Tensor:
        """Logits of the positions from ``prefix_len`` on: ``(copies * batch, pos - prefix_len, d_vocab)``;
        with ``last_position_only`` of the last position only, ``(copies * batch, 1, d_vocab)``."""
        with torch.no_grad():
            cache = None if self._prefix_cache is None else self._fresh_cache()
            if cache is None:
                logits = forward_logits(self.model, self.tokens, fwd_hooks, last_position_only=last_position_only)
                return logits if last_position_only else logits[:, self.prefix_len :]
            return forward_logits(
                self.model, self.tokens[:, self.prefix_len :], fwd_hooks,
                last_position_only=last_position_only, past_key_values=cache,
            )


def run_variants(
    model: Any,
    tokens: Tensor,
    variants: Mapping[str, Callable[[Tensor], HookList]],
    *,
    prefix_len: int | None = None,
    readout: Callable[[Tensor], Tensor] | None = None,
    variants_per_run: int | None = None,
    last_position_only: bool | None = None,
) -> dict[str, Tensor]:
    """Run several interventions on the same prompts, batched.

    Each variant is a function that receives the batch rows assigned to it
    (``LongTensor[batch]``, from :class:`Variants`) and returns hooks acting on those
    rows only, e.g. ``lambda rows: equalize_attention_hooks(..., rows=rows)``.

    Args:
        tokens: ``(batch, pos)``.
        variants: name -> hook builder.
        prefix_len: compute the first ``prefix_len`` positions once (:class:`PrefixRun`);
            the hooks must then not change those positions. ``None`` runs every
            position in every variant.
        readout: maps the logits of one variant, ``(batch, pos', d_vocab)``, to what is
            kept; by default the logits at the last position, ``(batch, d_vocab)``.
        variants_per_run: at most this many variants per forward pass (bounds memory:
            each pass holds ``batch * variants * pos'`` rows of logits); ``None`` runs
            as many as fit :func:`logits_budget`.
        last_position_only: unembed only the last position, so that ``readout`` gets
            ``(batch, 1, d_vocab)``; ``None`` does so exactly when ``readout`` is the
            default (which reads nothing else).

    Returns:
        ``{name: readout(logits of that variant)}``.
    """
    return _run_variants(model, tokens, variants, prefix_len=prefix_len, readout=readout,
                         variants_per_run=variants_per_run, last_position_only=last_position_only)


def run_prefix_variants(
    model: Any,
    prefix: PrefixRun,
    variants: Mapping[str, Callable[[Tensor], HookList]],
    *,
    readout: Callable[[Tensor], Tensor] | None = None,
    variants_per_run: int | None = None,
    last_position_only: bool | None = None,
) -> dict[str, Tensor]:
    """:func:`run_variants` with ``prefix_len`` on a :class:`PrefixRun` already computed
    (for example one that :func:`utils.scores.retrieval.attention_rows_after_prefix` ran
    first): the prompts' prefix is not computed again.

    Raises:
        ValueError: ``prefix`` is not a :class:`PrefixRun` of one copy, or as for
            :func:`run_variants`.
    """
    if not isinstance(prefix, PrefixRun) or prefix.variants.n != 1:
        raise ValueError(f"prefix must be a PrefixRun of one copy (PrefixRun(model, tokens, prefix_len)), got {prefix!r:.80}")
    return _run_variants(model, prefix.tokens, variants, prefix_len=prefix.prefix_len, readout=readout,
                         variants_per_run=variants_per_run, last_position_only=last_position_only,
                         prefix=prefix)


def _run_variants(
    model: Any,
    tokens: Tensor,
    variants: Mapping[str, Callable[[Tensor], HookList]],
    *,
    prefix_len: int | None,
    readout: Callable[[Tensor], Tensor] | None,
    variants_per_run: int | None,
    last_position_only: bool | None,
    prefix: PrefixRun | None = None,
) -> dict[str, Tensor]:
    if not variants:
        raise ValueError("no variants given")
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a (batch, pos) tensor of token ids")
    names = list(variants)
    last_only = readout is None if last_position_only is None else bool(last_position_only)
    batch = int(tokens.shape[0])
    n_out = 1 if last_only else int(tokens.shape[1]) - (prefix_len or 0)
    if variants_per_run is None:
        size = rows_per_run(model, n_out, rows_per_item=batch)
        if prefix_len is not None:
            size = min(size, prefix_variants_per_run(model, batch, prefix_len))
    else:
        size = variants_per_run
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"variants_per_run must be a positive int, got {variants_per_run!r}")
    read = readout if readout is not None else (lambda logits: logits[:, -1])
    result: dict[str, Tensor] = {}
    if prefix is None and prefix_len is not None:
        prefix = PrefixRun(model, tokens, prefix_len)  # computed once
    for start in range(0, len(names), size):
        chunk: Sequence[str] = names[start : start + size]
        stacked = Variants(batch, len(chunk))
        hooks: HookList = []
        for v, name in enumerate(chunk):
            hooks += list(variants[name](stacked.rows(v)))
        if prefix_len is None:
            logits = forward_logits(model, stacked.stack(tokens), hooks, last_position_only=last_only)
        else:
            logits = prefix.with_copies(len(chunk))(hooks, last_position_only=last_only)
        per_variant = stacked.split(logits)
        for v, name in enumerate(chunk):
            result[name] = read(per_variant[v])
    return result
