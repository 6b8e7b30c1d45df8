"""Result stores shipped with the book: a chapter's finished shards, packed into ``book/results``.

The arena at ``book`` takes hours of CPU; its shards (:class:`..core.store.ResultStore`) are packed
into ``book/results/<chapter>/<store key>/<step>.tar.xz`` with a sidecar (``<store key>.json``:
each archive's sha256, the shards, what computed them). ``reliable-saliency run`` unpacks them into the
cache before it executes the chapter, so a fresh checkout re-executes the page from the shipped
table in minutes, and an interrupted run can be carried to another machine. Nothing is trusted by
name alone: the store key is a hash of the code behind the numbers and every step's folder a hash
of its settings, images and model weights, so a shipped shard is read only by the run that would
have computed it; a changed harness gets a new key and computes afresh. Shards are tensors read
with ``weights_only=True``; the archive is checked against its sha256 and every member's name
against the store's layout before anything is written, and files already in the cache are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import time
from pathlib import Path

from ..core.experiment import atomic_write, cache_dir

__all__ = ["SHIPPED_RESULTS", "pack_results", "unpack_results", "ShippedResultsError"]

SHIPPED_RESULTS = Path(__file__).resolve().parents[3] / "book" / "results"  # in a checkout
_NAME = r"[A-Za-z0-9_.-]+"
_MEMBER = re.compile(rf"({_NAME})/({_NAME})/shard-\d{{5}}-of-\d{{5}}\.pt")


class ShippedResultsError(RuntimeError):
    """A shipped archive is damaged, does not match its sidecar, or holds something other than shards."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(kind: str, name: str) -> str:
    if not re.fullmatch(_NAME, name or "") or name in (".", ".."):
        raise ValueError(f"{kind} must be letters, digits, '.', '_' or '-', got {name!r}")
    return name


def pack_results(chapter: str, key: str, *, cache: Path | None = None, ship: Path = SHIPPED_RESULTS,
                 note: str = "") -> Path:
    """Pack the finished shards of ``cache/results/<chapter>/<key>`` (default cache:
    ``$RELIABLE_SALIENCY_CACHE``) into ``ship/<chapter>/<key>/<step>.tar.xz``, one archive per step
    (small files; a step packed again gives the same bytes, so git keeps it once), with the sidecar
    ``ship/<chapter>/<key>.json``; older keys of the chapter (which no run reads) are removed.
    ``note``: how the shards were computed, kept in the sidecar. Returns the sidecar's path."""
    _check_name("chapter", chapter)
    _check_name("key", key)
    source = Path(cache or cache_dir()) / "results" / chapter / key
    shards = sorted(p for p in source.glob("*/shard-*.pt") if _MEMBER.fullmatch(f"{key}/{p.parent.name}/{p.name}"))
    if not shards:
        present = sorted(p.name for p in source.parent.iterdir()) if source.parent.is_dir() else []
        raise FileNotFoundError(f"no finished shards under {source}; the store keys of {chapter} in this cache: "
                                f"{', '.join(present) or 'none'}")
    folder = Path(ship) / chapter
    steps: dict[str, list[Path]] = {}
    for path in shards:
        steps.setdefault(path.parent.name, []).append(path)
    archives = {}
    for step, paths in steps.items():
        def write(tmp: Path, paths=paths, step=step) -> None:
            with tarfile.open(tmp, "w:xz", preset=6) as tar:
                for path in paths:  # sorted, owner and time fixed: the same shards give the same archive
                    info = tarfile.TarInfo(f"{key}/{step}/{path.name}")
                    info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                    with path.open("rb") as f:
                        tar.addfile(info, f)

        atomic_write(folder / key / f"{step}.tar.xz", write)
        archives[step] = _sha256(folder / key / f"{step}.tar.xz")
    for stale in (folder / key).glob("*.tar.xz"):
        if stale.name[:-7] not in archives:
            stale.unlink()
    sidecar = {"chapter": chapter, "key": key, "shards": len(shards), "steps": len(archives),
               "bytes_unpacked": sum(p.stat().st_size for p in shards),
               "packed": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": note, "sha256": archives}
    atomic_write(folder / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(sidecar, indent=1) + "\n"))
    for old in folder.glob("*.json"):
        if old.stem != key:
            old.unlink()
            shutil.rmtree(folder / old.stem, ignore_errors=True)
    return folder / f"{key}.json"


def unpack_results(chapter: str, *, cache: Path | None = None, ship: Path = SHIPPED_RESULTS) -> int:
    """Unpack every archive shipped for ``chapter`` into ``cache/results/<chapter>/``, keeping the
    files already there; returns how many shards were written (0 when nothing is shipped)."""
    _check_name("chapter", chapter)
    folder = Path(ship) / chapter
    target = Path(cache or cache_dir()) / "results" / chapter
    written = 0
    for side in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        meta = json.loads(side.read_text())
        if meta.get("key") != side.stem or meta.get("chapter") != chapter or not isinstance(meta.get("sha256"), dict):
            raise ShippedResultsError(f"{side} names chapter {meta.get('chapter')!r}, key {meta.get('key')!r}; "
                                      f"expected {chapter!r}, {side.stem!r} and a sha256 per step: pack it again")
        for step, digest in sorted(meta["sha256"].items()):
            archive = folder / side.stem / f"{_check_name('step', step)}.tar.xz"
            if not archive.exists() or _sha256(archive) != digest:
                raise ShippedResultsError(f"{archive} is missing or does not match the sha256 in {side.name} (damaged, "
                                          f"or a Git LFS pointer?): restore it from the repository, or delete the "
                                          f"sidecar and its folder to compute the chapter's results afresh")
            with tarfile.open(archive, "r:xz") as tar:
                members = tar.getmembers()
                for m in members:  # every name checked before anything is written
                    found = _MEMBER.fullmatch(m.name)
                    if not m.isfile() or not found or found.group(1) != side.stem or found.group(2) != step:
                        raise ShippedResultsError(f"{archive}: member {m.name!r} is not a shard of step {step} of "
                                                  f"store {side.stem} (expected {side.stem}/{step}/shard-NNNNN-of-NNNNN.pt); "
                                                  "not unpacked")
                for m in members:
                    path = target / m.name
                    if path.exists():
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data = tar.extractfile(m).read()
                    atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
                    written += 1
    return written
