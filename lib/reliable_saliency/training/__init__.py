"""Training: the loops (cross-entropy, FGSM-RS and PGD adversarial training, paper E's gradient
regularisers, accuracy) and the zoo of named recipes that train on first use and cache verified
checkpoints."""

from .gan import GAN_RECIPES, GanConfig, GanRecipe, gan_checkpoint_path, load_gan, train_gan  # paper D
from .loops import TrainConfig, augment_crop_flip, correct_per_image, evaluate, train
from .regularisers import REGULARISERS, RegularisedLoss, Regulariser, penalty, regularised_loss
from .zoo import RECIPES, CorruptCheckpointError, Recipe, checkpoint_path, load_model

__all__ = [
    "TrainConfig", "train", "augment_crop_flip", "correct_per_image", "evaluate",
    "REGULARISERS", "Regulariser", "RegularisedLoss", "regularised_loss", "penalty",
    "Recipe", "RECIPES", "load_model", "checkpoint_path", "CorruptCheckpointError",
]
