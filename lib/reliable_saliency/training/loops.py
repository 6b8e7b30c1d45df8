"""Training loops (cross-entropy, FGSM-RS and PGD adversarial training, paper E's gradient
regularisers) and accuracy evaluation.

Data stays as uint8 tensors in memory; batches are augmented (random crop with zero padding,
horizontal flip) and normalised on the device. Training resumes from a state file written
atomically after every epoch, random generators included, so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..attacks.predictions import run_pgd
from ..data import ImageSet
from ..core.experiment import atomic_torch_save
from ..core.inputs import InputSpace, check_model_ready
from .regularisers import Regulariser, regularised_loss

__all__ = ["TrainConfig", "train", "augment_crop_flip", "correct_per_image", "evaluate"]

ADVERSARIES = (None, "fgsm_rs", "pgd")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    weight_decay: float = 0.0
    lr_drop_epochs: tuple[int, ...] = ()  # multiply the learning rate by 0.1 at these epochs
    grad_clip: float | None = None  # clip the parameter gradient to this L2 norm (paper E: 0.5)
    augment: bool = True
    adversary: str | None = None  # None | "fgsm_rs" | "pgd"
    eps: float = 8 / 255  # pixel units
    pgd_steps: int = 7
    pgd_alpha: float = 2 / 255
    seed: int = 0
    regulariser: Regulariser | None = None  # paper E's penalties (training.regularisers)

    def __post_init__(self):
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"adversary must be one of {ADVERSARIES}, got {self.adversary!r}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.regulariser is not None and not isinstance(self.regulariser, Regulariser):
            raise TypeError(f"regulariser must be a training.Regulariser or None, got {self.regulariser!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or a positive gradient norm, got {self.grad_clip!r}")


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one entry per epoch: loss, accuracy, seconds
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def augment_crop_flip(images: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop (zero padding) and horizontal flip of a uint8 batch (N, C, H, W)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w)
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip.view(n, 1, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _adversarial(model: nn.Module, x: Tensor, y: Tensor, space: InputSpace, config: TrainConfig, generator) -> Tensor:
    if config.adversary == "fgsm_rs":  # Wong et al. 2020: uniform start, one step of 1.25 eps
        return run_pgd(model, x, y, space, config.eps, 1.25 * config.eps, 1, "linf", True, generator)
    return run_pgd(model, x, y, space, config.eps, config.pgd_alpha, config.pgd_steps, "linf", True, generator)


def train(
    model: nn.Module,
    train_set: ImageSet,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``train_set``; returns per-epoch history.

    If ``state_path`` is given, the full training state (model, optimiser, scheduler, both
    generators, history) is written there atomically after each epoch, and an existing state file
    is resumed from. The step loss is cross-entropy plus ``config.regulariser``'s penalty (its
    random draws, like the attacks', come from a generator on ``device`` seeded ``seed + 1``);
    with ``config.grad_clip`` the parameter gradient is clipped to that norm. The model is left in
    eval mode.
    """
    device = torch.device(device)
    model.to(device)
    space = train_set.input_space
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_drop_epochs), gamma=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    attack_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    result, start_epoch = TrainResult(), 0
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"].cpu())  # loaded onto the device with the rest
        attack_generator.set_state(state["attack_generator"].to(attack_generator.get_state().device))
        result.history = list(state["history"])
        start_epoch = result.resumed_from_epoch = int(state["epoch"])
    images, labels = train_set.images, train_set.labels
    steps_per_epoch = -(-len(images) // config.batch_size)
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total_loss, total_penalty, correct, seen = 0.0, 0.0, 0, 0
        epoch_start = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   mininterval=10, leave=False)
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch = images[index]
            if config.augment:
                batch = augment_crop_flip(batch, generator)
            x = space.normalize(batch.to(device))
            y = labels[index].to(device)
            if config.adversary is not None:
                x = _adversarial(model, x, y, space, config, attack_generator)
            terms = regularised_loss(model, x, y, config.regulariser, generator=attack_generator, input_space=space)
            loss, logits = terms.loss, terms.logits
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total_loss += loss.item() * len(y)
            total_penalty += terms.penalty.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        scheduler.step()
        entry = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen,
                 "seconds": time.perf_counter() - epoch_start}
        if config.regulariser is not None and config.regulariser.active:
            entry["penalty"] = total_penalty / seen
        result.history.append(entry)
        if state_path is not None:
            atomic_torch_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                "attack_generator": attack_generator.get_state().cpu(), "history": result.history,
                "epoch": epoch + 1,
            }, Path(state_path))
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


def correct_per_image(
    model: nn.Module,
    data: ImageSet,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    pgd_eps: float | None = None,
    pgd_steps: int = 10,
    pgd_alpha: float | None = None,
    seed: int = 0,
) -> Tensor:
    """bool (N,): is each image of ``data`` classified correctly; with ``pgd_eps`` (pixel units)
    under an L-inf PGD attack with random start (``pgd_alpha`` defaults to 2.5 eps / steps)."""
    check_model_ready(model)
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = []
    for start in range(0, len(data), batch_size):
        x = data.input_space.normalize(data.images[start:start + batch_size].to(device))
        y = data.labels[start:start + batch_size].to(device)
        if pgd_eps is not None:
            alpha = 2.5 * pgd_eps / pgd_steps if pgd_alpha is None else pgd_alpha
            x = run_pgd(model, x, y, data.input_space, pgd_eps, alpha, pgd_steps, "linf", True, generator)
        with torch.no_grad():
            correct.append((model(x).argmax(1) == y).cpu())
    return torch.cat(correct)


def evaluate(model: nn.Module, data: ImageSet, **options) -> float:
    """Top-1 accuracy on ``data`` (options as :func:`correct_per_image`)."""
    return correct_per_image(model, data, **options).float().mean().item()
