"""The arena's entry point: every explainer against every model and perturbation, on the same
images, through the result store; one long table back.

    table = run_arena("book", root="~/.cache/arena", key="arena-book")

Cells: for each model, one shared step (the random sign noise and PGD's images, explainer-free),
then one step per explainer x model (:func:`.cells.pair_shard`: the clean map and its cost, the
measures that need no perturbation, every perturbation aimed at that explainer, the strength runs
on the first ``strength_images`` images) and one localisation step per explainer on the synthetic
shapes. Each step is sharded over images, so a run fills in incrementally, resumes after a kill
with at most the shards in flight lost, and shares its shards over ``torchrun`` workers.

The table (:data:`COLUMNS`) has one row per image x explainer x model x perturbation x measure.
An explainer that refuses a model (LRP-epsilon has no rule for Softplus) keeps its rows, with NaN
values and the refusal in ``reason``.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..core.store import ResultStore
from ..core.workers import local_device
from ..evaluation.selection import correctly_classified
from .cells import Shared, pair_shard, shared_shard
from .localisation import localise, shapes_images, shapes_model
from .measures import GOALS, randomised_copy
from .perturb import RESTARTABLE, steps_of
from .routes import is_relu, route, scored_explainer
from .settings import (CONTROL_NAMES, EXPLAINERS, HIGHER_IS_BETTER, MODELS, PERTURBATIONS, ArenaSettings,
                       arena_settings, check_names)

__all__ = ["run_arena", "COLUMNS", "measures_of", "load_models", "cifar_images"]

COLUMNS = ["image", "explainer", "model", "perturbation", "measure", "value", "baseline", "baseline_kind",
           "higher_is_better", "control", "aimed", "steps", "restarts", "label_kept", "delta_mean", "delta_max",
           "budget", "attack_value", "plateau", "doubled", "restart", "surrogate_spearman", "attack_seconds",
           "no_gradient", "passes", "seconds", "reason"]
NONE_MEASURES = ("deletion_auc", "insertion_auc", "sigma_rel", "sigma_irel", "retrieval_clean",
                 "retrieval_random_matched", "retrieval_edge_matched", "sanity_spearman", "passes", "seconds")
PERTURBATION_FIELDS = ("label_kept", "delta_mean", "delta_max", "budget", "attack_value", "plateau",
                       "surrogate_spearman", "attack_seconds", "no_gradient")


def measures_of(perturbation: str) -> tuple[str, ...]:
    """The measures the arena reports under ``perturbation`` (``"none"``: without one)."""
    if perturbation == "none":
        return NONE_MEASURES
    own = (GOALS[perturbation],) if perturbation in GOALS else ("prediction_kept",) if perturbation == "pgd" else ()
    return ("topk_intersection", "spearman", "ssim", "retrieval") + own


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _model_digest(model: nn.Module) -> str:
    return _digest(*[v.float() for v in model.state_dict().values()])


def load_models(names, settings: ArenaSettings, *, train: bool = False, device="cpu") -> dict[str, nn.Module]:
    """The zoo's models of the model axis at ``settings.model_profile`` on ``device`` (``train``:
    train a missing checkpoint instead of refusing)."""
    from ..training.zoo import load_model

    return {name: load_model(MODELS[name], settings.model_profile, train=train, progress=False, device=device)
            for name in names}


def cifar_images(models: dict[str, nn.Module], settings: ArenaSettings, device="cpu") -> tuple[Tensor, Tensor]:
    """``settings.images`` CIFAR-10 test images that every model classifies correctly (seeded)."""
    from ..data import load_cifar10

    chosen = correctly_classified(list(models.values()), load_cifar10("test"), settings.images, seed=settings.seed,
                                  device=device)
    return chosen.normalized(device), chosen.labels.to(device)


def _resolve_models(models, settings, train, device) -> dict[str, nn.Module]:
    if isinstance(models, dict):
        if not models:
            raise ValueError("models must name at least one model")
        for name, model in models.items():
            if not isinstance(model, nn.Module) or getattr(model, "input_space", None) is None:
                raise ValueError(f"model {name!r} must be an nn.Module with an input_space (the arena attacks it)")
        return dict(models)
    names = settings.models if models is None else check_names("models", models, tuple(MODELS))
    return load_models(names, settings, train=train, device=device)


def run_arena(profile: str | ArenaSettings = "smoke", *, root: str | Path, key: str = "arena", explainers=None,
              models=None, perturbations=None, data: tuple[Tensor, Tensor] | None = None, localisation: bool = True,
              train_models: bool = False, device: str = "cpu", progress: bool = False, **overrides) -> pd.DataFrame:
    """Run (or read back) the arena at ``profile`` with ``overrides`` of its settings and return
    the long table (:data:`COLUMNS`).

    ``explainers`` / ``perturbations``: names from :data:`.settings.EXPLAINERS` and
    :data:`.settings.PERTURBATIONS` (None: all). ``models``: names of :data:`.settings.MODELS` (the
    zoo's models at the profile's ``model_profile``; None: the profile's ``models``; ``train_models``
    lets the zoo train a missing one) or a dict name -> model. ``data``: normalised images and
    labels (N, C, H, W), (N,) instead of the CIFAR-10 selection. ``localisation``: also run the
    synthetic shapes. ``device``: where the models run (``"cuda"`` under ``torchrun``: each worker
    its own GPU; models given in a dict must already be there). Results live under ``root/key``
    (:class:`..core.store.ResultStore`)."""
    settings = arena_settings(profile, **overrides)
    explainers = check_names("explainers", explainers, EXPLAINERS)
    perturbations = check_names("perturbations", perturbations, PERTURBATIONS)
    store = ResultStore(Path(root).expanduser(), key)
    if data is not None and not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor)
                                 and data[0].dim() == 4 and isinstance(data[1], Tensor)
                                 and data[1].shape == (data[0].shape[0],)):
        raise ValueError("data must be (x, y): normalised images (N, C, H, W) and labels (N,)")
    device = torch.device(local_device(device))
    models = _resolve_models(models, settings, train_models, device)
    x, y = cifar_images(models, settings, device) if data is None else data
    x, y = x.detach().float().to(device), y.long().to(device)
    n = x.shape[0]
    common = {"settings": settings.as_dict(), "images": _digest(x, y), "perturbations": list(perturbations)}
    shard = dict(shard_size=settings.shard_size, progress=progress)
    frames = []
    for model_name, model in models.items():
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        params = {**common, "model": model_name, "weights": _model_digest(model)}
        def noise_and_pgd(a, b, model=model):
            return shared_shard(model, x[a:b], y[a:b], list(range(a, b)), settings)

        stored = store.compute(f"shared-{model_name}", noise_and_pgd, n, params=params, **shard)
        shared = Shared(**{k: v.to(device) for k, v in stored.items()})
        randomised = randomised_copy(model, settings)
        for name in explainers:
            reason = _refusal(name, model, x, y, settings)
            values = {}
            if reason is None:
                def fn(a, b, model=model, name=name, shared=shared, randomised=randomised, classes=classes):
                    part = Shared(**{k: v[a:b] for k, v in vars(shared).items()})
                    nxt = b % n
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="DANCE: .* never satisfied")
                        return pair_shard(name, model, x[a:b], y[a:b], list(range(a, b)), settings, part,
                                          perturbations, (x[nxt:nxt + 1], y[nxt:nxt + 1], nxt), randomised, classes)

                values = store.compute(f"pair-{model_name}-{name}", fn, n, params={**params, "explainer": name},
                                       **shard)
            frames += _rows(values, name, model_name, perturbations, settings, is_relu(model), n, reason)
    if localisation:
        frames += _localisation(explainers, settings, store, progress, device)
    table = pd.concat(frames, ignore_index=True)[COLUMNS]
    for column in ("explainer", "model", "perturbation", "measure", "baseline_kind", "aimed", "reason"):
        table[column] = table[column].astype("category")
    return table


REFUSALS = ("has no rule for",)  # what an explainer says when a model is outside its method (LRP-epsilon: Softplus)


def _refusal(name, model, x, y, settings) -> str | None:
    """Why explainer ``name`` cannot explain ``model`` at all (its own documented refusal, in its
    words), or None; any other error is raised."""
    try:
        scored_explainer(name, settings, [0])(model, x[:1], y[:1])
    except ValueError as error:
        if not any(words in str(error) for words in REFUSALS):
            raise
        return f"{name} refuses this model: {error}"
    return None


def _baseline_kind(perturbation: str, measure: str) -> str:
    if perturbation == "none":
        return {"sigma_rel": "shuffled map (paper C null: RelShuf)",
                "sigma_irel": "shuffled map (paper C null: IrelShuf)",
                "retrieval_clean": "wrong class (paper A control: the mask asked for class + 1 retrieves it)",
                "retrieval_random_matched": "wrong class, the mask in a random map's pixel order",
                "retrieval_edge_matched": "wrong class, the mask in the edge map's pixel order"}.get(measure, "")
    if perturbation == "random_sign":
        return ""
    if perturbation == "dombrowski":
        return "random sign noise of the attack's own L2 norm per image"
    return "random sign noise of the same budget"


def _rows(values: dict, name: str, model: str, perturbations, settings: ArenaSettings, relu: bool, n: int,
          reason: str | None) -> list[pd.DataFrame]:
    """The table's rows of one explainer x model from its stored per-image values."""
    nan = np.full(n, np.nan)

    def get(key):
        return values[key].double().numpy() if key in values else nan

    frames = []
    for p in ("none",) + tuple(perturbations):
        attack = p not in ("none", "random_sign")
        for measure in measures_of(p):
            frame = {"image": np.arange(n), "explainer": name, "model": model, "perturbation": p, "measure": measure,
                     "value": get(f"{p}|{measure}|value"), "baseline": get(f"{p}|{measure}|baseline"),
                     "baseline_kind": _baseline_kind(p, measure), "higher_is_better": HIGHER_IS_BETTER[measure],
                     "control": name in CONTROL_NAMES, "aimed": "" if p == "none" else route(name, p, relu, settings),
                     "steps": steps_of(p, settings) if p != "none" else 0, "restarts": 1 if attack else 0,
                     "doubled": get(f"{p}|{measure}|doubled"), "restart": get(f"{p}|{measure}|restart"),
                     "passes": get("none||passes"), "seconds": get("none||seconds"), "reason": reason or ""}
            for field in PERTURBATION_FIELDS:
                frame[field] = get(f"{p}||{field}")
            if p not in RESTARTABLE:
                frame["restart"] = nan
            frames.append(pd.DataFrame(frame))
    return frames


