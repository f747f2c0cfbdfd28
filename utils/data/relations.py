"""Prompts whose next token is the semantic partner of an earlier word, for semantic
induction heads (Ren et al., 2024).

Ren et al. call a pair of related words *head* and *tail* (a knowledge-graph triple
such as pen -Used-for-> write) and a semantic induction head one that, attending to the
head word, raises the logit of its tail. The survey names three such relations:
usage, category and instance, part and whole. Here each prompt mentions a head word
early and ends where its tail is the natural next word, which never occurs in the
prompt, so a head that merely copies what it attends to cannot produce it:

    "She took the pen from the shelf because she really wanted to"  ->  " write"
    "He pointed at the rose and said it was a kind of"              ->  " flower"
    "She looked closely at the bird and then touched one of its"    ->  " wings"

Each relation has two sentence frames and its own list of pairs; a pair's tail is
measured against the mean logit of all the relation's tails (the centred margin of
:meth:`RelationPrompts.margins`), so a frame that favours some verb or noun whatever the
head word is does not count. The pairs of each relation are split once, by their place
in the list, into a *selection* half and a *held-out* half: heads chosen on one half are
tested on pairs they have never seen.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from utils.core.positions import same_position
from utils.data.base import PromptSet, check_count
from utils.data.tokens import encode, is_single_token, single_token_id, to_tokens

__all__ = ["RELATION_FRAMES", "RELATION_PAIRS", "RelationPrompts", "semantic_relation_prompts"]

#: Head word -> tail word, per relation (words, without the leading space).
RELATION_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "usage": (
        ("pen", "write"), ("knife", "cut"), ("broom", "sweep"), ("shovel", "dig"), ("needle", "sew"),
        ("cup", "drink"), ("fork", "eat"), ("book", "read"), ("bed", "sleep"), ("car", "drive"),
        ("bike", "ride"), ("guitar", "play"), ("soap", "wash"), ("pan", "cook"), ("boat", "sail"),
        ("phone", "call"), ("brush", "paint"), ("ladder", "climb"), ("towel", "dry"), ("pencil", "draw"),
        ("oven", "bake"), ("camera", "film"), ("map", "navigate"), ("spoon", "stir"), ("rope", "tie"),
        ("hammer", "build"), ("gun", "shoot"), ("drum", "beat"), ("kite", "fly"), ("ball", "throw"),
        ("key", "unlock"), ("glue", "stick"), ("whistle", "blow"), ("lamp", "see"), ("tent", "camp"),
        ("net", "fish"), ("bell", "ring"), ("sponge", "clean"), ("scale", "weigh"), ("radio", "listen"),
    ),
    "category": (
        ("rose", "flower"), ("oak", "tree"), ("eagle", "bird"), ("apple", "fruit"), ("carrot", "vegetable"),
        ("hammer", "tool"), ("piano", "instrument"), ("cobra", "snake"), ("shark", "fish"), ("beetle", "insect"),
        ("whale", "mammal"), ("gold", "metal"), ("soccer", "sport"), ("chess", "game"), ("diamond", "gem"),
        ("granite", "rock"), ("salmon", "fish"), ("lion", "cat"), ("wine", "drink"), ("sparrow", "bird"),
        ("pine", "tree"), ("violin", "instrument"), ("ant", "insect"), ("copper", "metal"), ("tennis", "sport"),
        ("jeans", "clothing"), ("pasta", "food"), ("frog", "amphibian"), ("python", "snake"), ("banana", "fruit"),
        ("onion", "vegetable"), ("wrench", "tool"), ("cotton", "fabric"), ("owl", "bird"), ("maple", "tree"),
        ("trout", "fish"), ("tiger", "cat"), ("mango", "fruit"), ("spinach", "vegetable"), ("tulip", "flower"),
    ),
    "part": (
        ("bird", "wings"), ("car", "wheels"), ("tree", "branches"), ("house", "windows"), ("fish", "fins"),
        ("book", "pages"), ("clock", "hands"), ("piano", "keys"), ("shirt", "buttons"), ("cat", "whiskers"),
        ("hand", "fingers"), ("foot", "toes"), ("flower", "petals"), ("bicycle", "pedals"), ("guitar", "strings"),
        ("castle", "towers"), ("chair", "legs"), ("face", "eyes"), ("knife", "blades"), ("octopus", "tentacles"),
        ("elephant", "tusks"), ("deer", "antlers"), ("rose", "thorns"), ("ship", "sails"), ("mouth", "teeth"),
        ("cactus", "spines"), ("jacket", "pockets"), ("turtle", "shell"), ("plant", "leaves"), ("dog", "paws"),
        ("horse", "hooves"), ("building", "floors"),
    ),
}

#: Two sentence frames per relation, of one word count, ``{head}`` where the head word goes.
RELATION_FRAMES: dict[str, tuple[str, ...]] = {
    "usage": (
        "She took the {head} from the shelf because she really wanted to",
        "He bought a new {head} at the store so that he could",
    ),
    "category": (
        "He pointed at the {head} and said it was a kind of",
        "My friend showed me the {head}, which is a type of",
    ),
    "part": (
        "She looked closely at the {head} and then touched one of its",
        "The children drew a big picture of the {head} with all of its",
    ),
}

_HALVES = ("selection", "held out", "all")


@dataclass(kw_only=True)
class RelationPrompts(PromptSet):
    """Prompts ending where the tail of an earlier head word comes next.

    ``answer_ids`` are the tails, ``positions["head"]`` the head word's position (BOS
    counted) and ``positions["END"]`` the last token; all prompts share one token
    length. ``tail_ids`` holds, per relation, every single-token tail of that relation
    (the candidates :meth:`margins` centres on), and ``head_ids`` every single-token
    head word (the candidates of a copying check).
    """

    relations: list[str]
    head_words: list[str]
    tail_words: list[str]
    tail_ids: dict[str, Tensor]
    head_ids: dict[str, Tensor]

    PER_PROMPT: ClassVar[tuple[str, ...]] = ("relations", "head_words", "tail_words")

    def _centred(self, matrix: Tensor, ids: Tensor, candidates: dict[str, Tensor]) -> Tensor:
        means = torch.stack([matrix[:, candidates[r].to(matrix.device)].mean(dim=1) for r in self.relations])
        return matrix[:, ids.to(matrix.device)].T - means

    def margins(self, last: Tensor) -> Tensor:
        """Per prompt, the tail's logit minus the mean logit of its relation's tails.

        Args:
            last: the last position's logits, ``(batch, d_vocab)``.
        """
        if not isinstance(last, Tensor) or last.ndim != 2 or last.shape[0] != len(self):
            raise ValueError(f"last must be the last position's logits, shape ({len(self)}, d_vocab)")
        rows = torch.arange(len(self))
        means = torch.stack([last[i, self.tail_ids[r].to(last.device)].mean() for i, r in enumerate(self.relations)])
        return last[rows, self.answer_ids.to(last.device)] - means

    def tail_directions(self, model: Any) -> Tensor:
        """Per prompt, the tail's unembedding minus the mean unembedding of its relation's
        tails: ``(batch, d_model)``, the direction of :meth:`margins`, for direct logit
        attribution."""
        return self._centred(model.W_U, self.answer_ids, self.tail_ids)

    def head_word_directions(self, model: Any) -> Tensor:
        """Per prompt, the head word's own unembedding minus the mean of its relation's
        head words: ``(batch, d_model)``, the direction a head that *copies* the word it
        attends to would push along."""
        ids = torch.tensor([single_token_id(model, " " + w) for w in self.head_words])
        return self._centred(model.W_U, ids, self.head_ids)


def _halves(pairs: Sequence[tuple[str, str]], half: str) -> list[tuple[str, str]]:
    if half == "all":
        return list(pairs)
    return [p for i, p in enumerate(pairs) if (i % 2 == 0) == (half == "selection")]


def semantic_relation_prompts(
    model: Any, n_prompts: int = 48, *, seed: int = 0, pairs: str = "selection"
) -> RelationPrompts:
    """Prompts over the three relations of :data:`RELATION_PAIRS`, balanced across them.

    Pairs whose head or tail is not one token (with a leading space) for this tokenizer
    are dropped; every (pair, frame) combination of the chosen half is a candidate, and
    candidates whose token length differs from the most common one are dropped. The
    prompts are then taken in turn from each relation (each relation's candidates in a
    seeded random order), so the relations are balanced to within one prompt.

    Args:
        n_prompts: how many prompts.
        seed: the order in which each relation's candidates are taken.
        pairs: ``"selection"`` (the even-numbered pairs of each relation),
            ``"held out"`` (the odd-numbered ones) or ``"all"``.

    Raises:
        ValueError: a bad count, seed or half, or fewer usable candidates than ``n_prompts``.
    """
    check_count("n_prompts", n_prompts)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if pairs not in _HALVES:
        raise ValueError(f"pairs must be one of {_HALVES}, got {pairs!r}")

    def single(word: str) -> bool:
        return is_single_token(model, " " + word)

    tail_ids, head_ids, candidates = {}, {}, {}
    for relation, listed in RELATION_PAIRS.items():
        usable = [(h, t) for h, t in listed if single(h) and single(t)]
        tail_ids[relation] = torch.tensor(sorted({single_token_id(model, " " + t) for _, t in usable}))
        head_ids[relation] = torch.tensor(sorted({single_token_id(model, " " + h) for h, _ in usable}))
        candidates[relation] = [
            (frame.format(head=h), frame, h, t) for h, t in _halves(usable, pairs) for frame in RELATION_FRAMES[relation]
        ]
    lengths = {c[0]: len(encode(model, c[0])) for group in candidates.values() for c in group}
    common_length = Counter(lengths.values()).most_common(1)[0][0]
    rng = random.Random(seed)
    queues = {}
    for relation, group in candidates.items():
        kept = [c for c in group if lengths[c[0]] == common_length]
        rng.shuffle(kept)
        queues[relation] = kept
    available = sum(len(q) for q in queues.values())
    if available < n_prompts:
        raise ValueError(
            f"only {available} relation prompts of one token length ({common_length}) in the "
            f"{pairs!r} pairs; {n_prompts} were asked for"
        )
    chosen, relations = [], []
    while len(chosen) < n_prompts:
        for relation, queue in queues.items():
            if queue and len(chosen) < n_prompts:
                chosen.append(queue.pop(0))
                relations.append(relation)
    prompts = [c[0] for c in chosen]
    head_positions = []
    for prompt, frame, head, _ in chosen:
        before = frame.split("{head}")[0].rstrip()
        position = len(encode(model, before))
        if encode(model, prompt)[position] != single_token_id(model, " " + head):
            raise ValueError(f"the head word {head!r} does not follow its frame's first words as one token in {prompt!r}")
        head_positions.append(position)
    tokens, _ = to_tokens(model, prompts)
    return RelationPrompts(
        prompts=prompts,
        tokens=tokens,
        answer_ids=torch.tensor([single_token_id(model, " " + c[3]) for c in chosen]),
        positions={"head": torch.tensor(head_positions), "END": same_position(n_prompts, common_length - 1)},
        relations=relations,
        head_words=[c[2] for c in chosen],
        tail_words=[c[3] for c in chosen],
        tail_ids=tail_ids,
        head_ids=head_ids,
    )
