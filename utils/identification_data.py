"""Prompt sets for the In-Context Identification chapter, built for the loaded tokenizer.

* :func:`needle_in_a_haystack` - a code hidden in filler text, asked for at the end
  (retrieval heads, Wu et al. 2024);
* :func:`rare_word_prompts` - matched sentences that differ only in one word, rare or
  common by a stated proxy (rare-words heads, Voita et al. 2019);
* :func:`word_spans` - which tokens belong to which word (subword-merge heads);
* :func:`syntactic_sentences` - templated sentences with known subject, verb and object
  positions (syntactic heads);
* :func:`acronym_dataset` - three-word names and their acronyms (letter movers,
  García-Carrasco et al. 2024).

Token ids are assembled piece by piece where positions must be exact; prompts that have
to share one length are filtered so that they do, and the result says how many were
kept.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from utils.datasets import is_single_token, single_token_id

__all__ = [
    "pad_right",
    "NeedleHaystack",
    "needle_in_a_haystack",
    "RarityProxy",
    "token_rarity",
    "RareWordPrompts",
    "rare_word_prompts",
    "word_spans",
    "SyntaxDataset",
    "syntactic_sentences",
    "AcronymDataset",
    "acronym_dataset",
]


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


# ---------------------------------------------------------------------------
# Needle in a haystack
# ---------------------------------------------------------------------------

FILLER_SENTENCES = (
    "The grass in the valley grows tall in the spring.",
    "Many people enjoy walking along the river in the evening.",
    "The old library keeps its rare maps in a quiet room.",
    "Farmers check the weather before they plant their crops.",
    "A small boat drifted slowly across the calm lake.",
    "The baker opens his shop long before sunrise.",
    "Children played football in the park after school.",
    "The museum added a new wing for modern art last year.",
    "Trains leave the central station every ten minutes.",
    "The mountain road is closed when the snow is deep.",
    "Birds gather on the roof of the barn each morning.",
    "The market sells fresh fruit and vegetables on Saturdays.",
    "Her grandmother told long stories by the fire.",
    "The factory makes parts for bicycles and cars.",
    "A light rain fell on the village during the night.",
    "The students wrote essays about the history of the town.",
    "Tourists often take photos of the old stone bridge.",
    "The garden behind the house is full of roses.",
    "The teacher asked the class to read the first chapter.",
    "Fishermen return to the harbour in the late afternoon.",
)
HAYSTACK_INTRO = "Read the notes below."
NEEDLE_TEMPLATE = " The secret code is{CODE}."
HAYSTACK_QUESTION = " What is the secret code? The secret code is"


@dataclass
class NeedleHaystack:
    """Needle-in-a-haystack prompts, teacher-forced with their answer.

    ``tokens[b]`` is the intro, filler sentences with the needle sentence at depth
    ``depths[b]`` (its index among the sentences), the question and then the code. For
    copy step ``s`` the model, at ``query_pos[b, s]``, must predict
    ``answer_ids[b, s]``, which is the token at ``target_pos[b, s]`` inside the needle.
    Whitespace-only tokens of the code are not counted as steps.
    """

    tokens: Tensor
    query_pos: Tensor
    target_pos: Tensor
    answer_ids: Tensor
    codes: list[str]
    depths: list[int]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def _check_logits(self, logits: Tensor) -> None:
        if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[:2] != self.tokens.shape:
            raise ValueError(
                f"logits must have shape (batch, pos, d_vocab) with (batch, pos) = "
                f"{tuple(self.tokens.shape)}"
            )

    def step_correct(self, logits: Tensor) -> Tensor:
        """``BoolTensor[batch, steps]``: whether the top prediction at each step is right."""
        self._check_logits(logits)
        rows = torch.arange(len(self))[:, None]
        predicted = logits[rows, self.query_pos.to(logits.device)].argmax(dim=-1).cpu()
        return predicted == self.answer_ids

    def answered(self, logits: Tensor) -> Tensor:
        """``BoolTensor[batch]``: the model reproduces the whole code (greedy decoding
        would generate it, since every step is teacher-forced with the right prefix)."""
        return self.step_correct(logits).all(dim=-1)

    def subset(self, keep: Tensor) -> "NeedleHaystack":
        """The prompts where ``keep`` (``BoolTensor[batch]``) is true."""
        if not isinstance(keep, Tensor) or keep.shape != (len(self),) or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a BoolTensor of shape ({len(self)},)")
        indices = keep.nonzero().flatten().tolist()
        return NeedleHaystack(
            tokens=self.tokens[keep],
            query_pos=self.query_pos[keep],
            target_pos=self.target_pos[keep],
            answer_ids=self.answer_ids[keep],
            codes=[self.codes[i] for i in indices],
            depths=[self.depths[i] for i in indices],
        )


def needle_in_a_haystack(
    model: Any,
    n_prompts: int = 8,
    *,
    n_filler: int = 16,
    code_digits: int = 4,
    seed: int = 0,
) -> NeedleHaystack:
    """Build needle-in-a-haystack prompts of one token length.

    Every prompt uses the same ``n_filler`` filler sentences (from
    :data:`FILLER_SENTENCES`) in a seeded random order, hides "The secret code is
    NNNN." among them and ends with the question and the code. Pieces are tokenised
    separately, so all prompts have the same length and the needle's code tokens sit at
    known positions. Codes whose token count differs from the first code's (possible
    with tokenizers that merge digits) are redrawn.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
    if not 2 <= n_filler <= len(FILLER_SENTENCES):
        raise ValueError(f"n_filler must lie in [2, {len(FILLER_SENTENCES)}], got {n_filler}")
    if not 1 <= code_digits <= 12:
        raise ValueError(f"code_digits must lie in [1, 12], got {code_digits}")
    rng = random.Random(seed)
    code_length = None
    rows, queries, targets, answers, codes, depths = [], [], [], [], [], []
    for _ in range(n_prompts):
        for _attempt in range(100):
            code = "".join(rng.choice(string.digits) for _ in range(code_digits))
            code_ids = _encode(model, " " + code)
            if code_length is None or len(code_ids) == code_length:
                code_length = len(code_ids)
                break
        else:
            raise ValueError("could not draw codes of one token length for this tokenizer")
        sentences = list(FILLER_SENTENCES[:n_filler])
        rng.shuffle(sentences)
        depth = rng.randrange(1, n_filler)
        tokens = [_bos(model)] + _encode(model, HAYSTACK_INTRO)
        needle_code_start = None
        for index in range(n_filler + 1):
            if index == depth:
                prefix, suffix = NEEDLE_TEMPLATE.split("{CODE}")
                tokens += _encode(model, prefix)
                needle_code_start = len(tokens)
                tokens += code_ids + _encode(model, suffix)
            sentence = sentences[index] if index < n_filler else None
            if sentence is not None:
                tokens += _encode(model, " " + sentence)
        tokens += _encode(model, HAYSTACK_QUESTION)
        answer_start = len(tokens)
        tokens += code_ids
        steps = [i for i, t in enumerate(code_ids) if model.tokenizer.decode([t]).strip()]
        rows.append(tokens)
        queries.append([answer_start + i - 1 for i in steps])
        targets.append([needle_code_start + i for i in steps])
        answers.append([code_ids[i] for i in steps])
        codes.append(code)
        depths.append(depth)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("prompts came out with different token lengths")
    return NeedleHaystack(
        tokens=torch.tensor(rows),
        query_pos=torch.tensor(queries),
        target_pos=torch.tensor(targets),
        answer_ids=torch.tensor(answers),
        codes=codes,
        depths=depths,
    )


