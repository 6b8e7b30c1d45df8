"""Profiles (how big a run is), seeding, device choice, provenance and atomic file writes.

Every chapter resolves its sizes through :func:`resolve_profile`, so ``smoke`` / ``book`` /
``paper`` mean the same thing everywhere, and starts with :func:`provenance`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__

__all__ = [
    "Profile",
    "PROFILES",
    "resolve_profile",
    "seed_everything",
    "pick_device",
    "library_hash",
    "provenance",
    "cache_dir",
    "atomic_write",
    "atomic_torch_save",
]


@dataclass(frozen=True)
class Profile:
    """Sizes shared by every chapter. Chapters may override single fields (papermill parameters)."""

    name: str
    eval_images: int  # test images per evaluation (accuracy, maps, attacks)
    imagenet_images: int  # ImageNet sample images used
    mc_samples: int  # SmoothGrad / VarGrad noise samples, RelEx noisy copies
    ig_steps: int  # Integrated Gradients steps
    attack_steps: int  # iterations of attacks on explanations
    pgd_steps: int  # PGD iterations when evaluating robustness
    figure_images: int  # images shown in figures


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", eval_images=64, imagenet_images=24, mc_samples=8, ig_steps=8,
                     attack_steps=5, pgd_steps=10, figure_images=4),
    "book": Profile("book", eval_images=1000, imagenet_images=1000, mc_samples=50, ig_steps=50,
                    attack_steps=100, pgd_steps=10, figure_images=6),
    "paper": Profile("paper", eval_images=10000, imagenet_images=1000, mc_samples=50, ig_steps=100,
                     attack_steps=300, pgd_steps=10, figure_images=8),
}


def resolve_profile(name: str, **overrides) -> Profile:
    """The named profile with the given fields replaced; ``None`` overrides are ignored, so a
    chapter's parameters cell can default every knob to ``None`` ("take it from the profile")."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown profile fields {sorted(unknown)}; valid: {sorted(fields)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"profile field {key} must be a positive int, got {value!r}")
    return dataclasses.replace(PROFILES[name], **given)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA raises."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def library_hash() -> str:
    """sha256 (12 hex digits) over the library's Python sources: which code produced a result."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(profile: Profile | str, device, data_source: str, seed: int) -> str:
    """One line naming everything that produced a chapter's numbers."""
    name = profile.name if isinstance(profile, Profile) else profile
    return (
        f"profile={name} | device={device} | data={data_source} | seed={seed} | "
        f"reliable_saliency {__version__} (sources {library_hash()}, git {_git_commit()}) | "
        f"torch {torch.__version__} | python {platform.python_version()}"
    )


def cache_dir(*parts: str) -> Path:
    """``$RELIABLE_SALIENCY_CACHE`` (default ``~/.cache/reliable_saliency``) / parts, created."""
    root = Path(os.environ.get("RELIABLE_SALIENCY_CACHE", Path.home() / ".cache" / "reliable_saliency"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
