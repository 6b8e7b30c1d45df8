"""Runs a part of the toy arena in its own process for the resume test and pickles the table.

    python arena_worker.py ROOT OUT [--sleep SECONDS] [--localisation]

directly or under ``torchrun`` (the first worker writes the table). ``--sleep`` makes every
explainer x model shard wait first, so a test can kill the process while some shards are written
and others are not."""

from __future__ import annotations

import argparse
import time

import torch

from arena_toy import toy_data, toy_models, toy_settings
from reliable_saliency.arena import harness
from reliable_saliency.core import workers

EXPLAINERS = ["gradient", "smoothgrad", "random_map"]
PERTURBATIONS = ["random_sign", "pgd", "topk", "dombrowski"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--localisation", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.sleep:
        compute = harness.pair_shard

        def slow(*a, **k):
            time.sleep(args.sleep)
            return compute(*a, **k)

        harness.pair_shard = slow
    models = toy_models()
    x, y = toy_data(models)
    table = harness.run_arena(toy_settings(), root=args.root, key="toy", models=models, data=(x, y),
                              explainers=EXPLAINERS, perturbations=PERTURBATIONS, localisation=args.localisation)
    if workers.is_main():
        table.to_pickle(args.out)
    workers.shutdown()


if __name__ == "__main__":
    main()
