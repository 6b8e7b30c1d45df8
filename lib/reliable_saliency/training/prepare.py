"""Load (or train, once) the zoo models a set of chapters needs, and say how long it took.

    python -m reliable_saliency.training.prepare smoke lenet_natural lenet_fgsm dcgan_cifar10 --budget 240

``make test`` runs this before the chapters, so a cold cache's training is counted here, apart
from the chapters' own times, against a stated budget (exceeding it is reported, not an error:
a slower machine is not a broken book).
"""

from __future__ import annotations

import argparse
import sys
import time

from .gan import GAN_RECIPES, load_gan
from .zoo import load_model

__all__ = ["prepare", "main"]


def prepare(profile: str, names: list[str]) -> dict[str, float]:
    """Seconds per model to load or train each of ``names`` (zoo or GAN recipes) at ``profile``."""
    seconds = {}
    for name in names:
        started = time.perf_counter()
        if name in GAN_RECIPES:
            load_gan(name, profile, progress=False)
        else:
            load_model(name, profile, progress=False)
        seconds[name] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--budget", type=float, default=None, help="seconds the whole preparation should take")
    args = parser.parse_args(argv)
    seconds = prepare(args.profile, args.names)
    total = sum(seconds.values())
    for name, s in seconds.items():
        print(f"models: {name} ({args.profile}) ready in {s:.1f} s")
    verdict = "" if args.budget is None else (
        f" (budget {args.budget:.0f} s: {'within' if total <= args.budget else 'OVER'})")
    print(f"models: {len(seconds)} {args.profile} models ready in {total:.1f} s{verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
