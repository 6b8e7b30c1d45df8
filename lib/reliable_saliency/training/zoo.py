"""A zoo of named model recipes that train on first use and cache their checkpoints.

A recipe = architecture + dataset + training settings per profile. ``load_model(name, profile)``
returns the trained model, training it if no valid checkpoint exists. Checkpoints live under
``experiment.cache_dir("zoo")`` with a JSON sidecar holding their sha256, the recipe, the data
source and the training history; they are written atomically, loaded with ``weights_only=True``
and verified. Interrupted training resumes from the last finished epoch.

Ready checkpoints (same file names, with their sidecars) are looked for after the cache in the
folders of ``$RELIABLE_SALIENCY_CHECKPOINTS`` (separated by ``:``), then in the book's own
``book/checkpoints`` of this checkout, found without any variable. A model about to be *trained*
(no checkpoint anywhere) says so first, with its size and a rough time; ``train=False`` makes that
an error instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data as datasets
from .. import models
from ..core.experiment import atomic_write, cache_dir, resolve_profile
from .loops import TrainConfig, evaluate
from .loops import train as fit
from .regularisers import Regulariser

__all__ = ["Recipe", "RECIPES", "load_model", "checkpoint_path", "find_checkpoint", "verified_sidecar", "file_sha256",
           "CorruptCheckpointError", "NoCheckpointError", "CHECKPOINTS_ENV", "SHIPPED_CHECKPOINTS",
           "checkpoint_folders", "before_training"]

CHECKPOINTS_ENV = "RELIABLE_SALIENCY_CHECKPOINTS"
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[3] / "book" / "checkpoints"  # in a checkout
PROFILE_HELP = ("'book' (the book's models; their checkpoints ship in book/checkpoints), 'smoke' (tiny models "
                "for tests, trained in seconds) or 'paper' (the papers' sizes, for a GPU)")


class CorruptCheckpointError(RuntimeError):
    """A cached checkpoint does not match its recorded sha256 or cannot be read."""


class NoCheckpointError(FileNotFoundError):
    """No checkpoint was found and training was not allowed (``train=False``)."""


@dataclass(frozen=True)
class Recipe:
    """How to make one model. ``epochs`` and ``train_images`` map a profile name to a size
    (``train_images`` None = the whole training split); a recipe without a profile's size is not
    meant for that profile. ``lr_drop_epochs`` (profile -> epochs), when given, replaces
    ``lr_drop_fraction``. ``regulariser`` is paper E's penalty, ``grad_clip`` the gradient-norm
    clip."""

    architecture: str
    dataset: str
    epochs: dict
    train_images: dict
    description: str
    adversary: str | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_drop_fraction: float | None = 0.8  # x0.1 at this fraction of the epochs
    softplus_beta: float | None = None
    eps: float = 8 / 255
    pgd_steps: int = 7
    pgd_alpha: float = 2 / 255
    seed: int = 0
    # Fields added after the first shipped checkpoints: hashed into the checkpoint name only when
    # they differ from their defaults (LATER_FIELDS), so the existing names stay valid.
    regulariser: Regulariser | None = None
    grad_clip: float | None = None
    lr_drop_epochs: dict | None = None

    def lr_drops(self, profile: str) -> tuple[int, ...]:
        """The epochs at which the learning rate drops x0.1 at ``profile``."""
        epochs = self.size(profile, "epochs")
        if self.lr_drop_epochs is not None:
            return tuple(self.lr_drop_epochs[profile])
        if self.lr_drop_fraction is not None and round(self.lr_drop_fraction * epochs) < epochs:
            return (round(self.lr_drop_fraction * epochs),)
        return ()

    def size(self, profile: str, what: str):
        """``epochs`` or ``train_images`` at ``profile``, or a clear error if the recipe lacks it."""
        sizes = getattr(self, what)
        if profile not in sizes:
            raise ValueError(
                f"this recipe ({self.description}) has no {profile!r} profile; it is meant for "
                f"{sorted(sizes)}"
            )
        return sizes[profile]

    def train_config(self, profile: str) -> TrainConfig:
        return TrainConfig(
            epochs=self.size(profile, "epochs"), lr=self.lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, lr_drop_epochs=self.lr_drops(profile), grad_clip=self.grad_clip,
            adversary=self.adversary, eps=self.eps, pgd_steps=self.pgd_steps, pgd_alpha=self.pgd_alpha,
            seed=self.seed, regulariser=self.regulariser,
        )


LATER_FIELDS = ("regulariser", "grad_clip", "lr_drop_epochs")


_SIZES = dict(
    epochs={"smoke": 1, "book": 6, "paper": 30},
    train_images={"smoke": 4096, "book": None, "paper": None},
)
RECIPES: dict[str, Recipe] = {
    "lenet_natural": Recipe(
        "lenet", "cifar10", **_SIZES,
        description="paper E's LeNet (ReLU), cross-entropy, Adam 1e-3, crop+flip",
    ),
    "lenet_fgsm": Recipe(
        "lenet", "cifar10", adversary="fgsm_rs",
        epochs={"smoke": 1, "book": 5, "paper": 30}, train_images=_SIZES["train_images"],
        description="paper E's LeNet (ReLU), FGSM adversarial training with random start "
                    "(Wong et al. 2020), eps 8/255, step 10/255",
    ),
    "lenet_pgd": Recipe(
        "lenet", "cifar10", adversary="pgd",
        epochs={"smoke": 1, "book": 3, "paper": 30},
        train_images={"smoke": 512, "book": 25000, "paper": None},
        description="paper E's LeNet (ReLU), PGD-7 adversarial training, eps 8/255, step 2/255",
    ),
    "lenet_softplus3": Recipe(
        "lenet", "cifar10", softplus_beta=3.0, **_SIZES,
        description="paper E's LeNet with Softplus(beta=3), cross-entropy, Adam 1e-3, crop+flip",
    ),
    "resnet18_natural": Recipe(
        "resnet18", "cifar10", optimizer="adamw", weight_decay=1e-2,
        epochs={"smoke": 1, "book": 4, "paper": 200},
        train_images={"smoke": 512, "book": None, "paper": None},
        description="CIFAR ResNet-18, cross-entropy, AdamW 1e-3 wd 1e-2, crop+flip (meant for a GPU)",
    ),
    "mnist_cnn_natural": Recipe(
        "mnist_cnn", "mnist", epochs={"smoke": 1, "book": 3, "paper": 10},
        train_images={"smoke": 2048, "book": None, "paper": None},
        description="small MNIST CNN, cross-entropy, Adam 1e-3 (needs the MNIST training images)",
    ),
}


def _paper_e_recipes() -> dict[str, Recipe]:
    """Paper E's models (authors' scripts/cifar_lenet.sh, cifar_resnet.sh): Softplus(beta=3)
    everywhere, batch 128, gradient-norm clip 0.5, crop+flip, neighbour eps 4/255. LeNet: Adam 1e-3,
    weight decay 4e-5, 300 epochs with drops at 100 and 150 (``paper``); ``book``: 10 epochs, drop
    at 8 (0.8, as the other recipes); ``smoke``: one epoch of 1024 images. ResNet-18 (``paper`` only, a GPU): AdamW 1e-3, weight decay
    1e-2, 200 epochs, drops at 100 and 150."""
    lenet = dict(
        architecture="lenet", dataset="cifar10", softplus_beta=3.0, weight_decay=4e-5, grad_clip=0.5,
        lr_drop_fraction=None, epochs={"smoke": 1, "book": 10, "paper": 300},
        # smoke: 8 steps, so the five models train in about a minute on 2 CPU cores (regularised
        # steps cost 2-4 cross-entropy steps)
        train_images={"smoke": 1024, "book": None, "paper": None},
        lr_drop_epochs={"smoke": (), "book": (8,), "paper": (100, 150)},
    )
    resnet = dict(
        architecture="resnet18", dataset="cifar10", softplus_beta=3.0, optimizer="adamw", weight_decay=1e-2,
        grad_clip=0.5, lr_drop_fraction=None, epochs={"paper": 200}, train_images={"paper": None},
        lr_drop_epochs={"paper": (100, 150)},
    )
    penalties = {  # name: (LeNet regulariser, ResNet-18 regulariser, what)
        "ce": (None, None, "cross-entropy only"),
        "hessian": (Regulariser("hessian", lambda_hessian=1e-3), Regulariser("hessian", lambda_hessian=1e-4),
                    "Hessian regulariser (one Hutchinson draw)"),
        "l2": (Regulariser("l2", lambda_l2=0.01), Regulariser("l2", lambda_l2=0.01), "l2 gradient alignment"),
        "cosd": (Regulariser("cosd", lambda_cos=1.0), Regulariser("cosd", lambda_cos=0.1),
                 "cosd gradient alignment"),
        "l2cosd": (Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0),
                   Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=0.1), "l2 + cosd gradient alignment"),
    }

    def weights(reg: Regulariser | None) -> str:
        used = {k: v for k, v in vars(reg).items() if k.startswith("lambda_") and v} if reg else {}
        return "".join(f", {k} {v:g}" for k, v in used.items())

    recipes = {
        f"lenet_sp3_{name}": Recipe(
            **lenet, regulariser=reg,
            description=f"paper E's LeNet with Softplus(beta=3), {what}{weights(reg)}, Adam 1e-3 wd 4e-5, "
                        f"grad clip 0.5, crop+flip",
        ) for name, (reg, _, what) in penalties.items()
    }
    recipes.update({
        f"resnet18_sp3_{name}": Recipe(
            **resnet, regulariser=reg,
            description=f"CIFAR ResNet-18 with Softplus(beta=3), {what}{weights(reg)}, AdamW 1e-3 wd 1e-2, "
                        f"grad clip 0.5, crop+flip (paper profile only, meant for a GPU)",
        ) for name, (_, reg, what) in penalties.items()
    })
    return recipes


RECIPES.update(_paper_e_recipes())


def _train_set(recipe: Recipe, profile: str) -> datasets.ImageSet:
    if recipe.dataset == "cifar10":
        full = datasets.load_cifar10("train")
    elif recipe.dataset == "mnist":
        full = datasets.load_mnist("train")
    else:
        raise ValueError(f"recipe dataset {recipe.dataset!r} is not supported")
    n = recipe.size(profile, "train_images")
    return full if n is None else full.sample(n, seed=recipe.seed)


def _recipe_or_raise(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown zoo recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def checkpoint_path(name: str, profile: str) -> Path:
    """Where the checkpoint of recipe ``name`` at ``profile`` lives. The name hashes the training
    settings and the kind of training data (official files or the offline JPEG copy), not where
    the data sit, so a checkpoint stays valid when the data root moves."""
    recipe = _recipe_or_raise(name)
    resolve_profile(profile)
    if profile not in recipe.epochs:
        raise ValueError(f"zoo recipe {name!r} has no {profile!r} profile; it is meant for {sorted(recipe.epochs)}")
    data_kind, _ = datasets.locate(recipe.dataset, "train")
    settings = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "description"}
    settings.update(epochs=recipe.size(profile, "epochs"), train_images=recipe.size(profile, "train_images"))
    if recipe.lr_drop_epochs is not None:
        settings["lr_drop_epochs"] = list(recipe.lr_drops(profile))
    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)}
    for later in LATER_FIELDS:  # absent at their defaults: the names of older recipes do not change
        if getattr(recipe, later) == defaults[later]:
            del settings[later]
    key = json.dumps({"settings": settings, "profile": profile, "data": data_kind}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_dir("zoo") / f"{name}-{profile}-{digest}.pt"


def checkpoint_folders() -> list[Path]:
    """Where ready checkpoints are looked for after the cache: ``$RELIABLE_SALIENCY_CHECKPOINTS``'s
    folders, then the checkout's ``book/checkpoints`` when there is one."""
    folders = [Path(f) for f in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if f]
    return folders + ([SHIPPED_CHECKPOINTS] if SHIPPED_CHECKPOINTS.is_dir() else [])


