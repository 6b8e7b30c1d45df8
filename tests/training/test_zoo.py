"""The zoo (reliable_saliency.training.zoo): recipes train on first use, save verified checkpoints,
reload them bit-identically, refuse corrupted ones and use shipped ones in place."""

import dataclasses

import pytest
import torch

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


def test_shipped_checkpoint_names_do_not_change(shared_data):
    """Fields added to Recipe later (regulariser, grad_clip, lr_drop_epochs) stay out of the hash at
    their defaults, so the book's shipped checkpoints are still found."""
    assert zoo.checkpoint_path("lenet_natural", "book").name == "lenet_natural-book-5f58fc7078.pt"
    assert zoo.checkpoint_path("lenet_fgsm", "book").name == "lenet_fgsm-book-26253433f5.pt"


def test_paper_e_recipes_follow_the_authors(shared_data):
    from reliable_saliency.training.regularisers import Regulariser

    lambdas = {"ce": None, "hessian": Regulariser("hessian", lambda_hessian=1e-3),
               "l2": Regulariser("l2", lambda_l2=0.01), "cosd": Regulariser("cosd", lambda_cos=1.0),
               "l2cosd": Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=1.0)}
    for name, regulariser in lambdas.items():
        recipe = zoo.RECIPES[f"lenet_sp3_{name}"]
        assert recipe.architecture == "lenet" and recipe.softplus_beta == 3.0 and recipe.regulariser == regulariser
        paper, book = recipe.train_config("paper"), recipe.train_config("book")
        assert (paper.epochs, paper.lr_drop_epochs) == (300, (100, 150))
        assert (book.epochs, book.lr_drop_epochs) == (10, (8,))
        for config in (paper, book, recipe.train_config("smoke")):
            assert (config.optimizer, config.lr, config.weight_decay) == ("adam", 1e-3, 4e-5)
            assert (config.batch_size, config.grad_clip, config.augment) == (128, 0.5, True)
            assert config.regulariser == regulariser and config.adversary is None
        if regulariser is not None:
            assert regulariser.eps == 4 / 255 and regulariser.detach_clean
    resnet = zoo.RECIPES["resnet18_sp3_l2cosd"]
    config = resnet.train_config("paper")
    assert (config.optimizer, config.weight_decay, config.epochs, config.lr_drop_epochs) == ("adamw", 1e-2, 200, (100, 150))
    assert resnet.regulariser == Regulariser("l2_cosd", lambda_l2=0.01, lambda_cos=0.1)
    assert zoo.RECIPES["resnet18_sp3_hessian"].regulariser.lambda_hessian == 1e-4
    with pytest.raises(ValueError, match="'resnet18_sp3_l2cosd' has no 'book' profile.*paper"):
        zoo.checkpoint_path("resnet18_sp3_l2cosd", "book")
    names = [zoo.checkpoint_path(n, p).name for n in zoo.RECIPES if "_sp3_" in n
             for p in ("smoke", "book", "paper") if p in zoo.RECIPES[n].epochs]
    assert len(set(n.rsplit("-", 1)[1] for n in names)) == len(names)  # the settings differ, so do the hashes


def test_regularised_recipe_trains_and_reloads(monkeypatch, tiny_cifar_root, isolated_cache):
    recipe = dataclasses.replace(zoo.RECIPES["lenet_sp3_l2cosd"], train_images={"smoke": 24, "book": 40, "paper": 40})
    monkeypatch.setitem(zoo.RECIPES, "tiny_l2cosd", recipe)
    model = zoo.load_model("tiny_l2cosd", "smoke", progress=False)
    info = model.zoo_info
    assert info["history"][0]["penalty"] > 0
    assert info["settings"]["regulariser"] == {"kind": "l2_cosd", "lambda_l2": 0.01, "lambda_cos": 1.0,
                                               "lambda_hessian": 0.0, "eps": 4 / 255, "detach_clean": True}
    assert all(isinstance(m, torch.nn.Softplus) for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Softplus)))
    assert same_state(zoo.load_model("tiny_l2cosd", "smoke", progress=False), model)


@pytest.mark.parametrize("damage", ['{"sha256": "ab', "\xff\xfe not json", "[1, 2]"])
def test_corrupted_sidecar_is_the_same_corrupt_checkpoint_error(tiny_recipe, damage):
    zoo.load_model(tiny_recipe, "smoke", progress=False)
    sidecar = zoo.checkpoint_path(tiny_recipe, "smoke").with_suffix(".json")
    sidecar.write_text(damage, encoding="latin-1")
    with pytest.raises(zoo.CorruptCheckpointError, match="retrain=True"):
        zoo.load_model(tiny_recipe, "smoke", progress=False)


def test_shipped_checkpoints_are_found_without_any_variable(shared_data, isolated_cache, monkeypatch):
    monkeypatch.delenv(zoo.CHECKPOINTS_ENV, raising=False)
    model = zoo.load_model("lenet_natural", "book", train=False)
    path = zoo.checkpoint_path("lenet_natural", "book")
    assert not path.exists() and (zoo.SHIPPED_CHECKPOINTS / path.name).exists()
    assert model.zoo_info["sha256"] == zoo.file_sha256(zoo.SHIPPED_CHECKPOINTS / path.name)


def test_no_silent_smoke_model_and_no_silent_training(tiny_recipe, capsys):
    with pytest.raises(ValueError, match="needs a profile: 'book'"):
        zoo.load_model(tiny_recipe)
    with pytest.raises(zoo.NoCheckpointError, match="train=False forbids training"):
        zoo.load_model(tiny_recipe, "smoke", train=False)
    zoo.load_model(tiny_recipe, "smoke", progress=False)
    notice = capsys.readouterr().out
    assert "training it now (1 epochs on 32 images, under a minute" in notice and "/" not in notice.split("in the cache")[0]
    zoo.load_model(tiny_recipe, "smoke", progress=False, train=False)  # now cached: no training needed


def test_a_sidecar_matching_a_checkpoint_that_is_no_state_dict_is_refused(tiny_recipe):
    import json

    zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    torch.save({"not": "a state dict"}, path)
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "sha256": zoo.file_sha256(path)}))
    with pytest.raises(zoo.CorruptCheckpointError, match="(?s)could not be loaded as recipe 'lenet'.*retrain=True"):
        zoo.load_model(tiny_recipe, "smoke", progress=False)
