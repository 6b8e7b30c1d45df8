"""Attacks on predictions (FGSM, PGD) and on explanations (Ghorbani et al., Dombrowski et al.,
paper E's frame attack).

Budgets (``eps``, ``alpha``, the frame attack's ``lr``) are in pixel units of images in [0, 1] and
perturbations live in pixel space, so the eps ball and the valid range are exact under per-channel
normalisation. Attacks on explanations take any differentiable explainer of the library and
explain the clean predicted label; all images of a batch are attacked together.
"""

from .common import GhorbaniResult, ManipulationResult
from .dombrowski import dombrowski_attack
from .frame import frame_attack, frame_target
from .ghorbani import OBJECTIVES, ghorbani_attack, random_sign_noise
from .masked_retrieval import MaskedRetrievalResult, masked_retrieval_attack
from .predictions import fgsm, pgd

__all__ = [
    "fgsm", "pgd", "ghorbani_attack", "random_sign_noise", "dombrowski_attack", "frame_attack", "frame_target",
    "OBJECTIVES", "GhorbaniResult", "ManipulationResult", "masked_retrieval_attack", "MaskedRetrievalResult",
]