def find_checkpoint(path: Path) -> Path | None:
    """The cached checkpoint, else one with the same name in :func:`checkpoint_folders`."""
    if path.exists():
        return path
    for folder in checkpoint_folders():
        if (folder / path.name).exists():
            return folder / path.name
    return None


# Rough minutes per epoch of 50,000 CIFAR-10 images on the book's 2-core CPU (measured for the
# cross-entropy LeNet; the others scaled by their measured cost per step), for the notice below.
_MINUTES_PER_EPOCH = {"lenet": 2.0, "mnist_cnn": 1.5, "resnet18": 60.0, "dcgan": 6.0}
_STEP_COST = {None: 1.0, "none": 1.0, "fgsm_rs": 2.0, "pgd": 5.5, "hessian": 3.0, "l2": 3.0, "cosd": 3.0, "l2_cosd": 3.7}


def before_training(name: str, profile: str, path: Path, *, epochs: int, images: int, cost: float,
                    train: bool) -> None:
    """Say that a model is about to be trained (size, rough time, where a checkpoint was looked for),
    or raise :class:`NoCheckpointError` when ``train`` is False."""
    places = ["the cache ($RELIABLE_SALIENCY_CACHE/zoo)"] + [
        "the book's book/checkpoints" if f == SHIPPED_CHECKPOINTS else f"{CHECKPOINTS_ENV} folder {f.name}"
        for f in checkpoint_folders()]
    said = (f"no checkpoint {path.name} of zoo recipe {name!r} at profile {profile!r} in {', '.join(places)}")
    if not train:
        raise NoCheckpointError(f"{said}; train=False forbids training it. Use profile 'book' for the shipped "
                                f"models, point {CHECKPOINTS_ENV} at a folder of checkpoints, or allow training.")
    minutes = cost * epochs * images / 50_000
    rough = "under a minute" if minutes < 1 else f"roughly {minutes:.0f} min"
    print(f"zoo: {said}: training it now ({epochs} epochs on {images:,} images, {rough} on a 2-core CPU, much "
          f"less on a GPU; interrupted training resumes).", flush=True)  # stdout: a notice, not a warning


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verified_sidecar(path: Path, loader: str) -> dict:
    """The sidecar JSON of checkpoint ``path``, after checking that it exists, parses, and records
    the checkpoint's sha256; else :class:`CorruptCheckpointError` saying how to retrain."""
    meta_path = path.with_suffix(".json")
    fix = f"Delete {path} or call {loader}(..., retrain=True) to train it again."
    if not meta_path.exists():
        raise CorruptCheckpointError(f"checkpoint {path} has no sidecar {meta_path.name} with its sha256. {fix}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"the sidecar {meta_path} of checkpoint {path} is not valid JSON ({error}). {fix}") from error
    if not isinstance(meta, dict) or file_sha256(path) != meta.get("sha256"):
        raise CorruptCheckpointError(f"checkpoint {path} does not match its recorded sha256 (damaged or edited). {fix}")
    return meta


def _build(recipe: Recipe) -> nn.Module:
    return models.build(recipe.architecture, softplus_beta=recipe.softplus_beta)


def _load_verified(path: Path, recipe: Recipe) -> tuple[nn.Module, dict]:
    meta = verified_sidecar(path, "load_model")
    model = _build(recipe)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:
        raise CorruptCheckpointError(f"checkpoint {path} could not be loaded as recipe {recipe.architecture!r} "
                                     f"({error}). Delete it or call load_model(..., retrain=True).") from error
    return model, meta


def load_model(
    name: str,
    profile: str | None = None,
    *,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    progress: bool = True,
    train: bool = True,
) -> nn.Module:
    """The trained model of recipe ``name`` at ``profile`` (eval mode, on ``device``): ``"book"``
    gives the book's own models (shipped checkpoints), ``"smoke"`` tiny ones for tests.

    Loads a verified checkpoint (module docstring: where); otherwise trains and caches it, saying so
    first, unless ``train=False`` (then :class:`NoCheckpointError`). ``model.zoo_info`` holds the
    sidecar metadata (sha256, data source, training history and seconds, clean test accuracy).
    """
    recipe = _recipe_or_raise(name)
    if profile is None:
        raise ValueError(f"load_model({name!r}) needs a profile: {PROFILE_HELP}")
    path = checkpoint_path(name, profile)
    found = None if retrain else find_checkpoint(path)
    if found is not None:
        model, meta = _load_verified(found, recipe)
    else:
        images = recipe.size(profile, "train_images") or 50_000
        cost = _MINUTES_PER_EPOCH.get(recipe.architecture, 2.0) * _STEP_COST.get(
            recipe.adversary or (recipe.regulariser.kind if recipe.regulariser else None), 3.0)
        before_training(name, profile, path, epochs=recipe.size(profile, "epochs"), images=images, cost=cost,
                        train=train)
        train_set = _train_set(recipe, profile)
        torch.manual_seed(recipe.seed)  # reproducible initialisation
        model = _build(recipe)
        config = recipe.train_config(profile)
        state_path = path.with_suffix(".partial.pt")
        if retrain:
            state_path.unlink(missing_ok=True)
        started = time.perf_counter()
        result = fit(model, train_set, config, device=device, state_path=state_path, progress=progress)
        model.cpu()
        test_set = datasets.load_cifar10("test") if recipe.dataset == "cifar10" else datasets.load_mnist("test")
        atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
        meta = {
            "recipe": name, "profile": profile, "description": recipe.description,
            "settings": dataclasses.asdict(recipe), "data_source": train_set.source,
            "train_images": len(train_set), "history": result.history,
            "train_seconds": time.perf_counter() - started, "resumed_from_epoch": result.resumed_from_epoch,
            "test_accuracy": evaluate(model, test_set), "test_source": test_set.source,
            "torch": torch.__version__, "sha256": file_sha256(path),
        }
        atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
        state_path.unlink(missing_ok=True)
    model.zoo_info = meta
    return model.to(device).eval()
