"""Workers through torch.distributed: which worker this process is, how many there are, and a
barrier. A process started by ``torchrun`` (its environment names ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) joins the group on first use; any other process is the one and
only worker, so single-process code needs nothing.

The group uses the gloo backend whatever the device: workers exchange no tensors, only barriers
(results travel through the :mod:`.store` on a shared folder), and gloo works on CPUs and GPUs
alike. A GPU worker uses ``cuda:LOCAL_RANK`` (:func:`local_device`).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["active", "rank", "world_size", "barrier", "local_device", "is_main", "shutdown"]

TIMEOUT = timedelta(hours=2)  # a shard of the paper profile can take long; torchrun ends the group on a crash


def active() -> bool:
    """True in a process that torchrun started with more than one worker (the group is joined)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return True


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The worker that writes what is written once (the executed chapter, its claims)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def local_device(device: str) -> str:
    """``"cuda"`` / ``"auto"`` on a GPU machine -> this worker's own GPU (``cuda:LOCAL_RANK``)."""
    local = os.environ.get("LOCAL_RANK")
    if local is not None and device in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
