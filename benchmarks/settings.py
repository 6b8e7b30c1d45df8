"""The suite's sections and their settings: the papers' own, and the scaled ones the suite runs.

The cost per model pass is what is compared, so the passes per image are scaled down until the whole
suite fits in about ten minutes on a 2-core CPU; the methods, their batching and their work per pass
are unchanged. The work per image is the same at every size, so that seconds per image compare
across sizes; ``images`` (how many images a section explains) is smaller at 224 px, and the heavy
paper methods explain fewer. Sizes other than 32 use the 224 px images and sweep.

At these settings the authors' loops fill smaller passes than at the papers' own (RelEx: 8 copies
per pass instead of 50; RISE: 32 masks instead of 100; sigma*: 2 permutations instead of 10), which
matters on a GPU and for the LeNet, whose best batch is larger.
"""

from __future__ import annotations

# name: (title, what the paper / the method's usual setting is)
SECTIONS = {
    "gradient": ("Gradient", "1 pass"),
    "smoothgrad": ("SmoothGrad", "50 samples, noise 0.15 (RelEx's baseline; paper C: 100)"),
    "integrated_gradients": ("Integrated Gradients", "50 to 100 steps, zero baseline"),
    "gradcam": ("Grad-CAM", "1 pass, last spatial layer"),
    "lrp_epsilon": ("LRP-epsilon", "1 pass, epsilon rule in every linear layer"),
    "rise": ("RISE", "4000 masks, grid 7 (Petsiuk et al.)"),
    "relex": ("RelEx (paper A)", "50 iterations x 2 passes of 50 noisy copies = 5000 passes"),
    "dance": ("DANCE around the gradient (paper B)",
              "3x3 patch at stride 3 (5625 positions at 224 px), 20 solver steps and up to 6 repair "
              "passes per decoy"),
    "mask_search": ("Mask search (paper D)", "5000 passes, grid 8 (4 at 32 px)"),
    "reliability": ("sigma* (paper C)", "10 permutations per shuffled variant (22 rows per image); the library's "
                    "bisection: scan 10, 14 steps"),
    "l2_cosd": ("l2 + cosd training step (paper E)", "batch 128, one neighbour per example"),
    "max_sensitivity": ("Max-sensitivity of the gradient", "10 samples in an L-inf ball of radius 0.02"),
    "deletion": ("Deletion (pixel flipping)", "224 steps at 224 px, 32 at 32 px"),
}

# Model passes per explained image at the papers' own settings, per size: the costs page multiplies
# them by the measured seconds per pass to estimate the cost of a paper-sized run. DANCE and sigma*
# depend on the image: DANCE counts one repair pass per decoy (up to 6), sigma* the 331 passes per
# image the library's defaults made on the LeNet (22 rows x about 15 budgets).
PAPER_PASSES = {
    "gradient": {32: 1, 224: 1}, "gradcam": {32: 1, 224: 1}, "lrp_epsilon": {32: 1, 224: 1},
    "smoothgrad": {32: 50, 224: 50}, "integrated_gradients": {32: 50, 224: 50},
    "rise": {32: 4000, 224: 4000}, "relex": {32: 5000, 224: 5000},
    "dance": {32: 2 * 11**2 * (20 + 1 + 1), 224: 2 * 75**2 * (20 + 1 + 1)},
    "mask_search": {32: 5000, 224: 5000}, "reliability": {32: 331, 224: 331},
    "l2_cosd": {32: 2, 224: 2}, "max_sensitivity": {32: 11, 224: 11}, "deletion": {32: 33, 224: 225},
}

