"""What each method costs: the library's explainers, the papers' methods and the metrics, timed at
32 and 224 px against a bound of plain model passes and beside their peers (captum, Quantus,
zennit, the authors' one-image-at-a-time loops).

Run from the repository root::

    python -m benchmarks.suite [--device cpu|cuda] [--sizes 32,224] [--sections a,b] [--repeats R]
        [--warmup W] [--threads T] [--data auto|random|real] [--quick] [--out FILE]

or ``make bench`` (``BENCH_ARGS`` passes options). Per image size, one bound sweep first: plain
passes of each kind (forward+backward w.r.t. the input, forward only under no_grad, a bare
double-backprop step, a bare cross-entropy step) at each batch size, the best batch of each kind
fixing its seconds per pass. Then every section: each configuration (ours at the library's default
batch size, ours at the sweep's best, the peers at their default and their best chunking) warmed up
once (the warm-up counts the model inputs with a forward pre-hook and gives the outputs the
agreement checks compare), then timed once per interleaved round, odd rounds in reverse order;
the median over the rounds is reported. Each row's "x bound" is its seconds per image over the
bound of the passes it made; "peer / ours" is the peer's time over our default's.

Prints a markdown table per size and writes the JSON (atomically) that the book's "What each
method costs" page reads (benchmarks/results/suite-<device>.json). Exits with status 1 when a
deterministic agreement check fails (a fast but wrong result must not look good), 2 on bad options.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from reliable_saliency.core.experiment import atomic_write

from .harness import KINDS, Timer, build_model, load_inputs, loadavg, machine_info, sweep, training_model
from .sections import RUNNERS, Workload
from .settings import SECTIONS, settings_for

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
QUICK_DIR = ROOT / "_build" / "bench"
SCHEMA = 1
DEFAULT_SIZES = (32, 224)
MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated during the call minus the memory allocated before it, "
            "the largest over the timed runs",
    "cpu": "not measured: the growth of the resident set size on a CPU is too noisy to compare methods",
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- command line


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes must be comma-separated integers, got {text!r}") from None
    bad = [s for s in sizes if s != 32 and not (64 <= s <= 512 and s % 32 == 0)]
    if not sizes or bad:
        raise argparse.ArgumentTypeError(
            f"--sizes: 32 (the LeNet) or multiples of 32 from 64 to 512 (the ResNet-18), got {text!r}")
    return sizes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); default cpu")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                   help="image sizes in pixels, comma-separated (default 32,224): 32 runs the book's LeNet, "
                        "larger sizes a torchvision ResNet-18")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed interleaved rounds (default 5 at 32 px, 3 at larger sizes; 1 with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs of each configuration before the rounds; the last one counts the "
                        "passes (default 2, so a first call's one-time work, such as a structure probe that "
                        "is remembered per model, is not counted; 0 with --quick: the first round counts)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the run (default: left as it is); on a machine shared with "
                        "other jobs use 1 and say so")
    p.add_argument("--data", default="auto", choices=("auto", "random", "real"),
                   help="auto: real images when $RELIABLE_SALIENCY_DATA is set (CIFAR-10 at 32 px, ImageNet "
                        "val-37 otherwise), else random pixels")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings (a few images, 1 to 4 passes per image, 1 round): checks that the suite "
                        "runs, measures nothing")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/suite-<device>.json; with --quick "
                        "_build/bench/quick-suite-<device>.json)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        p.error(f"--sections: unknown {unknown or 'none given'}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in names]  # the documented order
    for name, least in (("repeats", 1), ("warmup", 0), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name} must be >= {least}, got {value}")
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda (or cuda:N), got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch.cuda.is_available() is False on this machine")
    args.device = device
    return args


# ----------------------------------------------------------------------------- running


def run_workload(size: int, args) -> dict:
    settings = settings_for(size, args.quick)
    timer = Timer(args.device, args.repeats or settings["repeats"], args.warmup)
    model, model_name = build_model(size)
    model = model.to(args.device)
    needed = max(v["images"] if isinstance(v, dict) and "images" in v else 0
                 for k, v in settings.items() if k in args.sections)
    needed = max(needed, settings["l2_cosd"]["batch"] if "l2_cosd" in args.sections else 0, 1)
    x, data = load_inputs(args.data, needed, size, args.device)
    with torch.no_grad():
        target = model(x).argmax(1)
    _log(f"[{size} px] {model_name}; {data}; torch threads {torch.get_num_threads()}")
    w = Workload(size, model, model_name, x, target, data, settings, timer, args.quick, _log)

    bound = settings["bound"]
    widths = {1, settings["mask_search"]["images"]}  # the widest passes a sequential method can make
    kinds = {"fwd_bwd": sorted(set(bound["batch_sizes"])), "fwd": sorted(set(bound["batch_sizes"]) | widths)}
    rows = {"fwd_bwd": bound["rows"], "fwd": bound["rows"]}
    models = {"fwd_bwd": model, "fwd": model}
    if "l2_cosd" in args.sections:
        w.train_model = training_model(size).to(args.device)
        for kind in ("double_backprop", "train"):
            kinds[kind], rows[kind] = list(bound["train_batch_sizes"]), bound["train_rows"]
            models[kind] = w.train_model
    started = time.perf_counter()
    w.bound = sweep(models, kinds, rows, tuple(x.shape[1:]), model.input_space, args.device, timer, _log)
    sections = [RUNNERS[name](w) for name in args.sections]
    return {"size": size, "model": model_name, "data": data, "images": x.shape[0], "repeats": timer.repeats,
            "settings": settings, "bound": w.bound, "sections": sections, "wall_seconds": time.perf_counter() - started}


def run(args, argv) -> dict:
    machine = machine_info(args.device)
    machine["threads_option"] = args.threads
    started = time.perf_counter()
    workloads = [run_workload(size, args) for size in args.sizes]
    machine["loadavg_end"] = loadavg()
    failed = [f"{wl['size']} px {s['name']}" for wl in workloads for s in wl["sections"]
              if s["agreement"] and s["agreement"]["kind"] == "deterministic" and not s["agreement"]["ok"]]
    return {
        "schema": SCHEMA, "suite": "benchmarks.suite",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.suite", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "machine": machine, "repeats": [wl["repeats"] for wl in workloads],
        "warmup": args.warmup,
        "memory_method": MEMORY_METHOD[args.device.type], "bound_kinds": KINDS,
        "workloads": workloads, "agreement_failed": failed, "wall_seconds": time.perf_counter() - started,
    }


def default_out(args) -> Path:
    if args.quick:
        return QUICK_DIR / f"quick-suite-{args.device.type}.json"
    return RESULTS_DIR / f"suite-{args.device.type}.json"


def write_json(result: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))


def main(argv=None) -> int:
    args = parse_args(argv)
    threads, numpy_state = torch.get_num_threads(), np.random.get_state()
    devices = [args.device] if args.device.type == "cuda" else []
    # The thread count and the random states are restored afterwards, so an in-process call (the
    # tests) leaves the caller's global state as it was.
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            np.random.seed(0)  # Quantus draws its noise from numpy's global generator
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            result = run(args, argv)
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(numpy_state)
    out = args.out or default_out(args)
    write_json(result, out)
    print(markdown(result))
    _log(f"wrote {out} ({result['wall_seconds']:.0f} s)")
    if result["agreement_failed"]:
        _log(f"AGREEMENT FAILED in {result['agreement_failed']}: the timings of those sections do not count")
        return 1
    return 0


# ----------------------------------------------------------------------------- the printed tables


def _fmt(value, spec=".3g", none="–") -> str:
    return none if value is None else format(value, spec)


def _x_bound_cell(row: dict) -> str:
    text = _fmt(row["x_bound"], ".2f")
    own = row.get("x_bound_at_own_batch")
    if own:
        text += f" ({own['x_bound']:.2f} at batch {own['batch']})"
    return text


def _agreement_text(a: dict) -> str:
    if a.get("problem"):
        return f"could not be checked: {a['problem']}"
    verdict = "ok" if a.get("ok") else "DISAGREE"
    if "float32_images_matching" in a:
        text = f"{a['float32_images_matching']:.0%} of images within 1e-4 (float32)"
        if "float64_max_relative_diff" in a:
            text += f", float64 ({a['float64_images']} images) {a['float64_max_relative_diff']:.1e}"
        return f"{text}: {verdict}"
    if "images_matching" in a:
        return f"{a['images_matching']:.0%} of images with equal budgets: {verdict}"
    if "max_abs_diff" in a:
        return f"max |difference| {a['max_abs_diff']:.1e} <= {a['tolerance']:.0e}: {verdict}"
    numbers = {k: v for k, v in a.items() if isinstance(v, float)}
    return ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in numbers.items()) + " (report only)"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Device {m['device']} ({m['device_name']}), {m['torch_threads']} torch threads, torch {m['torch']}; "
             f"median of {'/'.join(map(str, result['repeats']))} interleaved rounds "
             f"({'/'.join(str(w['size']) for w in result['workloads'])} px) after {result['warmup']} warm-up run(s); "
             f"load average {m['loadavg_start']} at the start, {m['loadavg_end']} at the end."
             + (" QUICK RUN: tiny settings, not a measurement." if result["quick"] else "")]
    for wl in result["workloads"]:
        bound = "; ".join(f"{kind} {entry['best_seconds_per_pass'] * 1e3:.3g} ms/pass at batch {entry['best_batch']}"
                          for kind, entry in wl["bound"].items())
        lines += ["", f"### {wl['size']} px: {wl['model']}; {wl['data']}", "",
                  f"Bound (best batch of the sweep): {bound}.", "",
                  "| section | implementation | setting | s / image | passes / image | × bound | peer / ours |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for s in wl["sections"]:
            for r in s["rows"]:
                tag = " [best]" if r["role"] == "peer" and r["best"] and not r["default"] else ""
                lines.append(f"| {s['name']} | {r['impl']} | {r['label']}{tag} | {_fmt(r['seconds_per_image'])} | "
                             f"{_fmt(r['passes_per_image'], '.4g')} | {_x_bound_cell(r)} | "
                             f"{_fmt(r['peer_over_ours'], '.2f')} |")
        lines += ["", "| section | settings here (paper) | agreement |", "|---|---|---|"]
        for s in wl["sections"]:
            shown = ", ".join(f"{k} {v}" for k, v in s["settings"].items())
            agreement = _agreement_text(s["agreement"]) if s["agreement"] else "–"
            if s["name"] == "l2_cosd":
                agreement = (f"step / cross-entropy step {s['l2_cosd_over_ce_step']:.2f}x "
                             f"(bare double backprop / bare cross-entropy {s['bound_l2_over_ce']:.2f}x)")
            lines.append(f"| {s['name']} | {shown} ({s['paper_setting']}) | {agreement} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
