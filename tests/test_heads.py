"""Tests for utils.heads: top heads, random control heads, head labels."""

import pytest
import torch

from utils.core.heads import Head, format_heads, random_heads, top_heads


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


def test_layer_matched_random_heads_match_layers_and_avoid_the_chosen(any_model):
    from utils.core.heads import layer_matched_random_heads

    n_layers, n_heads = any_model.cfg.n_layers, any_model.cfg.n_heads
    chosen = [Head(n_layers - 1, 0), Head(n_layers - 1, 1), Head(0, 0)]
    exclude = [Head(0, 1)]
    draws = [layer_matched_random_heads(any_model, chosen, seed=seed, exclude=exclude) for seed in range(20)]
    for drawn in draws:
        assert sorted(h.layer for h in drawn) == sorted(h.layer for h in chosen)
        assert not set(drawn) & (set(chosen) | set(exclude))
        assert len(set(drawn)) == len(drawn)
    assert draws[0] == layer_matched_random_heads(any_model, chosen, seed=0, exclude=exclude)
    assert len({tuple(d) for d in draws}) > 1, "20 seeds gave one draw: the seed is ignored"
    assert layer_matched_random_heads(any_model, [], seed=0) == []


def test_layer_matched_random_heads_leave_a_full_layer_and_reject_bad_heads(any_model):
    from utils.core.heads import layer_matched_random_heads

    n_layers, n_heads = any_model.cfg.n_layers, any_model.cfg.n_heads
    whole_layer = [Head(0, h) for h in range(n_heads)]
    drawn = layer_matched_random_heads(any_model, whole_layer[:1], seed=3, exclude=whole_layer[1:])
    assert drawn[0].layer != 0
    with pytest.raises(ValueError, match="out of range"):
        layer_matched_random_heads(any_model, [Head(0, n_heads)], seed=0)
    everything = [Head(l, h) for l in range(n_layers) for h in range(n_heads)]
    with pytest.raises(ValueError, match="too few heads"):
        layer_matched_random_heads(any_model, everything[:1], seed=0, exclude=everything[1:])


def test_matched_heads_draw_near_scores_outside_the_chosen():
    from utils.core.heads import matched_heads

    scores = torch.arange(12, dtype=torch.float).reshape(3, 4)  # L2H3 = 11 is the largest
    chosen = [Head(2, 3), Head(1, 0)]
    for seed in range(10):
        drawn = matched_heads(scores, chosen, seed=seed, pool=2)
        assert len(drawn) == 2 and not set(drawn) & set(chosen)
        assert drawn == sorted(drawn)
        # closest to 11 are 10 and 9; closest to 4 are 3 and 5
        assert set(drawn) <= {Head(2, 2), Head(2, 1), Head(0, 3), Head(1, 1)}
    assert matched_heads(scores, chosen, seed=3) == matched_heads(scores, chosen, seed=3)
    assert len({tuple(matched_heads(scores, chosen, seed=s)) for s in range(20)}) > 1
    assert Head(2, 2) not in matched_heads(scores, [Head(2, 3)], pool=1, exclude=[Head(2, 2)])


def test_matched_heads_errors():
    from utils.core.heads import matched_heads

    scores = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="scores"):
        matched_heads(torch.zeros(4), [(0, 0)])
    with pytest.raises(ValueError, match="pool"):
        matched_heads(scores, [(0, 0)], pool=0)
    with pytest.raises(ValueError, match="outside"):
        matched_heads(scores, [(5, 0)])
    with pytest.raises(ValueError, match="too few"):
        matched_heads(scores, [(0, 0), (0, 1), (1, 0)])
