"""Execute one chapter notebook with papermill at a profile: ``python -m reliable_saliency.chapter.run``.

    python -m reliable_saliency.chapter.run notebooks/00_data_and_models.ipynb book/chapters \\
        --profile book -p eval_images 200 -p device cuda

The output notebook is written only when the run succeeds (atomically), so a failed run never
leaves a half-executed chapter in the book. The chapter's claims ledger goes to ``claims/`` beside
the output folder (``book/chapters`` -> ``book/claims``), through ``$RELIABLE_SALIENCY_CLAIMS_DIR``.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

from ..claims import CLAIMS_DIR_ENV
from .rerun import RERUN_COMMAND_ENV
from ..core.experiment import PROFILES, atomic_write

__all__ = ["main", "claims_dir_for", "count_figures", "publishable"]


def claims_dir_for(chapters_dir: Path) -> Path:
    """Where the claims of chapters executed into ``chapters_dir`` go: its sibling ``claims/``."""
    return Path(chapters_dir).resolve().parent / "claims"


def count_figures(notebook) -> int:
    """PNG figures among a notebook's outputs; every chapter draws some, so none means a broken
    plotting backend (a non-inline MPLBACKEND)."""
    return sum("image/png" in output.get("data", {})
               for cell in notebook["cells"] for output in cell.get("outputs", []))


def publishable(notebook) -> None:
    """Tags for the book, set in place: the default ``parameters`` cell is removed (the injected
    values stay visible), every other code cell's input is folded behind a toggle unless the cell
    is tagged ``show-input``, so prose and results come first."""
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
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


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="paired notebook, e.g. notebooks/00_data_and_models.ipynb")
    parser.add_argument("output_dir", type=Path, help="where the executed notebook goes, e.g. book/chapters")
    parser.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a chapter parameter (value parsed as a Python literal)")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        parser.error(f"{args.notebook} does not exist (run `make notebooks` to create the paired .ipynb)")
    import nbformat
    import papermill

    parameters = {"profile": args.profile, **{name: _literal(value) for name, value in args.parameter}}
    output = args.output_dir / args.notebook.name
    started = time.perf_counter()
    print(f"executing {args.notebook} -> {output} with {parameters}", flush=True)
    os.environ[CLAIMS_DIR_ENV] = str(claims_dir_for(args.output_dir))  # inherited by the kernel
    extra = " ".join(f"-p {name} {value}" for name, value in args.parameter)
    os.environ[RERUN_COMMAND_ENV] = (f"make chapter NB={args.notebook.stem} PROFILE={args.profile}"
                                     + (f' ARGS="{extra}"' if extra else ""))

    def execute(tmp: Path) -> None:
        executed = papermill.execute_notebook(
            str(args.notebook), str(tmp), parameters=parameters, cwd=str(args.notebook.parent),
            progress_bar=False, report_mode=False,
        )
        figures = count_figures(executed)
        if figures == 0:
            raise no_figure_error(args.notebook.name)
        # papermill records absolute paths of this machine; the published chapter names files only
        executed.metadata.papermill.update(input_path=args.notebook.name, output_path=output.name)
        publishable(executed)
        nbformat.write(executed, str(tmp))
        print(f"{args.notebook.name}: {figures} figures", flush=True)

    atomic_write(output, execute)
    print(f"{args.notebook.name}: {time.perf_counter() - started:.1f} s at profile {args.profile}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
