"""Uncertainty: a bootstrap confidence interval over prompts (or sequences).

Thin on purpose: :func:`scipy.stats.bootstrap` does the resampling; this fixes the
course's conventions (the mean, a 95% percentile interval, a seed) and names the
problem when the input cannot carry an interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values: Any, *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """The mean of per-item ``values`` and its percentile bootstrap interval.

    Args:
        values: one number per prompt or sequence (a tensor, array or list).
        level: the interval's coverage, 0.95 by default.
        seed: the resampling seed, so that the same run gives the same interval.

    Returns:
        ``(mean, low, high)``.
    """
    array = torch.as_tensor(values, dtype=torch.float64).flatten().numpy()
    if array.size < 2:
        raise ValueError("a bootstrap needs at least two values")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if not np.isfinite(array).all():
        raise ValueError("values must be finite")
    mean = float(array.mean())
    if np.ptp(array) == 0:  # every resample has the same mean
        return mean, mean, mean
    from scipy import stats  # here, not at import: scipy.stats takes about 1 s to import

    result = stats.bootstrap(
        (array,), np.mean, n_resamples=n_resamples, confidence_level=level,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)
