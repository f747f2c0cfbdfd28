"""Neutral text for side effects (utils.data.neutral)."""

from __future__ import annotations

import pytest

from utils.data.neutral import NEUTRAL_SENTENCES, neutral_tokens
from utils.data.tokens import bos_id


def test_neutral_tokens_are_real_text_of_one_length(any_model):
    tokens = neutral_tokens(any_model, 32)
    assert tokens.shape[0] == 32 and tokens.shape[1] >= 12
    assert (tokens[:, 0] == bos_id(any_model)).all()
    # cut to the shortest sentence: no row ends in padding (the BOS id) after position 0
    assert not (tokens[:, 1:] == bos_id(any_model)).any()
    # rows are distinct sentences, not one repeated
    assert len({tuple(row.tolist()) for row in tokens}) == 32


def test_neutral_tokens_bad_input_is_explained(any_model):
    with pytest.raises(ValueError, match="at most"):
        neutral_tokens(any_model, len(NEUTRAL_SENTENCES) + 1)
    with pytest.raises(ValueError, match="n_sentences"):
        neutral_tokens(any_model, 0)
    with pytest.raises(ValueError, match="min_tokens"):
        neutral_tokens(any_model, 4, min_tokens=500)
