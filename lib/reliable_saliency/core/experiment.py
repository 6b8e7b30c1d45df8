"""Profiles (how big a run is), seeding, device choice, provenance and atomic file writes.

Every chapter resolves its sizes through :func:`resolve_profile`, so ``smoke`` / ``book`` /
``paper`` mean the same thing everywhere, and records what produced it with :func:`start_run`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import random
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
    "imported_modules",
    "Run",
    "start_run",
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
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA raises. On CUDA it turns
    TF32 off for convolutions and matrix products (cuDNN uses TF32 convolutions by default on
    Ampere and later): with the defaults, gradient maps of an untrained LeNet on an H100 differed
    from the CPU's by up to 17% of their maximum (cosine 0.9987), too much for the book's checks."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(device)


def library_hash(package: Path | None = None, *, imported_by: Path | None = None) -> str:
    """sha256 (12 hex digits) over the Python sources of the ``reliable_saliency`` package: every
    module (all subpackages), or with ``imported_by`` (a chapter's source) only the modules that
    source imports, directly or through other modules of the package (:func:`imported_modules`),
    so a module the chapter never loads (a new chapter's harness) does not make it stale."""
    package = Path(package) if package else Path(__file__).resolve().parents[1]
    paths = imported_modules(Path(imported_by), package) if imported_by else sorted(package.rglob("*.py"))
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def imported_modules(source: Path, package: Path | None = None) -> list[Path]:
    """The files of ``package`` (``reliable_saliency``) that ``source`` (a ``.py`` file, or a
    notebook's code cells) imports, transitively, in sorted order. Static: every ``import`` statement
    counts, those inside functions too, with the ``__init__`` of each package on the way (importing
    ``a.b.c`` runs ``a`` and ``a.b``). The package has no dynamic imports (a test checks it)."""
    import ast
    import json

    package = Path(package) if package else Path(__file__).resolve().parents[1]
    root = package.name

    def file_of(name: str) -> Path | None:
        parts = name.split(".")[1:]
        for candidate in (package.joinpath(*parts, "__init__.py"), package.joinpath(*parts).with_suffix(".py")):
            if parts or candidate.name == "__init__.py":
                if candidate.is_file():
                    return candidate
        return None

    def name_of(path: Path) -> tuple[str, bool]:
        parts = list(path.relative_to(package).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        return ".".join([root, *(parts[:-1] if is_package else parts)]), is_package

    def imports(code: str, module: str | None, is_package: bool) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if module is None:
                        continue
                    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
        return {name for name in found if name == root or name.startswith(root + ".")}

    source = Path(source)
    if source.suffix == ".ipynb":
        cells = json.loads(source.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    else:
        code = source.read_text()
    seen: set[Path] = set()
    pending = list(imports(code, None, False))
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the packages on the way, then the module itself
            path = file_of(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                pending.extend(imports(path.read_text(), *name_of(path)))
    return sorted(seen)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _named_by_kind(data_source: str) -> str:
    if re.search(r"(^|[\s(])(/[^\s/]+/|~/|[A-Za-z]:\\)", data_source):
        raise ValueError(
            f"data_source {data_source!r} contains a path; name the data by kind (ImageSet.source, "
            f"for example 'offline CIFAR-10 JPEG copy test'), the published book must not show a "
            f"machine's paths"
        )
    return data_source


@dataclass
class Run:
    """What produced a chapter's numbers: profile, device, data (by kind, never a path), seed,
    library sources hash, git commit, versions, start time; :meth:`line` adds the wall time so far."""

    chapter: str
    profile: Profile
    device: str
    data_source: str
    seed: int
    started_at: str
    started: float = field(repr=False)
    sources: str = field(default_factory=lambda: library_hash())  # fixed when the run starts
    git: str = field(default_factory=lambda: _git_commit())

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict:
        return {
            "chapter": self.chapter, "profile": self.profile.name, "device": self.device,
            "data": self.data_source, "seed": self.seed, "library": __version__,
            "sources": self.sources, "git": self.git, "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "started": self.started_at, "wall_seconds": round(self.wall_seconds, 1),
        }

    def line(self) -> str:
        d = self.as_dict()
        return (
            f"profile={d['profile']} | device={d['device']} | data={d['data']} | seed={d['seed']} | "
            f"reliable_saliency {d['library']} (sources {d['sources']}, git {d['git']}) | "
            f"torch {d['torch']} | python {d['python']} | {d['threads']} threads | "
            f"started {d['started']} | wall time {d['wall_seconds']:.0f} s"
        )


def start_run(chapter: str, profile: Profile, device, data_source: str, seed: int) -> Run:
    """Start the record of a chapter run (prints nothing; show ``run.line()``)."""
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile from resolve_profile(), got {type(profile).__name__}")
    return Run(chapter, profile, str(device), _named_by_kind(data_source), int(seed),
               datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), time.perf_counter())


def cache_dir(*parts: str) -> Path:
    """``$RELIABLE_SALIENCY_CACHE`` (default ``~/.cache/reliable_saliency``) / parts, created."""
    root = Path(os.environ.get("RELIABLE_SALIENCY_CACHE", Path.home() / ".cache" / "reliable_saliency"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
