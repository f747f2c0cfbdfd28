"""utils.toy: the toy transformer's hook names and weights, the task data, the training
loop and the analysis of a run. Fast: tiny configs, a few dozen steps."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
import math

import pytest
import torch

from utils.scores.patterns import head_scores, previous_token_score
from utils.analysis.stats import bootstrap_ci
from utils.interventions.ablation import ablation_values
from utils.interventions.hooks import replace_heads_hooks
from utils.toy.model import ACTIVATIONS_PER_LAYER, ToyConfig, ToyTransformer, composition_scores
from utils.toy.tasks import (
    PARITY_TOKENS,
    first_half_mask,
    iteration_head_share,
    iteration_hits,
    masked_sequence_mean,
    parity_batch,
    parity_tokens,
    repeated_half_mask,
    repeated_segment_tokens,
    state_accuracy,
    state_mask,
)
from utils.toy.training import (
    drop_steps,
    summarise_induction_run,
    induction_evaluator,
    parity_evaluator,
    parity_loss,
    phase_change_step,
    rise_step,
    train,
    transition_width,
)

TINY = ToyConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, d_vocab=12, n_ctx=16)


def tokens(n: int = 3, length: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY.d_vocab, (n, length), generator=torch.Generator().manual_seed(seed))


# --- the model ----------------------------------------------------------------------


@pytest.mark.parametrize("d_mlp", [None, 32])
def test_every_transformer_lens_hook_name_is_there(d_mlp):
    model = ToyTransformer(ToyConfig(**{**TINY.__dict__, "d_mlp": d_mlp}))
    names = set(model.hook_names())
    for layer in range(2):
        for activation in ACTIVATIONS_PER_LAYER:
            assert get_act_name(activation, layer) in names
        mlp_hooks = {get_act_name("pre", layer), get_act_name("mlp_out", layer)}
        assert mlp_hooks <= names if d_mlp else not mlp_hooks & names
    assert {"hook_embed", "hook_pos_embed"} <= names
    assert model.cfg.attn_only == (d_mlp is None)


def test_cache_shapes_and_a_causal_pattern():
    model = ToyTransformer(TINY)
    _, cache = model.run_with_cache(tokens())
    pattern = cache["pattern", 1]
    assert pattern is cache[get_act_name("pattern", 1)]
    assert pattern.shape == (3, 2, 10, 10)
    assert torch.allclose(pattern.sum(-1), torch.ones(3, 2, 10))
    assert pattern.triu(diagonal=1).abs().max() == 0
    for name in ("q", "k", "v", "z"):
        assert cache[get_act_name(name, 0)].shape == (3, 10, 2, 8)
    assert cache["resid_pre", 0].shape == cache[get_act_name("resid_post", 1)].shape == (3, 10, 16)
    assert head_scores(cache, previous_token_score).shape == (2, 2)


def test_attention_output_is_the_sum_of_the_heads_writes():
    model = ToyTransformer(TINY, seed=3)
    _, cache = model.run_with_cache(tokens())
    per_head = torch.einsum("bphd,hdm->bpm", cache[get_act_name("z", 1)], model.W_O[1])
    assert torch.allclose(per_head + model.b_O[1], cache[get_act_name("attn_out", 1)], atol=1e-5)
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (2, 2, 16, 8)
    assert model.W_O.shape == (2, 2, 8, 16)


def test_run_with_hooks_reaches_the_output():
    model = ToyTransformer(TINY)
    x = tokens()
    clean = model(x)

    def knock_out(z, hook):
        z[:] = 0.0
        return z

    hooks = [(get_act_name("z", layer), knock_out) for layer in range(2)]
    ablated = model.run_with_hooks(x, fwd_hooks=hooks)
    # With every head silenced only the embeddings (and the output biases) remain.
    direct = (model.W_E[x] + model.W_pos[:10] + model.b_O.sum(0)) @ model.W_U + model.b_U
    assert torch.allclose(ablated, direct, atol=1e-5)
    assert not torch.allclose(ablated, clean)
    assert torch.allclose(model(x), clean)  # the hooks are gone afterwards


def test_the_seed_fixes_the_weights():
    torch.manual_seed(123)
    a = ToyTransformer(TINY, seed=1)
    torch.manual_seed(456)
    b = ToyTransformer(TINY, seed=1)
    c = ToyTransformer(TINY, seed=2)
    assert torch.equal(a.W_Q, b.W_Q) and not torch.equal(a.W_Q, c.W_Q)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([[0, 12]]), "token ids"),
        (torch.zeros(1, 17, dtype=torch.long), "n_ctx"),
        (torch.zeros(1, 3), "integer"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "shape"),
    ],
)
def test_bad_tokens_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        ToyTransformer(TINY)(bad)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="n_heads"):
        ToyConfig(n_heads=0)
    with pytest.raises(ValueError, match="d_mlp"):
        ToyConfig(d_mlp=-1)


def test_k_composition_sees_a_head_written_into_another_heads_keys():
    model = ToyTransformer(TINY, seed=0)
    with torch.no_grad():
        for block in model.blocks:
            for name in ("W_Q", "W_K", "W_V", "W_O"):
                getattr(block.attn, name).zero_()
        eye = torch.eye(16)
        # head 0 of layer 0 writes into dimensions 0-7; head 1 into 8-15
        model.blocks[0].attn.W_V[:] = eye[:, :8]
        model.blocks[0].attn.W_O[0] = eye[:8]
        model.blocks[0].attn.W_O[1] = eye[8:]
        # head 1 of layer 1 reads its keys from dimensions 0-7 only
        model.blocks[1].attn.W_Q[:] = eye[:, :8]
        model.blocks[1].attn.W_K[1] = eye[:, :8]
        model.blocks[1].attn.W_K[0] = eye[:, 8:]
    scores = composition_scores(model, "K")
    assert scores.shape == (1, 2, 2)
    assert scores[0, 0, 1] > 0.3 and scores[0, 1, 1] == 0 and scores[0, 0, 0] == 0
    with pytest.raises(ValueError, match="kind"):
        composition_scores(model, "X")


# --- the tasks ----------------------------------------------------------------------


def test_repeated_segments_copy_their_first_period():
    x, periods = repeated_segment_tokens(
        50, 20, 30, generator=torch.Generator().manual_seed(0), min_period=3, max_period=10
    )
    assert x.shape == (50, 20) and periods.min() >= 3 and periods.max() <= 10
    assert len(set(periods.tolist())) > 3
    for row, p in zip(x, periods.tolist()):
        assert torch.equal(row[p : 2 * p], row[:p])
    again, _ = repeated_segment_tokens(
        50, 20, 30, generator=torch.Generator().manual_seed(0), min_period=3, max_period=10
    )
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="max_period"):
        repeated_segment_tokens(2, 20, 30, generator=torch.Generator(), max_period=11)
    with pytest.raises(ValueError, match="generator"):
        repeated_segment_tokens(2, 20, 30, generator=0)


def test_half_masks_select_the_predictions_induction_can_make():
    periods = torch.tensor([4, 5])
    repeated, first = repeated_half_mask(periods, 10), first_half_mask(periods, 10)
    # prediction i is of token i + 1: targets 5..7 for period 4, 6..9 for period 5
    assert repeated[0].nonzero().flatten().tolist() == [4, 5, 6]
    assert repeated[1].nonzero().flatten().tolist() == [5, 6, 7, 8]
    assert first[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert masked_sequence_mean(torch.ones(2, 9), repeated).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="period"):
        repeated_half_mask(torch.tensor([6]), 10)


def test_parity_tokens_follow_the_survey_example():
    # "001011": prefix parities e e o o e o
    t = PARITY_TOKENS
    out = parity_tokens(torch.tensor([[0, 0, 1, 0, 1, 1]]))
    expected = [t["[BOS]"], 0, 0, 1, 0, 1, 1, t["[EOI]"]] + [t[c] for c in "eeooeo"]
    assert out.tolist() == [expected]


def test_parity_tokens_pad_shorter_sequences():
    t = PARITY_TOKENS
    out = parity_tokens(torch.tensor([[1, 1, 1], [1, 0, 1]]), torch.tensor([2, 3]))
    assert out[0].tolist() == [t["[BOS]"], 1, 1, t["[EOI]"], t["o"], t["e"], t["[PAD]"], t["[PAD]"]]
    assert out[1].tolist() == [t["[BOS]"], 1, 0, 1, t["[EOI]"], t["o"], t["o"], t["e"]]
    with pytest.raises(ValueError, match="0 or 1"):
        parity_tokens(torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="lengths"):
        parity_tokens(torch.tensor([[0, 1]]), torch.tensor([3]))


def test_parity_batch_lengths_and_held_out_rows():
    held_out = parity_batch(40, 6, generator=torch.Generator().manual_seed(1), min_bits=3)
    batch = parity_batch(
        200, 6, generator=torch.Generator().manual_seed(0), min_bits=3, exclude=held_out
    )
    assert batch.tokens.shape == (200, 14)
    assert set(batch.lengths.tolist()) == {3, 4, 5, 6}
    seen = {tuple(row) for row in batch.tokens.tolist()}
    assert not seen & {tuple(row) for row in held_out.tokens.tolist()}
    mask = state_mask(batch.lengths, 14)
    assert torch.equal(mask.sum(1), batch.lengths)
    part = batch[10:20]
    assert len(part) == 10 and torch.equal(part.tokens, batch.tokens[10:20])


def test_distinct_parity_sequences():
    batch = parity_batch(64, 6, generator=torch.Generator().manual_seed(0), distinct=True)
    assert len({tuple(row) for row in batch.tokens.tolist()}) == 64
    with pytest.raises(ValueError, match="distinct"):
        parity_batch(65, 6, generator=torch.Generator(), distinct=True)


def test_iteration_share_of_a_perfect_and_an_off_by_one_head():
    lengths = torch.tensor([3, 5])
    pattern = torch.zeros(2, 2, 11, 11)
    for b, n in enumerate(lengths.tolist()):
        for t in range(1, n + 1):
            pattern[b, 0, n + t, t] = 1.0  # an iteration head
            pattern[b, 1, n + t, t - 1] = 1.0  # one bit too early
    assert iteration_head_share(pattern, lengths).tolist() == [1.0, 0.0]
    hits, valid = iteration_hits(pattern, lengths)
    assert hits.shape == (2, 2, 5) and valid.sum() == 8


def test_state_accuracy_counts_states_only():
    batch = parity_batch(4, 5, generator=torch.Generator().manual_seed(0), min_bits=2)
    perfect = torch.nn.functional.one_hot(batch.tokens[:, 1:], 7).float()
    logits = torch.cat([perfect, torch.zeros(4, 1, 7)], dim=1)  # predicts each next token
    assert state_accuracy(logits, batch.tokens, batch.lengths).tolist() == [1.0] * 4


# --- training -----------------------------------------------------------------------


def test_a_few_steps_lower_the_loss_and_the_run_is_reproducible():
    def sample(generator):
        return repeated_segment_tokens(16, 16, 12, generator=generator, min_period=3)[0]

    held_out = repeated_segment_tokens(32, 16, 12, generator=torch.Generator().manual_seed(9), period=6)[0]
    runs = []
    for _ in range(2):
        model = ToyTransformer(TINY, seed=0)
        runs.append(
            train(model, sample, n_steps=40, lr=1e-2, seed=0, eval_every=20,
                  evaluate=induction_evaluator(held_out, 6))
        )
    history = runs[0]
    assert history.steps == [0, 20, 40]
    loss = history["loss_repeated"]
    assert loss[-1] < loss[0] - 0.1
    assert history["prev_token"].shape == (3, 2) and history["k_composition"].shape == (3, 2, 2)
    assert history.train_loss == runs[1].train_loss
    summary = summarise_induction_run(history)
    assert summary["onset"] <= summary["phase"] <= summary["end"] <= 40
    assert summary["prev_head"] in (0, 1) and 0 <= summary["induction_score"] <= 1
    assert history.cpu_seconds > 0 and history.wall_seconds > 0


def test_parity_training_lowers_the_state_loss():
    cfg = ToyConfig(n_layers=2, n_heads=1, d_model=16, d_head=16, d_vocab=7, n_ctx=14, d_mlp=32)
    model = ToyTransformer(cfg, seed=0)
    held_out = parity_batch(32, 6, generator=torch.Generator().manual_seed(5), min_bits=3)
    history = train(
        model, lambda g: parity_batch(16, 6, generator=g, min_bits=3), n_steps=30, lr=1e-2,
        eval_every=30, evaluate=parity_evaluator(held_out), loss_fn=parity_loss,
    )
    assert history["loss"][-1] < history["loss"][0] - 0.3
    assert history["iteration"].shape == (2, 2, 1)  # (checkpoints, layers, heads)


def test_train_restores_the_thread_count():
    before = torch.get_num_threads()
    train(ToyTransformer(TINY), lambda g: tokens(), n_steps=2, num_threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        train(ToyTransformer(TINY), lambda g: tokens(), n_steps=2, num_threads=0)
    assert torch.get_num_threads() == before


def test_train_rejects_bad_arguments():
    model = ToyTransformer(TINY)
    with pytest.raises(ValueError, match="n_steps"):
        train(model, lambda g: tokens(), n_steps=0)
    with pytest.raises(ValueError, match="ToyTransformer"):
        train(torch.nn.Linear(2, 2), lambda g: tokens(), n_steps=1)


# --- reading a run ------------------------------------------------------------------


def test_phase_change_and_rise_steps_on_a_sigmoid():
    steps = list(range(0, 1000, 10))
    loss = [3.0 - 2.5 / (1 + math.exp(-(s - 400) / 20)) for s in steps]
    assert abs(phase_change_step(steps, loss) - 400) <= 10
    assert abs(rise_step(steps, [-v for v in loss]) - 400) <= 10
    assert 40 <= transition_width(steps, loss) <= 80  # 2 * 20 * ln 4 = 55
    assert drop_steps(steps, loss, [0.2, 0.5, 0.8]) == sorted(drop_steps(steps, loss, [0.8, 0.5, 0.2]))
    with pytest.raises(ValueError, match="never drops"):
        phase_change_step(steps, [1.0] * len(steps))


def test_the_library_mean_ablation_works_on_the_toy_model():
    model = ToyTransformer(TINY, seed=0)
    reference, x = tokens(8, 10, seed=1), tokens(3, 10, seed=2)
    means = ablation_values(model, x, "mean", reference_tokens=reference)
    hooks = replace_heads_hooks(model, [(0, 1)], means)
    _, ref_cache = model.run_with_cache(reference)
    seen = {}

    def keep(z, hook):
        seen["z"] = z.clone()

    model.run_with_hooks(x, fwd_hooks=hooks + [(get_act_name("z", 0), keep)])
    _, clean = model.run_with_cache(x)
    expected = ref_cache[get_act_name("z", 0)][:, :, 1].mean(0)
    assert torch.allclose(seen["z"][:, :, 1], expected.expand(3, -1, -1), atol=1e-6)
    assert torch.allclose(seen["z"][:, :, 0], clean[get_act_name("z", 0)][:, :, 0])
    with pytest.raises(ValueError, match="out of range"):
        replace_heads_hooks(model, [(2, 0)], means)


def test_bootstrap_interval_brackets_the_mean():
    values = torch.arange(100, dtype=torch.float32) / 100
    mean, low, high = bootstrap_ci(values)
    assert low < mean < high and abs(mean - 0.495) < 1e-6 and high - low < 0.15
    assert bootstrap_ci(values) == (mean, low, high)
    with pytest.raises(ValueError, match="two values"):
        bootstrap_ci(torch.tensor([1.0]))
