"""Data for the two toy tasks of chapter 16, and the measurements that read them.

**Repeated segments** (induction heads, Olsson et al., 2022): random tokens in which
the first ``period`` tokens are repeated right after themselves. From the second copy
on, the next token can be read off the first copy, if the model finds where the current
token occurred before and copies the token that followed it. The period changes from
sequence to sequence during training, so that absolute positions cannot do the job.

**Parity with a chain of thought** (iteration heads, Cabannes et al., 2024), in the
survey's format ``[BOS] x_1 .. x_n [EOI] s_1 .. s_n``: input bits, the end-of-input
token, then the running states ``s_t = x_1 xor .. xor x_t`` written as ``e`` (even)
and ``o`` (odd). Input bit ``t`` sits at position ``t``; the state ``s_t`` is predicted
at position ``n + t`` (``[EOI]`` for ``t = 1``, ``s_{t-1}`` after that), which is where
an iteration head attends back to position ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "PARITY_TOKENS",
    "PARITY_VOCAB",
    "ParityBatch",
    "repeated_segment_tokens",
    "repeated_half_mask",
    "first_half_mask",
    "parity_tokens",
    "parity_batch",
    "state_mask",
    "iteration_hits",
    "iteration_head_share",
    "state_accuracy",
    "masked_sequence_mean",
]

#: Token ids of the parity task.
PARITY_TOKENS = {"0": 0, "1": 1, "[BOS]": 2, "[EOI]": 3, "e": 4, "o": 5, "[PAD]": 6}
#: Number of tokens of the parity task (``d_vocab`` of its model).
PARITY_VOCAB = len(PARITY_TOKENS)
_BOS, _EOI, _EVEN, _ODD, _PAD = (PARITY_TOKENS[k] for k in ("[BOS]", "[EOI]", "e", "o", "[PAD]"))


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
            f"got {type(generator).__name__}"
        )
    return generator


# ---------------------------------------------------------------------------
# Repeated segments
# ---------------------------------------------------------------------------


def repeated_segment_tokens(
    n_seqs: int,
    seq_len: int,
    d_vocab: int,
    *,
    generator: torch.Generator,
    min_period: int = 4,
    max_period: int | None = None,
    period: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Random sequences whose first ``period`` tokens are repeated once, right after.

    Tokens are uniform over ``range(d_vocab)``. Positions ``period .. 2 * period - 1``
    copy positions ``0 .. period - 1``; the rest is random filler.

    Args:
        n_seqs, seq_len: the batch's shape.
        generator: the source of randomness (the batch is a function of its state).
        min_period, max_period: the period of each sequence is drawn uniformly from
            this range (``max_period`` defaults to ``seq_len // 2``)...
        period: ...unless one period is given for the whole batch.

    Returns:
        ``(tokens, periods)``: ``LongTensor[n_seqs, seq_len]`` and ``LongTensor[n_seqs]``.
    """
    _int("n_seqs", n_seqs, 1)
    _int("seq_len", seq_len, 4)
    _int("d_vocab", d_vocab, 2)
    _generator(generator)
    if period is not None:
        min_period = max_period = _int("period", period, 2)
    max_period = seq_len // 2 if max_period is None else max_period
    _int("min_period", min_period, 2)
    _int("max_period", max_period, 2)
    if not min_period <= max_period <= seq_len // 2:
        raise ValueError(
            f"periods must satisfy 2 <= min_period <= max_period <= seq_len // 2 = "
            f"{seq_len // 2}, got min_period={min_period}, max_period={max_period}"
        )
    tokens = torch.randint(0, d_vocab, (n_seqs, seq_len), generator=generator)
    periods = torch.randint(min_period, max_period + 1, (n_seqs,), generator=generator)
    positions = torch.arange(seq_len)[None, :]
    in_copy = (positions >= periods[:, None]) & (positions < 2 * periods[:, None])
    source = (positions - periods[:, None]).clamp(min=0)
    return torch.where(in_copy, tokens.gather(1, source), tokens), periods


def _prediction_mask(periods: Tensor, seq_len: int, start: Tensor, stop: Tensor) -> Tensor:
    targets = torch.arange(1, seq_len)[None, :]  # prediction i is of token i + 1
    return (targets >= start[:, None]) & (targets < stop[:, None])


def _check_periods(periods: Tensor, seq_len: int) -> Tensor:
    if not isinstance(periods, Tensor) or periods.ndim != 1:
        raise ValueError("periods must be a 1-D tensor, one period per sequence")
    if bool((periods < 2).any()) or bool((2 * periods > seq_len).any()):
        raise ValueError(f"every period must lie in [2, {seq_len // 2}] for seq_len={seq_len}")
    return periods.long()


def repeated_half_mask(periods: Tensor, seq_len: int) -> Tensor:
    """Which next-token predictions induction can make: ``(batch, seq_len - 1)``.

    Entry ``[b, i]`` (the prediction of token ``i + 1``) is ``True`` for targets
    ``period + 1 .. 2 * period - 1``: inside the second copy, after its first token
    (whose predecessor is the end of the first copy, not a repeat).
    """
    periods = _check_periods(periods, seq_len)
    return _prediction_mask(periods, seq_len, periods + 1, 2 * periods)


