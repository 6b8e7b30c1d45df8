"""Sphinx extension: the book's "What each method costs" page, built from the benchmark suite's
committed results.

Listed in ``_config.yml`` beside the verdicts page. At each build it reads
``benchmarks/results/suite-*.json`` (one file per device, written by ``python -m benchmarks.suite``;
looked for in the book's source folder, then in the checkout the library was imported from) and
writes ``book/costs.md`` and one figure per device under ``_static/generated/`` before Sphinx reads
any page, so the page is never edited by hand and always shows the committed numbers. Without a
results file the page says so.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from .figures import COLUMN_PX, CSS_PX_PER_INCH, smallest_text_pt

__all__ = ["render_page", "load_results", "cost_figure", "figure_png", "results_dir", "setup"]

PAGE = Path("book") / "costs.md"
RESULTS = Path("benchmarks") / "results"
FIGURES = Path("_static") / "generated"
DPI = 144
MARKERS = "os^Dv<>PXph*d"

INTRO = """# What each method costs

Seconds per explained image for every method of the book, beside the libraries and authors' code
that do the same work, and how far each is from the cost of the model passes it makes.

- **A pass** is one model input evaluated: an image, a noisy copy, a masked copy or a decoy. A
  forward pre-hook on the model counts them (*passes / image*); passes made with gradients are
  forward+backward passes, the others forward only.
- **The bound** is the cost of those passes alone: in the same run, a sweep times plain passes
  (`model(x)` and the gradient of the target logits with respect to `x`; `model(x)` under
  `no_grad`; for the training step a bare double-backprop step) at several batch sizes, and the
  best batch gives the seconds per pass. **× bound** = seconds per image / (passes per image ×
  seconds per pass): 1.0 is the cost of the model itself, the rest is overhead.
- **Ours** is the library at its default batch size. **Peers**: captum, Quantus and zennit at their
  best chunking (the fastest of their default and the sweep's best batch), and for the papers'
  methods a loop over one image at a time with the authors' batching. **peer / ours** above 1: the
  library is faster by that factor.
- **At the papers' settings** multiplies the passes a paper-sized run makes (50 SmoothGrad
  samples, 5,000 mask-search passes, ...; DANCE and sigma* depend on the image, see the settings
  table) by the measured seconds per pass: an estimate of what that run costs on this device.
- **Sizes**: 32 × 32 px (the book's LeNet, CIFAR-10 images) and 224 × 224 px (a torchvision
  ResNet-18, ImageNet images); random weights, which do not change the cost. The papers' settings
  are scaled down (fewer samples, steps and iterations; the table at the end) so that the suite runs
  in minutes: compare the cost per pass and the ratios, not the totals.

This page is generated from `benchmarks/results/suite-*.json` at every build (`make bench` writes
them; `benchmarks/README.md` says how to read them); do not edit it.
"""

NO_RESULTS = """## No results yet

No benchmark results have been committed: run `make bench` (or `python -m benchmarks.suite
--device cuda` on a GPU) on a quiet machine and commit `benchmarks/results/suite-<device>.json`.
"""


def results_dir(srcdir: Path) -> Path:
    """The book's ``benchmarks/results``, else the one of the checkout this library comes from."""
    for root in (Path(srcdir), Path(__file__).resolve().parents[3]):
        if any((root / RESULTS).glob("suite-*.json")):
            return root / RESULTS
    return Path(srcdir) / RESULTS


def load_results(folder: Path) -> list[tuple[str, dict]]:
    """``(name, result)`` of every ``suite-*.json`` in ``folder`` (name: ``cpu``, ``cuda``, ...)."""
    found = []
    for path in sorted(Path(folder).glob("suite-*.json")):
        found.append((path.stem.removeprefix("suite-"), json.loads(path.read_text())))
    return found


# ----------------------------------------------------------------------------- formatting


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min" if value < 7200 else f"{value / 3600:.3g} h"


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _cell(text: str, tag: str = "td", numeric: bool = False, rows: int = 1) -> str:
    # numbers never break (a header may); 0.3em padding keeps the 8 columns inside the content column
    style = ("text-align:right" + (";white-space:nowrap" if tag == "td" else "") if numeric else "text-align:left")
    style += ";padding:0.15em 0.3em"
    span = f' rowspan="{rows}"' if rows > 1 else ""
    return f'<{tag}{span} style="{style};vertical-align:top">{text}</{tag}>'


