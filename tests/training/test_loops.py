"""Training loops (reliable_saliency.training.loops): resuming an interrupted run gives the same
weights, adversarial training runs, augmentation is a crop or flip of the padded image."""

import dataclasses

import torch

from helpers import same_state
from reliable_saliency import models
from reliable_saliency.data import make_synthetic
from reliable_saliency.training.loops import TrainConfig, augment_crop_flip, evaluate, train


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
    assert same_state(resumed, straight)


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