# The work per image is the same at every size, so that a method's seconds per image at 32 and at
# 224 px compare (the figure of the book's page); only the number of images, the grid of the masks
# (the paper D port: 4 cells at 32 px, 8 at 224) and the training batch follow the size.
WORK = {
    "gradient": {}, "gradcam": {}, "lrp_epsilon": {},
    "smoothgrad": {"samples": 4, "noise_level": 0.15},
    "integrated_gradients": {"steps": 4},
    "rise": {"masks": 32},
    "relex": {"iterations": 1, "samples": 8},
    "dance": {"steps": 2, "repair": 1},  # stride: a patch in each corner, 2 x 2 positions (8 decoys)
    "mask_search": {"passes": 16},
    "reliability": {"permutations": 2, "scan": 4, "iterations": 3},
    "max_sensitivity": {"samples": 4, "radius": 0.02},
    "deletion": {"steps": 8},
}

SCALED = {
    32: {
        "images": 64, "repeats": 5,
        "rise": {"images": 16, "grid_size": 4},
        "relex": {"images": 16},
        "dance": {"images": 8},
        "mask_search": {"images": 32, "grid_size": 4},
        "reliability": {"images": 16},
        "l2_cosd": {"batch": 64},
        "bound": {"batch_sizes": (1, 8, 16, 32, 64, 128, 256), "rows": 128,
                  "train_batch_sizes": (16, 32, 64), "train_rows": 32},
    },
    224: {
        "images": 4, "repeats": 3,
        "rise": {"images": 2, "grid_size": 7},
        "relex": {"images": 2},
        "dance": {"images": 2},
        "mask_search": {"images": 4, "grid_size": 8},
        "reliability": {"images": 2},
        "l2_cosd": {"batch": 4},
        "bound": {"batch_sizes": (1, 2, 4, 8), "rows": 8, "train_batch_sizes": (1, 2, 4), "train_rows": 4},
    },
}

# --quick: seconds, for the tests; checks that everything runs, measures nothing.
QUICK_WORK = {
    "gradient": {}, "gradcam": {}, "lrp_epsilon": {},
    "smoothgrad": {"samples": 2, "noise_level": 0.15},
    "integrated_gradients": {"steps": 2},
    "rise": {"masks": 2},
    "relex": {"iterations": 1, "samples": 1},
    "dance": {"steps": 1, "repair": 0},
    "mask_search": {"passes": 2},
    "reliability": {"permutations": 1, "scan": 1, "iterations": 1},
    "max_sensitivity": {"samples": 1, "radius": 0.02},
    "deletion": {"steps": 2},
}

QUICK = {
    32: {
        "images": 4, "repeats": 1,
        "rise": {"images": 2, "grid_size": 4},
        "relex": {"images": 2},
        "dance": {"images": 2},
        "mask_search": {"images": 4, "grid_size": 4},
        "reliability": {"images": 2},
        "l2_cosd": {"batch": 4},
        "bound": {"batch_sizes": (1, 2, 4), "rows": 4, "train_batch_sizes": (2, 4), "train_rows": 4},
    },
    224: {
        "images": 1, "repeats": 1,
        "rise": {"images": 1, "grid_size": 7},
        "relex": {"images": 1},
        "dance": {"images": 1},
        "mask_search": {"images": 1, "grid_size": 8},
        "reliability": {"images": 1},
        "l2_cosd": {"batch": 1},
        "bound": {"batch_sizes": (1,), "rows": 1, "train_batch_sizes": (1,), "train_rows": 1},
    },
}


def settings_for(size: int, quick: bool) -> dict:
    """The settings of a workload of ``size`` px: the work per image (the same at every size), the
    images and the bound sweep of 32 px, or of 224 px for any larger size."""
    work, table = (QUICK_WORK, QUICK) if quick else (WORK, SCALED)
    per_size = table[32 if size == 32 else 224]
    chosen = {"images": per_size["images"], "repeats": per_size["repeats"], "bound": dict(per_size["bound"])}
    for name, options in work.items():
        chosen[name] = {**options, "images": per_size["images"], **per_size.get(name, {})}
    chosen["dance"]["stride"] = size - 3  # a 3x3 patch flush with each corner: 2 x 2 positions
    chosen["l2_cosd"] = dict(per_size["l2_cosd"])
    return chosen