# ---------------------------------------------------------------------------
# Rare words
# ---------------------------------------------------------------------------

RARE_CANDIDATES = (
    "labyrinth",
    "volcano",
    "cactus",
    "lantern",
    "parrot",
    "tortoise",
    "anchor",
    "turquoise",
    "compass",
    "telescope",
    "saxophone",
    "walrus",
    "pelican",
    "harpoon",
    "chandelier",
    "platypus",
    "iguana",
    "raccoon",
    "flamingo",
    "armadillo",
    "kayak",
    "accordion",
    "hammock",
    "gondola",
    "sombrero",
    "trombone",
    "porcupine",
    "mongoose",
)
COMMON_CANDIDATES = (
    "house",
    "car",
    "book",
    "dog",
    "table",
    "door",
    "tree",
    "friend",
    "city",
    "school",
    "phone",
    "window",
    "chair",
    "letter",
    "bottle",
    "garden",
    "ball",
    "shop",
    "road",
    "picture",
    "box",
    "bag",
    "cup",
    "bike",
    "hat",
    "map",
    "key",
    "game",
)
RARE_WORD_TEMPLATES = (
    "Yesterday my neighbour showed me a{WORD} and we talked about it for the rest of the afternoon.",
    "In the story the children found a{WORD} near the river and took it back to their small village.",
    "She said that the{WORD} in the old photograph reminded her of a summer she spent with her family.",
    "When we arrived at the hotel there was a{WORD} in the hall and everybody wanted to look at it.",
)