def _table(head: list[str], rows: list[list[str] | tuple[str, list[str]]], numeric: set[int] = frozenset()) -> str:
    """An HTML table that scrolls on a phone. A row is a list of texts, or ``(style, cells)`` with
    ready cells (:func:`_cell`)."""
    def line(row, tag):
        return "".join(_cell(c, tag, i in numeric) for i, c in enumerate(row))

    body = "".join(f'<tr style="{r[0]}">{"".join(r[1])}</tr>' if isinstance(r, tuple) else f"<tr>{line(r, 'td')}</tr>"
                   for r in rows)
    return (f'<div style="overflow-x:auto"><table class="costs-table" style="font-size:0.9em">'
            f"<thead><tr>{line(head, 'th')}</tr></thead><tbody>{body}</tbody></table></div>")


def _sections(result: dict) -> list[tuple[str, str, dict[int, dict]]]:
    """(name, title, {size: section}) in the suite's order."""
    order: dict[str, tuple[str, dict[int, dict]]] = {}
    for workload in result["workloads"]:
        for section in workload["sections"]:
            order.setdefault(section["name"], (section["title"], {}))[1][workload["size"]] = section
    return [(name, title, by_size) for name, (title, by_size) in order.items()]


def _ours(section: dict | None) -> dict | None:
    if section is None:
        return None
    rows = [r for r in section["rows"] if r["role"] == "ours"]
    return next((r for r in rows if r["default"]), rows[0] if rows else None)


def _peers(by_size: dict[int, dict], sizes: list[int]) -> list[tuple[str, list[dict | None]]]:
    """Each peer (or reference) implementation with its fastest row at each size."""
    names: list[str] = []
    for section in by_size.values():
        for r in section["rows"]:
            if r["role"] in ("peer", "reference") and r["impl"] not in names:
                names.append(r["impl"])
    shown = {r["impl"]: r["impl"] + (" (reference)" if r["role"] == "reference" else "")
             for section in by_size.values() for r in section["rows"]}
    found = []
    for name in names:
        best = []
        for size in sizes:
            rows = [r for r in by_size.get(size, {"rows": []})["rows"]
                    if r["impl"] == name and r["seconds_per_image"] is not None]
            best.append(min(rows, key=lambda r: r["seconds_per_image"]) if rows else None)
        found.append((shown[name], best))
    return found


# ----------------------------------------------------------------------------- tables and notes


def _cost_table(result: dict, sizes: list[int]) -> str:
    """Per method and size: our default's cost, then each peer (or reference) beside it."""
    memory = any(r.get("peak_bytes") for wl in result["workloads"] for s in wl["sections"] for r in s["rows"])
    head = ["Method", "Size", "Passes / image", "s / image", "× bound", "At the papers' settings (est.)"]
    head += ["Peak memory"] if memory else []
    head += ["Peer (best setting)", "Peer / ours"]
    rows = []
    for _, title, by_size in _sections(result):
        present = [s for s in sizes if s in by_size]
        peers = _peers(by_size, present) or [("–", [None] * len(present))]
        for j, size in enumerate(present):
            ours = _ours(by_size[size])
            bound = _number(ours and ours["x_bound"], ".2f")
            if ours and ours.get("x_bound_at_own_batch"):
                own = ours["x_bound_at_own_batch"]
                bound += f'<br><small style="white-space:normal">{own["x_bound"]:.2f} at batch {own["batch"]}</small>'
            mine = [f"{size} px", _number(ours and ours["passes_per_image"], ",.4g"),
                    _seconds(ours and ours["seconds_per_image"]), bound, _at_paper_settings(by_size[size], ours)]
            if memory:
                mine.append(f"{ours['peak_bytes'] / 2**20:.3g} MiB" if ours and ours.get("peak_bytes") else "–")
            for k, (peer, best) in enumerate(peers):
                cells = [_cell(html.escape(title), rows=len(present) * len(peers))] if j == k == 0 else []
                if k == 0:
                    cells += [_cell(c, numeric=True, rows=len(peers)) for c in mine]
                cells += [_cell(_breakable(peer)), _cell(_times(_ratio(best[j], ours)), numeric=True)]
                rows.append(("border-top:2px solid #bbb" if j == k == 0 else "", cells))
    return _table(head, rows, {i for i, h in enumerate(head) if h not in ("Method", "Peer (best setting)")})


