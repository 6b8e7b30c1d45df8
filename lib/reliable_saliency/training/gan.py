"""Training the DCGAN of paper D's reconstruction (:mod:`..models.inpainter`) and a recipe that
trains it on first use and caches a verified checkpoint, like the classifier zoo.

Training as in the authors' code: z uniform in [-1, 1]; Adam (lr 2e-4, beta1 0.5) for both nets;
the discriminator sees real images (labels smoothed to 0.9) and generated ones (label 0) in separate
batches; the generator minimises BCE(D(G(z)), 1). One discriminator step, then one generator step
on the same z, per batch (their training loop is not in their repository; this order is the usual
DCGAN one [inferred]). Images are flipped left-right at random and mapped to ``2 * pixel - 1``.

The state (both nets, both optimisers, the random generators, history) is written atomically after
every epoch, and an interrupted run resumes from it. Checkpoints live beside the zoo's (same cache
folder, same ``$RELIABLE_SALIENCY_CHECKPOINTS`` search path for shipped ones) with a JSON sidecar
holding their sha256, the recipe, the data source and the training history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import data as datasets
from ..core.experiment import atomic_torch_save, atomic_write, cache_dir, resolve_profile
from ..core.options import integer, number
from ..models.inpainter import DCGANDiscriminator, DCGANGenerator, build_dcgan, uniform_latents
from .zoo import PROFILE_HELP, CorruptCheckpointError, before_training, file_sha256, find_checkpoint, verified_sidecar

__all__ = ["GanConfig", "GanResult", "GanRecipe", "GAN_RECIPES", "train_gan", "gan_checkpoint_path", "load_gan"]


@dataclass(frozen=True)
class GanConfig:
    """How to train a DCGAN (defaults: the authors' code)."""

    epochs: int
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    real_label: float = 0.9  # one-sided label smoothing on real images
    flip: bool = True
    seed: int = 0

    def __post_init__(self):
        integer("epochs", self.epochs)
        integer("batch_size", self.batch_size)
        number("lr", self.lr, 0.0, strict=True)
        number("beta1", self.beta1, 0.0, maximum=1.0)
        number("real_label", self.real_label, 0.0, strict=True, maximum=1.0)


@dataclass
class GanResult:
    history: list[dict] = field(default_factory=list)  # per epoch: losses, mean D outputs, seconds
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def train_gan(
    generator: DCGANGenerator,
    discriminator: DCGANDiscriminator,
    train_set: datasets.ImageSet,
    config: GanConfig,
    *,
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    progress: bool = True,
) -> GanResult:
    """Train both nets in place on the uint8 images of ``train_set``; leaves them in eval mode.
    With ``state_path`` the full state is saved there atomically after each epoch and an existing
    state file is resumed from."""
    device = torch.device(device)
    generator.to(device)
    discriminator.to(device)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas)
    order_rng = torch.Generator().manual_seed(config.seed)
    latent_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
    result, start_epoch = GanResult(), 0
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        order_rng.set_state(state["order_rng"].cpu())  # loaded onto the device with the rest
        latent_rng.set_state(state["latent_rng"].to(latent_rng.get_state().device))
        result.history = list(state["history"])
        start_epoch = result.resumed_from_epoch = int(state["epoch"])
    images = train_set.images
    steps = -(-len(images) // config.batch_size)
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        generator.train()
        discriminator.train()
        order = torch.randperm(len(images), generator=order_rng)
        sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
        epoch_start = time.perf_counter()
        bar = tqdm(range(steps), desc=f"GAN epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   mininterval=10, leave=False)
        for step in bar:
            batch = images[order[step * config.batch_size:(step + 1) * config.batch_size]]
            if config.flip:
                flip = (torch.rand(len(batch), generator=order_rng) < 0.5).view(-1, 1, 1, 1)
                batch = torch.where(flip, batch.flip(-1), batch)
            real = batch.to(device).float() / 127.5 - 1
            z = uniform_latents(len(real), generator.latent_size, latent_rng, device=device)
            fake = generator(z)
            d_real, d_fake = discriminator(real), discriminator(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, config.real_label))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_logits = discriminator(fake)
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for key, value in (("d_loss", d_loss), ("g_loss", g_loss), ("d_real", d_real.sigmoid().mean()),
                               ("d_fake", d_fake.sigmoid().mean())):
                sums[key] += value.item()
        result.history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()},
                               "seconds": time.perf_counter() - epoch_start})
        if state_path is not None:
            atomic_torch_save({
                "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "order_rng": order_rng.get_state(), "latent_rng": latent_rng.get_state().cpu(),
                "history": result.history, "epoch": epoch + 1,
            }, Path(state_path))
    result.seconds = time.perf_counter() - started
    generator.eval()
    discriminator.eval()
    return result


