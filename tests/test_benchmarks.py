"""The peer benchmark (benchmarks/compare_peers.py) runs end to end at its tiniest size, writes its
JSON atomically, and its agreement checks hold: ours equals captum (gradient, IG) and Quantus
(deletion curve) where the methods are deterministic, and every method evaluates the number of
model inputs it should."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("captum")
pytest.importorskip("quantus")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compare_peers(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import compare_peers

    return compare_peers


@pytest.fixture
def quick_run(compare_peers, tmp_path, capsys):
    out = tmp_path / "results" / "quick.json"
    threads, torch_state, numpy_state = torch.get_num_threads(), torch.get_rng_state(), np.random.get_state()[1].copy()
    code = compare_peers.main(["--quick", "--device", "cpu", "--data", "random", "--threads", "1", "--out", str(out)])
    # the global state of the test process is left as it was
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    return code, out, capsys.readouterr().out


def rows_of(result, section, impl=None):
    return [r for r in result["rows"] if r["section"] == section and (impl is None or r["impl"].startswith(impl))]


def test_quick_benchmark_runs_and_agrees(compare_peers, quick_run):
    code, out, printed = quick_run
    assert code == 0
    assert out.is_file() and not list(out.parent.glob("*.tmp"))  # written atomically
    result = json.loads(out.read_text())
    sizes = result["sizes"]
    assert result["quick"] and sizes["images"] == 4 and sizes["repeats"] == 1
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["torch_threads"] == 1
    assert "random images" in result["data"]

    # the bound: every batch size timed, the best one reported
    for kind in ("fwd_bwd", "fwd"):
        bound = result["bound"][kind]
        assert set(bound["seconds_per_image_by_batch_size"]) == {"8", "16", "32"}
        assert bound["best_seconds_per_image"] == min(bound["seconds_per_image_by_batch_size"].values()) > 0

    # every section has ours (default), a timed peer and the bound; all numbers finite
    peers = {"gradient": ["captum"], "smoothgrad": ["captum"], "integrated_gradients": ["captum"],
             "max_sensitivity": ["captum", "quantus"], "deletion": ["quantus"]}
    for section, names in peers.items():
        (ours,) = [r for r in rows_of(result, section, "ours") if r["default"]]
        assert ours["seconds_per_image"] > 0 and math.isfinite(ours["x_bound"])
        for name in names:
            timed = [r for r in rows_of(result, section, name) if r["seconds_per_image"] is not None]
            assert timed and sum(r["best"] for r in timed) == 1
            assert all(r["peer_over_ours"] > 0 for r in timed)
        assert len(rows_of(result, section, "bound")) == 1

    # model inputs per explained image, counted by a hook on the model
    n = sizes["images"]
    expected = {
        "gradient": 1, "smoothgrad": sizes["smoothgrad_samples"], "integrated_gradients": sizes["ig_steps"],
        # + one input of one image: the metrics read the number of classes from a forward pass
        "max_sensitivity": sizes["sensitivity_samples"] + 1 + 1 / n, "deletion": sizes["deletion_steps"] + 1 + 1 / n,
    }
    for section, passes in expected.items():
        for r in rows_of(result, section, "ours"):
            assert r["passes_per_image"] == pytest.approx(passes), (section, r["label"])
    for section in ("gradient", "smoothgrad", "integrated_gradients"):
        for r in rows_of(result, section, "captum"):
            assert r["passes_per_image"] == expected[section], (section, r["label"])
    for r in rows_of(result, "max_sensitivity", "captum") + rows_of(result, "max_sensitivity", "quantus"):
        assert r["passes_per_image"] == sizes["sensitivity_samples"] + 1

    # agreement: deterministic methods match the peers, Monte-Carlo ones are reported
    agreement = result["agreement"]
    assert result["agreement_ok"]
    for section in ("gradient", "integrated_gradients", "deletion"):
        assert agreement[section]["kind"] == "deterministic" and agreement[section]["ok"], agreement[section]
    assert agreement["gradient"]["float32_images_matching"] == 1.0
    for section in ("smoothgrad", "max_sensitivity"):
        assert agreement[section]["kind"].startswith("monte-carlo")
    sens = agreement["max_sensitivity"]
    assert all(v > 0 for k, v in sens.items() if k.startswith("mean"))

    # the targets are evaluated and the markdown table is printed
    assert {t["section"] for t in result["targets"]} == set(peers)
    assert "| section | implementation |" in printed and "| gradient | ours |" in printed
    assert "| deletion | quantus PixelFlipping |" in printed


def test_agreement_check_catches_a_wrong_map(compare_peers):
    ref = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ref64 = ref[:4].double()
    agree = compare_peers._map_agreement
    assert agree(ref.clone(), ref, ref64.clone(), ref64, "x")["ok"]
    one_off = ref.clone()
    one_off[0] *= 1.01  # one image of ten off in float32 (a ReLU switch): tolerated
    assert agree(one_off, ref, ref64.clone(), ref64, "x")["ok"]
    assert not agree(ref * 1.01, ref, ref64.clone(), ref64, "x")["ok"]  # every image off
    assert not agree(ref.clone(), ref, ref64 * (1 + 1e-5), ref64, "x")["ok"]  # float64 rerun off
    zeros = torch.zeros_like(ref)
    assert not agree(ref, zeros, ref64, ref64, "x")["ok"]


def test_command_line_is_checked(compare_peers):
    with pytest.raises(SystemExit):
        compare_peers.parse_args(["--sections", "gradient,lime"])
    with pytest.raises(SystemExit):
        compare_peers.parse_args(["--images", "0"])
    args = compare_peers.parse_args(["--sections", "deletion,gradient"])
    assert args.sections == ["gradient", "deletion"]  # run in the documented order
    assert compare_peers.main(["--device", "tpu"]) == 2
