"""Evaluations that run the model: faithfulness (deletion / insertion, retrieval), robustness
(max-sensitivity), sanity (model randomisation). They sit above :mod:`..attacks`, so an
evaluation may run an attack (paper C's reliability measure does).

Model inputs are normalised ``x`` (N, C, H, W); the model runs without changing its mode, with all
steps / samples of all images on the batch axis in chunks of at most ``batch_size``."""

from .faithfulness import SUBSTRATES, deletion_auc, insertion_auc, retrieval, saliency_fidelity
from .robustness import max_sensitivity, saliency_sensitivity
from .sanity import model_randomisation, randomize_parameters
from . import cleaning, reliability  # paper C: the adversarial reliability measure, map cleaning
from . import reconstruction  # paper D: GAN inpainting of the salient region, class retention
from . import attribution_robustness  # paper E: random-perturbation similarity, alignment diagnostics

__all__ = [
    "SUBSTRATES", "deletion_auc", "insertion_auc", "retrieval", "saliency_fidelity", "max_sensitivity",
    "saliency_sensitivity",
    "randomize_parameters", "model_randomisation",
]
