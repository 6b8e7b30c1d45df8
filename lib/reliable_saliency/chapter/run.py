"""Execute one chapter notebook with papermill at a profile: ``python -m reliable_saliency.chapter.run``.

    python -m reliable_saliency.chapter.run notebooks/00_data_and_models.ipynb book/chapters \\
        --profile book -p eval_images 200 -p device cuda

The output notebook is written only when the run succeeds (atomically), so a failed run never
leaves a half-executed chapter in the book. The chapter's claims ledger goes to ``claims/`` beside
the output folder (``book/chapters`` -> ``book/claims``), through ``$RELIABLE_SALIENCY_CLAIMS_DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

from ..claims import CLAIMS_DIR_ENV
from .parameters import ParameterError, check_overrides, read_parameters
from .rerun import RERUN_COMMAND_ENV, RUN_KEY_ENV
from .shipped_results import SHIPPED_RESULTS, ShippedResultsError, unpack_results
from ..core.experiment import PROFILES, atomic_write, library_hash

__all__ = ["main", "execute_chapter", "run_key", "checkpoints_hash", "recorded_run_key", "claims_dir_for", "count_figures", "publishable"]


def claims_dir_for(chapters_dir: Path) -> Path:
    """Where the claims of chapters executed into ``chapters_dir`` go: its sibling ``claims/``."""
    return Path(chapters_dir).resolve().parent / "claims"


def count_figures(notebook) -> int:
    """Figures among a notebook's outputs (the kit's captioned figures and bare PNG outputs); every
    chapter draws some, so none means a broken plotting backend (a non-inline MPLBACKEND)."""
    def is_figure(data: dict) -> bool:
        html = data.get("text/html", "")
        return "image/png" in data or 'class="book-figure"' in ("".join(html) if isinstance(html, list) else html)
    return sum(is_figure(output.get("data", {})) for cell in notebook["cells"] for output in cell.get("outputs", []))


# the kernel's temporary file of a cell, as a warning raised from the cell names it
KERNEL_CELL_FILE = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s:'\"]*ipykernel_\d+[\\/]\d+\.py")


EXPECTED_WARNING = "expected-warning"  # tag of a cell whose stderr output is part of what it shows


def stderr_cells(notebook) -> list[int]:
    """Indices of code cells that printed to stderr (a warning, a debug print) without the
    ``expected-warning`` tag: a published chapter shows none."""
    return [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
            and EXPECTED_WARNING not in cell.get("metadata", {}).get("tags", [])
            and any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.get("outputs", []))]


def uncaptioned_cells(notebook) -> list[int]:
    """Indices of code cells that show a bare image (a figure not passed through ``ch.figure``):
    a published figure has a number and a caption."""
    return [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
            and any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))]


def publishable(notebook) -> None:
    """Prepared for the book, in place: the default ``parameters`` cell is removed (the injected
    values stay visible), every other code cell's input is folded behind a toggle unless the cell
    is tagged ``show-input``, so prose and results come first; printed output names a cell's
    kernel file (``/tmp/ipykernel_<pid>/<n>.py`` in a warning) as ``<cell>``, not by this
    machine's path."""
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
                output["text"] = KERNEL_CELL_FILE.sub("<cell>", text)
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags:
            wanted = "remove-cell"
        elif "injected-parameters" in tags or "show-input" in tags:
            continue
        else:
            wanted = "hide-input"
        if wanted not in tags:
            tags.append(wanted)


def no_figure_error(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name} produced no figure; is MPLBACKEND set to a non-inline backend "
        f"(it is {os.environ.get('MPLBACKEND')!r})? Unset it and run again."
    )


