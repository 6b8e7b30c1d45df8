"""Where a chapter keeps the arena's results: a key of the code behind them, not of the chapter.

A chapter's own result store is keyed by its run key, which hashes the chapter's source: a
rewording of the page would throw away hours of stored shards. :func:`store_key` hashes instead the
library modules :mod:`.harness` imports, directly or through others (the same static closure a run
key uses, :func:`..core.experiment.library_hash`), so the stored table is read back when only the
prose changed and computed afresh when any code behind a number changed. Everything else a number
depends on (the settings, the images, each model's weights, the perturbations) is in every stored
step's own parameters (:func:`.harness.run_arena`), so a run with other settings never reads them.

The imports below are absolute on purpose: the closure is read from this file's import statements.
"""

from __future__ import annotations

from pathlib import Path

from reliable_saliency.arena import harness
from reliable_saliency.core.experiment import library_hash

__all__ = ["store_key", "HASHED"]

HASHED = harness.__name__  # the module whose import closure the key hashes (read from the imports above)


def store_key(prefix: str = "arena") -> str:
    """``"<prefix>-<12 hex digits>"``: the hash of the harness's import closure (module docstring)."""
    return f"{prefix}-{library_hash(imported_by=Path(__file__))}"
