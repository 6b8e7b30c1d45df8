"""The README's quickstart runs as written, from outside the checkout, on the shipped checkpoint:
it finds book/checkpoints without any variable and trains nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    section = README.read_text().split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_quickstart_runs_from_anywhere_without_training(shared_data, tmp_path):
    (tmp_path / "quick.py").write_text(quickstart())
    env = {k: v for k, v in os.environ.items() if k != "RELIABLE_SALIENCY_CHECKPOINTS"}
    env |= {"RELIABLE_SALIENCY_DATA": str(shared_data), "RELIABLE_SALIENCY_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": str(README.parent / "lib"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "quick.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["gradient", "smoothgrad", "relex"]
    assert all("deletion AUC 0." in line for line in lines)
    assert "training it now" not in done.stdout + done.stderr and not list((tmp_path / "cache").glob("zoo/*.pt"))


def test_the_readme_has_one_quickstart():
    assert README.read_text().count("## Quickstart") == 1
    if "load_model(" not in quickstart():
        pytest.fail("the quickstart must load a model")
