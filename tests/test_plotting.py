"""Plots: figures are made, bad shapes are refused, circuitsvis works offline."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from utils.course.book_assets import BUNDLE_ENV_VAR, circuitsvis_bundle
from utils.viz.plots import (
    attention_heads_view,
    attention_pattern_plot,
    layer_head_heatmap,
)


def test_heatmap_and_highlight():
    figure = layer_head_heatmap(torch.randn(4, 3), title="t", highlight=[(1, 2)])
    axis = figure.axes[0]
    assert axis.get_title() == "t" and len(axis.patches) == 1
    with pytest.raises(ValueError, match="n_layers, n_heads"):
        layer_head_heatmap(torch.randn(4))


def test_attention_pattern_plot():
    pattern = torch.tril(torch.ones(3, 3)) / torch.arange(1, 4)[:, None]
    figure = attention_pattern_plot(pattern, ["a", "b", "c"], title="head")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="token labels"):
        attention_pattern_plot(pattern, ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        attention_pattern_plot(torch.ones(2, 3), ["a", "b"])


def test_circuitsvis_view_embeds_its_javascript():
    pattern = torch.softmax(torch.randn(2, 3, 3), dim=-1)
    html = attention_heads_view(pattern, ["x", "y", "z"], head_names=["L0H0", "L0H1"]).data
    assert "unpkg.com" not in html and "https://" not in html.split("<script")[0]
    assert "L0H1" in html and len(html) > 100_000
    with pytest.raises(ValueError, match="head names"):
        attention_heads_view(pattern, ["x", "y", "z"], head_names=["one"])
    with pytest.raises(ValueError, match="n_heads, query_pos, key_pos"):
        attention_heads_view(pattern[0], ["x", "y", "z"])


def test_book_build_shares_one_circuitsvis_bundle(monkeypatch):
    pattern = torch.softmax(torch.randn(2, 3, 3), dim=-1)
    embedded = attention_heads_view(pattern, ["x", "y", "z"]).data
    monkeypatch.setenv(BUNDLE_ENV_VAR, "../_static/circuitsvis.js")
    shared = attention_heads_view(pattern, ["x", "y", "z"]).data
    assert shared.startswith('<script src="../_static/circuitsvis.js"></script>')
    assert len(shared) < 20_000 < len(embedded)
    assert "var CircuitsVis=" not in shared and "CircuitsVis.render(" in shared
    assert circuitsvis_bundle().read_text().startswith('"use strict";var CircuitsVis=')


def test_book_assets_extension_shares_the_bundle_and_drops_fontawesome_js(tmp_path, monkeypatch):
    import os
    from types import SimpleNamespace

    from utils.course import book_assets

    monkeypatch.delenv(BUNDLE_ENV_VAR, raising=False)  # restored after the test
    handlers = {}
    app = SimpleNamespace(
        connect=lambda event, handler: handlers.setdefault(event, handler),
        outdir=str(tmp_path),
        builder=SimpleNamespace(format="html"),
    )
    book_assets.setup(app)
    assert os.environ[BUNDLE_ENV_VAR] == "../_static/circuitsvis.js"
    page = tmp_path / "notebooks" / "00_background.html"
    page.parent.mkdir()
    page.write_text(
        '<head>\n  <script defer src="../_static/scripts/fontawesome.js?digest=55c2"></script>\n'
        '  <script defer src="../_static/scripts/bootstrap.js"></script>\n</head>'
    )
    handlers["build-finished"](app, None)
    copied = tmp_path / "_static" / "circuitsvis.js"
    assert copied.read_bytes() == circuitsvis_bundle().read_bytes()
    assert page.read_text() == '<head>\n  <script defer src="../_static/scripts/bootstrap.js"></script>\n</head>'
