"""The chapter kit: what every chapter's first code cell did by hand, once and tested.

``ch = setup("02_relex", globals(), SIZES, within={"sweep_images": "main_images"})`` reads the
parameters cell's values (``profile``, ``device``, ``seed``, any :class:`~..core.experiment.Profile`
field that is not also a chapter size, and every chapter size, ``None`` meaning "the profile's
value"), checks them, seeds everything, joins the torchrun workers when there are several, loads
the CIFAR-10 test set, starts the run record, the claims ledger and the result store, and shows
the run line and the sizes. Statistics for verdicts live in :mod:`reliable_saliency.claims`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from .. import data
from ..claims import Ledger
from ..core import experiment, workers
from ..core.store import ResultStore
from .figures import figure_html, use_book_style
from .tables import table_html
from .rerun import RUN_KEY_ENV

__all__ = ["Chapter", "resolve_sizes", "setup", "store_key"]

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Chapter:
    """A chapter's run: ``S`` its sizes, ``settings`` the profile, ``device``, ``seed``, ``run`` the
    record, ``ledger`` the claims, ``data`` the CIFAR-10 test set, ``store`` the result store of
    its per-image steps (resumable, shared out over torchrun workers)."""

    S: SimpleNamespace
    settings: experiment.Profile
    device: torch.device
    seed: int
    run: experiment.Run
    ledger: Ledger
    data: data.ImageSet
    store: ResultStore
    figures: int = 0
    tables: int = 0

    @property
    def number(self) -> str:
        """The chapter's number as figures and tables name it ("2" for ``02_relex``)."""
        head = self.run.chapter.split("_")[0]
        return str(int(head)) if head.isdigit() else head

    def figure(self, fig, caption: str):
        """Show ``fig`` as the chapter's next numbered figure with ``caption`` (what to see in it);
        closes it. Refuses a figure whose text would shrink below 9 pt in the content column."""
        from IPython.display import HTML, display

        self.figures += 1
        label = f"Figure {self.number}.{self.figures}"
        display(HTML(figure_html(fig, label, caption, f"figure-{self.number}-{self.figures}")))

    def table(self, frame, caption: str, **options):
        """Show ``frame`` as the chapter's next numbered table (options: ``digits``, ``formats``,
        ``missing``, ``index``; see :func:`~.tables.table_html`)."""
        from IPython.display import HTML, display

        self.tables += 1
        label = f"Table {self.number}.{self.tables}"
        display(HTML(table_html(frame, label, caption, f"table-{self.number}-{self.tables}", **options)))

    def generator(self) -> torch.Generator:
        """A fresh generator on the chapter's device, seeded with the chapter's seed."""
        return torch.Generator(device=self.device).manual_seed(self.seed)


def resolve_sizes(sizes: dict, profile: str, given: dict, within: dict | None = None) -> SimpleNamespace:
    """The sizes of ``profile`` from ``sizes`` (profile -> {name: default}), each replaced by the
    parameter of the same name in ``given`` unless that is ``None``. Every profile must name the
    same sizes; ``within`` maps a size to the size it is taken from (``{"sweep_images":
    "main_images"}``: the sweep uses the first main images), checked."""
    if profile not in sizes:
        raise ValueError(f"this chapter has no sizes for profile {profile!r}; choose one of {list(sizes)}")
    names = set(sizes[profile])
    for other, table in sizes.items():
        if set(table) != names:
            raise ValueError(f"SIZES[{other!r}] names {sorted(set(table) ^ names)} differently from "
                             f"SIZES[{profile!r}]: every profile must set the same sizes")
    S = SimpleNamespace(**{name: default if given.get(name) is None else given[name]
                           for name, default in sizes[profile].items()})
    for part, whole in (within or {}).items():
        if getattr(S, part) > getattr(S, whole):
            raise ValueError(f"{part} = {getattr(S, part)} is taken from the first {whole} = {getattr(S, whole)}: "
                             f"ask for at most {getattr(S, whole)} (or raise {whole})")
    return S


def store_key(chapter: str, settings: experiment.Profile, S: SimpleNamespace, seed: int) -> str:
    """The result store's folder for this run: the runner's run key (source, library, checkpoints,
    profile, parameters) when the chapter runs through ``reliable-saliency run``; otherwise (plain
    papermill, nbval) a hash of the chapter's source, the library, the profile, the sizes and the seed."""
    if os.environ.get(RUN_KEY_ENV):
        return os.environ[RUN_KEY_ENV]
    source = PROJECT_ROOT / "notebooks" / f"{chapter}.py"
    key = {"chapter": chapter, "library": experiment.library_hash(imported_by=source) if source.exists()
           else experiment.library_hash(), "profile": dataclasses.asdict(settings),
           "sizes": vars(S), "seed": seed,
           "source": hashlib.sha256(source.read_bytes()).hexdigest() if source.exists() else ""}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def setup(chapter: str, namespace: dict, sizes: dict | None = None, *, within: dict | None = None,
          other_data: str = "", show: bool = True) -> Chapter:
    """Everything a chapter needs before its first experiment (module docstring); ``other_data``
    names, by kind, data the chapter reads besides the CIFAR-10 test set (for its provenance)."""
    own = set().union(*(table for table in (sizes or {}).values()))  # a chapter size wins over a profile field
    profile_fields = {f.name for f in dataclasses.fields(experiment.Profile)} - {"name"} - own
    settings = experiment.resolve_profile(namespace["profile"], **{
        name: namespace[name] for name in profile_fields if namespace.get(name) is not None})
    S = resolve_sizes(sizes or {settings.name: {}}, settings.name, namespace, within)
    workers.active()  # under torchrun: join the group before the first shared step
    device = experiment.pick_device(workers.local_device(namespace.get("device", "auto")))
    seed = namespace.get("seed", 0)
    experiment.seed_everything(seed)
    use_book_style()
    test_set = data.load_cifar10("test")
    source = f"{test_set.source}; {other_data}" if other_data else test_set.source
    run = experiment.start_run(chapter, settings, device, source, seed)
    store = ResultStore(experiment.cache_dir("results", chapter), store_key(chapter, settings, S, seed))
    ch = Chapter(S, settings, device, seed, run, Ledger(run), test_set, store)
    if show:
        from IPython.display import HTML, display

        display(HTML(run_box(run, S)))
    return ch


def run_box(run: experiment.Run, S: SimpleNamespace) -> str:
    """A folded box: the run's profile, device and seed in its title; provenance and every size inside."""
    import html

    d = run.as_dict()
    rows = [("data", d["data"]), ("software", f"reliable_saliency {d['library']} (sources {d['sources']}, git "
                                              f"{d['git']}), torch {d['torch']}, python {d['python']}"),
            ("threads", d["threads"]), ("started", d["started"])]
    rows += [(name, value) for name, value in vars(S).items()]
    body = "".join(f'<tr><td style="text-align:left;padding-right:1em"><code>{html.escape(str(k))}</code></td>'
                   f'<td style="text-align:left">{html.escape(str(v))}</td></tr>' for k, v in rows)
    return (f'<details class="run-box"><summary>This run: profile <b>{d["profile"]}</b>, {d["device"]}, seed '
            f'{d["seed"]} (its sizes and provenance; the rerun box at the end has the command)</summary>'
            f"<table>{body}</table></details>")
