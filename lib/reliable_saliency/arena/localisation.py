"""Localisation where the answer is known: the library's synthetic shapes (:func:`..data.make_synthetic`,
a square, disk, triangle or cross, the label, pasted at a random place on a textured canvas whose
texture carries no class information; its box is known) and a small CNN the arena trains on them.

No CIFAR-10 model has known relevant pixels (the book has no model trained to depend on a pasted
shape), so localisation is measured on this task instead, the same one chapter 5 uses: three 3 x 3
convolutions (16, 32, 64, ReLU, max-pooling, global max pool), Adam 3e-3, trained on a separate
draw of the set. The trained weights go through the result store (one "image": the parameter
vector), so workers and later runs share one model. Pointing game: the map's maximum inside the
box; box IoU: the box around the pixels above half the maximum of the map normalised as the mask
search's authors do, ``relu(m - mean) / max``, against the true box.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import inputs
from ..core.store import ResultStore
from ..data import ImageSet, make_synthetic
from ..evaluation.selection import correctly_classified
from ..explainers.mask_search import normalise_search_map
from ..maps.localisation import box_iou, pointing_game
from ..training.loops import TrainConfig, train
from .settings import ArenaSettings

__all__ = ["shapes_cnn", "shapes_model", "shapes_images", "localise"]


def shapes_cnn() -> nn.Module:
    """The untrained shapes classifier (4 classes), with the synthetic set's input space."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 4))
    model.input_space = inputs.SYNTHETIC
    return model.eval()


def _object_size(settings: ArenaSettings) -> tuple[int, int]:
    scale = settings.shapes_size / 32
    return max(2, round(10 * scale)), max(3, round(16 * scale))


def shapes_model(settings: ArenaSettings, store: ResultStore, progress: bool = False) -> nn.Module:
    """The shapes classifier trained on ``settings.shapes_train`` images for ``shapes_epochs``
    epochs (seeded), through the store."""
    train_set = make_synthetic(n=settings.shapes_train, size=settings.shapes_size,
                               object_size=_object_size(settings), seed=settings.seed + 1)

    def fit(start: int, stop: int) -> dict[str, Tensor]:
        torch.manual_seed(settings.seed)
        model = shapes_cnn()
        train(model, train_set, TrainConfig(epochs=settings.shapes_epochs, batch_size=64, lr=3e-3, augment=False,
                                            seed=settings.seed), progress=False)
        return {"weights": torch.nn.utils.parameters_to_vector(model.parameters()).detach()[None]}

    params = {"train": settings.shapes_train, "epochs": settings.shapes_epochs, "size": settings.shapes_size,
              "seed": settings.seed}
    weights = store.compute("shapes-model", fit, 1, params=params, shard_size=1, progress=progress)["weights"][0]
    model = shapes_cnn()
    torch.nn.utils.vector_to_parameters(weights, model.parameters())
    return model.eval()


def shapes_images(model: nn.Module, settings: ArenaSettings, device="cpu") -> ImageSet:
    """``settings.shapes_images`` test shapes (a third draw of the set) that the model classifies correctly."""
    pool = make_synthetic(n=4 * settings.shapes_images + 100, size=settings.shapes_size,
                          object_size=_object_size(settings), seed=settings.seed + 2)
    return correctly_classified([model], pool, settings.shapes_images, seed=settings.seed, device=device)


def localise(raw: Tensor, boxes: Tensor) -> dict[str, Tensor]:
    """Pointing game (1/0) and box IoU of maps ``raw`` (N, C or 1, H, W) against ``boxes`` (N, 4)."""
    pixels = raw.detach().abs().sum(1)
    return {"pointing_game": pointing_game(pixels, boxes).double(),
            "box_iou": box_iou(normalise_search_map(pixels), boxes).double()}
