"""Figures: layer x head heatmaps, attention patterns (matplotlib) and offline circuitsvis views.
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from utils.core.heads import Head

# Set by the book build (utils.course.book_assets) to share one circuitsvis bundle; the
# library owns the name because the library never imports the course machinery.
BUNDLE_ENV_VAR = "COURSE_CIRCUITSVIS_SRC"

# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------


def plot_score_and_pattern(
    scores: Tensor,
    pattern: Tensor,
    tokens: Sequence[str],
    *,
    score_title: str,
    pattern_title: str,
    colorbar_label: str = "score",
    highlight: Sequence[Head] = (),
):
    """A layer x head map of a score beside one head's attention pattern on one prompt.

    Args:
        scores: ``(n_layers, n_heads)``.
        pattern: ``(query_pos, key_pos)`` of the head to show.
        tokens: the prompt's tokens as strings.

    Returns:
        The matplotlib figure (two axes).
    """
    import matplotlib.pyplot as plt

    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError("scores must be a (n_layers, n_heads) tensor")
    side = 1.5 + 0.3 * len(tokens)
    figure, axes = plt.subplots(
        1,
        2,
        figsize=(5.5 + side, max(5.5, side * 0.85)),
        gridspec_kw={"width_ratios": [1, max(1.2, side / 5)]},
    )
    layer_head_heatmap(
        scores, title=score_title, colorbar_label=colorbar_label, highlight=highlight, ax=axes[0]
    )
    attention_pattern_plot(pattern, tokens, title=pattern_title, ax=axes[1])
    figure.tight_layout()
    return figure


def _to_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=float)


def layer_head_heatmap(
    scores: Tensor | np.ndarray,
    *,
    title: str = "",
    colorbar_label: str = "score",
    diverging: bool | None = None,
    highlight: Sequence[Head] = (),
    ax: Axes | None = None,
) -> Figure:
    """Heatmap of one value per head, layers on the y axis and heads on the x axis.

    Args:
        scores: ``(n_layers, n_heads)``.
        diverging: centre the colour scale on zero (red/blue); by default when the
            scores take both signs.
        highlight: ``(layer, head)`` cells to outline, e.g. the heads a test picked.
    """
    values = _to_numpy(scores)
    if values.ndim != 2:
        raise ValueError(f"scores must be (n_layers, n_heads), got shape {values.shape}")
    if diverging is None:
        diverging = bool(values.min() < 0 < values.max())
    if ax is None:
        n_layers, n_heads = values.shape
        _, ax = plt.subplots(figsize=(1.2 + 0.45 * n_heads, 0.8 + 0.18 * n_layers))
    if diverging:
        bound = float(np.abs(values).max()) or 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(values.shape[1]))
    ax.set_title(title)
    for layer, head in highlight:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    return ax.figure


def attention_pattern_plot(
    pattern: Tensor | np.ndarray,
    tokens: Sequence[str],
    *,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """One head's attention pattern as a query x key matrix labelled with the tokens.

    Args:
        pattern: ``(query_pos, key_pos)`` for one head and one prompt.
        tokens: the prompt's tokens as strings, one per position.
    """
    values = _to_numpy(pattern)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"pattern must be a square (query_pos, key_pos) matrix, got {values.shape}")
    if len(tokens) != values.shape[0]:
        raise ValueError(f"{len(tokens)} token labels for a pattern over {values.shape[0]} positions")
    if ax is None:
        side = 1.5 + 0.32 * len(tokens)
        _, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
    labels = [repr(t)[1:-1] for t in tokens]
    ax.set_xticks(range(len(tokens)), labels, rotation=90)
    ax.set_yticks(range(len(tokens)), labels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax.figure


def attention_heads_view(
    pattern: Tensor | np.ndarray,
    tokens: Sequence[str],
    *,
    head_names: Sequence[str] | None = None,
):
    """Interactive circuitsvis view of several heads' patterns on one prompt.

    The JavaScript is embedded in the output rather than loaded from a CDN, so the view
    renders with no network access. In the book build (``$COURSE_CIRCUITSVIS_SRC`` set by
    :mod:`utils.course.book_assets`) the pages share one local copy of it instead.

    Args:
        pattern: ``(n_heads, query_pos, key_pos)`` for one prompt.
        tokens: the prompt's tokens as strings.
        head_names: labels such as ``"L5H1"``; by default the head indices.

    Returns:
        An ``IPython.display.HTML`` object.
    """
    import circuitsvis as cv
    from IPython.display import HTML

    values = pattern.detach().float().cpu() if isinstance(pattern, Tensor) else torch.as_tensor(pattern)
    if values.ndim != 3 or values.shape[1] != values.shape[2]:
        raise ValueError(f"pattern must be (n_heads, query_pos, key_pos), got {tuple(values.shape)}")
    if len(tokens) != values.shape[1]:
        raise ValueError(f"{len(tokens)} token labels for a pattern over {values.shape[1]} positions")
    names = list(head_names) if head_names is not None else [f"head {i}" for i in range(values.shape[0])]
    if len(names) != values.shape[0]:
        raise ValueError(f"{len(names)} head names for {values.shape[0]} heads")
    rendered = cv.attention.attention_heads(
        attention=values, tokens=list(tokens), attention_head_names=names
    )
    shared_bundle = os.environ.get(BUNDLE_ENV_VAR)
    if shared_bundle:
        return HTML(_with_shared_bundle(rendered.local_src, shared_bundle))
    return HTML(rendered.local_src)


def _with_shared_bundle(local_src: str, url: str) -> str:
    """circuitsvis HTML with its embedded bundle replaced by ``<script src=url>``.

    The book build shares one copy of the bundle between pages (utils.course.book_assets);
    the render call that follows the bundle in the same script is kept.
    """
    start = local_src.index('"use strict";var CircuitsVis=')
    end_marker = "//# sourceMappingURL=iife.js.map"
    end = local_src.index(end_marker, start) + len(end_marker)
    return f'<script src="{url}"></script>\n' + local_src[:start] + local_src[end:]