def _localisation(explainers, settings: ArenaSettings, store: ResultStore, progress: bool,
                  device) -> list[pd.DataFrame]:
    model = shapes_model(settings, store, progress).to(device)
    shapes = shapes_images(model, settings, device)
    xs, ys, boxes = shapes.normalized(device), shapes.labels.to(device), shapes.boxes.to(device)
    m = len(xs)
    params = {"settings": settings.as_dict(), "weights": _model_digest(model), "images": _digest(xs, ys)}
    frames = []
    for name in explainers:
        reason = _refusal(name, model, xs, ys, settings)
        values = {}
        if reason is None:
            def fn(a, b, name=name):
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="DANCE: .* never satisfied")
                    raw = scored_explainer(name, settings, list(range(a, b)))(model, xs[a:b], ys[a:b])
                return localise(raw, boxes[a:b])

            values = store.compute(f"localise-{name}", fn, m, params={**params, "explainer": name},
                                   shard_size=settings.shard_size, progress=progress)
        for measure in ("pointing_game", "box_iou"):
            value = values[measure].double().numpy() if values else np.full(m, np.nan)
            frame = pd.DataFrame({"image": np.arange(m), "explainer": name, "model": "shapes_cnn",
                                  "perturbation": "none", "measure": measure, "value": value,
                                  "higher_is_better": True, "control": name in CONTROL_NAMES, "reason": reason or "",
                                  "baseline_kind": "", "aimed": "", "steps": 0, "restarts": 0})
            for column in COLUMNS:
                if column not in frame:
                    frame[column] = np.nan
            frames.append(frame)
    return frames
