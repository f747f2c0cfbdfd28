"""The semantic-relation prompts (utils.data.relations) on both test tokenizers."""

from __future__ import annotations

import pytest
import torch

from utils.data.relations import RELATION_PAIRS, semantic_relation_prompts
from utils.data.tokens import single_token_id


def test_prompts_put_the_head_word_where_they_say(any_model):
    prompts = semantic_relation_prompts(any_model, 12, seed=0)
    assert len(set(prompts.lengths.tolist())) == 1
    for row in range(len(prompts)):
        head = single_token_id(any_model, " " + prompts.head_words[row])
        assert int(prompts.tokens[row, prompts.positions["head"][row]]) == head
        assert prompts.tail_words[row] not in prompts.prompts[row].split()
    # balanced over the three relations, to within one prompt
    counts = [prompts.relations.count(r) for r in RELATION_PAIRS]
    assert max(counts) - min(counts) <= 1


def test_halves_share_no_pair(any_model):
    selection = semantic_relation_prompts(any_model, 30, seed=0, pairs="selection")
    held_out = semantic_relation_prompts(any_model, 30, seed=0, pairs="held out")
    pairs = lambda p: set(zip(p.relations, p.head_words, p.tail_words))  # noqa: E731
    assert not pairs(selection) & pairs(held_out)


def test_margins_centre_on_the_relations_tails(any_model):
    prompts = semantic_relation_prompts(any_model, 6, seed=0)
    last = torch.zeros(len(prompts), any_model.cfg.d_vocab)
    last[torch.arange(len(prompts)), prompts.answer_ids] = 3.0
    n_tails = torch.tensor([len(prompts.tail_ids[r]) for r in prompts.relations], dtype=torch.float)
    torch.testing.assert_close(prompts.margins(last), 3.0 - 3.0 / n_tails)
    directions = prompts.tail_directions(any_model)
    # the direction's logit is the margin, for any residual vector
    resid = torch.randn(len(prompts), any_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    logits = resid @ any_model.W_U
    torch.testing.assert_close((resid * directions).sum(-1), prompts.margins(logits), rtol=1e-4, atol=1e-4)
    assert directions.shape == (len(prompts), any_model.cfg.d_model)


def test_bad_input(any_model):
    with pytest.raises(ValueError, match="pairs must be one of"):
        semantic_relation_prompts(any_model, 4, pairs="train")
    with pytest.raises(ValueError, match="n_prompts"):
        semantic_relation_prompts(any_model, 0)
    with pytest.raises(ValueError, match="relation prompts of one token length"):
        semantic_relation_prompts(any_model, 10_000)
    with pytest.raises(ValueError, match="logits"):
        semantic_relation_prompts(any_model, 4).margins(torch.zeros(3, 5))
