"""IOI prompts (utils.data.ioi) on both architectures."""

import pytest
import torch

from data_checks import assert_prompt_set
from utils.data.ioi import IOI_TEMPLATES, IOIDataset, ioi_dataset, templates_of_one_length
from utils.data.tokens import is_single_token


def test_ioi_dataset_structure(any_model):
    data = ioi_dataset(any_model, 8, seed=0)
    assert isinstance(data, IOIDataset) and len(data) == 8
    assert_prompt_set(data, any_model, again=ioi_dataset(any_model, 8, seed=0))
    assert data.corrupted_tokens.shape == data.tokens.shape
    tokens = data.tokens
    rows = torch.arange(8)
    assert torch.equal(tokens[rows, data.positions["IO"]], data.answer_ids)
    assert torch.equal(tokens[rows, data.positions["S1"]], data.wrong_ids)
    assert torch.equal(tokens[rows, data.positions["S2"]], data.wrong_ids)
    assert (data.positions["S1"] < data.positions["S2"]).all()
    assert (data.positions["END"] == tokens.shape[1] - 1).all()
    # half ABBA (IO first), half BABA
    assert (data.positions["IO"] < data.positions["S1"]).sum() == 4
    for clean, corrupted, io, s in zip(data.prompts, data.corrupted_prompts, data.io_names, data.subject_names):
        assert io in clean and s in clean
        assert io not in corrupted.split() and s not in corrupted.split()
    assert data.names_kept >= 5
    assert ioi_dataset(any_model, 8, seed=1).prompts != data.prompts
    part = data.subset([3, 1])
    assert part.corrupted_prompts == [data.corrupted_prompts[3], data.corrupted_prompts[1]]
    assert torch.equal(part.corrupted_tokens, data.corrupted_tokens[[3, 1]])
    assert part.template == data.template


def test_ioi_old_names_point_to_the_new_ones(gpt2_random):
    data = ioi_dataset(gpt2_random, 2)
    for old, new in (("clean_tokens", "tokens"), ("correct_ids", "answer_ids"), ("incorrect_ids", "wrong_ids")):
        with pytest.raises(AttributeError, match=f"renamed: use .{new}"):
            getattr(data, old)


def test_ioi_every_template(any_model):
    for template in IOI_TEMPLATES:
        data = ioi_dataset(any_model, 4, seed=2, template=template)
        assert data.template == template
        assert_prompt_set(data, any_model)


def test_ioi_several_templates_share_positions(any_model):
    templates = templates_of_one_length(any_model)
    assert len(templates) >= 3 and set(templates) <= set(IOI_TEMPLATES)
    data = ioi_dataset(any_model, 12, seed=1, templates=templates)
    assert_prompt_set(data, any_model)
    assert data.prompt_templates == [templates[(i // 2) % len(templates)] for i in range(12)]
    assert data.template == templates[0]
    assert (data.positions["S2"] == data.positions["S2"][0]).all()
    part = data.subset([0, 5])
    assert part.prompt_templates == [data.prompt_templates[0], data.prompt_templates[5]]
    with pytest.raises(ValueError, match="not both"):
        ioi_dataset(any_model, 4, template=templates[0], templates=templates)
    with pytest.raises(ValueError, match="empty"):
        ioi_dataset(any_model, 4, templates=[])
    with pytest.raises(ValueError, match="share a token length"):
        templates_of_one_length(any_model, minimum=len(IOI_TEMPLATES) + 1)


def test_ioi_rejects_bad_input(any_model):
    long_name = "Bartholomewtrudeauski"
    assert not is_single_token(any_model, " " + long_name)
    with pytest.raises(ValueError, match="Bartholomewtrudeauski.*tokens"):
        ioi_dataset(any_model, 4, names=["Mary", "John", "Alice", "Bob", long_name])
    with pytest.raises(ValueError, match="at least 5 distinct single-token names, have 4"):
        ioi_dataset(any_model, 4, names=["Mary", "John", "Alice", "Bob", "Mary"])
    with pytest.raises(ValueError, match="unknown IOI template.*{S}"):
        ioi_dataset(any_model, 4, template="When {A} and {B} went to the {PLACE}, he gave a {OBJECT} to")
    with pytest.raises(TypeError, match="template must be a string"):
        ioi_dataset(any_model, 4, template=3)
    with pytest.raises(TypeError, match="not one string"):
        ioi_dataset(any_model, 4, names="Mary")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_prompts must be an int >= 1"):
            ioi_dataset(any_model, bad)
    with pytest.raises(ValueError, match="seed must be an int"):
        ioi_dataset(any_model, 4, seed=None)