@dataclass(frozen=True)
class RarityProxy:
    """How rare a token is, by the stated proxy.

    ``rank`` is the token id divided by the vocabulary size. BPE tokenizers number
    their tokens in the order the merges were learned, and the most frequent strings are
    merged first, so a high id marks a string that was rare in the tokenizer's training
    text. It is a proxy: reproducible from the tokenizer alone, but coarse.
    """

    token_id: int
    rank: float


def token_rarity(model: Any, word: str) -> RarityProxy:
    """Rarity proxy of a single-token word (with its leading space).

    Raises:
        ValueError: the word is not one token.
    """
    token_id = single_token_id(model, " " + word)
    return RarityProxy(token_id=token_id, rank=token_id / model.cfg.d_vocab)


@dataclass
class RareWordPrompts:
    """Matched prompts that differ only in one word, at ``slot_pos`` (BOS counted).

    ``rare_tokens[i]`` holds a rare word and ``common_tokens[i]`` a common one in the
    same template; ``control_tokens[i]`` holds another common word, to measure how much
    any change of word moves attention. Prompts are right-padded; ``lengths`` are their
    real lengths.
    """

    rare_tokens: Tensor
    common_tokens: Tensor
    control_tokens: Tensor
    slot_pos: Tensor
    lengths: Tensor
    rare_words: list[str]
    common_words: list[str]
    control_words: list[str]
    rare_ranks: Tensor
    common_ranks: Tensor

    def __len__(self) -> int:
        return self.rare_tokens.shape[0]


