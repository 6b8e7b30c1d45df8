"""The arena's axes as data (explainers, models, perturbations, measures) and its profiles.

Every size the arena scales is a field of :class:`ArenaSettings`; :data:`PROFILES` holds
``smoke`` (CI: a handful of images, one or two steps), ``book`` (200 CIFAR-10 test images, every
cell filled in about 2-3 hours of the 2-core CPU, see :mod:`.estimate`) and ``paper`` (the papers'
own sizes, for a GPU). :func:`arena_settings` resolves a profile with overrides and refuses
unknown names with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

__all__ = [
    "EXPLAINERS", "METHODS", "CONTROL_NAMES", "MODELS", "PERTURBATIONS", "ATTACKS", "MEASURES", "HIGHER_IS_BETTER",
    "ArenaSettings", "PROFILES", "arena_settings", "check_names", "image_seed",
]

METHODS = ("gradient", "smoothgrad", "integrated_gradients", "gradcam", "lrp_epsilon", "rise", "relex", "dance",
           "mask_search")
CONTROL_NAMES = ("random_map", "edge_map", "smoothed_gradient")
EXPLAINERS = METHODS + CONTROL_NAMES

# the model axis: arena name -> zoo recipe (training.zoo), all paper E's CIFAR-10 LeNet
MODELS = {
    "natural": "lenet_natural",  # ReLU, cross-entropy
    "fgsm": "lenet_fgsm",  # ReLU, FGSM-RS adversarial training
    "softplus": "lenet_sp3_ce",  # Softplus(3), cross-entropy
    "l2cosd": "lenet_sp3_l2cosd",  # Softplus(3), paper E's l2 + cosd
    "cosd": "lenet_sp3_cosd",  # Softplus(3), cosd only
    "hessian": "lenet_sp3_hessian",  # Softplus(3), Hessian regulariser
}

# the perturbation axis; "random_sign" is also the baseline of every other row
ATTACKS = ("pgd", "topk", "mass_center", "targeted", "dombrowski", "frame", "masked_retrieval")
PERTURBATIONS = ("random_sign",) + ATTACKS

# measure -> whether a higher value is better for the explainer
HIGHER_IS_BETTER = {
    "topk_intersection": True, "spearman": True, "ssim": True,  # stability: map(x) against map(x')
    "retrieval": True,  # paper A: argmax f(x' * mask(x')) == clean class
    "center_shift": False, "region_mass": False, "target_pearson": False, "frame_mse": True,  # the attacks' own goals
    "deletion_auc": False, "insertion_auc": True,  # faithfulness, clean images
    "sigma_rel": False, "sigma_irel": True,  # paper C, against their shuffled nulls
    "retrieval_clean": True,  # paper A on clean images, the wrong-class control beside it
    # the same with the method's masks in a random map's / the edge map's pixel order (matched sparsity)
    "retrieval_random_matched": True, "retrieval_edge_matched": True,
    "prediction_kept": True,  # PGD (aimed at the label): the label kept
    "sanity_spearman": False,  # model randomisation: near 1 = the map ignores the parameters
    "pointing_game": True, "box_iou": True,  # localisation on the synthetic shapes
    "passes": False, "seconds": False,  # cost of one clean map, per image
}
MEASURES = tuple(HIGHER_IS_BETTER)


@dataclass(frozen=True)
class ArenaSettings:
    """Every scaled setting of one arena run (``profile`` names where it came from)."""

    profile: str
    images: int  # CIFAR-10 test images, correctly classified by every model of the run
    shard_size: int  # images per shard of the result store
    strength_images: int  # first images that also get the strength runs (doubled steps, a restart)
    model_profile: str  # zoo profile of the models
    models: tuple[str, ...] = tuple(MODELS)  # the model axis run by default
    seed: int = 0
    eps: float = 8 / 255  # pixel units: every eps-ball attack and its random baseline
    # explainers (the scored maps)
    smoothgrad_samples: int = 50
    ig_steps: int = 50
    rise_masks: int = 4000
    rise_grid: int = 7
    relex_iterations: int = 50
    relex_samples: int = 50
    dance_stride: int = 3
    dance_steps: int = 20
    mask_search_passes: int = 5000
    mask_search_grid: int = 8
    blur_sigma: float = 1.0  # the smoothed-gradient control, pixels
    # attacks
    pgd_steps: int = 40
    ghorbani_steps: int = 300
    dombrowski_steps: int = 1500
    frame_steps: int = 100
    retrieval_steps: int = 40
    surrogate_beta: float = 10.0  # Softplus copy of a ReLU model (Dombrowski: annealed 10 -> 100)
    # surrogates inside the attacks where the scored map is too long to differentiate
    rise_attack_masks: int = 500
    mask_search_attack_passes: int = 100
    relex_attack_iterations: int = 5
    relex_attack_samples: int = 4
    dance_recompute_every: int = 5
    # measures
    auc_steps: int | None = None  # deletion / insertion steps (None: one row of pixels per step)
    sigma_permutations: int = 10
    sigma_iterations: int = 14
    sigma_scan: int = 10
    ssim_window: int = 7  # paper E's window on 32 x 32 maps
    # localisation: synthetic shapes and a small CNN trained by the arena
    shapes_train: int = 4000
    shapes_epochs: int = 4
    shapes_images: int = 200
    shapes_size: int = 32

    def ghorbani_alpha(self, steps: int | None = None) -> float:
        """Sign step of the Ghorbani attacks: ``2.5 eps / steps`` (so the ball's edge is reached in
        0.4 of the steps), at least the authors' 0.5/255 and at most eps."""
        steps = self.ghorbani_steps if steps is None else steps
        return min(self.eps, max(0.5 / 255, 2.5 * self.eps / steps))

    def dombrowski_lr(self, steps: int | None = None) -> float:
        """Adam step (normalised units) of the Dombrowski attack: the authors' 2e-4 x 1500 steps
        spread over ``steps``, so every profile can move the image as far."""
        steps = self.dombrowski_steps if steps is None else steps
        return 2e-4 * 1500 / steps

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, ArenaSettings] = {
    "smoke": ArenaSettings(
        profile="smoke", images=2, shard_size=2, strength_images=1, model_profile="smoke",
        models=("natural", "softplus"),  # one ReLU and one Softplus model: both routes of every attack
        smoothgrad_samples=2, ig_steps=2, rise_masks=16, relex_iterations=2, relex_samples=2, dance_stride=29,
        dance_steps=2, mask_search_passes=8, pgd_steps=2, ghorbani_steps=2, dombrowski_steps=2, frame_steps=2,
        retrieval_steps=2, rise_attack_masks=8, mask_search_attack_passes=4, relex_attack_iterations=1,
        relex_attack_samples=1, dance_recompute_every=2, auc_steps=8, sigma_permutations=2, sigma_iterations=3,
        sigma_scan=4, shapes_train=256, shapes_epochs=1, shapes_images=4, shapes_size=32,
    ),
    # book: 200 images x 6 models x 12 explainers x 8 perturbations in about 3 hours of the 2-core CPU
    # (estimate.estimate: every map is made about 14 times per image and model, so the long methods run
    # short: RISE 128 masks, the mask search 128 passes, RelEx 16 x 2, DANCE on the 4 corner patches)
    "book": ArenaSettings(
        profile="book", images=200, shard_size=10, strength_images=12, model_profile="book",
        smoothgrad_samples=5, ig_steps=5, rise_masks=128, relex_iterations=16, relex_samples=2, dance_stride=29,
        dance_steps=4, mask_search_passes=128, pgd_steps=10, ghorbani_steps=10, dombrowski_steps=10,
        frame_steps=10, retrieval_steps=5, rise_attack_masks=16, mask_search_attack_passes=16,
        relex_attack_iterations=2, relex_attack_samples=2, dance_recompute_every=5, auc_steps=16,
        sigma_permutations=5, sigma_iterations=5, sigma_scan=5, shapes_train=4000, shapes_epochs=4,
        shapes_images=200,
    ),
    "paper": ArenaSettings(
        profile="paper", images=1000, shard_size=50, strength_images=100, model_profile="paper", ig_steps=100,
        relex_attack_iterations=10, relex_attack_samples=8, shapes_train=20000, shapes_epochs=8, shapes_images=1000,
    ),
}


