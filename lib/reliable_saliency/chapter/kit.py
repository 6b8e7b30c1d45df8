"""The chapter kit: what every chapter's first code cell did by hand, once and tested.

``ch = setup("02_relex", globals(), SIZES, within={"sweep_images": "main_images"})`` reads the
parameters cell's values (``profile``, ``device``, ``seed``, any :class:`~..core.experiment.Profile`
field that is not also a chapter size, and every chapter size, ``None`` meaning "the profile's
value"), checks them, seeds
everything, loads the CIFAR-10 test set, starts the run record and the claims ledger, and shows
the run line and the sizes. Statistics for verdicts live in :mod:`reliable_saliency.claims`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .. import data
from ..claims import Ledger
from ..core import experiment
from .figures import use_book_style

__all__ = ["Chapter", "resolve_sizes", "setup"]


@dataclass
class Chapter:
    """A chapter's run: ``S`` its sizes, ``settings`` the profile, ``device``, ``seed``, ``run`` the
    record, ``ledger`` the claims, ``data`` the CIFAR-10 test set."""

    S: SimpleNamespace
    settings: experiment.Profile
    device: torch.device
    seed: int
    run: experiment.Run
    ledger: Ledger
    data: data.ImageSet

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


def setup(chapter: str, namespace: dict, sizes: dict | None = None, *, within: dict | None = None,
          other_data: str = "", show: bool = True) -> Chapter:
    """Everything a chapter needs before its first experiment (module docstring); ``other_data``
    names, by kind, data the chapter reads besides the CIFAR-10 test set (for its provenance)."""
    own = set().union(*(table for table in (sizes or {}).values()))  # a chapter size wins over a profile field
    profile_fields = {f.name for f in dataclasses.fields(experiment.Profile)} - {"name"} - own
    settings = experiment.resolve_profile(namespace["profile"], **{
        name: namespace[name] for name in profile_fields if namespace.get(name) is not None})
    S = resolve_sizes(sizes or {settings.name: {}}, settings.name, namespace, within)
    device = experiment.pick_device(namespace.get("device", "auto"))
    seed = namespace.get("seed", 0)
    experiment.seed_everything(seed)
    use_book_style()
    test_set = data.load_cifar10("test")
    source = f"{test_set.source}; {other_data}" if other_data else test_set.source
    run = experiment.start_run(chapter, settings, device, source, seed)
    ch = Chapter(S, settings, device, seed, run, Ledger(run), test_set)
    if show:
        from IPython.display import Markdown, display

        display(Markdown(f"**Run:** {run.line()}"))
        if vars(S):
            display(Markdown("**Sizes:** " + ", ".join(f"`{k}` = {v}" for k, v in vars(S).items())))
    return ch
