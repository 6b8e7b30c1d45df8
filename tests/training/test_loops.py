"""Training loops (reliable_saliency.training.loops): resuming an interrupted run gives the same
weights, adversarial training runs, augmentation is a crop or flip of the padded image."""

import dataclasses

import pytest
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


def test_regulariser_enters_the_loss_and_the_history():
    from reliable_saliency.training.regularisers import Regulariser

    shapes = make_synthetic(n=16, size=32, seed=2)
    torch.manual_seed(0)
    model = models.build("lenet", softplus_beta=3.0)
    hessian = Regulariser("hessian", lambda_hessian=1e-3)
    result = train(model, shapes, TrainConfig(epochs=1, batch_size=8, regulariser=hessian), progress=False)
    assert result.history[0]["penalty"] > 0 and not model.training
    plain = train(model, shapes, TrainConfig(epochs=1, batch_size=8), progress=False)
    assert "penalty" not in plain.history[0]  # unregularised history entries keep their old keys


def test_gradient_clipping_bounds_the_update():
    shapes = make_synthetic(n=16, size=32, seed=3)

    def update_norm(grad_clip):
        torch.manual_seed(0)
        model = models.build("lenet")
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        # one plain SGD step (the first momentum step is the gradient itself): update = lr * clipped gradient
        train(model, shapes, TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=1.0, augment=False,
                                         grad_clip=grad_clip), progress=False)
        return (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item()

    assert update_norm(None) > 1e-3
    assert update_norm(1e-3) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="grad_clip must be None or a positive"):
        TrainConfig(epochs=1, grad_clip=0.0)
