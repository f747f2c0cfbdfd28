"""The prompt-set type (utils.data.base) and the token helpers (utils.data.tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from utils.core.positions import same_position
from utils.data.base import PromptSet, answers_by_label, check_count
from utils.data.tokens import (
    bos_id,
    encode,
    equal_length_tokens,
    is_single_token,
    pad_right,
    piece_ids,
    single_token_id,
    to_tokens,
    tokens_of_equal_length,
    with_bos,
)


@dataclass(kw_only=True)
class Tagged(PromptSet):
    """A subclass with per-prompt, token-shaped and set-level extra fields."""

    tags: list[str]
    twin: torch.Tensor
    note: str = "set level"

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("tags",)
    TOKEN_FIELDS: ClassVar[tuple[str, ...]] = ("twin",)
    RENAMED: ClassVar[dict[str, str]] = {"old_name": "tags"}


def make(**changes):
    tokens = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0], [1, 9, 9, 0]])
    fields = dict(
        prompts=["a b c", "d", "e e"],
        tokens=tokens,
        lengths=torch.tensor([4, 2, 3]),
        answer_ids=torch.tensor([10, 11, 12]),
        wrong_ids=torch.tensor([20, 21, 22]),
        positions={"END": torch.tensor([3, 1, 2]), "word": torch.tensor([1, 1, 1])},
        tags=["x", "y", "z"],
        twin=tokens + 100,
    )
    fields.update(changes)
    return Tagged(**fields)


def test_a_valid_prompt_set():
    data = make()
    assert len(data) == 3 and data.note == "set level"
    plain = PromptSet(prompts=["a"], tokens=torch.tensor([[1, 2]]), answer_ids=torch.tensor([3]),
                      positions={"END": torch.tensor([1])})
    assert plain.lengths.tolist() == [2] and plain.wrong_ids is None


def test_subset_keeps_the_type_and_cuts_every_per_prompt_field():
    data = make()
    part = data.subset([2, 1])
    assert type(part) is Tagged and part.prompts == ["e e", "d"] and part.tags == ["z", "y"]
    assert part.tokens.tolist() == [[1, 9, 9], [1, 8, 0]]  # the padding column nobody needs is dropped
    assert torch.equal(part.twin, part.tokens + 100)
    assert part.positions["END"].tolist() == [2, 1] and part.wrong_ids.tolist() == [22, 21]
    assert part.note == "set level"
    assert data.subset(torch.tensor([True, False, True])).tags == ["x", "z"]
    assert data.subset(torch.tensor([1])).prompts == ["d"]
    assert data.subset([-1]).prompts == ["e e"]
    with pytest.raises(ValueError, match="no rows"):
        data.subset([])
    with pytest.raises(ValueError, match="outside a set of 3"):
        data.subset([3])
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        data.subset(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="ints"):
        data.subset([0.5])
    with pytest.raises(TypeError, match="LongTensor"):
        data.subset(torch.tensor([0.0, 1.0]))


def test_split_is_seeded_disjoint_and_complete():
    data = make()
    first, second = data.split(0.34, seed=0)
    assert len(first) == 1 and len(second) == 2
    assert sorted(first.tags + second.tags) == ["x", "y", "z"]
    assert data.split(0.34, seed=0)[0].tags == first.tags
    assert {data.split(0.34, seed=s)[0].tags[0] for s in range(10)} == {"x", "y", "z"}
    with pytest.raises(ValueError, match="fraction"):
        data.split(1.0)
    with pytest.raises(ValueError, match="leaves a part empty"):
        data.split(0.1)
    with pytest.raises(ValueError, match="seed"):
        data.split(0.5, seed="0")


def test_held_out_skips_used_and_repeated_prompts():
    data = make(prompts=["a b c", "a b c", "e e"])
    part = data.held_out(["d"], 2)
    assert type(part) is Tagged and part.prompts == ["a b c", "e e"] and part.tags == ["x", "z"]
    assert data.held_out(make().subset([0]), 1).prompts == ["e e"]
    assert data.held_out([], 1).tags == ["x"]
    with pytest.raises(ValueError, match="only 1 of 3 prompts are new"):
        data.held_out(["a b c"], 2)
    with pytest.raises(ValueError, match="n must"):
        data.held_out([], 0)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"prompts": "abc"}, TypeError, "prompts must be a list of strings"),
        ({"prompts": []}, ValueError, "at least one prompt"),
        ({"tokens": torch.zeros(2, 4, dtype=torch.long)}, ValueError, r"tokens must be a LongTensor of shape \(3, pos\)"),
        ({"tokens": torch.zeros(3, 4)}, ValueError, "tokens must be a LongTensor"),
        ({"lengths": torch.tensor([4, 2])}, ValueError, "lengths must be"),
        ({"lengths": torch.tensor([5, 2, 3])}, ValueError, r"lengths must lie in \[1, 4\]"),
        ({"answer_ids": torch.tensor([1, 2])}, ValueError, r"answer_ids must be a LongTensor of shape \(3,\)"),
        ({"answer_ids": torch.tensor([1, -2, 3])}, ValueError, "negative token ids"),
        ({"wrong_ids": torch.tensor([1.0, 2.0, 3.0])}, ValueError, "wrong_ids must be"),
        ({"positions": {"word": torch.tensor([1, 1, 1])}}, ValueError, 'an "END" entry'),
        ({"positions": {"END": [3, 1, 2]}}, TypeError, r'positions\["END"\] must be a LongTensor'),
        ({"positions": {"END": torch.tensor([3, 1])}}, ValueError, "one row per prompt"),
        ({"positions": {"END": torch.tensor([4, 1, 2])}}, ValueError, r"outside \[0, 3\]"),
        ({"positions": {"END": torch.tensor([3, 2, 2])}}, ValueError, "into its padding"),
        ({"twin": torch.zeros(3, 2, dtype=torch.long)}, ValueError, "twin must be a LongTensor shaped like tokens"),
        ({"tags": ["x"]}, ValueError, "tags has 1 entries for 3 prompts"),
    ],
)
def test_bad_prompt_sets_are_refused_with_the_field_named(changes, error, message):
    with pytest.raises(error, match=message):
        make(**changes)


def test_a_renamed_attribute_points_to_its_new_name():
    with pytest.raises(AttributeError, match="Tagged.old_name was renamed: use .tags"):
        make().old_name
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        make().missing


def test_check_count():
    assert check_count("n", 3) == 3
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="n must be an int >= 1"):
            check_count("n", bad)
    with pytest.raises(ValueError, match=">= 2"):
        check_count("period", 1, 2)


# --- tokens -----------------------------------------------------------------


def test_encode_adds_bos_exactly_as_to_tokens_does(any_model):
    for text in ("The capital of France is", " Mary", "When Mary and John went to the store,", "a\nb"):
        assert encode(any_model, text) == any_model.to_tokens(text)[0].tolist()
        assert encode(any_model, text) == with_bos(any_model, piece_ids(any_model, text))
    assert encode(any_model, "Hi")[0] == bos_id(any_model) == any_model.tokenizer.bos_token_id


def test_to_tokens_pads_on_the_right_with_bos(any_model):
    texts = ["The capital of France is", "Hi"]
    tokens, lengths = to_tokens(any_model, texts)
    assert lengths.tolist() == [len(encode(any_model, t)) for t in texts]
    assert tokens[1, : lengths[1]].tolist() == encode(any_model, "Hi")
    assert bool((tokens[1, lengths[1]:] == bos_id(any_model)).all())
    with pytest.raises(TypeError, match="not one string"):
        to_tokens(any_model, "Hi")


def test_pad_right():
    tokens, lengths = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="no sequences"):
        pad_right([], 0)
    with pytest.raises(ValueError, match="at least one token"):
        pad_right([[1], []], 0)


def test_single_token_id(any_model):
    assert any_model.tokenizer.decode([single_token_id(any_model, " Mary")]) == " Mary"
    assert is_single_token(any_model, " Mary") and not is_single_token(any_model, " Constantinople and beyond")
    with pytest.raises(ValueError, match="must be one token"):
        single_token_id(any_model, " Constantinople and beyond")
    with pytest.raises(TypeError):
        single_token_id(any_model, 5)


def test_clean_and_corrupted_of_different_lengths(any_model):
    with pytest.raises(ValueError, match="same token length"):
        tokens_of_equal_length(any_model, ["When Mary left"], ["When Mary and John left the room"])
    with pytest.raises(ValueError, match="2 clean prompts but 1"):
        tokens_of_equal_length(any_model, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="same token length, got lengths"):
        tokens_of_equal_length(any_model, ["When Mary left", "Hi"], ["When John left", "Hi"])
    clean, corrupted = tokens_of_equal_length(any_model, ["When Mary left"], ["When John left"])
    assert clean.shape == corrupted.shape
    assert clean[0].tolist() == any_model.to_tokens("When Mary left")[0].tolist()


def test_answers_by_label():
    answers, wrong = answers_by_label(torch.tensor([1, 0, 1]), 7, 9)
    assert answers.tolist() == [7, 9, 7] and wrong.tolist() == [9, 7, 9]
    assert answers.dtype == torch.long
    for bad in (torch.tensor([0, 2]), torch.tensor([[1]]), [1, 0]):
        with pytest.raises(ValueError, match="labels"):
            answers_by_label(bad, 7, 9)


def test_same_position():
    assert same_position(3, 5).tolist() == [5, 5, 5]
    assert same_position(3, 5).dtype == torch.long
    for batch, position, name in ((0, 1, "batch"), (2, -1, "position"), (True, 1, "batch"), (2, 1.0, "position")):
        with pytest.raises(ValueError, match=name):
            same_position(batch, position)


def test_equal_length_tokens(any_model):
    prompts = ["The cat sat", "The dog sat"]
    tokens = equal_length_tokens(any_model, prompts)
    assert torch.equal(tokens, to_tokens(any_model, prompts)[0])
    with pytest.raises(ValueError, match="review prompts differ in token length .*; shorten them"):
        equal_length_tokens(any_model, ["Hi", "A much longer prompt than the first"], "review", "shorten them")
