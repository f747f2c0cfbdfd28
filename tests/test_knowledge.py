"""Tests for utils.knowledge: attribution by source, classification, head choice,
option attention and OV lookups."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name
from types import SimpleNamespace

import pytest
import torch

from utils.attribution.dla import (
    attribution_by_source,
    head_attribution_by_key,
    subject_share,
)
from utils.analysis.classify import classify_by_source
from utils.scores.patterns import option_attention
from utils.attribution.circuits import ov_lookup_accuracy
from utils.attribution.dla import head_direct_logit_attribution
from utils.data.tokens import to_tokens

torch.set_grad_enabled(False)

PROMPT = "The Eiffel Tower is located in the city of"


def _cache(model, tokens):
    names = {get_act_name("scale")}
    for layer in range(model.cfg.n_layers):
        names |= {get_act_name("pattern", layer), get_act_name("v", layer), get_act_name("z", layer)}
    return model.run_with_cache(tokens, names_filter=lambda name: name in names)


def _answer_direction(model, batch: int, token: int = 10) -> torch.Tensor:
    return model.W_U[:, [token] * batch].T


def test_attribution_by_key_sums_to_direct_logit_attribution(any_model):
    tokens = any_model.to_tokens([PROMPT, "The Colosseum is located in the city of"][:1])
    _, cache = _cache(any_model, tokens)
    directions = _answer_direction(any_model, 1)
    per_key = head_attribution_by_key(any_model, cache, directions)
    assert per_key.shape == (1, any_model.cfg.n_layers, any_model.cfg.n_heads, tokens.shape[1])
    expected = head_direct_logit_attribution(any_model, cache, directions)
    assert torch.allclose(per_key[0].sum(-1), expected, atol=1e-4)


def test_attribution_by_key_rejects_bad_directions(any_model):
    _, cache = _cache(any_model, any_model.to_tokens(PROMPT))
    with pytest.raises(ValueError, match="directions must have shape"):
        head_attribution_by_key(any_model, cache, torch.zeros(2, any_model.cfg.d_model))


def _subject_mask(tokens, per_prompt):
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for row, positions in enumerate(per_prompt):
        mask[row, positions] = True
    return mask


def test_attribution_by_source_parts_add_up(any_model):
    prompts = [PROMPT, "The capital of France is", "The capital of Italy is"]
    tokens, lengths = to_tokens(any_model, prompts)  # right-padded: the first prompt is longer
    answers = torch.tensor([11, 12, 13])
    subjects = _subject_mask(tokens, [[1, 2, 3, 4][: int(lengths[0]) - 2], [4], [4]])
    parts = attribution_by_source(any_model, tokens, answers, subjects, lengths - 1)
    shape = (any_model.cfg.n_layers, any_model.cfg.n_heads)
    assert parts.total.shape == shape
    assert torch.allclose(parts.subject + parts.relation + parts.bos, parts.total, atol=1e-4)
    # The mean over prompts of single-prompt attributions.
    singles = []
    for prompt, answer in zip(prompts, answers):
        _, cache = _cache(any_model, any_model.to_tokens(prompt))
        singles.append(head_direct_logit_attribution(any_model, cache, any_model.W_U[:, [int(answer)]].T))
    assert torch.allclose(parts.total, torch.stack(singles).mean(0), atol=1e-4)
    # Against a baseline: the attribution to answer - mean(baseline answers) is the raw
    # attribution minus the mean attribution to the baseline tokens.
    centred = attribution_by_source(any_model, tokens, answers, subjects, lengths - 1, baseline_ids=answers)
    to_baseline = [attribution_by_source(any_model, tokens, torch.full_like(answers, int(a)), subjects, lengths - 1)
                   for a in answers]
    expected = parts.total - torch.stack([b.total for b in to_baseline]).mean(0)
    assert torch.allclose(centred.total, expected, atol=1e-4)
    assert torch.allclose(centred.subject + centred.relation + centred.bos, centred.total, atol=1e-4)
    with pytest.raises(ValueError, match="baseline_ids"):
        attribution_by_source(any_model, tokens, answers, subjects, lengths - 1, baseline_ids=answers[None])


def test_attribution_by_key_at_per_prompt_positions(any_model):
    tokens, lengths = to_tokens(any_model, [PROMPT, "The capital of France is"])
    _, cache = _cache(any_model, tokens)
    directions = _answer_direction(any_model, 2)
    per_key = head_attribution_by_key(any_model, cache, directions, lengths - 1)
    short = any_model.to_tokens("The capital of France is")
    _, short_cache = _cache(any_model, short)
    alone = head_attribution_by_key(any_model, short_cache, directions[1:])
    assert torch.allclose(per_key[1, ..., : short.shape[1]], alone[0], atol=1e-4)
    assert bool((per_key[1, ..., short.shape[1]:] == 0).all())  # padding is never attended to
    with pytest.raises(ValueError, match="positions must have shape"):
        head_attribution_by_key(any_model, cache, directions, torch.zeros(3, dtype=torch.long))


def test_attribution_by_source_rejects_bad_input(any_model):
    tokens = any_model.to_tokens(PROMPT)
    end = torch.tensor([tokens.shape[1] - 1])
    subject = _subject_mask(tokens, [[1]])
    with pytest.raises(ValueError, match="tokens must be"):
        attribution_by_source(any_model, tokens[0], torch.tensor([1]), subject, end)
    with pytest.raises(ValueError, match="answer_ids"):
        attribution_by_source(any_model, tokens, torch.tensor([1, 2]), subject, end)
    with pytest.raises(ValueError, match="subject_mask"):
        attribution_by_source(any_model, tokens, torch.tensor([1]), [[1]], end)
    with pytest.raises(ValueError, match="end_positions"):
        attribution_by_source(any_model, tokens, torch.tensor([1]), subject, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="must lie in"):
        attribution_by_source(any_model, tokens, torch.tensor([1]), _subject_mask(tokens, [[0]]), end)
    with pytest.raises(ValueError, match="must lie in"):
        attribution_by_source(any_model, tokens, torch.tensor([1]), _subject_mask(tokens, [[3]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="must lie in"):
        attribution_by_source(any_model, tokens, torch.tensor([1]), _subject_mask(tokens, [[]]), end)


def test_subject_share_and_classification():
    share = subject_share(torch.tensor([2.0, 0.0, 1.0, -1.0]), torch.tensor([0.0, 3.0, 1.0, -1.0]))
    assert share.tolist() == [1.0, 0.0, 0.5, 0.5]
    assert classify_by_source(1.0, 0.1, 0.0) == "subject"
    assert classify_by_source(0.1, 1.0, 0.0) == "relation"
    assert classify_by_source(0.5, 0.5, 0.0) == "mixed"
    assert classify_by_source(0.1, 0.1, 1.0) == "bos"
    assert classify_by_source(1.0, -0.5, 0.2) == "subject"  # a part pushing against the answer is not a source
    with pytest.raises(ValueError, match="threshold"):
        classify_by_source(1.0, 0.0, 0.0, threshold=0.4)
    with pytest.raises(TypeError, match="subject must be a number"):
        classify_by_source("1", 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        subject_share(torch.zeros(2), torch.zeros(3))


def test_option_attention_on_a_known_pattern():
    pattern = torch.zeros(2, 2, 5, 5)
    pattern[:, 0, -1, 1] = 1.0  # head 0 looks at option 0 only
    pattern[:, 1, -1, [1, 2, 3, 4]] = 0.25  # head 1 spreads evenly over four options
    cache = {get_act_name("pattern", 0): pattern}
    options = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
    summary = option_attention(cache, options)
    assert summary.mass[0].tolist() == pytest.approx([1.0, 1.0])
    assert summary.entropy[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert summary.entropy[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert summary.distribution[0, 1].tolist() == pytest.approx([0.25] * 4)
    assert summary.favourite[:, 0, 0].tolist() == [0, 0]
    with pytest.raises(ValueError, match="option_positions"):
        option_attention(cache, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="rows of option positions"):
        option_attention(cache, options[:1])
    with pytest.raises(ValueError, match="must lie in"):
        option_attention(cache, torch.tensor([[1, 9], [1, 2]]))
    with pytest.raises(ValueError, match="no blocks"):
        option_attention({}, options)


def test_ov_lookup_accuracy(any_model):
    tokens = any_model.to_tokens(["The capital of France is", "The capital of Italy is", "The capital of Japan is"])
    _, cache = any_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_v"))
    candidates = torch.tensor([100, 200, 300])
    at_country = torch.full((3,), 4)
    scores = ov_lookup_accuracy(any_model, cache, at_country, candidates)
    assert scores.shape == (any_model.cfg.n_layers, any_model.cfg.n_heads)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    with pytest.raises(ValueError, match="distinct"):
        ov_lookup_accuracy(any_model, cache, at_country, torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        ov_lookup_accuracy(any_model, cache, at_country, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="source_positions has positions outside"):
        ov_lookup_accuracy(any_model, cache, torch.full((3,), 99), candidates)
    with pytest.raises(TypeError, match="source_positions must be a LongTensor"):
        ov_lookup_accuracy(any_model, cache, 4, candidates)
    # each prompt is read at its own position: move prompt 1's country to position 3
    swapped = {}
    for name in cache.keys():
        values = cache[name].clone()
        values[1, [3, 4]] = values[1, [4, 3]]
        swapped[name] = values
    assert torch.equal(ov_lookup_accuracy(any_model, swapped, torch.tensor([4, 3, 4]), candidates), scores)


def test_ov_lookup_finds_a_planted_association():
    # Head 0 copies its value into the residual stream (W_O = identity) and the candidates'
    # unembeddings are basis vectors, so reading key c writes exactly candidate c: score 1.
    # Head 1 writes nothing: every candidate ties and only the first prompt "wins".
    d = 4
    W_O = torch.stack([torch.eye(d), torch.zeros(d, d)])[None]  # (layer, head, d_head, d_model)
    W_U = torch.zeros(d, 10)
    candidates = torch.tensor([3, 5, 7])
    W_U[[0, 1, 2], candidates] = 1.0
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=2), W_O=W_O, W_U=W_U)
    values = torch.zeros(3, 2, 2, d)  # (batch, pos, kv_head, d_head)
    values[torch.arange(3), 1, :, torch.arange(3)] = 1.0
    scores = ov_lookup_accuracy(model, {get_act_name("v", 0): values}, torch.ones(3, dtype=torch.long), candidates)
    assert scores[0, 0].item() == 1.0
    assert scores[0, 1].item() == pytest.approx(1 / 3)


