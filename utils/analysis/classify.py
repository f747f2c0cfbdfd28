"""Classifying heads from their measured evidence: mover vs suppressor, subject vs
relation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from utils.attribution.dla import subject_share
from utils.core.heads import Head

# ---------------------------------------------------------------------------
# Choosing heads
# ---------------------------------------------------------------------------


def classify_movers(
    attention: Tensor, dla: Tensor, *, min_attention: float, min_dla: float
) -> dict[str, list[Head]]:
    """Split heads that attend to a token into movers and negative movers.

    A *mover* attends to the token (attention at least ``min_attention``) and pushes
    its logit up (direct logit attribution at least ``min_dla``); a *negative mover*
    attends to it just as much but pushes it down (at most ``-min_dla``). This is how
    Wang et al. (2022) told name movers from negative name movers.

    Args:
        attention: ``Tensor[n_layers, n_heads]``, attention to the token.
        dla: ``Tensor[n_layers, n_heads]``, direct logit attribution to it.

    Returns:
        ``{"movers": [...], "negative movers": [...]}``, each sorted by ``|dla|``.
    """
    if not isinstance(attention, Tensor) or not isinstance(dla, Tensor):
        raise TypeError("attention and dla must be tensors")
    if attention.shape != dla.shape or attention.ndim != 2:
        raise ValueError(
            f"attention and dla must be (n_layers, n_heads) of one shape, got "
            f"{tuple(attention.shape)} and {tuple(dla.shape)}"
        )
    if min_attention < 0 or min_dla < 0:
        raise ValueError("min_attention and min_dla must be non-negative")
    n_heads = attention.shape[1]
    attends = attention >= min_attention
    groups = {"movers": attends & (dla >= min_dla), "negative movers": attends & (dla <= -min_dla)}
    result = {}
    for name, mask in groups.items():
        indices = mask.flatten().nonzero().flatten()
        order = dla.flatten()[indices].abs().argsort(descending=True)
        result[name] = [Head(*divmod(int(i), n_heads)) for i in indices[order]]
    return result


def classify_by_source(subject: float, relation: float, bos: float, threshold: float = 0.7) -> str:
    """Name a head by where its push toward the answer came from.

    ``"bos"`` when the positive part read from BOS outweighs the positive parts read
    from the subject and relation tokens together (the head mostly adds a constant
    vector, the value of the attention sink); otherwise ``"subject"`` when its
    :func:`subject_share` is at least ``threshold``, ``"relation"`` when it is at most
    ``1 - threshold``, and ``"mixed"`` in between.

    Args:
        subject, relation, bos: the head's parts from :func:`attribution_by_source`.
    """
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0.5, 1], got {threshold}")
    for name, value in (("subject", subject), ("relation", relation), ("bos", bos)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if max(bos, 0.0) > max(subject, 0.0) + max(relation, 0.0):
        return "bos"
    share = float(subject_share(torch.tensor(float(subject)), torch.tensor(float(relation))))
    if share >= threshold:
        return "subject"
    if share <= 1.0 - threshold:
        return "relation"
    return "mixed"
