"""Figures in one style across the book: legible at page width, maps in one colour map."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from torch import Tensor

__all__ = ["use_book_style", "MAP_CMAP", "show", "map_grid", "top_pixels"]

MAP_CMAP = "inferno"


def use_book_style() -> None:
    """seaborn's ticks style with fonts sized for a figure shown at page width."""
    sns.set_theme(context="notebook", style="ticks", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "axes.titlesize": 12, "axes.labelsize": 12,
                         "legend.fontsize": 10, "figure.titlesize": 13})


def show(ax, picture: Tensor, title: str | None = None) -> None:
    """An image (C, H, W) in [0, 1] or a map (H, W) on ``ax``, without axes."""
    picture = picture.detach().float().cpu()
    if picture.dim() == 3 and picture.shape[0] in (1, 3):
        ax.imshow(picture.clamp(0, 1).permute(1, 2, 0).squeeze(-1), cmap="gray" if picture.shape[0] == 1 else None)
    elif picture.dim() == 2:
        ax.imshow(picture, cmap=MAP_CMAP)
    else:
        raise ValueError(f"show needs an image (C, H, W) with 1 or 3 channels or a map (H, W), got {tuple(picture.shape)}")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, loc="left")


def map_grid(rows: dict[str, Tensor], count: int, title: str | None = None,
             marks: dict[str, Tensor] | None = None):
    """A grid with one row per entry of ``rows`` (label -> images (N, C, H, W) in [0, 1] or maps
    (N, H, W)) and ``count`` columns (the first images). ``marks`` (label -> bool (N, H, W)) outlines
    pixels on that row, for example a map's top-k pixels. Returns the figure."""
    if not rows:
        raise ValueError("rows must hold at least one label -> tensor entry")
    count = min(count, *(len(t) for t in rows.values()))
    fig, axes = plt.subplots(len(rows), count, figsize=(1.7 * count + 1.2, 1.75 * len(rows)), squeeze=False)
    for r, (label, pictures) in enumerate(rows.items()):
        for i in range(count):
            ax = axes[r, i]
            show(ax, pictures[i])
            if marks and label in marks:
                ax.contour(marks[label][i].detach().float().cpu(), levels=[0.5], colors="cyan", linewidths=0.8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def top_pixels(maps: Tensor, k: int) -> Tensor:
    """bool (N, H, W): each map's ``k`` largest pixels (ties: lower index first, as top-k intersection)."""
    n, h, w = maps.shape
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros(n, h * w, dtype=torch.bool, device=maps.device).scatter_(1, order, True).view(n, h, w)


# --- numbered, captioned figures that stay legible in the book's content column ---
COLUMN_PX = 672  # the content column as the browser check measures it at a 1280-px window (CSS pixels)
CSS_PX_PER_INCH = 96  # a figure shown at its natural size prints a 10-pt label at 10 pt
MIN_TEXT_PT = 9.0  # the smallest text a reader should meet at 100% zoom


def smallest_text_pt(fig) -> float:
    """The size in points of the smallest visible, non-empty text of ``fig`` (inf without text)."""
    from matplotlib.text import Text

    fig.draw_without_rendering()  # tick labels exist only once the figure is laid out
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes, default=float("inf"))


def figure_html(fig, label: str, caption: str, anchor: str, dpi: int = 144) -> str:
    """``fig`` as an HTML ``<figure>`` with ``<figcaption>`` ("Figure 2.3. caption"), shown at its
    natural width capped at the content column; refuses a figure whose smallest text would shrink
    below :data:`MIN_TEXT_PT` there (re-lay it out: fewer columns per row, or a narrower figure)."""
    import base64
    import html
    import io

    if not caption or not caption.strip():
        raise ValueError(f"{label} needs a caption that says what to see in it")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")  # may grow past the figure's own width
    plt.close(fig)
    png = buffer.getvalue()
    natural = round(int.from_bytes(png[16:20], "big") / dpi * CSS_PX_PER_INCH)  # the PNG header's width
    smallest = smallest_text_pt(fig)
    shown = smallest * min(1.0, COLUMN_PX / natural)
    if shown < MIN_TEXT_PT:
        raise ValueError(f"{label} is {natural / CSS_PX_PER_INCH:.1f} in wide as saved: its smallest text "
                         f"({smallest:.1f} pt) would show at {shown:.1f} pt in the {COLUMN_PX}-px "
                         f"column, below {MIN_TEXT_PT:g} pt; lay it out narrower (fewer columns per row) "
                         f"or with larger text")
    data = base64.b64encode(png).decode()
    return (f'<figure class="book-figure" id="{anchor}" style="margin:1em 0">'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(label)}: {html.escape(caption)}" '
            f'width="{natural}" data-natural-width="{natural}" data-text-pt="{smallest:.2f}" '
            f'style="max-width:100%;height:auto">'
            f'<figcaption><b>{html.escape(label)}.</b> {html.escape(caption)}</figcaption></figure>')
