"""Time paper D's mask search on the book's LeNet: all chains advanced together on the batch axis
against one chain (one image) at a time, beside RISE with the same number of forward passes and a
bound made of plain forward passes.

Run from the repository root::

    python -m benchmarks.mask_search_speed [--images 16] [--passes 500] [--grid-size 4]
        [--device cpu|cuda] [--weights random|book] [--data random|cifar10|auto] [--threads T]
        [--out FILE.json]

Measured in one process, on the same model and images:

- ``batched``: ``explainers.mask_search`` on all N images in one call (default ``batch_size``);
- ``loop``: one image per call, with the same per-image seeds (the maps must agree: the script
  prints the largest difference);
- ``rise``: ``explainers.rise`` with ``masks = passes`` and the same grid size (same mask family,
  same forward passes per image; masks shared by the images, all on the batch axis);
- ``bound``: plain ``model(x)`` without gradients at batch N and at batch 1: the time per input
  times the passes one image needs.

Model inputs and calls are counted with a forward pre-hook.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from reliable_saliency.core.batching import image_seeds
from reliable_saliency.core.experiment import atomic_write
from reliable_saliency.explainers import mask_search, rise

from .compare_peers import load_inputs
from .relex_speed import load_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--passes", type=int, default=500, help="forward passes per image (authors: 5000)")
    parser.add_argument("--grid-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", choices=("random", "book"), default="random")
    parser.add_argument("--data", choices=("auto", "random", "cifar10"), default="random")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    return parser.parse_args(argv)


class Clock:
    """Wall time of a call (device synchronised), the model inputs it evaluates and the calls."""

    def __init__(self, model, device):
        self.device, self.rows, self.calls = device, 0, 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.rows += args[0].shape[0]
        self.calls += 1

    def __call__(self, fn):
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        self.rows, self.calls, start = 0, 0, time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - start, self.rows, self.calls


def forward_seconds_per_input(model, x, batch: int, rows: int) -> float:
    """Best of three: seconds per input of ``model(x)`` without gradients at ``batch`` inputs."""
    inputs = x[torch.arange(batch, device=x.device) % x.shape[0]]
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    calls, best = max(1, rows // batch), float("inf")
    with torch.no_grad():
        for _ in range(4):  # the first round warms up
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                model(inputs)
            sync()
            best = min(best, (time.perf_counter() - start) / (calls * batch))
    return best


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.weights, device)
    x, source = load_inputs(args.data, args.images, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    seeds = image_seeds(torch.Generator().manual_seed(0), args.images)
    options = {"passes": args.passes, "grid_size": args.grid_size}
    clock = Clock(model, device)
    log = lambda text: print(text, flush=True)  # noqa: E731
    log(f"mask search on {args.images} images ({source}); {args.weights} LeNet on {device}; "
        f"torch threads {torch.get_num_threads()}; {args.passes} passes per image, grid {args.grid_size}")

    mask_search(model, x[:2], target[:2], seeds=seeds[:2], passes=5, grid_size=args.grid_size)  # warm-up
    rows = []
    batched, seconds, inputs, calls = clock(lambda: mask_search(model, x, target, seeds=seeds, **options))
    rows.append({"config": "mask_search, all chains on the batch axis (default batch_size)",
                 "images": args.images, "seconds": seconds, "inputs": inputs, "calls": calls})
    loop, seconds, inputs, calls = clock(lambda: torch.cat([
        mask_search(model, x[i:i + 1], target[i:i + 1], seeds=seeds[i:i + 1], **options)
        for i in range(args.images)
    ]))
    rows.append({"config": "mask_search, one chain (image) per call", "images": args.images,
                 "seconds": seconds, "inputs": inputs, "calls": calls})
    _, seconds, inputs, calls = clock(lambda: rise(model, x, target, masks=args.passes, grid_size=args.grid_size,
                                                   generator=torch.Generator().manual_seed(0)))
    rows.append({"config": f"rise, masks={args.passes}, same grid (default batch_size)",
                 "images": args.images, "seconds": seconds, "inputs": inputs, "calls": calls})
    for batch in (args.images, 1):
        per_input = forward_seconds_per_input(model, x, batch, max(256, 4 * batch))
        rows.append({"config": f"bound: {args.passes} plain forward passes at batch {batch}", "images": 1,
                     "seconds": per_input * args.passes, "inputs": args.passes, "calls": args.passes // batch})
    loop_per_image = rows[1]["seconds"] / rows[1]["images"]
    for row in rows:
        row["seconds_per_image"] = row["seconds"] / row["images"]
        row["inputs_per_image"] = row["inputs"] / row["images"]
        row["speedup_vs_loop"] = loop_per_image / row["seconds_per_image"]
    gap = (batched - loop).abs().max().item()

    log("\n| configuration | s / image | model inputs / image | model calls | speedup vs one chain at a time |")
    log("|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['config']} | {r['seconds_per_image']:.3f} | {r['inputs_per_image']:.0f} | {r['calls']} | "
            f"{r['speedup_vs_loop']:.2f} |")
    log(f"\nmax |batched - one at a time| over the maps: {gap:.2e} (same seeds; 0 up to the model's "
        f"batch-size-dependent rounding)")
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "load_average": os.getloadavg()}
    report = {"machine": machine, "source": source, "weights": args.weights, "options": options,
              "rows": rows, "max_map_difference_batched_vs_loop": gap}
    if args.out:  # atomically, as every file the project writes
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str)))
    return report


if __name__ == "__main__":
    main()