def arena_settings(profile: str | ArenaSettings = "smoke", **overrides) -> ArenaSettings:
    """The settings of ``profile`` (a name of :data:`PROFILES` or settings themselves) with
    ``overrides`` replaced; unknown profiles and fields are refused with the valid ones."""
    if isinstance(profile, ArenaSettings):
        base = profile
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ValueError(f"unknown arena profile {profile!r}; choose one of {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(ArenaSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown arena setting(s) {unknown}; the settings are {sorted(fields - {'profile'})}")
    settings = dataclasses.replace(base, **overrides)
    check_names("models", settings.models, tuple(MODELS))
    for name in ("images", "shard_size"):
        if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1:
            raise ValueError(f"{name} must be a positive int, got {getattr(settings, name)!r}")
    if not 0 <= settings.strength_images <= settings.images:
        raise ValueError(f"strength_images must lie in [0, images={settings.images}], got {settings.strength_images}")
    return settings


def check_names(axis: str, names, valid) -> tuple[str, ...]:
    """``names`` (None: all of ``valid``) as a tuple, each checked against ``valid``."""
    if names is None:
        return tuple(valid)
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {axis} {unknown}; choose from {list(valid)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{axis} must be a non-empty list of distinct names, got {list(names)}")
    return names


def image_seed(seed: int, index: int, stream: str) -> int:
    """A seed for image ``index`` of the run and one use (``stream``: "map", "noise", ...),
    independent of how images are grouped into shards."""
    digest = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**62