def first_half_mask(periods: Tensor, seq_len: int) -> Tensor:
    """Predictions of targets ``1 .. period - 1``, inside the first copy, which no
    model can beat chance on: ``(batch, seq_len - 1)``."""
    periods = _check_periods(periods, seq_len)
    return _prediction_mask(periods, seq_len, torch.ones_like(periods), periods)


def masked_sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the ``True`` entries of ``mask``, per row: ``Tensor[batch]``
    (e.g. per-position losses into one loss per sequence)."""
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    counts = mask.sum(dim=-1)
    if bool((counts == 0).any()):
        raise ValueError("a row of the mask selects no position")
    return (values * mask).sum(dim=-1) / counts


# ---------------------------------------------------------------------------
# Parity with a chain of thought
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityBatch:
    """Parity sequences: ``tokens`` ``(batch, 2 * n_max + 2)`` and the number of input
    bits of each, ``lengths`` ``(batch,)``; shorter sequences end in ``[PAD]``."""

    tokens: Tensor
    lengths: Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: Any) -> "ParityBatch":
        """The sequences at ``index`` (a slice or indices), as a batch of their own."""
        return ParityBatch(self.tokens[index], self.lengths[index])


def parity_tokens(bits: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The parity sequences ``[BOS] x_1 .. x_n [EOI] s_1 .. s_n`` for given input bits.

    Args:
        bits: ``(batch, n_max)`` of 0 and 1.
        lengths: how many of each row's bits are the input (``n_max`` by default); the
            sequence of a row with ``n`` bits is followed by ``[PAD]`` tokens.

    Returns:
        ``LongTensor[batch, 2 * n_max + 2]``, ids from :data:`PARITY_TOKENS`.
    """
    if not isinstance(bits, Tensor) or bits.ndim != 2 or bits.shape[1] < 1:
        raise ValueError("bits must be a (batch, n_bits) tensor with n_bits >= 1")
    if bits.dtype.is_floating_point or bool(((bits != 0) & (bits != 1)).any()):
        raise ValueError("bits must be integers 0 or 1")
    batch, n_max = bits.shape
    bits = bits.long()
    if lengths is None:
        lengths = torch.full((batch,), n_max)
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,):
        raise ValueError(f"lengths must be a tensor of shape ({batch},)")
    if bool((lengths < 1).any()) or bool((lengths > n_max).any()):
        raise ValueError(f"lengths must lie in [1, {n_max}], got {lengths.tolist()}")
    lengths = lengths.long()
    out = torch.full((batch, 2 * n_max + 2), _PAD, dtype=torch.long)
    out[:, 0] = _BOS
    steps = torch.arange(1, n_max + 1)[None, :]
    valid = steps <= lengths[:, None]
    kept = bits * valid
    states = torch.where(kept.cumsum(dim=1) % 2 == 1, _ODD, _EVEN)
    rows = torch.arange(batch)[:, None]
    # Each row has its own layout: bit t at t, [EOI] at n + 1, state t at n + 1 + t.
    out[rows.expand(-1, n_max)[valid], steps.expand(batch, -1)[valid]] = bits[valid]
    out[torch.arange(batch), lengths + 1] = _EOI
    state_pos = lengths[:, None] + 1 + steps
    out[rows.expand(-1, n_max)[valid], state_pos[valid]] = states[valid]
    return out


def _parity_keys(bits: Tensor, lengths: Tensor) -> Tensor:
    """One integer per sequence that tells sequences apart: its bits and its length."""
    n_max = bits.shape[1]
    kept = bits.long() * (torch.arange(n_max)[None, :] < lengths[:, None])
    return (kept * (2 ** torch.arange(n_max))[None, :]).sum(dim=1) + lengths.long() * 2**n_max


def _bits_of(batch: ParityBatch) -> Tensor:
    n_max = (batch.tokens.shape[1] - 2) // 2
    bits = batch.tokens[:, 1 : n_max + 1]
    return torch.where(bits <= 1, bits, torch.zeros_like(bits))


