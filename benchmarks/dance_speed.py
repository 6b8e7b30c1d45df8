"""Time DANCE (paper B) on the book's LeNet: all decoys of all images batched, against a loop over
patch positions and against a bound made of plain forward/backward passes.

Run from the repository root::

    python -m benchmarks.dance_speed [--images 2] [--device cpu|cuda] [--stride 6] [--steps 20]
        [--weights random|book] [--data random|cifar10] [--threads T] [--out FILE.json]

Measured in one process, on the same model and images (CIFAR-10-shaped, 3x32x32), gradient base:

- ``batched``: ``explainers.dance`` on all N images in one call (decoys of all positions, signs and
  images solved as one batch, then the base explainer on all decoys), at the default
  ``batch_size`` and at the bound's best batch size; the decoys and the base maps are also timed
  apart (``make_decoys``, then ``dance(decoys=...)``);
- ``loop``: one patch position at a time (``make_decoys(positions=[p])`` for the N images, then
  the gradient of its 2N decoys), the range kept as a running max / min; the script checks that
  it gives the batched map;
- ``bound``: plain ``autograd.grad`` passes at several batch sizes, the best time per input:
  forward+backward through the whole model for the base maps, forward+backward and forward only
  through ``model.features`` (the default decoy layer is its last module) for the decoy solver,
  each times the passes DANCE made (counted with forward pre-hooks).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from reliable_saliency.core.batching import resolve_batch_size
from reliable_saliency.core.experiment import atomic_write
from reliable_saliency.explainers import dance, gradient
from reliable_saliency.explainers.decoys import make_decoys, patch_positions

from .compare_peers import load_inputs

BATCH_SIZES = {"cpu": (16, 32, 64, 128, 256), "cuda": (256, 1024, 4096)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stride", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weights", choices=("random", "book"), default="random")
    parser.add_argument("--data", choices=("auto", "random", "cifar10"), default="random")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def load_model(weights: str, device) -> torch.nn.Module:
    if weights == "book":
        from reliable_saliency.training.zoo import load_model as zoo_load

        return zoo_load("lenet_natural", "book", progress=False).to(device)
    from reliable_saliency.models import build

    torch.manual_seed(0)
    return build("lenet").to(device)


class Counter:
    """Inputs entering a module (forward pre-hook)."""

    def __init__(self, module):
        self.rows = 0
        self.handle = module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.rows += args[0].shape[0]


def timed(fn, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def per_input(net, x, backward: bool, repeats=3) -> dict[int, float]:
    """Best seconds per input of plain passes through ``net`` (with the input gradient if ``backward``)."""
    sizes = BATCH_SIZES["cuda" if x.device.type == "cuda" else "cpu"]
    rows = 2 * max(sizes)
    pool = x[torch.arange(max(sizes), device=x.device) % x.shape[0]].detach()
    result = {}
    for b in sizes:
        batches, best = max(1, rows // b), float("inf")
        for _ in range(repeats + 1):  # the first round warms up
            def run():
                for _ in range(batches):
                    leaf = pool[:b].clone().requires_grad_(backward)
                    with torch.set_grad_enabled(backward):
                        out = net(leaf)
                        if backward:
                            torch.autograd.grad(out.flatten(1)[:, 0].sum(), leaf)
            best = min(best, timed(run, x.device)[1] / (batches * b))
        result[b] = best
    return result


def loop_over_positions(model, x, target, options, batch_size):
    """The range, one patch position at a time (all images per position)."""
    grid = patch_positions(x.shape[-2], x.shape[-1], 3, options["stride"])
    high = low = None
    for corner in grid:
        decoys = make_decoys(model, x, positions=corner[None], batch_size=batch_size, **options)
        rows = decoys.valid.flatten().nonzero()[:, 0]
        maps = gradient(model, decoys.images(x, rows), target[rows // 2], batch_size=batch_size)
        full = torch.full((x.shape[0] * 2, *x.shape[1:]), float("nan"), device=x.device).index_copy(0, rows, maps)
        full = full.view(x.shape[0], 2, *x.shape[1:])
        top, bottom = full.nan_to_num(-float("inf")).amax(1), full.nan_to_num(float("inf")).amin(1)
        high = top if high is None else torch.maximum(high, top)
        low = bottom if low is None else torch.minimum(low, bottom)
    return high - low


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.weights, device)
    x, source = load_inputs(args.data, args.images, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    options = {"stride": args.stride, "steps": args.steps}
    log = lambda text: print(text, flush=True)  # noqa: E731
    log(f"DANCE (gradient base) on {args.images} images ({source}); {args.weights} LeNet on {device}; "
        f"torch threads {torch.get_num_threads()}; stride {args.stride}, {args.steps} solver steps")

    dance(model, x[:1], target[:1], stride=16, steps=2)  # warm-up
    features, classifier = Counter(model.features), Counter(model.classifier)
    default_b = resolve_batch_size(None, x)
    rows, maps = [], None
    bound_full = per_input(model, x, True)
    for b in dict.fromkeys([None, min(bound_full, key=bound_full.get)]):
        features.rows = classifier.rows = 0
        out, seconds = timed(lambda b=b: dance(model, x, target, batch_size=b, **options), device)
        counts = (features.rows, classifier.rows)
        maps = out if maps is None else maps
        label = f"batched, batch_size={'None (default ' + str(default_b) + ')' if b is None else b}"
        rows.append({"config": label, "seconds": seconds})
        log(f"  {label}: {seconds:.2f} s")
    decoys, decoy_seconds = timed(lambda: make_decoys(model, x, **options), device)
    _, base_seconds = timed(lambda: dance(model, x, target, decoys=decoys), device)
    rows.append({"config": "  of which the decoys (make_decoys)", "seconds": decoy_seconds})
    rows.append({"config": "  of which the base maps (dance with decoys=)", "seconds": base_seconds})
    looped, loop_seconds = timed(lambda: loop_over_positions(model, x, target, options, None), device)
    rows.append({"config": "loop over patch positions (2N decoys per solve)", "seconds": loop_seconds})
    log(f"  loop: {loop_seconds:.2f} s")

    positions, decoys_per_image = decoys.positions.shape[0], decoys.valid[0].numel()
    full_passes, partial = counts[1], counts[0] - counts[1]
    solver_fb = args.images * decoys_per_image * args.steps
    solver_f = partial - solver_fb
    bound_fb_features = per_input(model.features, x, True)
    bound_f_features = per_input(model.features, x, False)
    best = {name: min(values.values()) for name, values in
            (("full_fwd_bwd", bound_full), ("features_fwd_bwd", bound_fb_features), ("features_fwd", bound_f_features))}
    bound = (full_passes * best["full_fwd_bwd"] + solver_fb * best["features_fwd_bwd"]
             + solver_f * best["features_fwd"])
    rows.append({"config": "bound: counted passes x best plain pass", "seconds": bound})
    for row in rows:
        row["seconds_per_image"] = row["seconds"] / args.images
        row["x_bound"] = row["seconds"] / bound
        row["loop_over_this"] = loop_seconds / row["seconds"]
    gap = float((looped - maps).abs().max() / maps.abs().max())
    log(f"\n{positions} positions, {decoys_per_image} decoys per image; passes per image: "
        f"{solver_fb / args.images:.0f} fwd+bwd and {solver_f / args.images:.0f} fwd to the layer (solver), "
        f"{full_passes / args.images:.0f} fwd+bwd of the whole model (base maps, checks)")
    log("best plain pass per input: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in best.items()))
    log("\n| configuration | s / image | x bound | loop / this |")
    log("|---|---|---|---|")
    for r in rows:
        log(f"| {r['config']} | {r['seconds_per_image']:.3f} | {r['x_bound']:.2f} | {r['loop_over_this']:.2f} |")
    log(f"\nloop vs batched map: max |difference| / max |map| = {gap:.1e}")
    machine = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "load_average": os.getloadavg()}
    report = {"machine": machine, "source": source, "weights": args.weights, "options": options,
              "images": args.images, "positions": positions, "passes": {"full_fwd_bwd": full_passes,
              "solver_fwd_bwd": solver_fb, "solver_fwd": solver_f}, "best_pass_seconds": best,
              "rows": rows, "loop_vs_batched_relative_difference": gap}
    if args.out:  # atomically, as every file the project writes
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str)))
    return report


if __name__ == "__main__":
    main()
