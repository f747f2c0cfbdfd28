"""Comparing two rankings of heads: Spearman correlation and top-k overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from utils.core.heads import top_heads

# ---------------------------------------------------------------------------
# Comparing two maps of heads
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingAgreement:
    """How far two per-head maps agree: Spearman rank correlation over all heads, and
    how many of the top ``k`` heads (by absolute value) the two maps share."""

    spearman: float
    top_k_overlap: int
    k: int


def ranking_agreement(a: Tensor, b: Tensor, k: int = 10) -> RankingAgreement:
    """Spearman correlation of ``a`` and ``b`` over all heads and the overlap of their
    top ``k`` heads ranked by absolute value (pass effects, i.e. values minus a
    baseline, so that the size of a change is what counts).

    The correlation is :func:`scipy.stats.spearmanr`'s: tied values share their mean
    rank. It is ``nan`` when either map is constant.
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("a and b must be tensors")
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    from scipy.stats import spearmanr  # here, not at import: scipy.stats is slow to import

    flat_a = a.detach().flatten().double().cpu().numpy()
    flat_b = b.detach().flatten().double().cpu().numpy()
    spearman = float(spearmanr(flat_a, flat_b).statistic)
    overlap = len(set(top_heads(a.abs(), k)) & set(top_heads(b.abs(), k)))
    return RankingAgreement(spearman=spearman, top_k_overlap=overlap, k=k)
