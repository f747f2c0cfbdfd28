"""Logits only where they are read, and batched runs sized to a logits budget.

Gemma 3's vocabulary (262,144 tokens) makes full logits the largest tensor of a run:
the runners unembed only the last position when nothing else is read, and split their
variants and patched copies into forward passes whose logits fit
``$COURSE_LOGITS_BUDGET_MB``. Splitting must not change any result.
"""

import pytest
import torch

from utils.core.metrics import logit_diff
from utils.interventions.hooks import add_to_residual_hooks
from utils.interventions.patching import head_patching_sweep, residual_patching_sweep
from utils.interventions.runner import (
    LOGITS_BUDGET_ENV_VAR,
    forward_logits,
    logits_budget,
    rows_per_run,
    run_variants,
)

torch.set_grad_enabled(False)

CLEAN = ["When Mary and John went to the store, John gave a drink to"]
CORRUPTED = ["When Mary and John went to the store, Mary gave a drink to"]


def test_budget_and_rows(monkeypatch, any_model):
    monkeypatch.delenv(LOGITS_BUDGET_ENV_VAR, raising=False)
    assert logits_budget() == 1024 * 2**20
    monkeypatch.setenv(LOGITS_BUDGET_ENV_VAR, "0.5")
    assert logits_budget() == 2**19
    per_row = any_model.cfg.d_vocab * 4
    assert rows_per_run(any_model, 1) == max(1, 2**19 // per_row)
    assert rows_per_run(any_model, 10**6, rows_per_item=8) == 1  # never zero
    monkeypatch.setenv(LOGITS_BUDGET_ENV_VAR, "lots")
    with pytest.raises(ValueError, match=LOGITS_BUDGET_ENV_VAR):
        logits_budget()


def test_last_position_only_logits_match_the_full_run(any_model):
    tokens = any_model.to_tokens(CLEAN)
    full = any_model(tokens)
    last = forward_logits(any_model, tokens, last_position_only=True)
    assert last.shape == (1, 1, any_model.cfg.d_vocab)
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=1e-4, atol=1e-4)


def test_splitting_changes_no_result(monkeypatch, any_model):
    clean, corrupted = any_model.to_tokens(CLEAN), any_model.to_tokens(CORRUPTED)
    correct = torch.tensor([any_model.to_single_token(" Mary")])
    incorrect = torch.tensor([any_model.to_single_token(" John")])
    metric = lambda logits: logit_diff(logits, correct, incorrect)  # noqa: E731
    layer = any_model.cfg.n_layers // 2
    direction = torch.randn(any_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    variants = {
        str(alpha): (lambda rows, alpha=alpha: add_to_residual_hooks(any_model, layer, direction, alpha, rows=rows))
        for alpha in (0.0, 1.0, 2.0)
    }

    def everything():
        return (
            head_patching_sweep(any_model, clean, corrupted, metric, layers=[layer]),
            residual_patching_sweep(any_model, clean, corrupted, metric, layers=[layer]),
            torch.stack(list(run_variants(any_model, clean, variants).values())),
            torch.stack(list(run_variants(any_model, clean, variants, readout=lambda logits: logits[:, -2]).values())),
        )

    monkeypatch.delenv(LOGITS_BUDGET_ENV_VAR, raising=False)
    together = everything()
    monkeypatch.setenv(LOGITS_BUDGET_ENV_VAR, "0.001")  # one copy / variant per forward pass
    assert rows_per_run(any_model, 1) == 1
    for split, whole in zip(everything(), together):
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-4)
