"""The exercise checks of chapter 10 (utils.course.checks.activation_patching): the reference
passes, realistic wrong solutions fail, a stub's NotImplementedError propagates."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from utils.course.checks import CheckFailed
from utils.course.checks.activation_patching import (
    check_attribution_patching,
    check_claim_stands,
    check_head_patch_hook,
    check_normalise_patching,
    check_patch_heads,
    claim_stands,
)
from utils.analysis.stats import bootstrap_ci
from transformer_lens.utilities import get_act_name
from utils.interventions.patching import (
    attribution_patching_sweep,
    head_patching_sweep,
    normalise_patching,
)


Positions = "list[int] | None"


def stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("Exercise: write this part, then run the check below")


# --- the normalised metric ------------------------------------------------------


def test_normalise_reference_passes(capsys):
    check_normalise_patching(normalise_patching)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda values, clean, corrupted: (values - clean) / (corrupted - clean),
        lambda values, clean, corrupted: (values - corrupted) / clean,
        lambda values, clean, corrupted: values / (clean - corrupted),
        lambda values, clean, corrupted: (values - corrupted) / abs(clean - corrupted),
    ],
    ids=["swapped clean and corrupted", "divided by clean", "no offset", "abs gap"],
)
def test_normalise_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="normalised patching metric"):
        check_normalise_patching(wrong)


def test_normalise_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_normalise_patching(stub)


# --- the position-specific hook ---------------------------------------------------


def right_hook(source_z: Tensor, head: int, positions: Positions) -> Callable:
    where = slice(None) if positions is None else list(positions)

    def hook(z: Tensor, hook: Any) -> None:  # edits in place and returns nothing
        z[:, where, head] = source_z[:, where, head]

    return hook


def all_heads_hook(source_z: Tensor, head: int, positions: Positions) -> Callable:
    where = slice(None) if positions is None else list(positions)

    def hook(z: Tensor, hook: Any) -> Tensor:
        z[:, where] = source_z[:, where]
        return z

    return hook


def every_position_hook(source_z: Tensor, head: int, positions: Positions) -> Callable:
    def hook(z: Tensor, hook: Any) -> Tensor:
        z[:, :, head] = source_z[:, :, head]
        return z

    return hook


def backwards_hook(source_z: Tensor, head: int, positions: Positions) -> Callable:
    where = slice(None) if positions is None else list(positions)

    def hook(z: Tensor, hook: Any) -> Tensor:
        source_z[:, where, head] = z[:, where, head]  # copies the wrong way
        return z

    return hook


def test_hook_right_solution_passes_even_without_return(capsys):
    check_head_patch_hook(right_hook)
    assert "all 5 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [all_heads_hook, every_position_hook, backwards_hook])
def test_hook_wrong_solutions_fail(wrong):
    with pytest.raises(CheckFailed, match="patching hook"):
        check_head_patch_hook(wrong)


def test_hook_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_head_patch_hook(stub)


# --- the per-head patching loop (needs a model) -----------------------------------


def naive_reference(model, base_tokens, source_tokens, metric, layer, heads):
    # denoising patches the clean (source) run into the corrupted (base) run
    every_head = head_patching_sweep(model, source_tokens, base_tokens, metric, layers=[layer])
    return every_head[0, heads]


def swapped_runs(model, base_tokens, source_tokens, metric, layer, heads):
    return naive_reference(model, source_tokens, base_tokens, metric, layer, heads)


def whole_layer_each_time(model, base_tokens, source_tokens, metric, layer, heads):
    name = get_act_name("z", layer)
    _, cache = model.run_with_cache(source_tokens, names_filter=[name])

    def patch(z, hook):
        z[:] = cache[name]  # every head of the layer, not one
        return z

    value = float(metric(model.run_with_hooks(base_tokens, fwd_hooks=[(name, patch)])))
    return torch.full((len(heads),), value)


def test_patch_heads_reference_passes(any_model, capsys):
    check_patch_heads(naive_reference, any_model)
    assert "all 2 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [swapped_runs, whole_layer_each_time])
def test_patch_heads_wrong_solutions_fail(any_model, wrong):
    with pytest.raises(CheckFailed, match="per-head patching loop"):
        check_patch_heads(wrong, any_model)


def test_patch_heads_stub_propagates(gpt2_random):
    with pytest.raises(NotImplementedError):
        check_patch_heads(stub, gpt2_random)


# --- attribution patching (needs a model) -----------------------------------------


def attribution_reference(model, base_tokens, source_tokens, metric):
    return attribution_patching_sweep(model, source_tokens, base_tokens, metric)


def _z_and_grads(model, tokens, metric, *, enable_grad=True):
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    kept = []

    def keep(z, hook):
        kept.append(z)
        return z

    with torch.set_grad_enabled(enable_grad):
        hooks = [(name, keep) for name in names]
        value = metric(model.run_with_hooks(tokens, fwd_hooks=hooks))
        grads = torch.autograd.grad(value, kept)
    return names, value.detach(), kept, grads


def reversed_difference(model, base_tokens, source_tokens, metric):
    names, value, kept, grads = _z_and_grads(model, base_tokens, metric)
    _, source = model.run_with_cache(source_tokens, names_filter=names)
    rows = [
        ((z.detach() - source[n]) * g).sum((0, 1, 3))
        for n, z, g in zip(names, kept, grads)
    ]
    return float(value) + torch.stack(rows)


def without_base_value(model, base_tokens, source_tokens, metric):
    names, value, kept, grads = _z_and_grads(model, base_tokens, metric)
    _, source = model.run_with_cache(source_tokens, names_filter=names)
    rows = [
        ((source[n] - z.detach()) * g).sum((0, 1, 3))
        for n, z, g in zip(names, kept, grads)
    ]
    return torch.stack(rows)


def gradients_left_off(model, base_tokens, source_tokens, metric):
    _z_and_grads(model, base_tokens, metric, enable_grad=False)  # the chapter's setting


def test_attribution_reference_passes(any_model, capsys):
    check_attribution_patching(attribution_reference, any_model)
    assert "the case matches" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [reversed_difference, without_base_value])
def test_attribution_wrong_solutions_fail(any_model, wrong):
    with pytest.raises(CheckFailed, match="attribution patching"):
        check_attribution_patching(wrong, any_model)


def test_attribution_needs_gradients_switched_on(gpt2_random):
    with pytest.raises(CheckFailed, match="raised RuntimeError"):
        check_attribution_patching(gradients_left_off, gpt2_random)


def test_attribution_stub_propagates(gpt2_random):
    with pytest.raises(NotImplementedError):
        check_attribution_patching(stub, gpt2_random)


# --- what would falsify the claim ---------------------------------------------------


def test_claim_stands_reference_passes(capsys):
    check_claim_stands(claim_stands)
    assert "all 4 cases match" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda effects, null, bound: bool(effects.mean() > bound and effects.mean() > null.max()),  # the mean only
    lambda effects, null, bound: bootstrap_ci(effects)[1] > bound,  # no null
    lambda effects, null, bound: True,
])
def test_claim_stands_catches_wrong_rules(wrong):
    with pytest.raises(CheckFailed):
        check_claim_stands(wrong)


def test_claim_stands_stub_propagates():
    with pytest.raises(NotImplementedError):
        check_claim_stands(stub)
