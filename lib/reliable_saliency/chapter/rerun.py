"""The "Rerun this chapter" box every chapter ends with, computed at execution time."""

from __future__ import annotations

import html
import os
import platform

import torch
from torch import nn

from ..core.experiment import Run

__all__ = ["RERUN_COMMAND_ENV", "RUN_KEY_ENV", "rerun_box"]

RERUN_COMMAND_ENV = "RELIABLE_SALIENCY_RERUN_COMMAND"  # set by the chapter runner
RUN_KEY_ENV = "RELIABLE_SALIENCY_RUN_KEY"  # the runner's hash of source, library, profile, parameters


def _hardware(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


DATA_NOTE = {
    "CIFAR-10": "CIFAR-10: <code>reliable_saliency.data.load_cifar10(download=True)</code> fetches the "
                "official files into the data root (<code>$RELIABLE_SALIENCY_DATA</code>). The book's numbers "
                "come from a JPEG copy of CIFAR-10 (quality about 75, mean absolute pixel error about 5/255) "
                "read offline, so a rerun on the official files gives slightly different numbers.",
    "ImageNet": "ImageNet: the images are ILSVRC2012 validation images (37, one folder per class) and "
                "one sample per class, resized to a shorter side of 256; a reader puts any ImageNet "
                "images in that layout under <code>imagenet-val-37/</code> or <code>imagenet-samples/</code> "
                "in the data root (ImageNet's terms: research use only).",
}


def rerun_box(run: Run, models: dict[str, nn.Module] | None = None):
    """An HTML box: the exact command that reproduces this run, its wall time, date, hardware,
    threads, the library sources, the data and how a reader gets it, and the sha256 of every zoo
    checkpoint in ``models``."""
    from IPython.display import HTML

    d = run.as_dict()
    command = os.environ.get(RERUN_COMMAND_ENV) or f"make chapter NB={run.chapter} PROFILE={d['profile']}"
    rows = [
        ("command", f"<code>{html.escape(command)}</code>"),
        ("profile, wall time", f"{d['profile']}, {d['wall_seconds'] / 60:.1f} minutes (started {d['started']})"),
        ("hardware", f"{html.escape(_hardware(d['device']))}, {d['threads']} torch threads"),
        ("software", f"reliable_saliency {d['library']} (sources {d['sources']}, git {d['git']}), "
                     f"torch {d['torch']}, python {d['python']}"),
        ("data, seed", f"{html.escape(d['data'])}, seed {d['seed']}"),
    ]
    rows += [("getting the data", note) for name, note in DATA_NOTE.items() if name.lower() in d["data"].lower()]
    if os.environ.get(RUN_KEY_ENV):
        rows.append(("run key", f"{html.escape(os.environ[RUN_KEY_ENV])} (source, library, profile and "
                                f"parameters; <code>make book</code> skips a chapter whose key is unchanged)"))
    for name, model in (models or {}).items():
        info = getattr(model, "zoo_info", None)
        digest = info["sha256"][:16] if info else "not from the zoo"
        rows.append((f"checkpoint {html.escape(name)}", f"sha256 {digest}"))
    body = "".join(f'<tr><td style="text-align:left;padding-right:1em"><b>{k}</b></td>'
                   f'<td style="text-align:left">{v}</td></tr>' for k, v in rows)
    return HTML('<div class="rerun-box" style="border:1px solid #999;border-radius:4px;padding:0.5em 1em">'
                f"<p><b>Rerun this chapter</b></p><table>{body}</table></div>")