def _at_paper_settings(section: dict, ours: dict | None) -> str:
    """The papers' passes per image times our measured seconds per pass: what a paper-sized run of
    this method costs here (an estimate; the suite itself runs scaled-down settings)."""
    passes = section.get("paper_passes")
    if not passes or not ours or not ours.get("seconds_per_image") or not ours.get("passes_per_image"):
        return "–"
    seconds = passes * ours["seconds_per_image"] / ours["passes_per_image"]
    return f"{_seconds(seconds)}<br><small>{passes:,} pass{'es' if passes != 1 else ''}</small>"


def _breakable(name: str) -> str:
    """A peer's name that may wrap inside its call ("captum Saliency(<wbr>abs=False)"): the longest
    unbroken word sets the column's width, and the table must fit the content column (COLUMN_PX)."""
    return html.escape(name).replace("(", "(<wbr>").replace("_", "_<wbr>")


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}×"


def _ratio(row: dict | None, ours: dict | None) -> float | None:
    if not row or not ours or not ours["seconds_per_image"]:
        return None
    return row["seconds_per_image"] / ours["seconds_per_image"]


def _agreement(name: str, title: str, by_size: dict[int, dict], sizes: list[int]) -> str | None:
    parts = []
    checks = [(size, (by_size.get(size) or {}).get("agreement")) for size in sizes]
    checks = [(size, a) for size, a in checks if a]
    if checks and all(a["kind"] == "deterministic" and a["ok"] for _, a in checks) and \
            len({a.get("against") for _, a in checks}) == 1:
        where = " and ".join(str(size) for size, _ in checks)
        return f"- {title}: agrees with {checks[0][1].get('against', 'the peer')} at {where} px."
    for size, a in checks:
        if a["kind"] == "deterministic":
            against = a.get("against", "the peer")
            parts.append(f"{size} px: {'agrees with' if a['ok'] else '**disagrees with**'} {against}")
        elif "cosine_ours_vs_peer" in a:
            parts.append(f"{size} px: cosine to the peer {a['cosine_ours_vs_peer']:.2f}, between two of our seeds "
                         f"{a['cosine_ours_vs_ours_other_seed']:.2f}")
        elif "mean_ours" in a:
            parts.append(f"{size} px: mean {a['mean_ours']:.3g} (ours), {a['mean_captum']:.3g} (captum), "
                         f"{a['mean_quantus']:.3g} (Quantus)")
    return f"- {title}: " + "; ".join(parts) + "." if parts else None


def _notes(result: dict, sizes: list[int]) -> str:
    lines = []
    for name, title, by_size in _sections(result):
        line = _agreement(name, title, by_size, sizes)
        if line:
            lines.append(line)
        if any(section.get("sequential") for section in by_size.values()):
            lines.append(f"- {title}: the chain is sequential (N images fill at most N inputs per pass); the "
                         f"small number under its × bound is the bound at that batch.")
        for size in sizes:
            section = by_size.get(size)
            if section and "l2_cosd_over_ce_step" in section:
                lines.append(f"- {title}, {size} px: {section['l2_cosd_over_ce_step']:.2f}× a plain cross-entropy "
                             f"step (a bare double-backprop step costs {section['bound_l2_over_ce']:.2f}× a bare "
                             f"cross-entropy step).")
    lines.append("- The authors' loops put in a pass what the authors' code puts there at these settings (RelEx: "
                 "its noisy copies; RISE: up to 100 masks; sigma*: the permutations), fewer inputs than at the papers' "
                 "own settings: read their peer / ours at these settings.")
    lines.append(f"- Peak memory: {result.get('memory_method', 'not recorded')}.")
    return "Checks and notes: the deterministic methods are compared with their peer's output (float32, and a "\
        "float64 rerun of a few images where cheap); the Monte-Carlo ones by the cosine between our map and the "\
        "peer's beside the cosine between two of our own seeds.\n\n" + "\n".join(lines) + "\n"


def _settings_table(result: dict, sizes: list[int]) -> str:
    rows = []
    for name, title, by_size in _sections(result):
        shown = [", ".join(f"{k.replace('_', ' ')} {v}" for k, v in by_size[s]["settings"].items()) if s in by_size
                 else "–" for s in sizes]
        paper = next(iter(by_size.values()))["paper_setting"]
        rows.append([html.escape(title), *(html.escape(v) for v in shown), html.escape(paper)])
    return _table(["Method", *(f"Here, {s} px" for s in sizes), "Paper / usual"], rows)  # all text


# ----------------------------------------------------------------------------- the figure


