"""Templated sentences with known syntactic roles (subject, verb, object), and word spans.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from utils.data.base import PromptSet, check_count
from utils.data.tokens import bos_id, encode, is_single_token, pad_right, piece_ids, single_token_id

# ---------------------------------------------------------------------------
# Words and their pieces
# ---------------------------------------------------------------------------


#: A paragraph of rare nouns, many of which a tokenizer splits into pieces: the text on
#: which chapter 02 scores subword-merge heads (chapter 11 selects its heads on it too).
SPLIT_WORD_PARAGRAPH = (
    "At the zoo we saw a walrus, a pelican, a platypus, an iguana, a raccoon, "
    "a wombat, a porcupine, a flamingo and an armadillo. Later a musician played "
    "the saxophone, the accordion and the trombone under a chandelier, while a boy "
    "rested in a hammock and dreamed of a kayak, a gondola and a toboggan."
)


def word_spans(model: Any, text: str) -> list[tuple[int, int]]:
    """The words of ``text`` as inclusive ``(first, last)`` token positions, BOS counted.

    A token continues the current word when it starts exactly where the previous token
    ended and both sides of that boundary are letters; anything else (a leading space,
    punctuation, a digit) starts a new item. Punctuation tokens are left out.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(encode(model, text)) - len(encoding["input_ids"])  # the BOS in front
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


@dataclass(kw_only=True)
class SyntaxDataset(PromptSet):
    """Templated sentences "The (ADJ) NOUN (PREP the PLACE) VERB the (ADJ) NOUN." with
    known positions (BOS counted) of ``"subject"``, ``"verb"`` and ``"object"`` in
    ``positions``, and of the nearest noun before the verb in ``"nearest_noun"`` (the
    place noun when there is a prepositional phrase, else the subject). Right-padded;
    ``lengths`` are the real lengths. The task is reading, not predicting, so
    ``answer_ids`` is the final full stop, predicted at ``positions["END"]``, the
    object."""

    RENAMED: ClassVar[dict[str, str]] = {"sentences": "prompts", "roles": "positions"}


