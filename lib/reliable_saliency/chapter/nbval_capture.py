"""A pytest plugin that keeps what nbval executed, so ``make test`` runs each chapter once.

``make test`` parameterises every chapter with papermill (``--prepare-only``: the `smoke` profile
injected, nothing run), lets nbval execute and validate it cell by cell, and writes the notebook
with nbval's outputs to ``--chapters-out`` for the strict book build. A notebook is written only
when every one of its cells passed and it drew at least one figure. Load it with
``pytest -p reliable_saliency.chapter.nbval_capture --nbval-lax ... --chapters-out DIR``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ..core.experiment import atomic_write
from .run import count_figures, no_figure_error, publishable

_RESULTS: dict = {}  # notebook path -> {"nb": notebook, "failed": bool, "count": int, "seconds": float}


def pytest_addoption(parser):
    parser.addoption("--chapters-out", default=None,
                     help="write each notebook nbval executed, with its outputs, into this folder")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not hasattr(item, "test_outputs") or not hasattr(item.parent, "nb"):
        return
    record = _RESULTS.setdefault(str(item.parent.fspath), {"nb": item.parent.nb, "failed": False, "count": 0,
                                                               "seconds": 0.0})
    record["count"] += 1
    record["seconds"] += report.duration
    item.cell.execution_count = record["count"]
    item.cell.outputs = [nbformat.from_dict(dict(out)) for out in (item.test_outputs or [])]
    for out in item.cell.outputs:
        if out.output_type == "execute_result":
            out.execution_count = record["count"]
    record["failed"] |= report.failed or report.skipped


def pytest_sessionfinish(session, exitstatus):
    folder = session.config.getoption("--chapters-out")
    if not folder:
        return
    for path, record in _RESULTS.items():
        name = Path(path).name
        if record["failed"]:
            print(f"\nnbval_capture: {name} had failing cells; not written")
            continue
        if count_figures(record["nb"]) == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            print(f"\nnbval_capture: {no_figure_error(name)}")
            continue
        publishable(record["nb"])
        nbformat.validate(record["nb"])
        atomic_write(Path(folder) / name, lambda tmp, nb=record["nb"]: nbformat.write(nb, str(tmp)))
        print(f"\nnbval_capture: {name} -> {folder} ({count_figures(record['nb'])} figures, "
              f"{record['seconds']:.0f} s in its cells)")
