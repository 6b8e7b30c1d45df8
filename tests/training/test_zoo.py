"""The zoo (reliable_saliency.training.zoo): recipes train on first use, save verified checkpoints,
reload them bit-identically, refuse corrupted ones and use shipped ones in place."""

import dataclasses

import pytest

from helpers import same_state
from reliable_saliency import models
from reliable_saliency.training import zoo
from reliable_saliency.training.loops import TrainConfig


@pytest.fixture
def tiny_recipe(monkeypatch, tiny_cifar_root, isolated_cache):
    recipe = dataclasses.replace(zoo.RECIPES["lenet_natural"], train_images={"smoke": 32, "book": 40, "paper": 40})
    monkeypatch.setitem(zoo.RECIPES, "tiny", recipe)
    return "tiny"


def test_recipe_trains_saves_and_reloads_bit_identically(tiny_recipe):
    first = zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    assert path.exists() and path.with_suffix(".json").exists()
    assert not path.with_suffix(".partial.pt").exists()
    assert first.zoo_info["train_images"] == 32 and len(first.zoo_info["history"]) == 1
    again = zoo.load_model(tiny_recipe, "smoke", progress=False)
    assert same_state(first, again) and not again.training
    assert again.input_space is first.input_space


def test_corrupted_checkpoint_is_refused_then_retrained(tiny_recipe):
    model = zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(zoo.CorruptCheckpointError, match="sha256.*retrain=True"):
        zoo.load_model(tiny_recipe, "smoke", progress=False)
    retrained = zoo.load_model(tiny_recipe, "smoke", retrain=True, progress=False)
    assert same_state(retrained, model)  # same seed, same data: the same weights again


def test_bad_names_give_clear_errors():
    with pytest.raises(KeyError, match="unknown zoo recipe 'lenet_x'.*lenet_natural"):
        zoo.load_model("lenet_x")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        zoo.checkpoint_path("lenet_natural", "fast")
    with pytest.raises(KeyError, match="unknown architecture"):
        models.build("vgg")
    with pytest.raises(ValueError, match="adversary"):
        TrainConfig(epochs=1, adversary="trades")


def test_checkpoint_from_a_shipped_folder_is_used_in_place(tiny_recipe, tmp_path, monkeypatch):
    model = zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for file in (path, path.with_suffix(".json")):
        file.rename(shipped / file.name)
    monkeypatch.setenv(zoo.CHECKPOINTS_ENV, str(shipped))
    again = zoo.load_model(tiny_recipe, "smoke", progress=False)
    assert same_state(model, again) and not path.exists()  # verified and loaded, not retrained
