"""Neutral text: plain sentences about nothing a chapter tests, for the side effect of an
intervention (does ablating the heads of one task break the model on ordinary text?).

The evidence standard asks every causal claim about a set of heads to say what the same
intervention does elsewhere. :func:`neutral_tokens` gives one batch of such text, cut
to a common token length so that one forward pass reads every sentence and the
per-position mean of an activation (mean ablation's replacement) is taken over
comparable positions.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from utils.data.base import check_count
from utils.data.tokens import to_tokens

__all__ = ["NEUTRAL_SENTENCES", "neutral_tokens"]

#: Forty plain declarative sentences: no names the IOI or knowledge tasks use, no
#: sentiment words, no lists of capital letters, no repeated spans.
NEUTRAL_SENTENCES: tuple[str, ...] = (
    "The river runs through the valley and past the old mill before it reaches the sea.",
    "Most of the shops in the town close early on Sundays during the winter months.",
    "She opened the window to let in some fresh air after the long and rainy night.",
    "The committee will publish its annual report at the end of the next quarter.",
    "Bread is made from flour, water, salt and yeast, and baked in a hot oven.",
    "The train to the coast leaves every hour from the main station in the city.",
    "Scientists measured the temperature of the lake at several depths last summer.",
    "He keeps his books on a wooden shelf next to the desk in the small study.",
    "The museum added a new wing for modern art and sculpture two years ago.",
    "Heavy snow closed the mountain roads for three days in the middle of January.",
    "The recipe calls for two cups of rice and a pinch of salt for every guest.",
    "A new bridge across the harbour was opened to traffic early this morning.",
    "The library on the corner lends maps, records and old newspapers to its members.",
    "Farmers in the region plant wheat in the autumn and harvest it in early summer.",
    "The bus stops outside the school twice an hour on weekdays and once on weekends.",
    "Our neighbours painted their fence white and planted roses along the garden path.",
    "The engineers tested the new pump for a week before they installed it in the plant.",
    "Rain is expected in the north tomorrow, while the south should stay dry and mild.",
    "The students wrote their answers in pencil and handed the papers to the teacher.",
    "A small boat carried supplies to the island once a month throughout the year.",
    "The company moved its offices to a larger building near the river last spring.",
    "Each room of the hotel has a desk, a lamp, two chairs and a view of the square.",
    "The orchestra rehearsed the second movement three times before the evening concert.",
    "Workers repaired the roof of the station after the storm damaged several tiles.",
    "The path climbs slowly through the forest and ends at a wide meadow near the top.",
    "Visitors can buy tickets at the entrance or reserve them online a day in advance.",
    "The old clock in the hall was wound every Sunday by the man who lived upstairs.",
    "Several families gathered in the park to watch the boats race across the lake.",
    "The kitchen was small, but it had a large table where the whole family could eat.",
    "During the summer the market opens at six and closes shortly after noon each day.",
    "The report describes how the city collects water and delivers it to every house.",
    "A narrow road leads from the village to the farm on the far side of the hill.",
    "The printer on the second floor jams whenever someone loads the thick paper.",
    "Travellers crossing the border must show their passports at the control point.",
    "The gardener trims the hedges in the spring and rakes the leaves in the autumn.",
    "The factory produces glass bottles for companies that sell juice and mineral water.",
    "Light from the lamp fell across the table and onto the pages of the open book.",
    "The council agreed to build a new playground behind the community centre next year.",
    "The ferry crosses the bay four times a day, weather permitting, in every season.",
    "He carried the chairs into the hall and arranged them in rows facing the stage.",
)


def neutral_tokens(model: Any, n_sentences: int = 32, *, min_tokens: int = 12) -> Tensor:
    """The first ``n_sentences`` of :data:`NEUTRAL_SENTENCES`, tokenised (BOS first) and
    cut to the shortest sentence's token length, so every row is real text.

    Args:
        model: a TransformerLens model (its tokenizer is used).
        n_sentences: how many sentences, at most ``len(NEUTRAL_SENTENCES)``.
        min_tokens: the shortest acceptable common length (BOS included); a tokenizer
            that makes the sentences shorter than this is an error, not a silent
            loss of text.

    Returns:
        ``LongTensor[n_sentences, length]``.

    Raises:
        ValueError: ``n_sentences`` out of range, or the common length below ``min_tokens``.
    """
    check_count("n_sentences", n_sentences)
    if n_sentences > len(NEUTRAL_SENTENCES):
        raise ValueError(f"n_sentences must be at most {len(NEUTRAL_SENTENCES)}, got {n_sentences}")
    tokens, lengths = to_tokens(model, list(NEUTRAL_SENTENCES[:n_sentences]))
    length = int(lengths.min())
    if length < min_tokens:
        raise ValueError(f"the neutral sentences are only {length} tokens long under this tokenizer (min_tokens={min_tokens})")
    return tokens[:, :length]
