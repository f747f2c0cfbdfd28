"""Token helpers every prompt set uses: single-token checks, equal-length prompts,
the beginning-of-sequence token, right padding.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def single_token_id(model: Any, text: str) -> int:
    """Id of ``text`` if the loaded tokenizer makes it exactly one token.

    Raises:
        ValueError: ``text`` is several tokens (the message lists them) or none.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}); it must be one token"
        )
    return int(ids[0])


def is_single_token(model: Any, text: str) -> bool:
    """Whether ``text`` is exactly one token for the loaded tokenizer."""
    return len(model.tokenizer.encode(text, add_special_tokens=False)) == 1


def tokens_of_equal_length(
    model: Any, clean_prompts: Sequence[str], corrupted_prompts: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Tokenise clean and corrupted prompts that must align position by position.

    Raises:
        ValueError: the lists differ in size, or any prompt pair (or any two prompts in
            the batch) differ in token length; the message names the first offender.
    """
    if len(clean_prompts) != len(corrupted_prompts):
        raise ValueError(
            f"{len(clean_prompts)} clean prompts but {len(corrupted_prompts)} corrupted prompts"
        )
    if not clean_prompts:
        raise ValueError("no prompts given")
    lengths = []
    for clean, corrupted in zip(clean_prompts, corrupted_prompts):
        n_clean = model.to_tokens(clean).shape[-1]
        n_corrupted = model.to_tokens(corrupted).shape[-1]
        if n_clean != n_corrupted:
            raise ValueError(
                "clean and corrupted prompts must have the same token length, but "
                f"{clean!r} has {n_clean} tokens and {corrupted!r} has {n_corrupted}"
            )
        lengths.append(n_clean)
    if len(set(lengths)) != 1:
        raise ValueError(
            f"all prompts in a batch must have the same token length, got lengths {sorted(set(lengths))}"
        )
    return model.to_tokens(list(clean_prompts)), model.to_tokens(list(corrupted_prompts))


def _encode(model: Any, text: str) -> list[int]:
    return list(model.tokenizer.encode(text, add_special_tokens=False))


def _bos(model: Any) -> int:
    bos = model.tokenizer.bos_token_id
    if bos is None:
        raise ValueError("this tokenizer has no BOS token")
    return int(bos)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Stack token lists of different lengths, padding on the right.

    In a causal model padding on the right changes nothing at the real positions, so a
    batch of sentences of different lengths can share one forward pass.

    Returns:
        ``(tokens, lengths)``: ``(batch, max_len)`` and ``LongTensor[batch]``.
    """
    if not sequences:
        raise ValueError("no sequences given")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), int(pad_id), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = torch.tensor(list(sequence), dtype=torch.long)
    return tokens, torch.tensor([len(s) for s in sequences])
