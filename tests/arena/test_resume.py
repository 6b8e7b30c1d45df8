"""The arena resumes after a real kill: a process killed with SIGKILL half way leaves its finished
shards, a second run computes only the missing ones, and the table is the one an uninterrupted
run gives (the package's in-process run of the whole toy arena). Two torchrun workers share the
shards and give that table too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import arena_worker

WORKER = Path(__file__).with_name("arena_worker.py")


def start(root: Path, out: Path, *args: str, workers: int = 1) -> subprocess.Popen:
    path = os.pathsep.join([str(WORKER.parent), *(p for p in sys.path if p)])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"] \
        if workers > 1 else [sys.executable]
    return subprocess.Popen([*launcher, str(WORKER), str(root), str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def part_of(reference: pd.DataFrame, models=("relu", "soft"), localisation=False) -> pd.DataFrame:
    """The rows of the package's full toy run that the worker computes."""
    keep = reference.explainer.isin(arena_worker.EXPLAINERS) & (
        (reference.model.isin(models) & reference.perturbation.isin(["none", *arena_worker.PERTURBATIONS]))
        | ((reference.model == "shapes_cnn") if localisation else False))
    return reference[keep].reset_index(drop=True)


def timeless(t: pd.DataFrame) -> pd.DataFrame:
    """Without the wall times (of different runs), in their columns and as a measure."""
    return t[t.measure != "seconds"].drop(columns=["seconds", "attack_seconds"]).reset_index(drop=True)


def shards(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("shard-*.pt")}


def test_a_killed_run_resumes_to_the_same_table(tmp_path, toy_run):
    reference, _ = toy_run
    root = tmp_path / "store"
    killed = start(root, tmp_path / "killed.pkl", "--sleep", "0.4")
    deadline = time.time() + 90
    while len(shards(root)) < 6 and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    before = shards(root)
    # 2 models x (1 shared + 3 explainers) steps x 2 shards
    assert 6 <= len(before) < 16, sorted(before)
    assert not (tmp_path / "killed.pkl").exists()
    resumed = start(root, tmp_path / "resumed.pkl")
    assert resumed.wait(120) == 0, resumed.stderr.read()
    after = shards(root)
    assert len(after) == 16
    assert all(after[name] == stamp for name, stamp in before.items())  # finished shards were read, not redone
    table = pd.read_pickle(tmp_path / "resumed.pkl")
    pd.testing.assert_frame_equal(timeless(table), timeless(part_of(reference)), check_categorical=False)
    assert (table["seconds"] >= 0).all()


def test_two_workers_share_the_shards_and_give_the_same_table(tmp_path, toy_run):
    reference, _ = toy_run
    process = start(tmp_path / "store", tmp_path / "two.pkl", "--localisation", workers=2)
    assert process.wait(180) == 0, process.stderr.read()
    table = pd.read_pickle(tmp_path / "two.pkl")
    expected = part_of(reference, localisation=True)
    pd.testing.assert_frame_equal(timeless(table), timeless(expected), check_categorical=False)
