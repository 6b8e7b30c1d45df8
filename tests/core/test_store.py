"""The result store (reliable_saliency.core.store): round trip, atomic shards, resume after a real
kill, 1 and 2 torchrun workers giving identical results, a failing worker's error surfacing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reliable_saliency.core import store as store_module
from reliable_saliency.core.store import ResultStore, ShardError

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "store_worker.py"


def run_worker(root: Path, out: Path, *args: str, workers: int = 1, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}"] \
        if workers > 1 else [sys.executable]
    return subprocess.Popen([*launcher, str(WORKER), str(root), str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def computed(root: Path) -> list[int]:
    log = root / "computed.log"
    return sorted(int(line.split()[0]) for line in log.read_text().splitlines()) if log.exists() else []


def test_round_trip_reads_instead_of_recomputing(tmp_path):
    calls = []

    def fn(start, stop):
        calls.append(start)
        return {"a": torch.arange(start, stop).float(), "b": torch.ones(stop - start, 2, dtype=torch.int64)}

    store = ResultStore(tmp_path, "key1")
    first = store.compute("step", fn, 10, params={"x": 1}, shard_size=4, progress=False)
    assert calls == [0, 4, 8] and first["a"].tolist() == list(range(10)) and first["b"].dtype == torch.int64
    again = store.compute("step", fn, 10, params={"x": 1}, shard_size=4, progress=False)
    assert calls == [0, 4, 8] and torch.equal(again["a"], first["a"])
    store.compute("step", fn, 10, params={"x": 2}, shard_size=4, progress=False)  # other parameters: new shards
    assert calls == [0, 4, 8, 0, 4, 8]
    plain = store.compute("plain", lambda a, b: torch.zeros(b - a, 3), 5, shard_size=2, progress=False)
    assert plain.shape == (5, 3)


def test_a_failed_write_leaves_no_shard_and_bad_results_are_refused(tmp_path, monkeypatch):
    store = ResultStore(tmp_path, "key")

    def broken_save(obj, path):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(store_module.torch, "save", broken_save)
    with pytest.raises(ShardError, match="shard 0 .images 0..3. failed: OSError"):
        store.compute("s", lambda a, b: torch.zeros(b - a), 8, shard_size=4, progress=False)
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "key").rglob("*") if p.is_file()]  # neither a shard nor a temporary
    with pytest.raises(ShardError, match="first axis must be the 4 images"):
        store.compute("t", lambda a, b: torch.zeros(3), 8, shard_size=4, progress=False)
    with pytest.raises(ShardError, match="tensor or a dict of tensors"):
        store.compute("u", lambda a, b: [1, 2], 8, shard_size=4, progress=False)
    store.compute("v", lambda a, b: torch.zeros(b - a), 8, shard_size=4, progress=False)
    next((tmp_path / "key").glob("v-*/shard-00001-*.pt")).write_bytes(b"garbage")
    with pytest.raises(ShardError, match="damaged"):
        store.compute("v", lambda a, b: torch.zeros(b - a), 8, shard_size=4, progress=False)
    with pytest.raises(ValueError, match="step name"):
        store.compute("a b", lambda a, b: torch.zeros(b - a), 8)
    with pytest.raises(ValueError, match="key"):
        ResultStore(tmp_path, "../x")


def test_resume_after_a_real_kill_recomputes_only_the_missing_shards(tmp_path):
    reference = run_worker(tmp_path / "reference", tmp_path / "reference.pt", "--shard", "4")
    assert reference.wait(120) == 0, reference.stderr.read()
    root = tmp_path / "killed"
    process = run_worker(root, tmp_path / "killed.pt", "--shard", "4", "--sleep", "0.4")
    deadline = time.time() + 60
    while len(computed(root)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    done_before = computed(root)
    assert 3 <= len(done_before) < 10, done_before
    resumed = run_worker(root, tmp_path / "killed.pt", "--shard", "4")
    assert resumed.wait(120) == 0, resumed.stderr.read()
    after = computed(root)
    recomputed = sorted(set(range(10)) - set(done_before))
    # every finished shard was read back; at most the one shard in flight at the kill is computed twice
    assert set(after) == set(range(10)) and len(after) - len(done_before) <= len(recomputed) + 1
    assert all(after.count(i) == 1 for i in done_before[:-1])
    a, b = torch.load(tmp_path / "reference.pt"), torch.load(tmp_path / "killed.pt")
    assert torch.equal(a["maps"], b["maps"]) and a["index"].tolist() == list(range(40))


def test_one_and_two_workers_give_identical_results(tmp_path):
    one = run_worker(tmp_path / "one", tmp_path / "one.pt")
    assert one.wait(120) == 0, one.stderr.read()
    two = run_worker(tmp_path / "two", tmp_path / "two.pt", workers=2)
    assert two.wait(180) == 0, two.stderr.read()
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.equal(a["maps"], b["maps"]) and torch.equal(a["index"], b["index"])
    shards_by_worker = {}
    for line in (tmp_path / "two" / "computed.log").read_text().splitlines():
        shard, worker = map(int, line.split())
        shards_by_worker.setdefault(worker, []).append(shard)
    assert sorted(shards_by_worker) == [0, 1] and sorted(sum(shards_by_worker.values(), [])) == list(range(10))


def test_a_failing_worker_reports_its_shard_and_error(tmp_path):
    process = run_worker(tmp_path / "fail", tmp_path / "fail.pt", "--fail", "3", workers=2)
    assert process.wait(180) != 0
    stderr = process.stderr.read()
    assert "shard 3 (images 12..15) on worker 1: ValueError('this shard fails on purpose')" in stderr


def test_a_two_worker_resume_deals_the_missing_shards_out_evenly(tmp_path):
    root = tmp_path / "run"
    first = run_worker(root, tmp_path / "first.pt")
    assert first.wait(120) == 0, first.stderr.read()
    folder = next((root / "run-key").iterdir())
    for i in (1, 3, 5):  # a 2-worker run killed after worker 0 had written all of its shards
        (folder / f"shard-{i:05d}-of-00010.pt").unlink()
    (root / "computed.log").unlink()
    resumed = run_worker(root, tmp_path / "resumed.pt", workers=2)
    assert resumed.wait(180) == 0, resumed.stderr.read()
    by_worker = sorted(tuple(map(int, line.split()))[::-1] for line in (root / "computed.log").read_text().splitlines())
    assert by_worker == [(0, 1), (0, 5), (1, 3)]  # (worker, shard): both workers work, not worker 1 alone
    a, b = torch.load(tmp_path / "first.pt"), torch.load(tmp_path / "resumed.pt")
    assert torch.equal(a["maps"], b["maps"])


def test_params_hash_is_the_same_in_every_process_and_refuses_addresses():
    code = ("from reliable_saliency.core.store import _params_hash; import numpy as np; "
            "print(_params_hash({'names': {'gradient', 'rise', 'relex', 'dance'}, 'a': np.arange(2000)}, 8, 4))")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                                  "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(hashes) == 1
    import numpy as np

    long_a, long_b = np.arange(2000), np.arange(2000)
    long_b[1000] = -1  # numpy's repr would abbreviate both to the same text
    assert store_module._params_hash({"a": long_a}, 8, 4) != store_module._params_hash({"a": long_b}, 8, 4)
    with pytest.raises(TypeError, match="memory address"):
        store_module._params_hash({"model": object()}, 8, 4)
