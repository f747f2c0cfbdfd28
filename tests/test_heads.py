"""Tests for utils.heads: top heads, random control heads, head labels."""

import pytest
import torch

from utils.core.heads import format_heads, random_heads, top_heads


def test_top_heads_orders_best_first():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, -1.0, 0.7]])
    assert top_heads(scores, 3) == [(0, 1), (1, 2), (1, 0)]
    assert top_heads(scores, 1, largest=False) == [(1, 1)]


def test_top_heads_errors():
    scores = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="k must"):
        top_heads(scores, 0)
    with pytest.raises(ValueError, match="k must"):
        top_heads(scores, 7)
    with pytest.raises(ValueError, match="k must"):
        top_heads(scores, True)
    with pytest.raises(ValueError, match="n_layers, n_heads"):
        top_heads(scores.flatten(), 1)
    with pytest.raises(ValueError, match="n_layers, n_heads"):
        top_heads([[0.0]], 1)


def test_random_heads_are_seeded_and_avoid_exclusions(any_model):
    first = random_heads(any_model, 4, seed=3)
    assert first == random_heads(any_model, 4, seed=3)
    assert first == sorted(first) and len(set(first)) == 4
    excluded = [(0, 0), (1, 1)]
    n_total = any_model.cfg.n_layers * any_model.cfg.n_heads
    others = random_heads(any_model, n_total - 2, seed=0, exclude=excluded)
    assert not set(others) & set(excluded)
    late = random_heads(any_model, 3, seed=0, exclude=[(1, 2)], min_layer=1)
    assert all(layer >= 1 for layer, _ in late) and (1, 2) not in late


def test_random_heads_errors(any_model):
    n_total = any_model.cfg.n_layers * any_model.cfg.n_heads
    with pytest.raises(ValueError, match="k must"):
        random_heads(any_model, n_total - 1, seed=0, exclude=[(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="out of range"):
        random_heads(any_model, 1, seed=0, exclude=[(99, 0)])
    with pytest.raises(ValueError, match="out of range"):
        random_heads(any_model, 1, min_layer=99)


def test_format_heads():
    scores = torch.tensor([[0.5, 0.25], [1.0, 0.0]])
    assert format_heads([(1, 0), (0, 1)], scores) == "L1H0 (1.00), L0H1 (0.25)"
    assert format_heads([(0, 0)]) == "L0H0"
    assert format_heads([]) == "none"
