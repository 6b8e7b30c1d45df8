"""The benchmark suite (benchmarks/suite.py): its quick run covers every section at both sizes and
writes a valid JSON atomically; the "x bound" arithmetic is right on hand-made timings; the
agreement checks catch a wrong result (a wrong gradient makes the suite exit 1); the command line
refuses bad options with a message that says what to pass."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("captum")
pytest.importorskip("quantus")
pytest.importorskip("zennit")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT))
        from benchmarks import harness, settings, suite

        yield suite, harness, settings


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    """One quick run of every section at 32 and 224 px (about 25 s on one thread)."""
    suite, _, _ = bench
    out = tmp_path_factory.mktemp("results") / "suite-cpu.json"
    threads, torch_state, numpy_state = torch.get_num_threads(), torch.get_rng_state(), np.random.get_state()[1].copy()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = suite.main(["--quick", "--device", "cpu", "--data", "random", "--threads", "1", "--out", str(out)])
    state = (torch.get_num_threads() == threads, torch.equal(torch.get_rng_state(), torch_state),
             np.array_equal(np.random.get_state()[1], numpy_state))
    return code, out, state, printed.getvalue()


def test_quick_suite_runs_every_section_at_both_sizes(bench, quick_run):
    suite, harness, settings = bench
    code, out, state, printed = quick_run
    assert code == 0
    assert all(state)  # the caller's thread count and random states are left as they were
    assert out.is_file() and not [p for p in out.parent.iterdir() if p != out]  # written atomically
    result = json.loads(out.read_text())
    assert result["quick"] and result["schema"] == suite.SCHEMA and not result["agreement_failed"]
    machine = result["machine"]
    for fact in ("cpu", "torch_threads", "loadavg_start", "loadavg_end", "torch", "device", "device_name"):
        assert fact in machine, fact
    assert machine["torch_threads"] == 1 and machine["torch"] == torch.__version__
    assert [wl["size"] for wl in result["workloads"]] == [32, 224]

    for wl in result["workloads"]:
        # the bound: every kind swept, its best batch is the fastest
        assert set(wl["bound"]) == set(harness.KINDS)
        for entry in wl["bound"].values():
            by_batch = entry["seconds_per_pass_by_batch"]
            assert entry["best_seconds_per_pass"] == min(by_batch.values()) > 0
        names = [s["name"] for s in wl["sections"]]
        assert names == list(settings.SECTIONS)
        for s in wl["sections"]:
            (ours,) = [r for r in s["rows"] if r["role"] == "ours" and r["default"]]
            assert ours["seconds_per_image"] > 0 and ours["passes_per_image"] > 0
            assert math.isfinite(ours["x_bound"]) and ours["x_bound"] > 0
            peers = [r for r in s["rows"] if r["role"] in ("peer", "reference")]
            assert peers, s["name"]  # every section has something beside it
            assert all(r["peer_over_ours"] > 0 for r in peers if r["role"] == "peer")
            if s["agreement"] and s["agreement"]["kind"] == "deterministic":
                assert s["agreement"]["ok"], (wl["size"], s["name"], s["agreement"])

        # model inputs per explained image, counted by the hook, where the method fixes them
        sections = {s["name"]: s for s in wl["sections"]}
        st = wl["settings"]
        expected = {"gradient": 1, "smoothgrad": st["smoothgrad"]["samples"],
                    "integrated_gradients": st["integrated_gradients"]["steps"], "rise": st["rise"]["masks"],
                    "relex": 2 * st["relex"]["iterations"] * st["relex"]["samples"],
                    "mask_search": st["mask_search"]["passes"], "l2_cosd": 2}
        for name, passes in expected.items():
            for r in sections[name]["rows"]:
                if r["role"] != "reference":
                    assert r["passes_per_image"] == pytest.approx(passes), (wl["size"], name, r["label"])
        for r in sections["mask_search"]["rows"]:  # a sequential method: the bound at its own batch too
            assert r["x_bound_at_own_batch"]["batch"] == r["widest_call"]
        assert {r["impl"] for r in sections["lrp_epsilon"]["rows"]} >= {"zennit EpsilonComposite"}

    assert "| section | implementation | setting |" in printed and "| gradient | reliable_saliency |" in printed


def test_x_bound_arithmetic_on_a_hand_made_timing(bench):
    _, harness, _ = bench
    per_pass = {"fwd_bwd": 0.001, "fwd": 0.0004}
    # 10 fwd+bwd passes and 5 forward passes per image cost 10 ms + 2 ms at the bound
    assert harness.bound_seconds({"fwd_bwd": 10, "fwd": 5}, per_pass) == pytest.approx(0.012)
    assert harness.x_bound(0.024, {"fwd_bwd": 10, "fwd": 5}, per_pass) == pytest.approx(2.0)
    assert harness.x_bound(None, {"fwd_bwd": 1}, per_pass) is None

    # a measured configuration: 3 images, 2 passes of 3 rows with gradients and one of 5 without
    config = harness.Config("x", "ours", "y", lambda: None)
    measured = harness.Measured(config, None, [0.03, 0.06, 0.09], grad=6, nograd=5, calls=3, widest=5, peak_bytes=None)
    passes = harness.passes_by_kind(measured, 3)
    assert passes == {"fwd_bwd": pytest.approx(2), "fwd": pytest.approx(5 / 3)}
    seconds = 0.06 / 3  # the median round, per image
    assert harness.x_bound(seconds, passes, per_pass) == pytest.approx(0.02 / (2 * 0.001 + 5 / 3 * 0.0004))
    config.kind = "double_backprop"  # a training step counts all its inputs as the kind it declares
    assert harness.passes_by_kind(measured, 3) == {"double_backprop": pytest.approx(11 / 3)}

    rows = [{"impl": "ours", "role": "ours", "default": True, "seconds_per_image": 0.01},
            {"impl": "ours", "role": "ours", "default": False, "seconds_per_image": 0.008},
            {"impl": "peer", "role": "peer", "default": True, "seconds_per_image": 0.03},
            {"impl": "peer", "role": "peer", "default": False, "seconds_per_image": 0.02}]
    harness.add_ratios(rows)
    assert [r["peer_over_ours"] for r in rows] == [None, None, pytest.approx(3.0), pytest.approx(2.0)]
    assert [r["best"] for r in rows] == [False, True, False, True]


def test_timer_counts_inputs_with_and_without_gradients_and_interleaves(bench):
    _, harness, _ = bench
    model = nn.Linear(4, 2)
    order = []

    def job(name, grad_rows, nograd_rows):
        def run():
            order.append(name)
            model(torch.randn(grad_rows, 4))
            with torch.no_grad():
                model(torch.randn(nograd_rows, 4))
        return run

    configs = [harness.Config("a", "ours", "a", job("a", 3, 5)), harness.Config("b", "peer", "b", job("b", 2, 0))]
    measured = harness.Timer(torch.device("cpu"), repeats=3, warmup=1).measure(configs, model)
    assert [(m.grad, m.nograd, m.calls, m.widest) for m in measured] == [(3, 5, 2, 5), (2, 0, 2, 2)]
    assert all(len(m.times) == 3 for m in measured)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then rounds in alternating order
    assert not model._forward_pre_hooks  # the counting hook is removed


def test_agreement_checks_catch_a_wrong_result(bench):
    _, harness, _ = bench
    ref = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ref64 = ref[:4].double()
    agree = harness.map_agreement
    assert agree(ref.clone(), ref, ref64.clone(), ref64, "x")["ok"]
    one_off = ref.clone()
    one_off[0] *= 1.01  # one image of ten off in float32 (a ReLU switch): tolerated
    assert agree(one_off, ref, ref64.clone(), ref64, "x")["ok"]
    assert not agree(ref * 1.01, ref, ref64.clone(), ref64, "x")["ok"]  # every image off
    assert not agree(ref.clone(), ref, ref64 * (1 + 1e-5), ref64, "x")["ok"]  # the float64 rerun off
    assert not agree(ref, torch.zeros_like(ref), None, None, "x")["ok"]
    assert not agree(ref[:, :1], ref, None, None, "x")["ok"]  # a map of the wrong shape

    curve = torch.rand(4, 9, generator=torch.Generator().manual_seed(1))
    assert harness.curve_agreement(curve, curve.clone(), "x")["ok"]
    assert not harness.curve_agreement(curve, curve + 1e-3, "x")["ok"]

    budgets = torch.tensor([[1.0, 2.0, float("inf"), float("nan")]] * 4)
    assert harness.budget_agreement(budgets, budgets.clone(), 0.1, "x")["ok"]
    assert not harness.budget_agreement(budgets, budgets * 2, 0.1, "x")["ok"]


def test_a_wrong_gradient_fails_the_run(bench, tmp_path, monkeypatch, capsys):
    suite, _, _ = bench
    from reliable_saliency import explainers

    right = explainers.gradient
    monkeypatch.setattr(explainers, "gradient", lambda *args, **kw: 1.5 * right(*args, **kw))
    code = suite.main(["--quick", "--sizes", "32", "--sections", "gradient", "--data", "random", "--threads", "1",
                       "--out", str(tmp_path / "wrong.json")])
    assert code == 1
    assert "AGREEMENT FAILED in ['32 px gradient']" in capsys.readouterr().err
    assert json.loads((tmp_path / "wrong.json").read_text())["agreement_failed"] == ["32 px gradient"]


@pytest.mark.parametrize("argv, message", [
    (["--sections", "gradient,lime"], "--sections: unknown ['lime']"),
    (["--sizes", "33"], "--sizes: 32 (the LeNet) or multiples of 32"),
    (["--sizes", "abc"], "--sizes must be comma-separated integers"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--data", "imagenet"], "invalid choice: 'imagenet'"),
])
def test_command_line_refuses_bad_options(bench, capsys, argv, message):
    suite, _, _ = bench
    with pytest.raises(SystemExit) as exit_:
        suite.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_defaults(bench):
    suite, _, settings = bench
    args = suite.parse_args(["--sections", "deletion,gradient", "--sizes", "224,32,224"])
    assert args.sections == ["gradient", "deletion"]  # run in the documented order
    assert args.sizes == [32, 224] and args.repeats is None and args.warmup == 2
    assert suite.default_out(args) == suite.RESULTS_DIR / "suite-cpu.json"
    quick = suite.parse_args(["--quick"])
    assert quick.warmup == 0 and suite.default_out(quick).parent == suite.QUICK_DIR
    assert settings.settings_for(64, quick=False)["dance"]["stride"] == 61  # a patch in each corner
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            suite.parse_args(["--device", "cuda"])


def test_the_book_page_reads_the_suite_results(bench, quick_run, tmp_path):
    """The page's extension reads what the suite writes (the same JSON, end to end)."""
    from reliable_saliency.chapter import costs_page

    _, _, settings = bench
    _, out, _, _ = quick_run
    page = costs_page.render_page(out.parent, tmp_path / "figures")
    assert "comes from a `--quick` run" in page and (tmp_path / "figures" / "costs-cpu.png").is_file()
    for title, _ in settings.SECTIONS.values():
        assert title in page
