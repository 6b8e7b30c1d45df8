"""Time paper C's reliability measure batched over images against a one-image-at-a-time loop.

Run from the repository root::

    python -m benchmarks.reliability_speed [--images 32] [--repeats 3] [--threads T]
        [--batch-size B] [--methods bisection,coarse_to_fine] [--device cpu|cuda] [--no-tf32]

The book's LeNet (random weights: only the timing matters) on CIFAR-shaped random images; labels
are the model's predictions and the maps are gradient maps post-processed as the authors did
(:func:`reliability_maps`). Per method, the batched call (all images x 4 variants x permutations on
the batch axis) and a loop that calls the measure on one image at a time (its 22 rows still share
a pass) are run in interleaved rounds after a warm-up; the median times, their ratio and the
model inputs evaluated per image are printed, beside the bound: plain forward passes over the same
number of inputs in passes of the same size. The unshuffled budgets (Rel, Irel) of the two runs
are compared, in units of the search tolerance (shuffled ones use other permutations in the loop);
on a GPU, TF32 convolutions (PyTorch's default) move the flip points of near-tied logits with the
batch composition, ``--no-tf32`` turns them off.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reliable_saliency.core.batching import chunk_ranges, resolve_batch_size
from reliable_saliency.evaluation.reliability import adversarial_reliability, reliability_maps
from reliable_saliency.explainers import get_explainer
from reliable_saliency.models import build


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device):
    _sync(device)
    start = time.perf_counter()
    result = function()
    _sync(device)
    return time.perf_counter() - start, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--methods", default="bisection,coarse_to_fine")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-tf32", action="store_true", help="full float32 convolutions on CUDA")
    args = parser.parse_args(argv)
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = build("lenet").to(device)
    images = torch.rand(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = model.input_space.normalize(images)
    x = x.to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    maps = reliability_maps(get_explainer("gradient"), model, x, target)
    bs = resolve_batch_size(args.batch_size, x)
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"threads {torch.get_num_threads()}, {args.images} CIFAR-shaped images, LeNet (random "
          f"weights), {bs} model inputs per pass{', TF32 on' if tf32 else ''}")
    print("| method | batched s | per-image loop s | loop / batched | forward bound s | batched / bound | "
          "ms per image (batched) | model inputs per image | max Rel, Irel gap / tolerance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        def batched():
            return adversarial_reliability(model, x, maps, target, method=method, batch_size=args.batch_size,
                                           generator=torch.Generator().manual_seed(0))

        def loop():
            return [adversarial_reliability(model, x[i : i + 1], maps[i : i + 1], target[i : i + 1],
                                            method=method, batch_size=args.batch_size,
                                            generator=torch.Generator().manual_seed(i))
                    for i in range(args.images)]

        whole, parts = batched(), loop()  # warm-up, and the results compared
        inputs = int(whole.model_passes.sum())
        probe = x.repeat(-(-bs // args.images), 1, 1, 1)[:bs]

        def bound():
            with torch.no_grad():
                for start, stop in chunk_ranges(inputs, bs):
                    model(probe[: stop - start] + 0.01)

        times = {"batched": [], "loop": [], "bound": []}
        for _ in range(args.repeats):
            times["batched"].append(_timed(batched, device)[0])
            times["loop"].append(_timed(loop, device)[0])
            times["bound"].append(_timed(bound, device)[0])
        t_b, t_l = statistics.median(times["batched"]), statistics.median(times["loop"])
        t_0 = statistics.median(times["bound"])
        one = torch.cat([torch.stack([p.rel, p.irel], 1) for p in parts])
        both = torch.stack([whole.rel, whole.irel], 1)
        finite = torch.isfinite(one) & torch.isfinite(both)
        gap = float((one - both)[finite].abs().max()) if bool(finite.any()) else 0.0
        passes = whole.model_passes.double().mean().item()
        print(f"| {method} | {t_b:.3f} | {t_l:.3f} | {t_l / t_b:.2f}x | {t_0:.3f} | {t_b / t_0:.2f}x | "
              f"{1000 * t_b / args.images:.1f} | {passes:.0f} | {gap / whole.tolerance:.1f} |")


if __name__ == "__main__":
    main()