def run_key(notebook: Path, profile: str, values: dict) -> str:
    """What a chapter's result depends on, hashed (16 hex digits): its source (the py:percent file
    when there is one), the sources of the library modules it imports (directly or through other
    modules: ``library_hash(imported_by=...)``), the shipped checkpoints (their sidecars, which
    carry each weight file's sha256), the profile and the parameters. The data are named by kind in
    the chapter's provenance, not hashed: the offline copies and the official files are read-only."""
    source = notebook.with_suffix(".py") if notebook.with_suffix(".py").exists() else notebook
    key = {"source": hashlib.sha256(source.read_bytes()).hexdigest(), "library": library_hash(imported_by=source),
           "checkpoints": checkpoints_hash(), "profile": profile,
           "parameters": {k: repr(v) for k, v in sorted(values.items())}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def checkpoints_hash(folder: Path | None = None) -> str:
    """sha256 (12 hex digits) over the sidecars of the checkpoints a chapter loads (each sidecar names
    its weight file's sha256, so a new weight file changes it): for every checkpoint shipped in
    ``folder`` (default: the checkout's ``book/checkpoints``) or in ``$RELIABLE_SALIENCY_CHECKPOINTS``,
    the copy the zoo would load (the cache first, as :func:`..training.zoo.find_checkpoint`), so a
    model retrained into the cache changes the key. Models that exist only in the cache are trained
    from their recipe (part of the library's hash), not hashed here."""
    from ..training import zoo

    folders = [Path(folder) if folder else zoo.SHIPPED_CHECKPOINTS, *zoo.checkpoint_folders()]
    names = sorted({p.name for f in folders if f.is_dir() for p in f.glob("*.json") if p.name != "README.json"})
    digest = hashlib.sha256()
    for name in names:
        loaded = zoo.find_checkpoint(zoo.cache_dir("zoo") / Path(name).with_suffix(".pt").name)
        sidecar = loaded.with_suffix(".json") if loaded is not None else None
        if sidecar is None or not sidecar.exists():  # a sidecar without weights: hash what is there
            sidecar = next(f / name for f in folders if (f / name).exists())
        digest.update(name.encode())
        digest.update(sidecar.read_bytes())
    return digest.hexdigest()[:12]


def recorded_run_key(executed: Path) -> str | None:
    """The run key stored in an executed chapter, or None (missing, unreadable or older)."""
    try:
        return json.loads(Path(executed).read_text())["metadata"]["reliable_saliency"]["run_key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def execute_chapter(notebook: Path, output_dir: Path, profile: str = "smoke",
                    overrides: dict[str, str] | None = None, *, if_changed: bool = False) -> Path:
    """Check ``overrides`` (parameter name -> command-line text) against the chapter's parameters
    cell, then execute ``notebook`` at ``profile`` into ``output_dir`` (written on success only).
    With ``if_changed``, a chapter already executed with the same :func:`run_key` is kept as it is
    (``make book`` after an interruption redoes only what changed). Before executing, the chapter's
    shipped results are unpacked into the cache (:mod:`.shipped_results`)."""
    notebook, output_dir = Path(notebook), Path(output_dir)
    if not notebook.exists():
        raise FileNotFoundError(f"{notebook} does not exist (run `make notebooks` to create the paired .ipynb)")
    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {', '.join(PROFILES)} (got {profile!r})")
    overrides = dict(overrides or {})
    values = check_overrides(read_parameters(notebook), overrides, notebook.stem)
    import nbformat
    import papermill

    parameters = {"profile": profile, **values}
    output = output_dir / notebook.name
    key = run_key(notebook, profile, values)
    if if_changed and recorded_run_key(output) == key:
        print(f"{output} is up to date (run key {key}: same source, library, profile and parameters)", flush=True)
        return output
    unpacked = unpack_results(notebook.stem, ship=SHIPPED_RESULTS)  # by every worker: each has the shards before its store lists them
    if unpacked:
        print(f"{unpacked} result shards of {notebook.stem} unpacked from {SHIPPED_RESULTS / notebook.stem} into the "
              f"cache (the store reads them back and computes what is missing)", flush=True)
    os.environ[RUN_KEY_ENV] = key  # shown in the chapter's provenance box; names the result store's folder
    worker = int(os.environ.get("RANK", "0"))  # under torchrun: worker 0 alone writes the chapter and its claims
    if worker != 0:
        output_dir = Path(tempfile.mkdtemp(prefix=f"worker-{worker}-")) / "chapters"
        output = output_dir / notebook.name
    started = time.perf_counter()
    stale = sorted(output_dir.glob(f".{notebook.stem}.*.tmp.ipynb"))
    if stale:  # atomic_write's temporary of an execution that was killed (not removed: it may be running)
        print(f"note: {', '.join(p.name for p in stale)} in {output_dir} are left by an execution that was killed "
              f"(or is still running); delete them when none is running", flush=True)
    print(f"executing {notebook} -> {output} with {parameters}", flush=True)
    os.environ[CLAIMS_DIR_ENV] = str(claims_dir_for(output_dir))  # inherited by the kernel
    extra = "".join(f" -p {name} {shlex.quote(text)}" for name, text in overrides.items())
    os.environ[RERUN_COMMAND_ENV] = f"./reliable-saliency run {notebook.stem} --profile {profile}{extra}"

    def execute(tmp: Path) -> None:
        executed = papermill.execute_notebook(
            str(notebook), str(tmp), parameters=parameters, cwd=str(notebook.parent),
            progress_bar=False, report_mode=False,
        )
        figures = count_figures(executed)
        if figures == 0:
            raise no_figure_error(notebook.name)
        bare = uncaptioned_cells(executed)
        if bare:
            raise RuntimeError(f"{notebook.name}: cells {bare} show a figure without number or caption; show it with "
                               f"ch.figure(fig, caption) (reliable_saliency.chapter.kit), and close figures you do "
                               f"not show (plt.close)")
        noisy = stderr_cells(executed)
        if noisy:
            raise RuntimeError(f"{notebook.name}: cells {noisy} printed to stderr (a warning or a debug print); a "
                               f"published chapter shows none. Handle or report it in the cell, or tag the cell "
                               f"'{EXPECTED_WARNING}' if the warning is what it shows")
        # papermill records absolute paths of this machine; the published chapter names files only
        executed.metadata.papermill.update(input_path=notebook.name, output_path=output.name)
        executed.metadata["reliable_saliency"] = {"run_key": key}
        publishable(executed)
        nbformat.write(executed, str(tmp))
        print(f"{notebook.name}: {figures} figures", flush=True)

    atomic_write(output, execute)
    print(f"{notebook.name}: {time.perf_counter() - started:.1f} s at profile {profile}", flush=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="paired notebook, e.g. notebooks/00_data_and_models.ipynb")
    parser.add_argument("output_dir", type=Path, help="where the executed notebook goes, e.g. book/chapters")
    parser.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a chapter parameter (a Python literal, or arithmetic such as 8/255)")
    args = parser.parse_args(argv)
    try:
        execute_chapter(args.notebook, args.output_dir, args.profile, dict(args.parameter))
    except (ParameterError, FileNotFoundError, ShippedResultsError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
