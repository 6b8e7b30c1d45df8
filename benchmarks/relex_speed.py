"""Time RelEx (paper A) on the book's LeNet: batched over images against a one-image-at-a-time loop
and against a bound made of plain forward/backward passes.

Run from the repository root::

    python -m benchmarks.relex_speed [--images 8] [--device cpu|cuda] [--iterations 50]
        [--samples 50] [--loop-images K] [--weights random|book] [--threads T] [--out FILE.json]

Measured in one process, on the same model and images (CIFAR-10-shaped, 3x32x32):

- ``batched``: ``explainers.relex`` on all N images in one call (authors' defaults), at our default
  ``batch_size`` and at the bound's best batch size;
- ``loop``: the authors' style, one image per call, each iteration two passes of ``samples`` copies
  (``batch_size=samples``), on the first K images with the same per-image seeds (the masks agree
  with the batched ones up to rounding that the optimisation amplifies: the script prints the gap);
- ``bound``: plain ``model(x)`` + ``autograd.grad`` w.r.t. the input at several batch sizes; the best
  time per input times the image-passes RelEx needs (``2 * samples * iterations`` per image).

Model inputs are counted with a forward pre-hook. Each RelEx configuration runs once after a
short warm-up (each run is long); the bound is measured before and after them (best of both).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from reliable_saliency.core.batching import image_seeds, resolve_batch_size
from reliable_saliency.core.experiment import atomic_write
from reliable_saliency.explainers import relex

from .compare_peers import load_inputs

BOUND_BATCH_SIZES = (8, 16, 32, 64, 128, 256)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--loop-images", type=int, default=None, help="images in the loop (default all)")
    parser.add_argument("--weights", choices=("random", "book"), default="random",
                        help="random LeNet (seed 0) or zoo lenet_natural at the book profile (trains if absent)")
    parser.add_argument("--data", choices=("auto", "random", "cifar10"), default="random")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BOUND_BATCH_SIZES)))
    parser.add_argument("--bound-rows", type=int, default=512, help="inputs per bound measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each bound size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    return parser.parse_args(argv)


def load_model(weights: str, device: torch.device) -> torch.nn.Module:
    if weights == "book":
        from reliable_saliency.training.zoo import load_model as zoo_load

        return zoo_load("lenet_natural", "book", device=device, progress=False).to(device)
    from reliable_saliency.models import build

    torch.manual_seed(0)
    return build("lenet").to(device)


class Clock:
    """Wall time of a call (device synchronised) and the model inputs it evaluates."""

    def __init__(self, model, device):
        self.model, self.device, self.rows = model, device, 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.rows += args[0].shape[0]

    def __call__(self, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.rows, start = 0, time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out, time.perf_counter() - start, self.rows


def bound_per_input(model, x, sizes, total_rows, repeats) -> dict[int, float]:
    """Best seconds per input of plain forward + input-gradient passes, per batch size."""
    pool = x[torch.arange(max(sizes), device=x.device) % x.shape[0]]
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    result = {}
    for b in sizes:
        batches = max(1, -(-total_rows // b))
        inputs = pool[:b].detach()
        best = float("inf")
        for _ in range(repeats + 1):  # the first round warms up
            sync()
            start = time.perf_counter()
            for _ in range(batches):
                leaf = inputs.clone().requires_grad_(True)
                torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
            sync()
            best = min(best, (time.perf_counter() - start) / (batches * b))
        result[b] = best
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.weights, device)
    x, source = load_inputs(args.data, args.images, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    passes = 2 * args.samples * args.iterations  # per explained image
    options = {"iterations": args.iterations, "samples": args.samples}
    seeds = image_seeds(torch.Generator().manual_seed(0), args.images)
    clock = Clock(model, device)
    log = lambda text: print(text, flush=True)  # noqa: E731
    log(f"RelEx on {args.images} images ({source}); {args.weights} LeNet on {device}; "
        f"torch threads {torch.get_num_threads()}; {passes} image-passes per image")

    bound_before = bound_per_input(model, x, sizes, args.bound_rows, args.repeats)
    relex(model, x[:1], target[:1], seeds=seeds[:1], iterations=2, samples=args.samples)  # warm-up
    default_b = resolve_batch_size(None, x)
    best_b = min(bound_before, key=bound_before.get)
    rows = []
    batched = None
    for b in dict.fromkeys([None, best_b]):
        masks, seconds, count = clock(lambda b=b: relex(model, x, target, seeds=seeds, batch_size=b, **options))
        batched = masks if batched is None else batched
        label = f"batched, batch_size={'None (default ' + str(default_b) + ')' if b is None else b}"
        rows.append({"config": label, "images": args.images, "seconds": seconds, "passes": count})
        log(f"  {label}: {seconds:.2f} s")
    loop_n = min(args.loop_images or args.images, args.images)
    loop_masks, loop_seconds, loop_count = clock(lambda: torch.cat([
        relex(model, x[i:i + 1], target[i:i + 1], seeds=seeds[i:i + 1], batch_size=args.samples, **options)
        for i in range(loop_n)
    ]))
    rows.append({"config": f"loop, one image per call, batch_size={args.samples}", "images": loop_n,
                 "seconds": loop_seconds, "passes": loop_count})
    log(f"  loop: {loop_seconds:.2f} s")
    bound_after = bound_per_input(model, x, sizes, args.bound_rows, args.repeats)
    bound = {b: min(bound_before[b], bound_after[b]) for b in sizes}
    best_b = min(bound, key=bound.get)
    bound_image = passes * bound[best_b]
    rows.append({"config": f"bound: {passes} fwd+bwd passes at batch {best_b}", "images": 1,
                 "seconds": bound_image, "passes": passes})
    loop_per_image = loop_seconds / loop_n
    for row in rows:
        row["seconds_per_image"] = row["seconds"] / row["images"]
        row["passes_per_image"] = row["passes"] / row["images"]
        row["x_bound"] = row["seconds_per_image"] / bound_image
        row["speedup_vs_loop"] = loop_per_image / row["seconds_per_image"]
    gap = (batched[:loop_n] - loop_masks).abs()
    difference = {"max": gap.max().item(), "mean": gap.mean().item()}

    log("\nbound, seconds per input (fwd+bwd): " + ", ".join(f"b{b} {bound[b] * 1e3:.3f} ms" for b in sizes))
    log("\n| configuration | s / image | image-passes / image | x bound | speedup vs loop |")
    log("|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['config']} | {r['seconds_per_image']:.3f} | {r['passes_per_image']:.0f} | "
            f"{r['x_bound']:.2f} | {r['speedup_vs_loop']:.2f} |")
    log(f"\n|batched - loop| over the masks of {loop_n} images: max {difference['max']:.2e}, mean "
        f"{difference['mean']:.2e} (0 where the model's per-row arithmetic does not depend on the "
        f"batch size; otherwise rounding amplified by the optimisation, e.g. CUDA float32)")
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    report = {"machine": machine, "source": source, "weights": args.weights,
              "options": options, "bound_seconds_per_input": bound, "rows": rows,
              "mask_difference_batched_vs_loop": difference, "load_average": os.getloadavg()}
    if args.out:  # atomically, as every file the project writes
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str)))
    return report


if __name__ == "__main__":
    main()
