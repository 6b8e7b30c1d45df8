"""Pure measures on maps (no model runs): similarity, localisation, and the named post-processing
steps (:mod:`.postprocess`).

Every measure is batched over images and returns one value per image, shape (N,), on the maps'
device. Where a value is undefined for an image (correlation with a constant map, centre of an
all-zero map) it is NaN, as in scipy; NaN or infinite *inputs* raise ValueError.
"""

from . import postprocess
from .localisation import box_iou, center_of_mass, center_of_mass_shift, pointing_game
from .similarity import cosine, mse, pearson, spearman, ssim, topk_intersection

__all__ = [
    "topk_intersection", "spearman", "pearson", "cosine", "mse", "ssim",
    "center_of_mass", "center_of_mass_shift", "pointing_game", "box_iou",
]
