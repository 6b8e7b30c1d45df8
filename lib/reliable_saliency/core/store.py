"""A result store for per-image work: computed in shards, each shard written atomically once, read
back on every later run, shared out over the workers of :mod:`.workers`.

``store.compute("relex-clean", fn, n, params={...})`` splits images ``0 .. n-1`` into shards of
``shard_size``, calls ``fn(start, stop)`` for each shard that is not on disk yet (the result's first
axis is the image: a tensor or a flat dict of tensors), writes it under
``<root>/<key>/<step>-<hash of params, n, shard size>/`` and returns all shards assembled. A run
killed half way loses at most the shards in flight; the next run computes only the missing ones.
With several workers (``torchrun``), the missing shards are dealt out in turn (worker r takes the
r-th, the (r + workers)-th, ...), all meet at a barrier and every worker reads the assembled result from the shared folder; a worker's error
is written beside the shard and raised by every worker, naming the shard, its images and the error.

The results must not depend on how images are grouped (per-image seeds do this for every
stochastic method of the library), so 1 and N workers give the same numbers.

Format: torch's own files, read back with ``weights_only=True`` (tensors and plain containers
only, no arbitrary code): no new dependency, every dtype, dicts of tensors; safetensors would add a
pin for the same guarantees on flat dicts only.
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from . import workers
from .experiment import atomic_torch_save, atomic_write

__all__ = ["ResultStore", "ShardError"]

Result = torch.Tensor | dict[str, torch.Tensor]


class ShardError(RuntimeError):
    """A shard failed (or its file is damaged): which shard, which images, which worker, why."""


def _params_hash(params: dict, n: int, shard_size: int) -> str:
    def plain(value):  # what JSON cannot write: the same text in every process and on every run
        if isinstance(value, torch.Tensor):  # in full (repr abbreviates long ones)
            return {"tensor": str(value.dtype), "shape": list(value.shape), "values": value.tolist()}
        if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
            return {"numpy": str(getattr(value, "dtype", "")), "values": value.tolist()}
        if isinstance(value, (set, frozenset)):  # iteration order varies between processes
            return {"set": sorted(json.dumps(v, sort_keys=True, default=plain) for v in value)}
        text = repr(value)
        if " at 0x" in text:
            raise TypeError(f"store params: {text} names a memory address, which changes on every run, so the "
                            f"step would never resume; pass its settings as plain values")
        return text

    text = json.dumps({"params": params, "n": n, "shard_size": shard_size}, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _checked(result, step: str, start: int, stop: int) -> dict[str, torch.Tensor] | torch.Tensor:
    items = result.items() if isinstance(result, dict) else [("", result)]
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"step {step!r} must return a tensor or a dict of tensors per shard, got "
                            f"{type(value).__name__}{' for ' + repr(name) if name else ''}")
        if value.ndim == 0 or value.shape[0] != stop - start:
            raise ValueError(f"step {step!r} returned {tuple(value.shape)}{' for ' + repr(name) if name else ''} for "
                             f"images {start}..{stop - 1}: the first axis must be the {stop - start} images")
    if isinstance(result, dict):
        return {k: v.detach().cpu() for k, v in result.items()}
    return result.detach().cpu()


class ResultStore:
    """Per-image results of one chapter run under ``root/key`` (module docstring)."""

    def __init__(self, root: str | Path, key: str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key or ""):
            raise ValueError(f"the store key must be letters, digits, '.', '_' or '-', got {key!r}")
        self.folder = Path(root) / key

    def compute(self, step: str, fn: Callable[[int, int], Result], n: int, *, params: dict | None = None,
                shard_size: int = 16, progress: bool = True) -> Result:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", step):
            raise ValueError(f"a step name must be letters, digits, '.', '_' or '-', got {step!r}")
        if not isinstance(n, int) or n < 1 or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"n and shard_size must be positive ints, got n={n!r}, shard_size={shard_size!r}")
        folder = self.folder / f"{step}-{_params_hash(params or {}, n, shard_size)}"
        folder.mkdir(parents=True, exist_ok=True)
        spans = [(i, a, min(a + shard_size, n)) for i, a in enumerate(range(0, n, shard_size))]
        path = lambda i: folder / f"shard-{i:05d}-of-{len(spans):05d}.pt"  # noqa: E731
        me, count = workers.rank(), workers.world_size()
        missing = [s for s in spans if not path(s[0]).exists()]
        workers.barrier()  # every worker lists the same missing shards before any is written, and
        todo = missing[me::count]  # shares them out evenly (a resumed run may miss one worker's shards only)
        for i, start, stop in tqdm(todo, desc=f"{step} (worker {me + 1}/{count})", disable=not progress or not todo):
            error_file = folder / f"shard-{i:05d}.error.json"
            error_file.unlink(missing_ok=True)
            try:
                atomic_torch_save(_checked(fn(start, stop), step, start, stop), path(i))
            except Exception as error:  # reported below by every worker, with the shard it belongs to
                if count == 1:
                    raise ShardError(f"step {step!r}, shard {i} (images {start}..{stop - 1}) failed: {error!r}") from error
                record = {"shard": i, "images": [start, stop - 1], "worker": me, "error": repr(error),
                          "traceback": traceback.format_exc()}
                atomic_write(error_file, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        workers.barrier()
        errors = [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*.error.json"))]
        if errors:
            said = "; ".join(f"shard {e['shard']} (images {e['images'][0]}..{e['images'][1]}) on worker {e['worker']}: "
                             f"{e['error']}" for e in errors)
            raise ShardError(f"step {step!r}: {len(errors)} shard(s) failed: {said}")
        return self._assemble(step, [path(i) for i, _, _ in spans])

    @staticmethod
    def _assemble(step: str, paths: list[Path]) -> Result:
        parts = []
        for p in paths:
            if not p.exists():
                raise ShardError(f"step {step!r}: {p.name} is missing after every worker finished; a worker died "
                                 f"without an error (killed?): run again to compute what is missing")
            try:
                parts.append(torch.load(p, map_location="cpu", weights_only=True))
            except Exception as error:
                raise ShardError(f"step {step!r}: {p} is damaged ({error!r}); delete it and run again") from error
        if isinstance(parts[0], dict):
            return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
        return torch.cat(parts)