def rare_word_prompts(
    model: Any,
    n_prompts: int = 16,
    *,
    rare_above: float = 0.4,
    common_below: float = 0.15,
    seed: int = 0,
) -> RareWordPrompts:
    """Triples of prompts with a rare, a common and another common word in one slot.

    Candidate words are kept if they are one token (with a leading space); rare words
    need a rarity rank (:func:`token_rarity`) above ``rare_above``, common ones below
    ``common_below``.

    Raises:
        ValueError: too few words pass the filters for ``n_prompts`` prompts.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
    if not 0 <= common_below < rare_above <= 1:
        raise ValueError("need 0 <= common_below < rare_above <= 1")
    rare = [w for w in RARE_CANDIDATES if is_single_token(model, " " + w)]
    rare = [w for w in rare if token_rarity(model, w).rank > rare_above]
    common = [w for w in COMMON_CANDIDATES if is_single_token(model, " " + w)]
    common = [w for w in common if token_rarity(model, w).rank < common_below]
    if len(rare) < 2 or len(common) < 3:
        raise ValueError(
            f"too few words pass the rarity filters for this tokenizer: {len(rare)} rare, "
            f"{len(common)} common"
        )
    rng = random.Random(seed)
    sequences: dict[str, list[list[int]]] = {"rare": [], "common": [], "control": []}
    words: dict[str, list[str]] = {"rare": [], "common": [], "control": []}
    slots = []
    for index in range(n_prompts):
        template = RARE_WORD_TEMPLATES[index % len(RARE_WORD_TEMPLATES)]
        before, after = template.split("{WORD}")
        prefix = [_bos(model)] + _encode(model, before)
        suffix = _encode(model, after)
        chosen = {"rare": rng.choice(rare)}
        chosen["common"], chosen["control"] = rng.sample(common, 2)
        for kind, word in chosen.items():
            sequences[kind].append(prefix + [single_token_id(model, " " + word)] + suffix)
            words[kind].append(word)
        slots.append(len(prefix))
    pad = _bos(model)
    rare_tokens, lengths = pad_right(sequences["rare"], pad)
    common_tokens, _ = pad_right(sequences["common"], pad)
    control_tokens, _ = pad_right(sequences["control"], pad)
    return RareWordPrompts(
        rare_tokens=rare_tokens,
        common_tokens=common_tokens,
        control_tokens=control_tokens,
        slot_pos=torch.tensor(slots),
        lengths=lengths,
        rare_words=words["rare"],
        common_words=words["common"],
        control_words=words["control"],
        rare_ranks=torch.tensor([token_rarity(model, w).rank for w in words["rare"]]),
        common_ranks=torch.tensor([token_rarity(model, w).rank for w in words["common"]]),
    )


# ---------------------------------------------------------------------------
# Words and their pieces
# ---------------------------------------------------------------------------


def word_spans(model: Any, text: str) -> list[tuple[int, int]]:
    """The words of ``text`` as inclusive ``(first, last)`` token positions, BOS counted.

    A token continues the current word when it starts exactly where the previous token
    ended and both sides of that boundary are letters; anything else (a leading space,
    punctuation, a digit) starts a new item. Punctuation tokens are left out.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offset = model.to_tokens(text).shape[-1] - len(encoding["input_ids"])
    spans: list[list[int]] = []
    previous_end = None
    for index, (start, end) in enumerate(encoding["offset_mapping"]):
        piece = text[start:end]
        continues = (
            previous_end == start
            and start > 0
            and text[start - 1].isalpha()
            and piece[:1].isalpha()
            and bool(spans)
        )
        if continues:
            spans[-1][1] = index + offset
        elif piece.strip() and piece.strip()[0].isalpha():
            spans.append([index + offset, index + offset])
        previous_end = end
    return [(first, last) for first, last in spans]


# ---------------------------------------------------------------------------
# Syntax
# ---------------------------------------------------------------------------

SUBJECT_NOUNS = ("dog", "girl", "farmer", "teacher", "doctor", "boy", "soldier", "king", "student", "man")
OBJECT_NOUNS = ("cat", "letter", "car", "horse", "book", "door", "boat", "ball", "bird", "bag")
PLACE_NOUNS = ("house", "river", "church", "market", "bridge", "station", "school", "garden")
ADJECTIVES = ("old", "young", "small", "big", "tall", "quiet", "happy", "red", "little", "brave")
VERBS = ("chased", "found", "watched", "saw", "followed", "visited", "helped", "carried", "pushed", "liked")
PREPOSITIONS = ("near", "behind", "from", "beside")


@dataclass
class SyntaxDataset:
    """Templated sentences "The (ADJ) NOUN (PREP the PLACE) VERB the (ADJ) NOUN." with
    known positions (BOS counted) of ``"subject"``, ``"verb"`` and ``"object"`` in
    ``roles``, and of the nearest noun before the verb in ``"nearest_noun"`` (the place
    noun when there is a prepositional phrase, else the subject). Right-padded."""

    sentences: list[str]
    tokens: Tensor
    lengths: Tensor
    roles: dict[str, Tensor]

    def __len__(self) -> int:
        return len(self.sentences)