@dataclass(frozen=True)
class GanRecipe:
    """How to make one DCGAN. ``epochs`` and ``train_images`` map a profile name to a size
    (``train_images`` None = the whole training split)."""

    dataset: str
    epochs: dict
    train_images: dict
    description: str
    latent_size: int = 100
    width: int = 64
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    real_label: float = 0.9
    flip: bool = True
    seed: int = 0

    def config(self, profile: str) -> GanConfig:
        return GanConfig(epochs=self.epochs[profile], batch_size=self.batch_size, lr=self.lr, beta1=self.beta1,
                         real_label=self.real_label, flip=self.flip, seed=self.seed)

    def build(self) -> tuple[DCGANGenerator, DCGANDiscriminator]:
        channels = {"cifar10": 3}[self.dataset]
        return build_dcgan(self.latent_size, self.width, channels, 32)


GAN_RECIPES: dict[str, GanRecipe] = {
    # Width 32, not the usual 64: a latent search step (G and D forward + backward for 64 z) costs
    # 2.6x less on the CPU, where the chapter inpaints (measured on the shared 2-core machine).
    "dcgan_cifar10": GanRecipe(
        "cifar10", epochs={"smoke": 1, "book": 25, "paper": 50}, width=32,
        train_images={"smoke": 512, "book": None, "paper": None},
        description="DCGAN for 32x32 CIFAR-10 (z: 100 uniform in [-1, 1]; 5x5 stride-2 layers, width 32), "
                    "Adam 2e-4 beta1 0.5, real labels 0.9, left-right flips (meant for a GPU at book size)",
    ),
}


def _recipe_or_raise(name: str, profile: str) -> GanRecipe:
    if name not in GAN_RECIPES:
        raise KeyError(f"unknown GAN recipe {name!r}; choose one of {sorted(GAN_RECIPES)}")
    resolve_profile(profile)
    recipe = GAN_RECIPES[name]
    if profile not in recipe.epochs or profile not in recipe.train_images:
        raise ValueError(f"GAN recipe {name!r} has no {profile!r} profile; it has {sorted(recipe.epochs)}")
    if recipe.dataset != "cifar10":
        raise ValueError(f"GAN recipe dataset {recipe.dataset!r} is not supported (only 'cifar10')")
    return recipe


def gan_checkpoint_path(name: str, profile: str) -> Path:
    """Where the checkpoint of GAN recipe ``name`` at ``profile`` lives (in the zoo's cache folder).
    The name hashes the settings and the kind of training data, not where the data sit."""
    recipe = _recipe_or_raise(name, profile)
    data_kind, _ = datasets.locate(recipe.dataset, "train")
    settings = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "description"}
    settings.update(epochs=recipe.epochs[profile], train_images=recipe.train_images[profile])
    key = json.dumps({"settings": settings, "profile": profile, "data": data_kind, "kind": "dcgan"},
                     sort_keys=True)
    return cache_dir("zoo") / f"{name}-{profile}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.pt"


def _load_verified(path: Path, recipe: GanRecipe) -> tuple[DCGANGenerator, DCGANDiscriminator, dict]:
    meta = verified_sidecar(path, "load_gan")
    fix = f"Delete {path} or call load_gan(..., retrain=True) to train it again."
    generator, discriminator = recipe.build()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
    except Exception as error:
        raise CorruptCheckpointError(f"checkpoint {path} could not be loaded ({error}). {fix}") from error
    return generator, discriminator, meta


def load_gan(
    name: str = "dcgan_cifar10",
    profile: str | None = None,
    *,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    progress: bool = True,
    train: bool = True,
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """The trained generator and discriminator of GAN recipe ``name`` at ``profile`` (eval mode, on
    ``device``), trained and cached on first use. Both carry ``zoo_info`` (the sidecar: sha256,
    data source, training history and seconds)."""
    if name not in GAN_RECIPES or profile is None:
        _recipe_or_raise(name, "smoke")  # an unknown name is the first error
        raise ValueError(f"load_gan({name!r}) needs a profile: {PROFILE_HELP}")
    recipe = _recipe_or_raise(name, profile)
    path = gan_checkpoint_path(name, profile)
    found = None if retrain else find_checkpoint(path)
    if found is not None:
        generator, discriminator, meta = _load_verified(found, recipe)
    else:
        n = recipe.train_images[profile]
        before_training(name, profile, path, epochs=recipe.epochs[profile], images=n or 50_000, cost=6.0, train=train)
        full = datasets.load_cifar10("train")
        train_set = full if n is None else full.sample(n, seed=recipe.seed)
        torch.manual_seed(recipe.seed)  # reproducible initialisation
        generator, discriminator = recipe.build()
        state_path = path.with_suffix(".partial.pt")
        if retrain:
            state_path.unlink(missing_ok=True)
        started = time.perf_counter()
        result = train_gan(generator, discriminator, train_set, recipe.config(profile), device=device,
                           state_path=state_path, progress=progress)
        generator.cpu()
        discriminator.cpu()
        state = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict()}
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        meta = {
            "recipe": name, "profile": profile, "description": recipe.description,
            "settings": dataclasses.asdict(recipe), "data_source": train_set.source,
            "train_images": len(train_set), "history": result.history,
            "train_seconds": time.perf_counter() - started, "resumed_from_epoch": result.resumed_from_epoch,
            "torch": torch.__version__, "sha256": file_sha256(path),
        }
        atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
        state_path.unlink(missing_ok=True)
    for net in (generator, discriminator):
        net.zoo_info = meta
    return generator.to(device).eval(), discriminator.to(device).eval()
