"""Attention knockout, window scans, equalised attention, last-position mean ablation,
PrefixRun and run_variants, each against plain runs."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
import pytest
import torch

from utils.interventions.ablation import ablation_values
from utils.interventions.hooks import (
    attention_knockout_hooks,
    equalize_attention_hooks,
    replace_heads_hooks,
)
from utils.data.tokens import to_tokens
from utils.interventions.knockout import knockout_heads, knockout_window_scan, layer_windows
from utils.interventions.runner import PrefixRun, Variants, run_prefix_variants, run_variants
from utils.scores.retrieval import negative_attention_score

torch.set_grad_enabled(False)

PROMPT = "The Eiffel Tower is located in the city of"


def last_position_mean_ablation_hooks(model, heads, tokens, rows=None):
    """Mean ablation (over ``tokens``) of ``heads`` at the last position only."""
    means = ablation_values(model, tokens, "mean")
    n_rows = tokens.shape[0] if rows is None else len(rows)
    last = torch.full((n_rows,), tokens.shape[1] - 1, dtype=torch.long)
    return replace_heads_hooks(model, heads, means, positions=last, rows=rows)


def test_knockout_blocks_edges_and_keeps_rows_normalised(any_model):
    tokens = any_model.to_tokens([PROMPT, PROMPT])
    hooks = attention_knockout_hooks(any_model, [0, 1], [1, 2], rows=[1])
    _, clean = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    with any_model.hooks(fwd_hooks=hooks):
        _, blocked = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in (0, 1):
        pattern = blocked[get_act_name("pattern", layer)]
        assert torch.all(pattern[1, :, -1, [1, 2]] == 0)
        assert torch.allclose(pattern[1, :, -1].sum(-1), torch.ones(any_model.cfg.n_heads), atol=1e-5)
        # Row 0 and every other query are untouched in this layer.
        assert torch.allclose(pattern[0], clean[get_act_name("pattern", layer)][0], atol=1e-5)
        assert torch.allclose(pattern[1, :, :-1], clean[get_act_name("pattern", layer)][1, :, :-1], atol=1e-5)


def test_knockout_rejects_bad_input(any_model):
    tokens = any_model.to_tokens(PROMPT)
    with pytest.raises(ValueError, match="out of range"):
        attention_knockout_hooks(any_model, [any_model.cfg.n_layers], [1])
    with pytest.raises(ValueError, match="no layers"):
        attention_knockout_hooks(any_model, [], [1])
    with pytest.raises(ValueError, match="key_positions is empty"):
        attention_knockout_hooks(any_model, [0], [])
    with pytest.raises(TypeError, match="key_positions must hold ints"):
        attention_knockout_hooks(any_model, [0], [1.5])
    with pytest.raises(ValueError, match="not visible"):
        any_model.run_with_hooks(tokens, fwd_hooks=attention_knockout_hooks(any_model, [0], [2], query_pos=1))
    with pytest.raises(ValueError, match="not visible"):
        knockout_window_scan(
            any_model, tokens, torch.tensor([1]), {"s": _masks(tokens, [[3]])}, 1, end_positions=torch.tensor([2])
        )


def test_prefix_run_matches_a_full_run(any_model):
    tokens = any_model.to_tokens([PROMPT, "The Colosseum is located in the city of"])
    n_pos = tokens.shape[1]
    hooks = attention_knockout_hooks(any_model, range(any_model.cfg.n_layers), [1, 2, 3])
    full = any_model.run_with_hooks(tokens, fwd_hooks=hooks)
    run = PrefixRun(any_model, tokens, n_pos - 2, copies=2)
    assert run.uses_cache
    suffix = run(hooks)
    assert suffix.shape == (4, 2, any_model.cfg.d_vocab)
    # Variant-major rows: copy c holds rows 2c and 2c + 1.
    assert torch.allclose(suffix[:2], full[:, -2:], atol=1e-4)
    assert torch.allclose(suffix[2:], full[:, -2:], atol=1e-4)
    # The cache is reusable: a second call without hooks gives the clean logits.
    assert torch.allclose(run()[:2], any_model(tokens)[:, -2:], atol=1e-4)


def test_prefix_run_with_copies_reuses_the_prefix(any_model):
    tokens = any_model.to_tokens([PROMPT, "The Colosseum is located in the city of"])
    n_pos = tokens.shape[1]
    hooks = attention_knockout_hooks(any_model, range(any_model.cfg.n_layers), [1, 2, 3])
    base = PrefixRun(any_model, tokens, n_pos - 2)
    repeated = base.with_copies(3)
    assert repeated.uses_cache == base.uses_cache and repeated.tokens.shape == (6, n_pos)
    assert torch.allclose(repeated(hooks), PrefixRun(any_model, tokens, n_pos - 2, copies=3)(hooks), atol=1e-5)
    # the shared prefix is left as it was: the base run still gives the clean logits
    assert torch.allclose(base(), any_model(tokens)[:, -2:], atol=1e-4)


def test_prefix_run_copies_are_variant_major(any_model):
    tokens = any_model.to_tokens([PROMPT, "The Colosseum is located in the city of"])
    variants = Variants(batch=2, n=2)
    # Block different edges in the two copies' rows; each copy must match its own full run.
    hooks = attention_knockout_hooks(any_model, [0], [1], rows=variants.rows(0))
    hooks += attention_knockout_hooks(any_model, [0], [2], rows=variants.rows(1))
    suffix = PrefixRun(any_model, tokens, tokens.shape[1] - 1, copies=2)(hooks)[:, -1]
    for copy, key in enumerate((1, 2)):
        expected = any_model.run_with_hooks(tokens, fwd_hooks=attention_knockout_hooks(any_model, [0], [key]))[:, -1]
        assert torch.allclose(variants.split(suffix)[copy], expected, atol=1e-4)


def test_prefix_run_rejects_bad_input(any_model):
    tokens = any_model.to_tokens(PROMPT)
    with pytest.raises(ValueError, match="prefix_len"):
        PrefixRun(any_model, tokens, tokens.shape[1])
    with pytest.raises(ValueError, match="prefix_len"):
        PrefixRun(any_model, tokens, 0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        PrefixRun(any_model, tokens, 2, copies=0)
    with pytest.raises(ValueError, match="batch, pos"):
        PrefixRun(any_model, tokens[0], 2)


def test_layer_windows():
    assert layer_windows(6, 3) == [[0, 1, 2], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [3, 4, 5]]
    assert layer_windows(6, 1, centres=[2, 4]) == [[2], [4]]
    with pytest.raises(ValueError, match="window"):
        layer_windows(6, 7)
    with pytest.raises(ValueError, match="centres"):
        layer_windows(6, 3, centres=[6])
    with pytest.raises(ValueError, match="no centres"):
        layer_windows(6, 3, centres=[])


def _masks(tokens, per_prompt):
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for row, positions in enumerate(per_prompt):
        mask[row, positions] = True
    return mask


def test_knockout_window_scan_matches_single_runs(any_model):
    texts = [PROMPT, "The capital of France is"]
    tokens, lengths = to_tokens(any_model, texts)
    assert lengths[0] != lengths[1]  # a right-padded batch
    answers = torch.tensor([100, 200])
    positions = {"early": [[1, 2], [1]], "late": [[3], [2, 3]]}
    groups = {name: _masks(tokens, per_prompt) for name, per_prompt in positions.items()}
    result = knockout_window_scan(any_model, tokens, answers, groups, 2, centres=[0, 1], end_positions=lengths - 1)
    assert set(result) == {"early", "late"} and result["early"].shape == (2, 2)
    windows = layer_windows(any_model.cfg.n_layers, 2, [0, 1])
    for index, (text, answer) in enumerate(zip(texts, answers)):
        single = any_model.to_tokens(text)
        clean = any_model(single)[0, -1].softmax(-1)[answer]
        for name, per_prompt in positions.items():
            for w, layers in enumerate(windows):
                hooks = attention_knockout_hooks(any_model, layers, per_prompt[index])
                blocked = any_model.run_with_hooks(single, fwd_hooks=hooks)[0, -1].softmax(-1)[answer]
                expected = float((blocked - clean) / clean)
                assert result[name][index, w].item() == pytest.approx(expected, abs=1e-3)


def test_knockout_window_scan_rejects_bad_input(any_model):
    tokens = any_model.to_tokens(PROMPT)
    group = {"s": _masks(tokens, [[1]])}
    with pytest.raises(ValueError, match="answer_ids"):
        knockout_window_scan(any_model, tokens, torch.tensor([1, 2]), group, 1)
    with pytest.raises(ValueError, match="vocabulary"):
        knockout_window_scan(any_model, tokens, torch.tensor([any_model.cfg.d_vocab]), group, 1)
    with pytest.raises(ValueError, match="key_groups is empty"):
        knockout_window_scan(any_model, tokens, torch.tensor([1]), {}, 1)
    with pytest.raises(ValueError, match="BoolTensor of shape"):
        knockout_window_scan(any_model, tokens, torch.tensor([1]), {"s": [[1]]}, 1)
    with pytest.raises(ValueError, match="tokens must be"):
        knockout_window_scan(any_model, tokens[0], torch.tensor([1]), group, 1)
    with pytest.raises(ValueError, match="end_positions"):
        knockout_window_scan(any_model, tokens, torch.tensor([1]), group, 1, end_positions=torch.tensor([99]))
    with pytest.raises(ValueError, match="after BOS"):
        knockout_window_scan(any_model, tokens, torch.tensor([1]), group, 1, end_positions=torch.tensor([0]))


def test_equalize_attention_removes_the_preference(any_model):
    tokens = any_model.to_tokens([PROMPT, PROMPT])
    first, second = torch.tensor([2, 3]), torch.tensor([4, 1])
    heads = [(0, 0), (1, 1)]
    hooks = equalize_attention_hooks(any_model, heads, first, second)
    with any_model.hooks(fwd_hooks=hooks):
        _, cache = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer, head in heads:
        pattern = cache[get_act_name("pattern", layer)]
        for b in range(2):
            start = int(max(first[b], second[b]))
            assert torch.allclose(pattern[b, head, start:, first[b]], pattern[b, head, start:, second[b]])
        assert torch.allclose(pattern[:, head].sum(-1), torch.ones(2, tokens.shape[1]), atol=1e-5)
        nas = negative_attention_score(pattern, first, second)
        assert abs(float(nas[head])) < 1e-4
    # The run through PrefixRun gives the same logits as the full run.
    full = any_model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
    suffix = PrefixRun(any_model, tokens, 3)(hooks)[:, -1]
    assert torch.allclose(full, suffix, atol=1e-4)


def test_equalize_attention_rejects_bad_input(any_model):
    with pytest.raises(TypeError, match="LongTensor"):
        equalize_attention_hooks(any_model, [(0, 0)], [1], torch.tensor([2]))
    with pytest.raises(TypeError, match="LongTensor"):
        equalize_attention_hooks(any_model, [(0, 0)], torch.tensor([1.0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="same length"):
        equalize_attention_hooks(any_model, [(0, 0)], torch.tensor([1]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="must differ"):
        equalize_attention_hooks(any_model, [(0, 0)], torch.tensor([1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="out of range"):
        equalize_attention_hooks(any_model, [(0, 99)], torch.tensor([1]), torch.tensor([2]))
    tokens = any_model.to_tokens(PROMPT)
    hooks = equalize_attention_hooks(any_model, [(0, 0)], torch.tensor([1, 2]), torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="for a batch of 1"):
        any_model.run_with_hooks(tokens, fwd_hooks=hooks)


def test_last_position_mean_ablation(any_model):
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is", "The capital of Japan is"])
    _, clean = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    heads = [(0, 1), (1, 0)]
    hooks = last_position_mean_ablation_hooks(any_model, heads, tokens)
    with any_model.hooks(fwd_hooks=hooks):
        _, ablated = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    z0, z0_clean = ablated[get_act_name("z", 0)], clean[get_act_name("z", 0)]
    expected = z0_clean[:, -1, 1].mean(0)
    assert torch.allclose(z0[:, -1, 1], expected.expand(3, -1), atol=1e-5)
    assert torch.allclose(z0[:, :-1], z0_clean[:, :-1], atol=1e-5)
    assert torch.allclose(z0[:, -1, 0], z0_clean[:, -1, 0], atol=1e-5)
    # Under PrefixRun (only the last position recomputed) the logits agree with a full run.
    full = any_model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
    suffix = PrefixRun(any_model, tokens, tokens.shape[1] - 1)(hooks)[:, -1]
    assert torch.allclose(full, suffix, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        last_position_mean_ablation_hooks(any_model, [(0, 99)], tokens)


def test_hooks_restricted_to_rows(any_model):
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is"])
    _, clean = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    clean_logits = any_model(tokens)[:, -1]
    heads = [(0, 0), (1, 1)]
    ablate_row_1 = last_position_mean_ablation_hooks(any_model, heads, tokens, rows=[1])
    logits = any_model.run_with_hooks(tokens, fwd_hooks=ablate_row_1)[:, -1]
    everywhere = any_model.run_with_hooks(tokens, fwd_hooks=last_position_mean_ablation_hooks(any_model, heads, tokens))[:, -1]
    assert torch.allclose(logits[0], clean_logits[0], atol=1e-4)
    assert torch.allclose(logits[1], everywhere[1], atol=1e-4)
    first, second = torch.tensor([1, 1]), torch.tensor([2, 2])
    equalize_row_0 = equalize_attention_hooks(any_model, heads, first[:1], second[:1], rows=[0])
    logits = any_model.run_with_hooks(tokens, fwd_hooks=equalize_row_0)[:, -1]
    everywhere = any_model.run_with_hooks(tokens, fwd_hooks=equalize_attention_hooks(any_model, heads, first, second))[:, -1]
    assert torch.allclose(logits[0], everywhere[0], atol=1e-4)
    assert torch.allclose(logits[1], clean_logits[1], atol=1e-4)
    with pytest.raises(ValueError, match="rows must be"):
        last_position_mean_ablation_hooks(any_model, heads, tokens, rows=[0.5])
    with pytest.raises(ValueError, match="positions given for 2 rows"):
        equalize_attention_hooks(any_model, heads, first[:1], second[:1], rows=[0, 1])


def test_run_variants_matches_separate_runs(any_model):
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is"])
    _, clean = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    sets = {"none": [], "a": [(0, 0)], "b": [(1, 1), (0, 1)]}

    def builder(heads):
        return lambda rows: last_position_mean_ablation_hooks(any_model, heads, tokens, rows=rows) if heads else []

    for per_run in (None, 2):
        result = run_variants(any_model, tokens, {k: builder(v) for k, v in sets.items()},
                              prefix_len=tokens.shape[1] - 1, variants_per_run=per_run)
        assert set(result) == set(sets)
        for name, heads in sets.items():
            hooks = last_position_mean_ablation_hooks(any_model, heads, tokens) if heads else []
            expected = any_model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
            assert result[name].shape == expected.shape
            assert torch.allclose(result[name], expected, atol=1e-4)
    with pytest.raises(ValueError, match="no variants"):
        run_variants(any_model, tokens, {})
    with pytest.raises(ValueError, match="variants_per_run"):
        run_variants(any_model, tokens, {"a": builder([])}, variants_per_run=0)


def test_head_specific_knockout_blocks_only_those_heads(any_model):
    tokens = any_model.to_tokens(PROMPT)
    with torch.no_grad():
        _, clean = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    name = get_act_name("pattern", 1)
    hooks = attention_knockout_hooks(any_model, [1], [1, 2], heads=[0])
    with torch.no_grad(), any_model.hooks(fwd_hooks=hooks):
        _, cache = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    blocked = cache[name][0, :, -1]
    assert blocked[0, [1, 2]].abs().max() == 0
    assert torch.allclose(blocked[0].sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(blocked[1:], clean[name][0, 1:, -1], atol=1e-6)
    with pytest.raises(ValueError, match="head indices"):
        attention_knockout_hooks(any_model, [1], [1], heads=[any_model.cfg.n_heads])
    with pytest.raises(ValueError, match="head indices"):
        attention_knockout_hooks(any_model, [1], [1], heads=[])


def test_knockout_heads_matches_single_runs(any_model):
    texts = [PROMPT, "The capital of France is"]
    tokens, lengths = to_tokens(any_model, texts)
    answers = torch.tensor([100, 200])
    per_prompt = [[1, 2], [1]]
    mask = _masks(tokens, per_prompt)
    sets = {"a": [(0, 0), (1, 1)], "b": [(1, 0)]}
    result = knockout_heads(any_model, tokens, answers, mask, sets, end_positions=lengths - 1)
    assert set(result) == {"a", "b"} and result["a"].shape == (2,)
    for index, (text, answer) in enumerate(zip(texts, answers)):
        single = any_model.to_tokens(text)
        clean = any_model(single)[0, -1].softmax(-1)[answer]
        for name, heads in sets.items():
            hooks = []
            for layer, head in heads:
                hooks += attention_knockout_hooks(any_model, [layer], per_prompt[index], heads=[head])
            blocked = any_model.run_with_hooks(single, fwd_hooks=hooks)[0, -1].softmax(-1)[answer]
            assert result[name][index].item() == pytest.approx(float((blocked - clean) / clean), abs=1e-3)
    with pytest.raises(ValueError, match="head_sets is empty"):
        knockout_heads(any_model, tokens, answers, mask, {}, end_positions=lengths - 1)
    with pytest.raises(ValueError, match="not a head"):
        knockout_heads(any_model, tokens, answers, mask, {"x": [(99, 0)]}, end_positions=lengths - 1)
    with pytest.raises(ValueError, match="marks no position"):
        knockout_heads(any_model, tokens, answers, torch.zeros_like(mask), sets, end_positions=lengths - 1)


def test_run_prefix_variants_reuses_the_prefix(any_model):
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is"])
    sets = {"none": [], "a": [(0, 0)], "b": [(1, 1), (0, 1)]}

    def builder(heads):
        return lambda rows: last_position_mean_ablation_hooks(any_model, heads, tokens, rows=rows) if heads else []

    variants = {k: builder(v) for k, v in sets.items()}
    prefix = PrefixRun(any_model, tokens, tokens.shape[1] - 1)
    reused = run_prefix_variants(any_model, prefix, variants, variants_per_run=2)
    fresh = run_variants(any_model, tokens, variants, prefix_len=tokens.shape[1] - 1)
    assert set(reused) == set(sets)
    for name in sets:
        assert torch.allclose(reused[name], fresh[name], atol=1e-4)
    with pytest.raises(ValueError, match="PrefixRun of one copy"):
        run_prefix_variants(any_model, prefix.with_copies(2), variants)
    with pytest.raises(ValueError, match="PrefixRun of one copy"):
        run_prefix_variants(any_model, tokens, variants)


def test_prefix_runs_batch_few_variants_when_the_cache_is_large(any_model, monkeypatch):
    import utils.interventions.runner as runner

    batch, prefix_len = 4, 10
    cfg = any_model.cfg
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_variant = cfg.n_layers * batch * prefix_len * kv_heads * cfg.d_head * 2 * 4
    monkeypatch.setattr(runner, "PREFIX_CACHE_BUDGET_BYTES", 3 * per_variant)
    assert runner.prefix_variants_per_run(any_model, batch, prefix_len) == 3
    assert runner.prefix_variants_per_run(any_model, 2 * batch, prefix_len) == 1
    monkeypatch.setattr(runner, "PREFIX_CACHE_BUDGET_BYTES", 1)
    assert runner.prefix_variants_per_run(any_model, batch, prefix_len) == 1  # never fewer than one
    # the default batching of run_prefix_variants then gives the same values as any other
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is"])
    variants = {k: (lambda rows, h=h: last_position_mean_ablation_hooks(any_model, h, tokens, rows=rows) if h else [])
                for k, h in {"none": [], "a": [(0, 0)], "b": [(1, 1), (0, 1)]}.items()}
    prefix = PrefixRun(any_model, tokens, tokens.shape[1] - 1)
    one_at_a_time = run_prefix_variants(any_model, prefix, variants)
    all_together = run_prefix_variants(any_model, prefix, variants, variants_per_run=3)
    for name in variants:
        assert torch.allclose(one_at_a_time[name], all_together[name], atol=1e-4)
