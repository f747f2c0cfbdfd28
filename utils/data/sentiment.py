"""ToyMovieReview (Tigges et al., 2023): templated reviews with a positive or negative
adjective and verb, and the sentiment score read from the logits.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from utils.core.positions import same_position
from utils.data.base import PromptSet, answers_by_label
from utils.data.tokens import encode, equal_length_tokens, is_single_token, single_token_id

POSITIVE_ADJECTIVES = ("good", "great", "amazing", "excellent", "wonderful", "fantastic",
                       "perfect", "brilliant", "beautiful", "lovely")


NEGATIVE_ADJECTIVES = ("bad", "terrible", "awful", "horrible", "boring", "dreadful",
                       "poor", "stupid", "ugly", "weak")


POSITIVE_VERBS = ("loved", "enjoyed", "liked", "adored")


NEGATIVE_VERBS = ("hated", "disliked", "despised", "loathed")


# Other sentiment words, none of them above nor a verdict word: reviews made of them are
# held out from reviews made of the words above (``toy_movie_reviews(words="held out")``).
HELD_OUT_POSITIVE_ADJECTIVES = ("superb", "delightful", "charming", "nice", "clever",
                                "splendid", "enjoyable", "incredible", "stunning", "sweet")


HELD_OUT_NEGATIVE_ADJECTIVES = ("dull", "silly", "painful", "annoying", "dumb",
                                "nasty", "rotten", "messy", "cheap", "slow")


HELD_OUT_POSITIVE_VERBS = ("admired", "cherished", "appreciated", "praised")


HELD_OUT_NEGATIVE_VERBS = ("mocked", "dreaded", "rejected", "feared")


# After "This movie is", these words carry the verdict.
POSITIVE_ANSWERS = (" great", " amazing", " good", " excellent", " awesome")


NEGATIVE_ANSWERS = (" terrible", " bad", " awful", " boring", " horrible")


# What is reviewed: words without sentiment, to vary the reviews beyond their sentiment
# words (``toy_movie_reviews(..., nouns=REVIEW_NOUNS)``).
REVIEW_NOUNS = ("movie", "film", "show", "series", "story", "episode", "documentary", "sequel")


REVIEW_TEMPLATE = "I thought this {NOUN} was {ADJ}, I {VERB} it. Conclusion: This {NOUN} is"


# The survey's template: the review of a movie.
MOVIE_REVIEW_TEMPLATE = REVIEW_TEMPLATE.replace("{NOUN}", "movie")


@dataclass(kw_only=True)
class SentimentDataset(PromptSet):
    """ToyMovieReview prompts (Tigges et al., 2023): a review whose adjective and verb
    carry its sentiment, ending where the model states a verdict.

    ``labels`` is 1 for positive and 0 for negative reviews; ``positions["adjective"]``
    and ``positions["verb"]`` are the sentiment words (BOS counted).
    ``positive_ids`` / ``negative_ids`` are single-token verdict words; a review's
    ``answer_ids`` is the first verdict word of its class and ``wrong_ids`` the first of
    the other (:func:`sentiment_score` uses all of them).
    """

    labels: Tensor
    positive_ids: Tensor
    negative_ids: Tensor

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("labels",)
    RENAMED: ClassVar[dict[str, str]] = {"adjective_pos": 'positions["adjective"]', "verb_pos": 'positions["verb"]'}


def sentiment_score(logits: Tensor, positive_ids: Tensor, negative_ids: Tensor) -> Tensor:
    """Per prompt, mean logit of the positive verdict words minus mean of the negative
    ones at the last position: ``(batch,)``. Positive means the model leans positive."""
    if logits.ndim != 3:
        raise ValueError(f"logits must be (batch, pos, d_vocab), got {tuple(logits.shape)}")
    last = logits[:, -1]
    return last[:, positive_ids.to(last.device)].mean(-1) - last[:, negative_ids.to(last.device)].mean(-1)


def toy_movie_reviews(
    model: Any,
    n_prompts: int = 16,
    *,
    seed: int = 0,
    words: str = "standard",
    nouns: Sequence[str] = ("movie",),
    distinct: bool = False,
) -> SentimentDataset:
    """Balanced positive / negative ToyMovieReview prompts of one token length.

    Words that are not a single token (with their leading space) for the loaded
    tokenizer are left out, so every prompt has the same length. Deterministic for a
    given ``seed``.

    Args:
        words: ``"standard"`` (:data:`POSITIVE_ADJECTIVES` and the other lists) or
            ``"held out"`` (the ``HELD_OUT_`` lists, which share no word with them):
            evaluation reviews held out from the reviews that selected some heads, word
            for word.
        nouns: what the reviews are about, one drawn per review and used at both places
            of :data:`REVIEW_TEMPLATE` (e.g. :data:`REVIEW_NOUNS`); the default is the
            survey's template, :data:`MOVIE_REVIEW_TEMPLATE`. A single noun draws
            nothing, so the default's prompts do not depend on this argument.
        distinct: draw each class's (adjective, verb, noun) combinations without
            replacement, so that no two prompts are the same; by default each word is
            drawn independently and prompts may repeat.

    Raises:
        ValueError: ``n_prompts`` is not an even int >= 2, an unknown ``words``, a class
            has no single-token adjective, verb or verdict word, no noun is a single
            token, or ``distinct`` asks for more prompts of a class than it has
            combinations.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 2 or n_prompts % 2:
        raise ValueError(f"n_prompts must be an even number >= 2 (half positive, half negative), got {n_prompts!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(nouns, str) or not isinstance(nouns, Sequence) or not nouns:
        raise ValueError(f"nouns must be a non-empty sequence of words, got {nouns!r}")

    def singles(words: Sequence[str]) -> list[str]:
        return [w for w in words if is_single_token(model, " " + w)]

    if words == "standard":
        lists = (POSITIVE_ADJECTIVES, POSITIVE_VERBS, NEGATIVE_ADJECTIVES, NEGATIVE_VERBS)
    elif words == "held out":
        lists = (HELD_OUT_POSITIVE_ADJECTIVES, HELD_OUT_POSITIVE_VERBS,
                 HELD_OUT_NEGATIVE_ADJECTIVES, HELD_OUT_NEGATIVE_VERBS)
    else:
        raise ValueError(f'words must be "standard" or "held out", got {words!r}')
    pools = {
        1: (singles(lists[0]), singles(lists[1])),
        0: (singles(lists[2]), singles(lists[3])),
    }
    for label, (adjectives, verbs) in pools.items():
        if not adjectives or not verbs:
            raise ValueError(f"no single-token {'positive' if label else 'negative'} words for this tokenizer")
    kept_nouns = singles(list(dict.fromkeys(nouns)))
    if not kept_nouns:
        raise ValueError(f"none of the nouns {list(nouns)} is a single token for this tokenizer")
    positive = [single_token_id(model, w) for w in POSITIVE_ANSWERS if is_single_token(model, w)]
    negative = [single_token_id(model, w) for w in NEGATIVE_ANSWERS if is_single_token(model, w)]
    if not positive or not negative:
        raise ValueError("no single-token positive or negative verdict word for this tokenizer")
    rng = random.Random(seed)
    labels = [1 - i % 2 for i in range(n_prompts)]
    if distinct:
        drawn = {}
        for label, (adjectives, verbs) in pools.items():
            combinations = list(itertools.product(adjectives, verbs, kept_nouns))
            wanted = labels.count(label)
            if wanted > len(combinations):
                raise ValueError(
                    f"distinct=True: {wanted} {'positive' if label else 'negative'} prompts asked for, but this "
                    f"tokenizer leaves {len(combinations)} combinations of single-token words"
                )
            drawn[label] = iter(rng.sample(combinations, wanted))
        chosen = [next(drawn[label]) for label in labels]
    else:
        chosen = []
        for label in labels:
            adjectives, verbs = pools[label]
            adjective, verb = rng.choice(adjectives), rng.choice(verbs)
            chosen.append((adjective, verb, rng.choice(kept_nouns) if len(kept_nouns) > 1 else kept_nouns[0]))
    prompts = [REVIEW_TEMPLATE.format(NOUN=noun, ADJ=adjective, VERB=verb) for adjective, verb, noun in chosen]
    tokens = equal_length_tokens(model, prompts, "review")
    # The word's leading space belongs to its token, so the prefix is measured without it.
    template = REVIEW_TEMPLATE.replace("{NOUN}", kept_nouns[0])
    prefix = template.split("{ADJ}")[0].rstrip()
    verb_prefix = template.split("{VERB}")[0].format(ADJ=pools[1][0][0]).rstrip()
    label_tensor = torch.tensor(labels)
    answer_ids, wrong_ids = answers_by_label(label_tensor, positive[0], negative[0])
    return SentimentDataset(
        prompts=prompts,
        tokens=tokens,
        answer_ids=answer_ids,
        wrong_ids=wrong_ids,
        positions={
            "adjective": same_position(n_prompts, len(encode(model, prefix))),
            "verb": same_position(n_prompts, len(encode(model, verb_prefix))),
            "END": same_position(n_prompts, tokens.shape[1] - 1),
        },
        labels=label_tensor,
        positive_ids=torch.tensor(positive),
        negative_ids=torch.tensor(negative),
    )


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def split_reviews_by_adjective(
    dataset: SentimentDataset, *, seed: int = 0
) -> tuple[SentimentDataset, SentimentDataset]:
    """Split ToyMovieReview prompts into train and test sets that share no adjective.

    Duplicate prompts are dropped first. Within each class the distinct adjectives are
    shuffled (seeded) and halved; a prompt goes to the split that owns its adjective.
    A direction built on the train split and tested on the other one must therefore
    generalise to sentiment words it has never seen.

    Raises:
        ValueError: a class has fewer than two distinct adjectives, so it cannot be split.
    """
    if not isinstance(dataset, SentimentDataset):
        raise TypeError(f"expected a SentimentDataset, got {type(dataset).__name__}")
    first_index: dict[str, int] = {}
    for index, prompt in enumerate(dataset.prompts):
        first_index.setdefault(prompt, index)
    keep = sorted(first_index.values())
    adjectives = dataset.tokens[keep, dataset.positions["adjective"][keep]]
    labels = dataset.labels[keep]
    rng = random.Random(seed)
    train_adjectives: set[int] = set()
    for label in (0, 1):
        distinct = sorted(set(adjectives[labels == label].tolist()))
        if len(distinct) < 2:
            raise ValueError(
                f"class {label} has {len(distinct)} distinct adjective(s); need at least 2 to split"
            )
        rng.shuffle(distinct)
        train_adjectives.update(distinct[: len(distinct) // 2])
    in_train = [adjective in train_adjectives for adjective in adjectives.tolist()]
    train_rows = [row for row, flag in zip(keep, in_train) if flag]
    test_rows = [row for row, flag in zip(keep, in_train) if not flag]
    return dataset.subset(train_rows), dataset.subset(test_rows)
