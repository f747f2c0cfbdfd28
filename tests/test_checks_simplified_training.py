"""The exercise checks of chapter 16 (utils.course.checks.simplified_training): correct
solutions pass, realistic wrong ones fail naming the case, a stub's
NotImplementedError propagates."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from utils.course.checks import CheckFailed
from utils.course.checks.simplified_training import (
    check_induction_prediction,
    check_iteration_share,
    check_k_composition,
    check_parity_tokens,
)
from utils.toy.tasks import PARITY_TOKENS, iteration_head_share, parity_tokens


def stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("Exercise: write this part, then run the check below")


# --- the parity sequences -------------------------------------------------------------

BOS, EOI, EVEN, ODD = (PARITY_TOKENS[k] for k in ("[BOS]", "[EOI]", "e", "o"))


def parity_by_loop(bits: Tensor) -> Tensor:
    """A learner-style correct answer: one row at a time."""
    rows = []
    for row in bits.tolist():
        states, parity = [], 0
        for bit in row:
            parity ^= bit
            states.append(ODD if parity else EVEN)
        rows.append([BOS, *row, EOI, *states])
    return torch.tensor(rows)


def states_start_at_s0(bits: Tensor) -> Tensor:
    # writes s_0 = e as the first state and drops the last one
    out = parity_tokens(bits)
    n = bits.shape[1]
    out[:, n + 2 :] = torch.cat([torch.full((bits.shape[0], 1), EVEN), out[:, n + 2 : -1]], dim=1)
    return out


def states_as_bits(bits: Tensor) -> Tensor:
    states = bits.cumsum(dim=1) % 2  # 0/1 instead of the e/o tokens
    n_rows = bits.shape[0]
    return torch.cat([torch.full((n_rows, 1), BOS), bits, torch.full((n_rows, 1), EOI), states], dim=1)


def running_sum_not_parity(bits: Tensor) -> Tensor:
    out = parity_tokens(bits)
    n = bits.shape[1]
    out[:, n + 2 :] = torch.where(bits.cumsum(dim=1) > 0, ODD, EVEN)  # "odd" once any 1 was seen
    return out


def test_parity_reference_and_loop_pass(capsys):
    check_parity_tokens(parity_tokens)
    check_parity_tokens(parity_by_loop)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, case",
    [
        (states_start_at_s0, "001011"),
        (states_as_bits, "001011"),
        (running_sum_not_parity, "001011"),
    ],
)
def test_parity_wrong_solutions_fail(wrong, case):
    with pytest.raises(CheckFailed, match=f"parity sequences: on case .*{case}"):
        check_parity_tokens(wrong)


def test_parity_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_parity_tokens(stub)


# --- the iteration-head share ---------------------------------------------------------


def share_by_loop(pattern: Tensor, n_bits: int) -> Tensor:
    batch, n_heads = pattern.shape[:2]
    hits = torch.zeros(n_heads)
    for t in range(1, n_bits + 1):
        hits += (pattern[:, :, n_bits + t].argmax(dim=-1) == t).float().sum(dim=0)
    return hits / (batch * n_bits)


def share_at_the_state_position(pattern: Tensor, n_bits: int) -> Tensor:
    # queries at the state s_t itself (one position late)
    steps = torch.arange(1, n_bits + 1)
    queries = (n_bits + 1 + steps).clamp(max=pattern.shape[-2] - 1)
    return (pattern[:, :, queries].argmax(dim=-1) == steps).float().mean(dim=(0, 2))


def share_from_mean_attention(pattern: Tensor, n_bits: int) -> Tensor:
    steps = torch.arange(1, n_bits + 1)
    return pattern[:, :, n_bits + steps, steps].mean(dim=(0, 2))  # attention, not argmax


def share_of_bit_before(pattern: Tensor, n_bits: int) -> Tensor:
    steps = torch.arange(1, n_bits + 1)
    return (pattern[:, :, n_bits + steps].argmax(dim=-1) == steps - 1).float().mean(dim=(0, 2))


def test_iteration_share_reference_and_loop_pass(capsys):
    check_iteration_share(lambda p, n: iteration_head_share(p, torch.full((p.shape[0],), n)))
    check_iteration_share(share_by_loop)
    assert "all 4 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong", [share_at_the_state_position, share_from_mean_attention, share_of_bit_before]
)
def test_iteration_share_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="iteration-head share: on case"):
        check_iteration_share(wrong)


def test_iteration_share_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_iteration_share(stub)


# --- K-composition --------------------------------------------------------------------


def k_composition(W_V, W_O, W_Q, W_K):
    product = W_V @ W_O @ W_K @ W_Q.T
    return float(product.norm() / ((W_V @ W_O).norm() * (W_Q @ W_K.T).norm()))


def q_composition(W_V, W_O, W_Q, W_K):
    product = W_V @ W_O @ W_Q @ W_K.T  # the earlier head feeds the queries
    return float(product.norm() / ((W_V @ W_O).norm() * (W_Q @ W_K.T).norm()))


def not_normalised(W_V, W_O, W_Q, W_K):
    return float((W_V @ W_O @ W_K @ W_Q.T).norm())


def spectral_norm(W_V, W_O, W_Q, W_K):
    norm = lambda m: torch.linalg.matrix_norm(m, ord=2)  # noqa: E731
    return float(norm(W_V @ W_O @ W_K @ W_Q.T) / (norm(W_V @ W_O) * norm(W_Q @ W_K.T)))


def test_k_composition_correct_solution_passes(capsys):
    check_k_composition(k_composition)
    assert "all 3 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [q_composition, not_normalised, spectral_norm])
def test_k_composition_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="K-composition score: on case"):
        check_k_composition(wrong)


def test_k_composition_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_k_composition(stub)


# --- the induction prediction ---------------------------------------------------------


def induction_like(period: int, batch: int = 16, seed: int = 0) -> Tensor:
    """A noisy trained-looking induction head: 90% of queries on key i - period + 1."""
    generator = torch.Generator().manual_seed(seed)
    n_pos = 2 * period
    scores = torch.randn(batch, n_pos, n_pos, generator=generator)
    for query in range(period, n_pos):
        hit = torch.rand(batch, generator=generator) < 0.9
        scores[hit, query, query - period + 1] += 10.0
    future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


PATTERNS = {6: induction_like(6), 10: induction_like(10, seed=1)}


def test_induction_prediction_right_answer_passes(capsys):
    check_induction_prediction(lambda query, period: query - period + 1, PATTERNS)
    out = capsys.readouterr().out
    assert "period 6" in out and "period 10" in out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda query, period: query - period,  # the previous copy of the same token
        lambda query, period: query - 1,  # the previous token
        lambda query, period: query,  # itself
        lambda query, period: 5,  # a fixed position: right for one period only
    ],
    ids=["duplicate token", "previous token", "itself", "fixed position"],
)
def test_induction_prediction_wrong_answers_fail(wrong):
    with pytest.raises(CheckFailed, match="induction prediction: on sequences of period"):
        check_induction_prediction(wrong, PATTERNS)


def test_induction_prediction_rejects_a_non_integer():
    with pytest.raises(CheckFailed, match="an int"):
        check_induction_prediction(lambda query, period: "next", PATTERNS)


def test_induction_prediction_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_induction_prediction(stub, PATTERNS)