def syntactic_sentences(model: Any, n_prompts: int = 24, *, seed: int = 0) -> SyntaxDataset:
    """Random sentences whose subject-verb distance varies (adjectives and a
    prepositional phrase come and go), so that no fixed offset finds the subject.

    Words that are not single tokens (with a leading space) are left out of the pools.
    Deterministic for a given ``seed``.

    Raises:
        ValueError: bad ``n_prompts``, a word pool with no single-token word, or "The"
            or "." not one token.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    def singles(words: Sequence[str]) -> list[str]:
        kept = [w for w in words if is_single_token(model, " " + w)]
        if not kept:
            raise ValueError(f"no single-token words among {words} for this tokenizer")
        return kept

    subjects, objects, places = singles(SUBJECT_NOUNS), singles(OBJECT_NOUNS), singles(PLACE_NOUNS)
    adjectives, verbs, prepositions = singles(ADJECTIVES), singles(VERBS), singles(PREPOSITIONS)
    full_stop = piece_ids(model, ".")
    if len(full_stop) != 1:
        raise ValueError("'.' is not a single token for this tokenizer")
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
        ids = encode(model, words[0])
        if len(ids) != 2:
            raise ValueError("'The' is not a single token for this tokenizer")
        ids += [single_token_id(model, " " + w) for w in words[1:]]
        ids += full_stop
        sequences.append(ids)
        sentences.append(" ".join(words) + ".")
        for name, word_index in (
            ("subject", subject),
            ("verb", verb),
            ("object", obj),
            ("nearest_noun", nearest),
        ):
            roles[name].append(word_index + 1)  # + 1 for BOS
    tokens, lengths = pad_right(sequences, bos_id(model))
    positions = {name: torch.tensor(values) for name, values in roles.items()}
    positions["END"] = lengths - 2  # the object, before the full stop
    return SyntaxDataset(
        prompts=sentences,
        tokens=tokens,
        lengths=lengths,
        answer_ids=torch.full((n_prompts,), full_stop[0], dtype=torch.long),
        positions=positions,
    )


# ---------------------------------------------------------------------------
# Subject-verb number agreement across an attractor
# ---------------------------------------------------------------------------

# (singular, plural) pairs: the subject is a person or an animal, the attractor a thing
# or a place, so that the two nouns never come from the same pool.
AGREEMENT_SUBJECTS = (
    ("dog", "dogs"), ("girl", "girls"), ("farmer", "farmers"), ("teacher", "teachers"),
    ("doctor", "doctors"), ("boy", "boys"), ("soldier", "soldiers"), ("king", "kings"),
    ("student", "students"), ("horse", "horses"), ("bird", "birds"), ("friend", "friends"),
)


AGREEMENT_ATTRACTORS = (
    ("house", "houses"), ("river", "rivers"), ("car", "cars"), ("door", "doors"),
    ("boat", "boats"), ("book", "books"), ("table", "tables"), ("tree", "trees"),
    ("wall", "walls"), ("window", "windows"), ("garden", "gardens"), ("box", "boxes"),
)


@dataclass(kw_only=True)
class AgreementDataset(PromptSet):
    """Subject-verb agreement prompts "The (ADJ) SUBJECT PREP the (ADJ) ATTRACTOR" of one
    token length, to be continued by " is" (singular subject) or " are" (plural).

    ``answer_ids`` is the verb that agrees with the subject, ``wrong_ids`` the one that
    agrees with the attractor's number flipped, i.e. the other of the two;
    ``subject_plural`` and ``attractor_plural`` (``BoolTensor[batch]``) the two numbers,
    counterbalanced: every combination (attractor of the same or of the other number)
    has a quarter of the prompts. ``positions`` holds ``"subject"``, ``"attractor"`` and
    ``"END"`` (the attractor, the last token). One adjective stands either before the
    subject or before the attractor, so the subject sits at position 2 or 3 (BOS
    counted) while the length stays the same."""

    subject_plural: Tensor
    attractor_plural: Tensor
    PER_PROMPT: ClassVar[tuple[str, ...]] = ("subject_plural", "attractor_plural")


def agreement_sentences(model: Any, n_prompts: int = 32, *, seed: int = 0) -> AgreementDataset:
    """Counterbalanced subject-verb agreement prompts with an attractor noun, of one
    token length (so a run can read the last position only).

    Prompt ``i`` has a plural subject when ``i % 2 == 1`` and an attractor of the other
    number when ``(i // 2) % 2 == 1``; nouns whose singular or plural is not one token
    (with a leading space) are left out. Deterministic for a given ``seed``.

    Raises:
        ValueError: bad ``n_prompts`` or ``seed``, fewer than 2 usable noun pairs in a
            pool, or " is", " are" or "The" not one token.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    def pairs(pool: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        kept = [p for p in pool if all(is_single_token(model, " " + w) for w in p)]
        if len(kept) < 2:
            raise ValueError(f"fewer than 2 noun pairs of single tokens among {pool} for this tokenizer")
        return kept

    subjects, attractors = pairs(AGREEMENT_SUBJECTS), pairs(AGREEMENT_ATTRACTORS)
    adjectives = [w for w in ADJECTIVES if is_single_token(model, " " + w)]
    prepositions = [w for w in PREPOSITIONS if is_single_token(model, " " + w)]
    if not adjectives or not prepositions:
        raise ValueError("no single-token adjective or preposition for this tokenizer")
    verb_ids = [single_token_id(model, " is"), single_token_id(model, " are")]
    the = encode(model, "The")
    if len(the) != 2:
        raise ValueError("'The' is not a single token for this tokenizer")
    rng = random.Random(seed)
    sentences, sequences, subject_pos, attractor_pos = [], [], [], []
    subject_plural, attractor_plural = [], []
    for index in range(n_prompts):
        plural = index % 2 == 1
        other = (index // 2) % 2 == 1
        subject = rng.choice(subjects)[plural]
        attractor = rng.choice(attractors)[plural != other]
        adjective, preposition = rng.choice(adjectives), rng.choice(prepositions)
        if rng.random() < 0.5:
            words = ["The", adjective, subject, preposition, "the", attractor]
        else:
            words = ["The", subject, preposition, "the", adjective, attractor]
        sequences.append(the + [single_token_id(model, " " + w) for w in words[1:]])
        sentences.append(" ".join(words))
        subject_pos.append(words.index(subject) + 1)  # + 1 for BOS
        attractor_pos.append(len(words))
        subject_plural.append(plural)
        attractor_plural.append(plural != other)
    tokens = torch.tensor(sequences, dtype=torch.long)
    plural_subject = torch.tensor(subject_plural)
    answers = torch.where(plural_subject, verb_ids[1], verb_ids[0])
    wrong = torch.where(plural_subject, verb_ids[0], verb_ids[1])
    return AgreementDataset(
        prompts=sentences,
        tokens=tokens,
        lengths=torch.full((n_prompts,), tokens.shape[1], dtype=torch.long),
        answer_ids=answers,
        wrong_ids=wrong,
        positions={
            "subject": torch.tensor(subject_pos),
            "attractor": torch.tensor(attractor_pos),
            "END": torch.tensor(attractor_pos),
        },
        subject_plural=plural_subject,
        attractor_plural=torch.tensor(attractor_plural),
    )


# ---------------------------------------------------------------------------
# Where a word ends: split words against whole words
# ---------------------------------------------------------------------------

#: Nouns (animals, instruments, household things) of which a tokenizer splits some into
#: pieces and keeps others whole: the pool of :func:`word_end_prompts`.
WORD_END_NOUNS = (
    "armadillo platypus iguana wombat porcupine flamingo axolotl narwhal okapi pangolin "
    "aardvark capybara chinchilla salamander tarantula ocelot meerkat wolverine mongoose "
    "jackal lemur manatee anteater chameleon gecko hyena ibis koala mandrill marmoset "
    "nightingale opossum quokka scorpion tapir toucan vulture gazelle hedgehog hamster "
    "ferret badger beaver otter alpaca llama walrus pelican raccoon penguin giraffe "
    "kangaroo hippopotamus rhinoceros crocodile alligator buffalo cheetah leopard jaguar "
    "panther gorilla chimpanzee orangutan baboon squirrel chipmunk porpoise dolphin "
    "octopus jellyfish starfish seahorse lobster oyster sparrow pigeon parrot peacock "
    "ostrich emu albatross woodpecker hummingbird falcon buzzard magpie raven heron stork "
    "crane swan goose duck turkey rooster donkey mule camel bison moose reindeer antelope "
    "weasel skunk mole shrew bat hare rabbit lizard tortoise turtle snake cobra python "
    "viper toad frog newt beetle butterfly moth dragonfly grasshopper cricket caterpillar "
    "ladybug mosquito termite saxophone accordion trombone xylophone harpsichord clarinet "
    "tambourine ukulele banjo bagpipe kazoo oboe bassoon cello violin trumpet tuba "
    "harmonica mandolin chandelier hammock toboggan gondola kayak canoe wheelbarrow "
    "umbrella telescope microscope thermometer trampoline escalator bulldozer typewriter "
    "lantern saucepan spatula colander teapot kettle toaster blender wardrobe cupboard "
    "armchair mattress pillow blanket carpet curtain"
).split()


#: Openings of different token lengths: each prompt takes the one that brings it to the
#: common length.
WORD_END_OPENINGS = ("We saw", "Then we saw", "And then we saw", "And then we also saw")


@dataclass(kw_only=True)
class WordEndDataset(PromptSet):
    """List prompts "We saw a F1, a F2, an F3, a WORD" that end on the last piece of WORD,
    where the next token is the list's comma (``answer_ids``): predicting it needs the
    model to know that the pieces so far make a whole word.

    The first half of the prompts end on a **split** word (``is_split`` True: exactly two
    pieces), the second half on a **whole** word (one token); prompt ``i`` of the first
    half and prompt ``i + n`` of the second share their fillers (a matched pair). Every
    prompt has one token length (an opening of the right length makes up for the
    pieces), so the last position is always the word's last piece. ``positions`` holds
    ``"word"`` (the word's first piece) and ``"END"`` (its last piece); ``words`` names
    each prompt's word."""

    is_split: Tensor
    words: list[str]
    PER_PROMPT: ClassVar[tuple[str, ...]] = ("is_split", "words")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def word_end_prompts(
    model: Any, n_pairs: int = 32, *, seed: int = 0, exclude: Sequence[str] = ()
) -> WordEndDataset:
    """``n_pairs`` matched pairs of list prompts, one ending on a word the tokenizer
    splits in two, one on a word it keeps whole (see :class:`WordEndDataset`), for the
    causal test of subword-merge heads. Words are drawn from :data:`WORD_END_NOUNS`
    without repetition; the fillers are other whole words. Deterministic for a given
    ``seed``.

    Args:
        exclude: words never used (e.g. those that selected the heads).

    Raises:
        ValueError: bad ``n_pairs`` or ``seed``, fewer than ``n_pairs`` split or
            ``n_pairs + 3`` whole words for this tokenizer, or no opening that brings a
            prompt to the common length.
    """
    check_count("n_pairs", n_pairs)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(exclude, str):
        raise TypeError("exclude must be a list of words, not one string")
    excluded = {w.strip().lower() for w in exclude}
    pool = [w for w in WORD_END_NOUNS if w not in excluded]
    pieces = {w: piece_ids(model, " " + w) for w in pool}
    split_words = [w for w in pool if len(pieces[w]) == 2]
    whole_words = [w for w in pool if len(pieces[w]) == 1]
    if len(split_words) < n_pairs or len(whole_words) < n_pairs + 3:
        raise ValueError(
            f"this tokenizer splits {len(split_words)} of the words in two and keeps {len(whole_words)} "
            f"whole; {n_pairs} pairs need {n_pairs} and {n_pairs + 3}"
        )
    comma = single_token_id(model, ",")
    rng = random.Random(seed)
    targets_split = rng.sample(split_words, n_pairs)
    targets_whole = rng.sample(whole_words, n_pairs)
    fillers = []
    for whole in targets_whole:
        others = [w for w in whole_words if w != whole]
        fillers.append(rng.sample(others, 3))
    openings = {len(encode(model, o)): o for o in reversed(WORD_END_OPENINGS)}
    shortest = min(openings)
    texts, sequences, words, firsts = [], [], [], []
    for half in (targets_split, targets_whole):
        for word, (a, b, c) in zip(half, fillers):
            # the prompt without its opening: ", a F1, a F2, a F3, a" then the word's pieces
            body = piece_ids(model, f" {_article(a)} {a}, {_article(b)} {b}, {_article(c)} {c}, {_article(word)}")
            needed = shortest + 1 - (len(pieces[word]) - 1)  # the opening's length, BOS counted
            if needed not in openings:
                raise ValueError(f"no opening of {needed} tokens for this tokenizer: {sorted(openings)}")
            head = encode(model, openings[needed])
            sequences.append(head + body + pieces[word])
            firsts.append(len(head) + len(body))
            texts.append(f"{openings[needed]} {_article(a)} {a}, {_article(b)} {b}, {_article(c)} {c}, {_article(word)} {word}")
            words.append(word)
    if len({len(s) for s in sequences}) != 1:
        raise ValueError("the fillers did not tokenise to one length for this tokenizer")
    tokens = torch.tensor(sequences, dtype=torch.long)
    n = 2 * n_pairs
    return WordEndDataset(
        prompts=texts,
        tokens=tokens,
        lengths=torch.full((n,), tokens.shape[1], dtype=torch.long),
        answer_ids=torch.full((n,), comma, dtype=torch.long),
        positions={
            "word": torch.tensor(firsts, dtype=torch.long),
            "END": torch.full((n,), tokens.shape[1] - 1, dtype=torch.long),
        },
        is_split=torch.arange(n) < n_pairs,
        words=words,
    )
