"""The DCGAN recipe (reliable_saliency.training.gan): it trains, resumes per epoch to the same
weights as an uninterrupted run, saves a checkpoint whose sidecar holds its sha256, reloads it bit
for bit, refuses a damaged one and uses shipped ones in place."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from helpers import same_state
from reliable_saliency import data, models
from reliable_saliency.training import gan, zoo


@pytest.fixture
def tiny_gan(monkeypatch, tiny_cifar_root, isolated_cache):
    recipe = dataclasses.replace(
        gan.GAN_RECIPES["dcgan_cifar10"], latent_size=16, width=8, batch_size=16,
        epochs={"smoke": 2, "book": 2, "paper": 2}, train_images={"smoke": 32, "book": 40, "paper": 40},
    )
    monkeypatch.setitem(gan.GAN_RECIPES, "tiny_gan", recipe)
    return "tiny_gan"


def test_recipe_trains_saves_verified_and_reloads_bit_identically(tiny_gan):
    g, d = gan.load_gan(tiny_gan, "smoke", progress=False)
    path = gan.gan_checkpoint_path(tiny_gan, "smoke")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not path.with_suffix(".partial.pt").exists() and path.parent.name == "zoo"
    assert meta["train_images"] == 32 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(0 < h["d_real"] < 1 and h["g_loss"] > 0 for h in meta["history"])
    assert isinstance(g, models.DCGANGenerator) and g.latent_size == 16 and not g.training and not d.training
    with torch.no_grad():
        fake = g(models.uniform_latents(3, 16))
    assert fake.shape == (3, 3, 32, 32) and fake.abs().max() <= 1 and d(fake).shape == (3,)
    g2, d2 = gan.load_gan(tiny_gan, "smoke", progress=False)
    assert same_state(g, g2) and same_state(d, d2) and g2.zoo_info == meta


def test_damaged_checkpoint_is_refused_then_retrained_to_the_same_weights(tiny_gan):
    g, d = gan.load_gan(tiny_gan, "smoke", progress=False)
    path = gan.gan_checkpoint_path(tiny_gan, "smoke")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(zoo.CorruptCheckpointError, match="sha256.*retrain=True"):
        gan.load_gan(tiny_gan, "smoke", progress=False)
    g2, d2 = gan.load_gan(tiny_gan, "smoke", retrain=True, progress=False)
    assert same_state(g, g2) and same_state(d, d2)


def test_training_resumes_per_epoch_to_the_same_weights(tiny_cifar_root, isolated_cache, tmp_path):
    train_set = data.load_cifar10("train").sample(24, seed=0)

    def fresh():
        torch.manual_seed(0)
        return models.build_dcgan(latent_size=16, width=8)

    config = gan.GanConfig(epochs=2, batch_size=8)
    g_full, d_full = fresh()
    straight = gan.train_gan(g_full, d_full, train_set, config, progress=False)
    g, d = fresh()
    state = tmp_path / "state.pt"
    gan.train_gan(g, d, train_set, dataclasses.replace(config, epochs=1), state_path=state, progress=False)
    g, d = fresh()  # a new process: only the state file survives
    resumed = gan.train_gan(g, d, train_set, config, state_path=state, progress=False)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    assert same_state(g, g_full) and same_state(d, d_full)
    assert [h["g_loss"] for h in resumed.history] == [h["g_loss"] for h in straight.history]


def test_checkpoint_from_a_shipped_folder_is_used_in_place(tiny_gan, tmp_path, monkeypatch):
    g, _ = gan.load_gan(tiny_gan, "smoke", progress=False)
    path = gan.gan_checkpoint_path(tiny_gan, "smoke")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for file in (path, path.with_suffix(".json")):
        file.rename(shipped / file.name)
    monkeypatch.setenv(zoo.CHECKPOINTS_ENV, str(shipped))
    again, _ = gan.load_gan(tiny_gan, "smoke", progress=False)
    assert same_state(g, again) and not path.exists()


def test_bad_names_and_settings_give_clear_errors(tiny_gan):
    with pytest.raises(KeyError, match="unknown GAN recipe 'dcgan_x'.*dcgan_cifar10"):
        gan.load_gan("dcgan_x")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        gan.gan_checkpoint_path(tiny_gan, "fast")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        gan.GanConfig(epochs=0)
    with pytest.raises(ValueError, match="real_label"):
        gan.GanConfig(epochs=1, real_label=1.5)