def syntactic_sentences(model: Any, n_prompts: int = 24, *, seed: int = 0) -> SyntaxDataset:
    """Random sentences whose subject-verb distance varies (adjectives and a
    prepositional phrase come and go), so that no fixed offset finds the subject.

    Words that are not single tokens (with a leading space) are left out of the pools.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")

    def singles(words: Sequence[str]) -> list[str]:
        kept = [w for w in words if is_single_token(model, " " + w)]
        if not kept:
            raise ValueError(f"no single-token words among {words} for this tokenizer")
        return kept

    subjects, objects, places = singles(SUBJECT_NOUNS), singles(OBJECT_NOUNS), singles(PLACE_NOUNS)
    adjectives, verbs, prepositions = singles(ADJECTIVES), singles(VERBS), singles(PREPOSITIONS)
    rng = random.Random(seed)
    sentences, sequences = [], []
    roles: dict[str, list[int]] = {"subject": [], "verb": [], "object": [], "nearest_noun": []}
    for index in range(n_prompts):
        words = ["The"]
        if rng.random() < 0.5:
            words.append(rng.choice(adjectives))
        words.append(rng.choice(subjects))
        subject = len(words) - 1
        nearest = subject
        if index % 2 == 0:  # half the sentences put a distracting noun before the verb
            words += [rng.choice(prepositions), "the"]
            if rng.random() < 0.5:
                words.append(rng.choice(adjectives))
            words.append(rng.choice(places))
            nearest = len(words) - 1
        words.append(rng.choice(verbs))
        verb = len(words) - 1
        words.append("the")
        if rng.random() < 0.5:
            words.append(rng.choice(adjectives))
        words.append(rng.choice(objects))
        obj = len(words) - 1
        # one token per word: BOS, then "The", then " word" pieces, then "."
        ids = [_bos(model), *_encode(model, words[0])]
        if len(ids) != 2:
            raise ValueError("'The' is not a single token for this tokenizer")
        ids += [single_token_id(model, " " + w) for w in words[1:]]
        ids += _encode(model, ".")
        sequences.append(ids)
        sentences.append(" ".join(words) + ".")
        for name, word_index in (
            ("subject", subject),
            ("verb", verb),
            ("object", obj),
            ("nearest_noun", nearest),
        ):
            roles[name].append(word_index + 1)  # + 1 for BOS
    tokens, lengths = pad_right(sequences, _bos(model))
    return SyntaxDataset(
        sentences=sentences,
        tokens=tokens,
        lengths=lengths,
        roles={name: torch.tensor(values) for name, values in roles.items()},
    )


# ---------------------------------------------------------------------------
# Acronyms
# ---------------------------------------------------------------------------

ACRONYM_WORDS = (
    "Central",
    "Data",
    "Institute",
    "National",
    "Research",
    "Council",
    "Federal",
    "Energy",
    "Agency",
    "World",
    "Health",
    "Organization",
    "Public",
    "Safety",
    "Office",
    "American",
    "Science",
    "Foundation",
    "General",
    "Motors",
    "Company",
    "Digital",
    "Media",
    "Group",
    "Global",
    "Trade",
    "Network",
    "International",
    "Space",
    "Station",
    "Royal",
    "Navy",
    "Service",
    "Local",
    "Water",
    "Board",
    "Joint",
    "Security",
    "Team",
    "Modern",
    "Art",
    "Museum",
    "Bank",
    "Union",
    "Press",
)
CAPITAL_LETTERS = string.ascii_uppercase


@dataclass
class AcronymDataset:
    """Prompts "The W1 W2 W3 (L1L2" whose next letter is ``answers[i]`` = L3.

    ``word_pos[:, j]`` is the position (BOS counted) of the first token of word ``j``;
    ``answer_ids`` are the single-token capital letters to predict and
    ``letter_ids`` all 26 capital-letter tokens (the candidates the letter accuracy
    chooses among). All prompts share one token length.
    """

    prompts: list[str]
    tokens: Tensor
    word_pos: Tensor
    answer_ids: Tensor
    answers: list[str]
    letter_ids: Tensor
    n_candidates: int

    def __len__(self) -> int:
        return len(self.prompts)

    def letter_accuracy(self, logits: Tensor) -> float:
        """Fraction of prompts whose highest-scoring capital letter at the last position
        is the right one."""
        if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[0] != len(self):
            raise ValueError(f"logits must have shape ({len(self)}, pos, d_vocab)")
        letters = self.letter_ids.to(logits.device)
        chosen = letters[logits[:, -1, letters].argmax(dim=-1)]
        return float((chosen == self.answer_ids.to(logits.device)).float().mean())

    def letter_directions(self, model: Any) -> Tensor:
        """Per prompt, the unembedding of the right letter minus the mean unembedding of
        all capital letters: ``(batch, d_model)``, for direct logit attribution."""
        W_U = model.W_U
        mean_letter = W_U[:, self.letter_ids].mean(dim=1)
        return (W_U[:, self.answer_ids] - mean_letter[:, None]).T


def acronym_dataset(model: Any, n_prompts: int = 16, *, seed: int = 0) -> AcronymDataset:
    """Three-word names with distinct initials, ending after the acronym's first two letters.

    Words are drawn from :data:`ACRONYM_WORDS` (kept if one token with a leading space).
    The two letters are tokenised as the tokenizer likes (often as one merged token);
    prompts whose length differs from the most common length are dropped, and so are
    names that repeat. ``n_candidates`` says how many were drawn.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise ValueError(f"n_prompts must be a positive int, got {n_prompts!r}")
    letters = [c for c in CAPITAL_LETTERS if is_single_token(model, c)]
    if len(letters) != len(CAPITAL_LETTERS):
        raise ValueError("this tokenizer does not have every capital letter as a single token")
    words = [w for w in ACRONYM_WORDS if is_single_token(model, " " + w)]
    if len({w[0] for w in words}) < 3:
        raise ValueError("too few single-token words with distinct initials for this tokenizer")
    rng = random.Random(seed)
    n_candidates = 3 * n_prompts
    drawn, seen = [], set()
    while len(drawn) < n_candidates:
        triple = tuple(rng.sample(words, 3))
        if len({w[0] for w in triple}) == 3 and triple not in seen:
            seen.add(triple)
            drawn.append(triple)
    prompts = [f"The {' '.join(t)} ({t[0][0]}{t[1][0]}" for t in drawn]
    lengths = [model.to_tokens(p).shape[-1] for p in prompts]
    common_length = Counter(lengths).most_common(1)[0][0]
    keep = [i for i, n in enumerate(lengths) if n == common_length][:n_prompts]
    if len(keep) < n_prompts:
        raise ValueError(f"only {len(keep)} acronym prompts share one token length")
    prompts = [prompts[i] for i in keep]
    triples = [drawn[i] for i in keep]
    word_pos = []
    for prompt, triple in zip(prompts, triples):
        encoding = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        shift = common_length - len(encoding["input_ids"])
        positions, search_from = [], 0
        for word in triple:
            start = prompt.index(" " + word, search_from) + 1
            search_from = start
            index = next(i for i, (lo, hi) in enumerate(encoding["offset_mapping"]) if lo <= start < hi)
            positions.append(index + shift)
        word_pos.append(positions)
    answers = [t[2][0] for t in triples]
    return AcronymDataset(
        prompts=prompts,
        tokens=model.to_tokens(prompts),
        word_pos=torch.tensor(word_pos),
        answer_ids=torch.tensor([single_token_id(model, a) for a in answers]),
        answers=answers,
        letter_ids=torch.tensor([single_token_id(model, c) for c in CAPITAL_LETTERS]),
        n_candidates=n_candidates,
    )
