"""The book's "What each method costs" page (reliable_saliency.chapter.costs_page), generated from the
benchmark suite's results: it says plainly when there are none; otherwise one section per device
with its date, a table of at most 9 columns with numbers formatted for reading, and a figure whose
text stays at 9 pt or more in the book's column, with alt text and a caption. (The page built from
a real quick run of the suite is checked in test_benchmarks.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from reliable_saliency.chapter import costs_page
from reliable_saliency.chapter.figures import COLUMN_PX, MIN_TEXT_PT


def _row(impl, role, seconds, passes, x_bound, default=True, ratio=None, **extra):
    return {"impl": impl, "role": role, "label": "setting", "default": default, "best": True,
            "seconds_per_image": seconds, "passes_per_image": passes, "x_bound": x_bound,
            "peer_over_ours": ratio, "peak_bytes": None, **extra}


def _section(name, title, scale, sequential=False):
    rows = [_row("reliable_saliency", "ours", 0.0021 * scale, 4, 1.04),
            _row("captum X", "peer", 0.0042 * scale, 4, 2.1, ratio=2.0)]
    if sequential:
        rows[0]["x_bound_at_own_batch"] = {"batch": 4, "x_bound": 1.01}
    agreement = {"kind": "deterministic", "against": "captum X", "ok": True}
    return {"name": name, "title": title, "paper_setting": "50 samples", "settings": {"samples": 4, "images": 8},
            "sequential": sequential, "rows": rows, "agreement": agreement, "notes": []}


def make_result(quick=False, device="cpu"):
    workloads = []
    for size, scale in ((32, 1), (224, 60)):
        sections = [_section("gradient", "Gradient", scale), _section("smoothgrad", "SmoothGrad", scale),
                    _section("mask_search", "Mask search (paper D)", scale, sequential=True)]
        sections[1]["agreement"] = {"kind": "monte-carlo (report only)", "against": "captum",
                                    "cosine_ours_vs_peer": 0.77, "cosine_ours_vs_ours_other_seed": 0.78}
        workloads.append({"size": size, "model": f"model {size}", "data": "random images", "repeats": 3,
                          "sections": sections})
    machine = {"device": device, "device_name": "Test CPU 3000", "torch_threads": 2, "torch": "2.x",
               "loadavg_start": [0.1, 0.1, 0.1], "loadavg_end": [0.2, 0.1, 0.1]}
    return {"created": "2026-12-01T10:00:00+00:00", "command": "python -m benchmarks.suite", "quick": quick,
            "machine": machine, "repeats": [5, 3], "memory_method": "not measured on CPU", "workloads": workloads}


def write(folder: Path, name: str, result: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"suite-{name}.json").write_text(json.dumps(result))


def test_without_results_the_page_says_so(tmp_path):
    page = costs_page.render_page(tmp_path / "results", tmp_path / "figures")
    assert page.startswith("# What each method costs")
    assert "No benchmark results have been committed" in page and "make bench" in page
    assert not (tmp_path / "figures").exists()


def test_a_device_section_with_table_figure_and_date(tmp_path):
    write(tmp_path / "results", "cpu", make_result())
    page = costs_page.render_page(tmp_path / "results", tmp_path / "figures")
    assert "## Test CPU 3000 (cpu)" in page and "Measured 2026-12-01" in page
    assert "QUICK" not in page.upper().replace("`--QUICK`", "")  # no warning for a real run
    tables = re.findall(r"<table.*?</table>", page, re.S)
    assert len(tables) == 2  # the costs and the settings
    for table in tables:
        assert table.split("</thead>")[0].count("</th>") <= 9
    costs = tables[0]
    assert "2.1 ms" in costs and "126 ms" in costs  # seconds formatted for reading, per size
    assert costs.count(">1.04<") == 6 and costs.count(">2×<") == 6  # x bound, peer / ours: 3 methods, 2 sizes
    assert "1.01 at batch 4" in costs  # the sequential chain's bound at its own batch
    assert costs.count('rowspan="2"') == 3  # each method spans its two sizes
    assert "cosine to the peer 0.77, between two of our seeds 0.78" in page
    # the figure: a file, shown at its natural width capped at the column, with alt text and a caption
    figure = re.search(r"```\{figure\} (\S+)\n:alt: (.+)\n:width: (\d+)px\n:name: (\S+)\n\n(.+)\n```", page)
    assert figure, page
    link, alt, width, name, caption = figure.groups()
    assert link == "../_static/generated/costs-cpu.png" and (tmp_path / "figures" / "costs-cpu.png").is_file()
    assert "seconds per explained image" in alt and int(width) <= COLUMN_PX
    assert "Test CPU 3000" in caption and "2026-12-01" in caption


def test_the_figure_is_legible_in_the_column():
    png, natural, smallest = costs_page.figure_png(make_result())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert natural <= COLUMN_PX  # shown at its natural size: text keeps its size in points
    assert smallest >= MIN_TEXT_PT


def test_one_section_per_device_and_a_quick_run_is_flagged(tmp_path):
    write(tmp_path / "results", "cpu", make_result())
    write(tmp_path / "results", "cuda", make_result(quick=True, device="cuda:0"))
    page = costs_page.render_page(tmp_path / "results", tmp_path / "figures")
    assert page.count("\n## ") == 2 and "(cuda:0)" in page
    assert page.count("comes from a `--quick` run") == 1
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"costs-cpu.png", "costs-cuda.png"}


def test_memory_column_only_where_measured(tmp_path):
    result = make_result(device="cuda:0")
    for workload in result["workloads"]:
        for section in workload["sections"]:
            section["rows"][0]["peak_bytes"] = 3 * 2**20
    write(tmp_path / "results", "cuda", result)
    page = costs_page.render_page(tmp_path / "results", tmp_path / "figures")
    assert "Peak memory" in page and page.count(">3 MiB<") == 6
    header = re.search(r"<thead>.*?</thead>", page, re.S).group(0)
    assert header.count("</th>") == 9  # method, size, passes, seconds, x bound, papers', memory, peer, ratio


def test_the_sphinx_hook_writes_the_page_and_keeps_it_when_unchanged(tmp_path, monkeypatch):
    srcdir = tmp_path / "book-source"
    (srcdir / "book").mkdir(parents=True)
    write(srcdir / "benchmarks" / "results", "cpu", make_result())
    app = SimpleNamespace(srcdir=str(srcdir))
    costs_page._write(app, None)
    page = srcdir / "book" / "costs.md"
    figure = srcdir / "_static" / "generated" / "costs-cpu.png"
    assert "Test CPU 3000" in page.read_text() and figure.is_file()
    stamps = page.stat().st_mtime_ns, figure.stat().st_mtime_ns
    costs_page._write(app, None)  # unchanged: not rewritten, so Sphinx's cache stays valid
    assert (page.stat().st_mtime_ns, figure.stat().st_mtime_ns) == stamps


def test_results_are_looked_for_in_the_book_then_in_the_checkout(tmp_path):
    assert costs_page.results_dir(tmp_path) in (tmp_path / "benchmarks" / "results",
                                                Path(costs_page.__file__).resolve().parents[3] / "benchmarks" / "results")
    write(tmp_path / "benchmarks" / "results", "cpu", make_result())
    assert costs_page.results_dir(tmp_path) == tmp_path / "benchmarks" / "results"


@pytest.mark.parametrize("seconds, shown", [(None, "–"), (4.2e-5, "42 µs"), (0.0123, "12.3 ms"), (3.456, "3.46 s")])
def test_seconds_are_formatted_for_reading(seconds, shown):
    assert costs_page._seconds(seconds) == shown


def test_the_cost_at_the_papers_settings_is_their_passes_times_our_seconds_per_pass(tmp_path):
    """50 SmoothGrad samples at 2.1 ms per 4 passes: 26.2 ms; a section without paper passes shows a dash."""
    result = make_result()
    smoothgrad = result["workloads"][0]["sections"][1]
    smoothgrad["paper_passes"] = 50
    write(tmp_path / "results", "cpu", result)
    page = costs_page.render_page(tmp_path / "results", tmp_path / "figures")
    assert "26.2 ms<br><small>50 passes</small>" in page
    assert "At the papers' settings (est.)" in page
    assert costs_page._at_paper_settings({"paper_passes": None}, smoothgrad["rows"][0]) == "–"
    assert costs_page._seconds(3 * 3600) == "3 h" and costs_page._seconds(300) == "5 min"