def cost_figure(result: dict):
    """Seconds per explained image against image size, one line per method (our default), log scale."""
    from matplotlib.figure import Figure

    sizes = sorted(wl["size"] for wl in result["workloads"])
    fig = Figure(figsize=(7.0, 6.2))
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)] + ["#444444", "#b8860b", "#008b8b"]
    for i, (_, title, by_size) in enumerate(_sections(result)):
        points = [(s, r["seconds_per_image"]) for s in sizes if (r := _ours(by_size.get(s))) and r["seconds_per_image"]]
        if points:
            ax.plot(*zip(*points), marker=MARKERS[i % len(MARKERS)], color=colours[i % len(colours)], label=title,
                    linewidth=1.5, markersize=6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{s} px" for s in sizes], fontsize=10)
    ax.minorticks_off()
    ax.tick_params(axis="y", labelsize=10)
    ax.set_xlim(sizes[0] / 1.3, sizes[-1] * 1.3)
    ax.set_xlabel("image size (pixels per side)", fontsize=11)
    ax.set_ylabel("seconds per explained image (log scale)", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=10, frameon=False)
    fig.tight_layout()
    return fig


def figure_png(result: dict) -> tuple[bytes, int, float]:
    """The figure as PNG bytes, its natural width in CSS pixels and its smallest text in points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = cost_figure(result)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    png = buffer.getvalue()
    natural = round(int.from_bytes(png[16:20], "big") / DPI * CSS_PX_PER_INCH)
    return png, natural, smallest_text_pt(fig)


# ----------------------------------------------------------------------------- the page


def _device_section(name: str, result: dict, figures: Path, link: str) -> str:
    m = result["machine"]
    sizes = sorted(wl["size"] for wl in result["workloads"])
    date = result["created"][:10]
    title = f"{m['device_name']} ({m['device']})"
    quick = ("\n```{warning}\nThis file comes from a `--quick` run: tiny settings that only check that the suite "
             "runs. Its numbers are not measurements.\n```\n" if result.get("quick") else "")
    images = "; ".join(f"{wl['size']} px: {wl['model']}, {wl['data']}" for wl in sorted(result["workloads"],
                                                                                        key=lambda w: w["size"]))
    png, natural, _ = figure_png(result)
    path = figures / f"costs-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != png:  # unchanged files keep Sphinx's cache valid
        path.write_bytes(png)
    alt = (f"Line plot of seconds per explained image, log scale, against image size ({', '.join(map(str, sizes))} "
           f"px), one line per method, measured on {m['device_name']}")
    caption = (f"Cost of each method against image size on {m['device_name']} ({date}): seconds per explained "
               f"image at the library's default batch size, log scale; the work per image is the same at every size "
               f"(the settings at the end of this section).")
    return (f"## {html.escape(title)}\n\nMeasured {date} with `{result['command']}`: {m['torch_threads']} torch "
            f"threads, torch {m['torch']}, load average {m.get('loadavg_start')} at the start and "
            f"{m.get('loadavg_end')} at the end; median of {_rounds(result)}. {images}.\n"
            f"{quick}\n```{{raw}} html\n{_cost_table(result, sizes)}\n```\n\n"
            f"```{{figure}} {link}/costs-{name}.png\n:alt: {alt}\n:width: {min(natural, COLUMN_PX)}px\n"
            f":name: costs-figure-{name}\n\n{caption}\n```\n\n{_notes(result, sizes)}\n"
            f"Settings of this run against the papers':\n\n```{{raw}} html\n{_settings_table(result, sizes)}\n```\n")


def _rounds(result: dict) -> str:
    rounds = [f"{wl.get('repeats', result['repeats'])} interleaved rounds at {wl['size']} px"
              for wl in sorted(result["workloads"], key=lambda w: w["size"])]
    return ", ".join(rounds)


def render_page(results: Path, figures: Path, link: str = "../_static/generated") -> str:
    """The page's Markdown for the result files in ``results``; writes the figures into ``figures``
    (``link``: that folder as the page refers to it)."""
    found = load_results(results)
    if not found:
        return INTRO + "\n" + NO_RESULTS
    return INTRO + "\n" + "\n".join(_device_section(name, result, figures, link) for name, result in found)


def _write(app, config) -> None:
    srcdir = Path(app.srcdir)
    page = srcdir / PAGE
    text = render_page(results_dir(srcdir), srcdir / FIGURES)
    if not page.exists() or page.read_text() != text:  # unchanged pages keep Sphinx's cache valid
        page.write_text(text)


def setup(app):
    app.connect("config-inited", _write, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
