"""Time and peak memory of one training step with paper E's regularisers (its Table 2): cross-entropy,
l2 + cosd and the Hessian regulariser on the LeNet with Softplus(beta=3), as ratios to cross-entropy.

Run from the repository root::

    python -m benchmarks.regulariser_cost [--steps 5] [--batch-size 128] [--device cpu|cuda]
        [--threads T] [--no-memory] [--out FILE.json]

A step is what ``training.train`` does per batch: forward, ``regularised_loss`` (cross-entropy plus
the penalty), backward, gradient-norm clip 0.5, Adam step; random CIFAR-shaped images. The methods
are timed round-robin (one step of each in turn, after a warm-up step each) so that load on a
shared machine hits them alike; the median step time is reported. Peak memory: on CUDA the peak
allocated during one step above what was allocated before it; on the CPU (Linux) the growth of the
peak resident set size of a fresh process over two steps, the peak reset after setup (approximate:
the allocator's caching counts, and so does Adam's state, the same for every method).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from reliable_saliency import models
from reliable_saliency.core.experiment import atomic_write
from reliable_saliency.training.regularisers import Regulariser, regularised_loss

METHODS = {
    "ce": None,
    "l2_cosd": Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0),
    "hessian": Regulariser("hessian", lambda_hessian=1e-3),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--child-memory", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    return args


def make_step(method: str, device: torch.device, batch_size: int):
    """A closure running one training step of ``method`` (fixed random batch, fresh model)."""
    torch.manual_seed(0)
    model = models.build("lenet", softplus_beta=3.0).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=4e-5)
    data = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8, generator=data)
    x = model.input_space.normalize(images.to(device))
    y = torch.randint(0, 10, (batch_size,), generator=data).to(device)
    generator = torch.Generator(device=device).manual_seed(2)

    def step():
        loss = regularised_loss(model, x, y, METHODS[method], generator=generator).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimiser.step()

    return step, model, x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(device: torch.device, batch_size: int, steps: int) -> dict[str, list[float]]:
    runners = {name: make_step(name, device, batch_size)[0] for name in METHODS}
    for run in runners.values():  # warm-up
        run()
    times = {name: [] for name in METHODS}
    for _ in range(steps):
        for name, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def peak_memory(method: str, device: torch.device, batch_size: int, threads: int | None) -> int:
    """Bytes of peak memory one step of ``method`` adds (see the module docstring)."""
    if device.type == "cuda":
        step, _, _ = make_step(method, device, batch_size)
        step()  # Adam's state exists from here on, as in training
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    command = [sys.executable, "-m", "benchmarks.regulariser_cost", "--child-memory", method,
               "--batch-size", str(batch_size)] + (["--threads", str(threads)] if threads else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child_memory(method: str, batch_size: int) -> None:
    step, model, x = make_step(method, torch.device("cpu"), batch_size)
    with torch.no_grad():
        model(x)  # kernels and buffers that every method needs
    # Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0), so that the peak of importing
    # torch does not hide the step's own peak.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    step()
    step()
    print(json.dumps({"peak_bytes": (_status_kib("VmHWM") - before) * 1024}))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        _child_memory(args.child_memory, args.batch_size)
        return {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available")
    print(f"LeNet Softplus(3), batch {args.batch_size}, {args.steps} timed steps per method on {device}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    times = time_steps(device, args.batch_size, args.steps)
    rows = {name: {"seconds_per_step": statistics.median(t), "all_seconds": t} for name, t in times.items()}
    if not args.no_memory:
        for name in METHODS:
            rows[name]["peak_bytes"] = peak_memory(name, device, args.batch_size, args.threads)
    base = rows["ce"]
    for row in rows.values():
        row["time_ratio"] = row["seconds_per_step"] / base["seconds_per_step"]
        if "peak_bytes" in row:
            row["memory_ratio"] = row["peak_bytes"] / max(base["peak_bytes"], 1)
    print("| method | s / step | x CE | peak MiB | x CE |\n|---|---|---|---|---|")
    for name, row in rows.items():
        memory = (f"{row['peak_bytes'] / 2**20:.0f} | {row['memory_ratio']:.2f}" if "peak_bytes" in row
                  else "- | -")
        print(f"| {name} | {row['seconds_per_step']:.3f} | {row['time_ratio']:.2f} | {memory} |")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    result = {
        "device": str(device), "device_name": name, "batch_size": args.batch_size, "steps": args.steps,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "memory_method": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS growth (approximate)",
        "rows": rows,
    }
    if args.out is not None:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return result


if __name__ == "__main__":
    main()
