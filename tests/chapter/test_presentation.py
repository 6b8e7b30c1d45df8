"""Numbered, captioned figures and tables that fit the book's content column."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reliable_saliency.chapter.figures import figure_html, smallest_text_pt  # noqa: E402
from reliable_saliency.chapter.tables import MAX_COLUMNS, cell_text, table_html  # noqa: E402


def _figure(width: float, fontsize: float):
    fig, ax = plt.subplots(figsize=(width, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_title("a title", fontsize=fontsize + 2)
    ax.tick_params(labelsize=fontsize)
    return fig


def test_a_figure_is_numbered_captioned_and_sized_for_the_column():
    fig = _figure(5, 10)
    assert smallest_text_pt(fig) == 10
    html = figure_html(fig, "Figure 2.3", "What to see: a line.", "figure-2-3")
    assert html.startswith('<figure class="book-figure" id="figure-2-3"')
    assert "<figcaption><b>Figure 2.3.</b> What to see: a line.</figcaption>" in html
    assert 'width="4' in html and 'data-text-pt="10.00"' in html and "data:image/png;base64," in html


def test_a_figure_whose_text_would_shrink_below_the_limit_is_refused():
    wide = _figure(14, 10)  # about 1,100 px once cropped, shown at 672: 10 pt reads as about 6 pt
    with pytest.raises(ValueError, match=r"would show at \d\.\d pt .* lay it out narrower"):
        figure_html(wide, "Figure 1.1", "caption", "figure-1-1")
    assert "<figure" in figure_html(_figure(8, 13), "Figure 1.4", "c", "f")  # wide, with large text: passes
    with pytest.raises(ValueError, match="needs a caption"):
        figure_html(_figure(4, 10), "Figure 1.2", " ", "figure-1-2")
    spilled = _figure(6, 10)  # a long title makes the saved image wider than the figure
    spilled.suptitle("a very long title " * 8, fontsize=12)
    with pytest.raises(ValueError, match="wide as saved"):
        figure_html(spilled, "Figure 1.3", "caption", "figure-1-3")
    plt.close("all")


def test_cells_read_as_words_and_rounded_numbers():
    assert cell_text(True) == "yes" and cell_text(False) == "no"
    assert cell_text(float("nan")) is None and cell_text(None) is None
    assert cell_text(12345) == "12,345" and cell_text(0.123456) == "0.123" and cell_text(-0.5) == "−0.500"
    assert cell_text(9.27e29) == "9.27 × 10<sup>29</sup>" and cell_text(2e-5) == "2.00 × 10<sup>-5</sup>"
    assert cell_text(0.25, style="{:.0%}") == "25%" and cell_text("<b>") == "&lt;b&gt;"


def test_a_table_is_captioned_and_refuses_wide_or_unexplained_gaps():
    frame = pd.DataFrame({"model": ["natural", "FGSM"], "rate": [0.5, float("nan")], "ok": [True, False]})
    with pytest.raises(ValueError, match="1 missing values: say why"):
        table_html(frame, "Table 2.1", "Rates.", "table-2-1")
    html = table_html(frame, "Table 2.1", "Rates.", "table-2-1", missing="not measured on this model")
    assert "<figcaption><b>Table 2.1.</b> Rates.</figcaption>" in html
    assert ">–<" in html and "– not measured on this model" in html and ">yes<" in html and "nan" not in html
    wide = pd.DataFrame([range(MAX_COLUMNS + 1)], columns=[f"c{i}" for i in range(MAX_COLUMNS + 1)])
    with pytest.raises(ValueError, match="pivot it"):
        table_html(wide, "Table 2.2", "Too wide.", "table-2-2")
    with pytest.raises(ValueError, match="does not have"):
        table_html(frame, "Table 2.3", "x", "table-2-3", formats={"rat": "{:.1%}"}, missing="m")
    indexed = frame.set_index("model")
    assert "<th" in table_html(indexed, "Table 2.4", "x", "t", missing="m") and ">model<" in \
        table_html(indexed, "Table 2.4", "x", "t", missing="m")
