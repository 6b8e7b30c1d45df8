import dataclasses

import pytest
import torch
from torch import nn

from reliable_saliency import models
from reliable_saliency.core import experiment
from reliable_saliency.training import zoo
from reliable_saliency.data import make_synthetic
from reliable_saliency.training.loops import TrainConfig, augment_crop_flip, evaluate, train


@pytest.fixture
def tiny_recipe(monkeypatch, tiny_cifar_root, isolated_cache):
    recipe = dataclasses.replace(zoo.RECIPES["lenet_natural"], train_images={"smoke": 32, "book": 40, "paper": 40})
    monkeypatch.setitem(zoo.RECIPES, "tiny", recipe)
    return "tiny"


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_recipe_trains_saves_and_reloads_bit_identically(tiny_recipe):
    first = zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    assert path.exists() and path.with_suffix(".json").exists()
    assert not path.with_suffix(".partial.pt").exists()
    assert first.zoo_info["train_images"] == 32 and len(first.zoo_info["history"]) == 1
    again = zoo.load_model(tiny_recipe, "smoke", progress=False)
    assert _same_state(first, again) and not again.training
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
    assert _same_state(retrained, model)  # same seed, same data: the same weights again


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    shapes = make_synthetic(n=64, size=32, seed=0)
    config = TrainConfig(epochs=2, batch_size=16, seed=5)

    def fresh():
        torch.manual_seed(0)
        return models.build("lenet", softplus_beta=None)

    straight = fresh()
    train(straight, shapes, config, progress=False)
    state = tmp_path / "state.pt"
    interrupted = fresh()
    train(interrupted, shapes, dataclasses.replace(config, epochs=1), state_path=state, progress=False)
    resumed = fresh()
    result = train(resumed, shapes, config, state_path=state, progress=False)
    assert result.resumed_from_epoch == 1 and len(result.history) == 2
    assert _same_state(resumed, straight)


def test_adversarial_training_runs_and_leaves_eval_mode():
    shapes = make_synthetic(n=32, size=32, seed=1)
    model = models.build("lenet")
    for adversary in ("fgsm_rs", "pgd"):
        result = train(model, shapes, TrainConfig(epochs=1, batch_size=16, adversary=adversary, pgd_steps=2),
                       progress=False)
        assert len(result.history) == 1 and not model.training
    assert 0.0 <= evaluate(model, shapes, pgd_eps=8 / 255, pgd_steps=2) <= evaluate(model, shapes)


def test_augmentation_is_a_crop_or_flip_of_the_padded_image(rng):
    images = torch.randint(1, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=rng)
    out = augment_crop_flip(images, rng)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4,) * 4)
    for original, crop in zip(padded, out):
        windows = [original[:, y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)


def test_to_softplus_leaves_the_original_untouched():
    model = models.build("lenet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    smooth = models.to_softplus(model, beta=10.0)
    assert all(isinstance(m, nn.ReLU) for m in model.modules() if isinstance(m, (nn.ReLU, nn.Softplus)))
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert sum(isinstance(m, nn.Softplus) and m.beta == 10.0 for m in smooth.modules()) == 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    # Softplus(beta) -> ReLU as beta grows: a large beta gives nearly the same logits
    assert torch.allclose(models.to_softplus(model, 1e4)(x), model(x), atol=1e-3)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        models.to_softplus(nn.Sequential(nn.Linear(2, 2)), 5.0)


def test_architectures_output_shapes():
    for name, shape in (("lenet", (2, 3, 32, 32)), ("resnet18", (2, 3, 32, 32)), ("mnist_cnn", (2, 1, 28, 28))):
        assert models.build(name)(torch.zeros(shape)).shape == (2, 10)


def test_efficientnet_lite0_offline():
    model = models.efficientnet_lite0()
    assert model.input_space.name == "efficientnet-lite" and not model.training
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_bad_names_give_clear_errors():
    with pytest.raises(KeyError, match="unknown zoo recipe 'lenet_x'.*lenet_natural"):
        zoo.load_model("lenet_x")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        zoo.checkpoint_path("lenet_natural", "fast")
    with pytest.raises(KeyError, match="unknown architecture"):
        models.build("vgg")
    with pytest.raises(ValueError, match="adversary"):
        TrainConfig(epochs=1, adversary="trades")


def test_profiles_resolve_and_reject_bad_values():
    book = experiment.resolve_profile("book", eval_images=None, mc_samples=7)
    assert book.mc_samples == 7 and book.eval_images == experiment.PROFILES["book"].eval_images
    with pytest.raises(ValueError, match="unknown profile"):
        experiment.resolve_profile("huge")
    with pytest.raises(ValueError, match="unknown profile fields"):
        experiment.resolve_profile("smoke", epochs=3)
    with pytest.raises(ValueError, match="positive int"):
        experiment.resolve_profile("smoke", eval_images=0)


def test_provenance_names_everything():
    line = experiment.provenance("smoke", "cpu", "somewhere", 3)
    for part in ("profile=smoke", "device=cpu", "data=somewhere", "seed=3", "torch", "sources"):
        assert part in line


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"

    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        experiment.atomic_write(target, failing)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_checkpoint_from_a_shipped_folder_is_used_in_place(tiny_recipe, tmp_path, monkeypatch):
    model = zoo.load_model(tiny_recipe, "smoke", progress=False)
    path = zoo.checkpoint_path(tiny_recipe, "smoke")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for file in (path, path.with_suffix(".json")):
        file.rename(shipped / file.name)
    monkeypatch.setenv(zoo.CHECKPOINTS_ENV, str(shipped))
    again = zoo.load_model(tiny_recipe, "smoke", progress=False)
    assert _same_state(model, again) and not path.exists()  # verified and loaded, not retrained
