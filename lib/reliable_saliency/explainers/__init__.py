"""Saliency explainers with one signature, batched Monte-Carlo samples and differentiable maps.

Every explainer is called as::

    explain(model, x, target, *, create_graph=False, generator=None, batch_size=None, **options)

with ``x`` (N, C, H, W) normalised input and ``target`` an int or a LongTensor (N,). It returns a
map of the shape of ``x`` (Grad-CAM and RISE: (N, 1, H, W)). Samples and integration steps share
the batch axis in chunks of at most ``batch_size`` model inputs (:mod:`..core.batching`); results
do not depend on ``batch_size``. With ``create_graph=True`` the map keeps its autograd graph, so it
can be differentiated w.r.t. ``x`` (when ``x`` requires grad) and the model's parameters (attacks
on explanations, training regularisers).

The caller's model is never modified: its mode and ``requires_grad`` flags are left as they are,
and hooks used by Grad-CAM, guided backprop and LRP are removed even when an error is raised. Input
checks (shape, NaN, range of ``model.input_space``, BatchNorm/Dropout in train mode, target range)
raise ``ValueError`` / ``TypeError`` with what to do.

Randomness (SmoothGrad family, RISE) comes from ``generator`` only (the global RNG when None).
Noise: one seed per image is drawn from it, and each image's samples come from a generator on
``x.device`` seeded with that seed (:class:`..core.batching.ImageNoise`), so CPU and CUDA draws
differ. RISE masks are drawn up front on the generator's device and shared by all images.

The gradient family (gradient, grad_x_input, integrated_gradients, smoothgrad, smoothgrad_squared,
vargrad, guided_backprop, gradcam) takes ``output="logit" | "probability" | "log_probability"``:
the score of the target class that is differentiated.

One module per family; each method registers itself in :data:`EXPLAINERS` next to its definition.
"""

from .dance import dance  # paper B; decoys: reliable_saliency.explainers.decoys
from .gradient import IG_METHODS, grad_x_input, gradient, ig_rule, integrated_gradients
from .layer_rules import gradcam, guided_backprop, guided_gradcam, lrp_epsilon
from .mask_search import mask_search, mask_search_trace, normalise_search_map  # paper D
from .noise import smoothgrad, smoothgrad_squared, vargrad
from .objective import OUTPUTS
from .registry import EXPLAINERS, Explainer, get_explainer, register
from .relex import relex, relex_loss
from .rise import rise

__all__ = [
    "OUTPUTS", "IG_METHODS", "EXPLAINERS", "Explainer", "register", "get_explainer",
    "gradient", "grad_x_input", "ig_rule", "integrated_gradients",
    "smoothgrad", "smoothgrad_squared", "vargrad",
    "gradcam", "guided_backprop", "guided_gradcam", "lrp_epsilon", "rise",
    "relex", "relex_loss",
]