def parity_batch(
    n_seqs: int,
    n_bits: int,
    *,
    generator: torch.Generator,
    min_bits: int | None = None,
    exclude: ParityBatch | None = None,
    distinct: bool = False,
) -> ParityBatch:
    """Random parity sequences with uniform bits; the number of input bits of each is
    uniform in ``[min_bits, n_bits]`` (all ``n_bits`` by default).

    Args:
        exclude: sequences never to draw (a held-out set); rows that match one are
            drawn again.
        distinct: no two rows alike (sequences of ``n_bits`` bits only, at most 20),
            e.g. to split a held-out set into parts that share no sequence.
    """
    _int("n_seqs", n_seqs, 1)
    _int("n_bits", n_bits, 1)
    _generator(generator)
    min_bits = n_bits if min_bits is None else _int("min_bits", min_bits, 1)
    if min_bits > n_bits:
        raise ValueError(f"min_bits ({min_bits}) must not exceed n_bits ({n_bits})")
    if n_bits > 40:
        raise ValueError(f"n_bits must be at most 40, got {n_bits}")
    if distinct and exclude is not None:
        raise ValueError("give either distinct or exclude, not both")
    if distinct:
        if min_bits != n_bits or n_bits > 20 or n_seqs > 2**n_bits:
            raise ValueError(
                "distinct needs sequences of one length (min_bits = n_bits) of at most 20 "
                f"bits and n_seqs <= 2**n_bits, got n_bits={n_bits}, min_bits={min_bits}, "
                f"n_seqs={n_seqs}"
            )
        codes = torch.randperm(2**n_bits, generator=generator)[:n_seqs]
        bits = (codes[:, None] >> torch.arange(n_bits)[None, :]) & 1
    else:
        bits = torch.randint(0, 2, (n_seqs, n_bits), generator=generator)
    lengths = torch.randint(min_bits, n_bits + 1, (n_seqs,), generator=generator)
    if exclude is not None:
        if exclude.tokens.shape[1] != 2 * n_bits + 2:
            raise ValueError(f"exclude must hold sequences of {n_bits} bits at most")
        banned = _parity_keys(_bits_of(exclude), exclude.lengths)
        for _ in range(100):
            clash = torch.isin(_parity_keys(bits, lengths), banned)
            if not bool(clash.any()):
                break
            n_clash = int(clash.sum())
            bits[clash] = torch.randint(0, 2, (n_clash, n_bits), generator=generator)
            lengths[clash] = torch.randint(min_bits, n_bits + 1, (n_clash,), generator=generator)
        else:
            raise ValueError("exclude covers almost every sequence: nothing left to draw")
    return ParityBatch(parity_tokens(bits, lengths), lengths)


def _check_lengths(lengths: Tensor, batch: int, seq_len: int) -> Tensor:
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,):
        raise ValueError(f"lengths must be a tensor of shape ({batch},)")
    if bool((lengths < 1).any()) or bool((2 * lengths + 2 > seq_len).any()):
        raise ValueError(f"lengths must lie in [1, {(seq_len - 2) // 2}] for {seq_len} positions")
    return lengths.long()


def state_mask(lengths: Tensor, seq_len: int) -> Tensor:
    """Which next-token predictions are states: ``(batch, seq_len - 1)``, ``True`` at
    positions ``n + 1 .. 2n`` (prediction ``i`` is of token ``i + 1``)."""
    if not isinstance(lengths, Tensor) or lengths.ndim != 1:
        raise ValueError("lengths must be a 1-D tensor, one length per sequence")
    lengths = _check_lengths(lengths, lengths.shape[0], seq_len)
    positions = torch.arange(seq_len - 1)[None, :]
    return (positions >= lengths[:, None]) & (positions < 2 * lengths[:, None])


def iteration_hits(pattern: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Whether each head's strongest key at output step ``t`` is input bit ``t``.

    Args:
        pattern: one layer's attention, ``(batch, n_heads, query_pos, key_pos)``.
        lengths: input bits of each sequence, ``(batch,)``.

    Returns:
        ``(hits, valid)``: ``hits[b, h, t - 1]`` is ``True`` when head ``h``, at the
        query predicting state ``t`` (position ``n + t``), attends most to position
        ``t``; ``valid[b, t - 1]`` marks the steps ``t <= n`` the sequence has.
    """
    if not isinstance(pattern, Tensor) or pattern.ndim != 4:
        raise ValueError("pattern must have shape (batch, n_heads, query_pos, key_pos)")
    batch, n_heads, n_queries, _ = pattern.shape
    lengths = _check_lengths(lengths, batch, n_queries + 1)
    n_max = int(lengths.max())
    steps = torch.arange(1, n_max + 1)[None, :]
    valid = steps <= lengths[:, None]
    queries = (lengths[:, None] + steps).clamp(max=n_queries - 1)  # clamped rows are invalid
    top_key = pattern.argmax(dim=-1)  # (batch, n_heads, query_pos)
    at_queries = top_key.gather(2, queries[:, None, :].expand(-1, n_heads, -1).to(top_key.device))
    hits = (at_queries == steps[:, None, :].to(top_key.device)) & valid[:, None, :].to(top_key.device)
    return hits.cpu(), valid


def iteration_head_share(pattern: Tensor, lengths: Tensor) -> Tensor:
    """The iteration-head score: the share of output steps, over every step of every
    sequence, at which a head attends most to the input bit of that step.
    ``Tensor[n_heads]``; 1 for a perfect iteration head."""
    hits, valid = iteration_hits(pattern, lengths)
    return hits.sum(dim=(0, 2)).float() / valid.sum()


def state_accuracy(logits: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
    """Per sequence, the share of states the model predicts right (argmax over the
    whole vocabulary): ``Tensor[batch]``."""
    if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits (batch, pos, vocab) and tokens (batch, pos) disagree: "
            f"{tuple(logits.shape)} vs {tuple(tokens.shape)}"
        )
    mask = state_mask(lengths, tokens.shape[1])
    correct = (logits[:, :-1].argmax(dim=-1).cpu() == tokens[:, 1:].cpu()).float()
    return masked_sequence_mean(correct, mask)
