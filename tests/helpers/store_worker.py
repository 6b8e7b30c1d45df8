"""A worker for the result-store tests, run directly or under torchrun: per-image seeded random
"maps" for N images through ResultStore.compute; each computed shard is logged (one line per
shard and worker) so a test can count what was recomputed.

    python store_worker.py ROOT OUT [--n 40] [--shard 4] [--sleep 0] [--fail SHARD]
"""

import argparse
import time
from pathlib import Path

import torch

from reliable_saliency.core import workers
from reliable_saliency.core.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--shard", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail", type=int, default=-1)
    args = parser.parse_args()
    log = Path(args.root) / "computed.log"

    def maps(start: int, stop: int) -> dict:
        if start // args.shard == args.fail:
            raise ValueError("this shard fails on purpose")
        time.sleep(args.sleep)
        with log.open("a") as f:
            f.write(f"{start // args.shard} {workers.rank()}\n")
        rows = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1000 + i)) for i in range(start, stop)]
        return {"maps": torch.stack(rows), "index": torch.arange(start, stop)}

    result = ResultStore(args.root, "run-key").compute("maps", maps, args.n, params={"seed": 1000},
                                                       shard_size=args.shard, progress=False)
    if workers.is_main():
        torch.save(result, args.out)
    workers.shutdown()


if __name__ == "__main__":
    main()
