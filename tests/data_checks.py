"""The invariants every prompt set of utils.data keeps, checked by each generator's tests."""

from __future__ import annotations

import dataclasses

import torch

from utils.data.base import PromptSet
from utils.data.tokens import encode


def assert_prompt_set(data: PromptSet, model, *, again: PromptSet | None = None, text_is_tokens: bool = True) -> None:
    """Shapes agree, BOS first, positions inside the real tokens, the answer follows
    ``END`` wherever the prompt goes on, ``subset`` / ``split`` keep the type, and
    ``again`` (the same call repeated) is identical.

    Args:
        text_is_tokens: each prompt's text tokenises to its row of ``tokens`` (false
            for sets assembled from separately tokenised pieces or random ids).
    """
    n = len(data)
    assert isinstance(data, PromptSet) and n >= 2
    assert data.tokens.dtype == torch.long and data.tokens.shape[0] == n
    for field in (data.answer_ids, data.lengths) + (() if data.wrong_ids is None else (data.wrong_ids,)):
        assert field.shape == (n,) and field.dtype == torch.long
    assert bool((data.tokens[:, 0] == model.tokenizer.bos_token_id).all()), "every prompt starts with BOS"
    assert bool((data.answer_ids < model.cfg.d_vocab).all())
    assert int(data.lengths.max()) == data.tokens.shape[1], "no column of padding only"
    end = data.positions["END"]
    assert end.shape == (n,) and bool((end < data.lengths).all())
    for name, positions in data.positions.items():
        assert positions.dtype == torch.long and positions.shape[0] == n, name
    rows = torch.arange(n)
    goes_on = end + 1 < data.lengths
    assert torch.equal(data.tokens[rows[goes_on], end[goes_on] + 1], data.answer_ids[goes_on])
    if text_is_tokens:
        for i, prompt in enumerate(data.prompts):
            assert data.tokens[i, : data.lengths[i]].tolist() == encode(model, prompt), prompt
    if data.wrong_ids is not None:
        assert bool((data.wrong_ids != data.answer_ids).all())

    reordered = data.subset([n - 1, 0])
    assert type(reordered) is type(data) and len(reordered) == 2
    assert reordered.prompts == [data.prompts[-1], data.prompts[0]]
    width = reordered.tokens.shape[1]
    assert torch.equal(reordered.tokens, data.tokens[[n - 1, 0], :width])
    for name, positions in data.positions.items():
        assert torch.equal(reordered.positions[name], positions[[n - 1, 0]]), name
    for name in type(data).PER_PROMPT:
        value, cut = getattr(data, name), getattr(reordered, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(cut, value[[n - 1, 0]]), name
        else:
            assert list(cut) == [value[-1], value[0]], name
    everything = data.subset(torch.ones(n, dtype=torch.bool))
    assert torch.equal(everything.tokens, data.tokens) and everything.prompts == data.prompts
    first, second = data.split(0.5, seed=1)
    assert type(first) is type(data) and len(first) + len(second) == n
    assert sorted(first.prompts + second.prompts) == sorted(data.prompts)
    assert data.split(0.5, seed=1)[0].prompts == first.prompts

    if again is not None:
        assert again.prompts == data.prompts and torch.equal(again.tokens, data.tokens)
        assert torch.equal(again.answer_ids, data.answer_ids)
        assert again.positions.keys() == data.positions.keys()
        assert all(torch.equal(again.positions[k], data.positions[k]) for k in data.positions)
        for field in dataclasses.fields(data):
            value = getattr(data, field.name)
            if isinstance(value, torch.Tensor):
                assert torch.equal(getattr(again, field.name), value), field.name
