"""Training: the loops (cross-entropy, FGSM-RS and PGD adversarial training, accuracy) and the zoo
of named recipes that train on first use and cache verified checkpoints."""

from .loops import TrainConfig, augment_crop_flip, correct_per_image, evaluate, train
from .zoo import RECIPES, CorruptCheckpointError, Recipe, checkpoint_path, load_model

__all__ = [
    "TrainConfig", "train", "augment_crop_flip", "correct_per_image", "evaluate",
    "Recipe", "RECIPES", "load_model", "checkpoint_path", "CorruptCheckpointError",
]
