"""Token helpers every prompt set uses: the one way to add the beginning-of-sequence
token, single-token checks, right padding and equal-length prompts.

Every prompt of :mod:`utils.data` starts with BOS, and :func:`with_bos` is the only
place that puts it there: :func:`encode` tokenises a text through it, and generators
that assemble a prompt from pieces (:func:`piece_ids`) pass the assembled ids through
it. ``model.to_tokens`` gives the same ids for one prompt (checked by the tests on both
test tokenizers), so chapters may still use it for their own one-off prompts.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = [
    "bos_id",
    "encode",
    "equal_length_tokens",
    "is_single_token",
    "pad_right",
    "piece_ids",
    "single_token_id",
    "to_tokens",
    "tokens_of_equal_length",
    "with_bos",
]


def bos_id(model: Any) -> int:
    """The tokenizer's beginning-of-sequence id.

    Raises:
        ValueError: the tokenizer has none.
    """
    bos = model.tokenizer.bos_token_id
    if bos is None:
        raise ValueError("this tokenizer has no BOS token")
    return int(bos)


def piece_ids(model: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special token added: a piece of a prompt."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return list(model.tokenizer.encode(text, add_special_tokens=False))


def with_bos(model: Any, ids: Sequence[int]) -> list[int]:
    """``ids`` with the BOS token in front: the one place prompt sets add BOS."""
    return [bos_id(model), *(int(i) for i in ids)]


def encode(model: Any, text: str) -> list[int]:
    """Token ids of the prompt ``text``, BOS first."""
    return with_bos(model, piece_ids(model, text))


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Stack token lists of different lengths, padding on the right.

    In a causal model a real token never attends to a later position, so padding on the
    right changes nothing at the real positions (up to float rounding of a different
    batch shape), and prompts of different lengths can share one forward pass. The
    bridge adds no attention mask for a tensor input, so the pad id itself does not
    matter.

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
    return tokens, torch.tensor([len(s) for s in sequences], dtype=torch.long)


def to_tokens(model: Any, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Tokenise prompts with :func:`encode`, right-padded with the BOS id.

    Returns:
        ``(tokens, lengths)`` as :func:`pad_right` gives them.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    return pad_right([encode(model, text) for text in texts], bos_id(model))


def equal_length_tokens(model: Any, texts: Sequence[str], what: str = "", hint: str = "") -> Tensor:
    """:func:`to_tokens` for prompts that must all have one token length (one template,
    so each named token sits at the same position in every prompt).

    Args:
        what: the kind of prompt, for the error message (``"yes/no"``, ``"review"``).
        hint: what to do about a mismatch, appended to the message.

    Raises:
        ValueError: the prompts differ in token length (the message lists the lengths).
    """
    tokens, lengths = to_tokens(model, texts)
    if len(set(lengths.tolist())) != 1:
        kind = f"{what} prompts" if what else "prompts"
        advice = f"; {hint}" if hint else ""
        raise ValueError(f"{kind} differ in token length {sorted(set(lengths.tolist()))}{advice}")
    return tokens


def single_token_id(model: Any, text: str) -> int:
    """Id of ``text`` if the loaded tokenizer makes it exactly one token.

    Raises:
        ValueError: ``text`` is several tokens (the message lists them) or none.
    """
    ids = piece_ids(model, text)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}); it must be one token"
        )
    return int(ids[0])


def is_single_token(model: Any, text: str) -> bool:
    """Whether ``text`` is exactly one token for the loaded tokenizer."""
    return len(piece_ids(model, text)) == 1


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
    clean, clean_lengths = to_tokens(model, clean_prompts)
    corrupted, corrupted_lengths = to_tokens(model, corrupted_prompts)
    for i, (n_clean, n_corrupted) in enumerate(zip(clean_lengths.tolist(), corrupted_lengths.tolist())):
        if n_clean != n_corrupted:
            raise ValueError(
                "clean and corrupted prompts must have the same token length, but "
                f"{clean_prompts[i]!r} has {n_clean} tokens and {corrupted_prompts[i]!r} has {n_corrupted}"
            )
    if len(set(clean_lengths.tolist())) != 1:
        raise ValueError(
            f"all prompts in a batch must have the same token length, got lengths {sorted(set(clean_lengths.tolist()))}"
        )
    return clean, corrupted
