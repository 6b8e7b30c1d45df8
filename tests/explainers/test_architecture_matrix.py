"""The architecture matrix (#24): every registered explainer on torchvision architectures built
without weights (batch-norm statistics from a random batch), ResNet-18 (in-place residual sums),
a DenseNet (concatenations, a functional ReLU), MobileNetV2 (ReLU6), MobileNetV3 (Hardswish,
hard-sigmoid gates), EfficientNet-B0 (SiLU, sigmoid gates, stochastic depth), ConvNeXt (GELU,
LayerNorm, stochastic depth) and a vision transformer. Every cell either matches an oracle or an
invariant, or is refused with a clear error; none is silent. REFUSED below is the contract
(test_real_architectures.py adds zennit for LRP on ResNet and DenseNet).

Oracles and invariants: captum (Saliency, InputXGradient, IntegratedGradients, LayerGradCam, GuidedBackprop
on a copy whose ReLU6 and functional ReLU are ReLU modules) for the gradient family, Grad-CAM and
guided backpropagation; LRP-epsilon with epsilon -> 0 against gradient x input (exact on networks
of linear layers and ReLU-like units); SmoothGrad / SmoothGrad^2 / VarGrad without noise against the
gradient (its square, zero); the Monte-Carlo and search methods (RISE, the mask search, RelEx,
DANCE) against themselves one image at a time (per-image seeds: a map must not depend on the other
images of the call)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from reliable_saliency.core.hooks import last_spatial_layer
from reliable_saliency.core.inputs import IMAGENET
from reliable_saliency.explainers import EXPLAINERS, get_explainer

captum_attr = pytest.importorskip("captum.attr")


def _batchnorm_from_random_batch(model: nn.Module, size: int) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(IMAGENET.normalize(torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(5))))
    return model.eval()


def build(arch: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    if arch == "densenet":
        model, size = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16,
                                                  num_classes=7), 32
    elif arch == "vit":
        model, size = torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=7), 32
    else:
        builder = {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2,
                   "mobilenet_v3": torchvision.models.mobilenet_v3_small, "efficientnet": torchvision.models.efficientnet_b0,
                   "convnext": torchvision.models.convnext_tiny}[arch]
        model, size = builder(weights=None, num_classes=7), 64
    model.input_space = IMAGENET
    return _batchnorm_from_random_batch(model, size).double(), size  # float64: the oracles compare tightly


RELU_LIKE = ("resnet18", "densenet", "mobilenet_v2")
ARCHS = (*RELU_LIKE, "mobilenet_v3", "efficientnet", "convnext", "vit")
GRADIENT_FAMILY = ("gradient", "grad_x_input", "integrated_gradients")
NOISE = ("smoothgrad", "smoothgrad_squared", "vargrad")
PER_IMAGE = {"rise": {"masks": 8, "grid_size": 3}, "mask_search": {"passes": 6, "grid_size": 3},
             "relex": {"iterations": 2, "samples": 2}, "dance": {"steps": 1, "patch": 16, "stride": 32}}
# refused cells: (explainer, arch) -> words the error must contain
REFUSED = {
    **{(name, arch): "has no rule for" for name in ("guided_backprop", "guided_gradcam", "lrp_epsilon")
       for arch in ARCHS if arch not in RELU_LIKE},
    ("gradcam", "vit"): "vision transformer", ("dance", "vit"): "vision transformer",
    ("guided_gradcam", "vit"): "vision transformer|has no rule for",  # either refusal comes first
}


class _ClampMax6(nn.Module):
    def forward(self, x):
        return x.clamp(max=6)


def relu_modules_copy(model: nn.Module, arch: str) -> nn.Module:
    """A copy captum's module hooks see completely: every ReLU6 as ReLU then min(., 6), in-place flags off,
    and DenseNet's functional final ReLU as a module (the functional one after it then changes nothing)."""
    import copy

    oracle = copy.deepcopy(model)
    for module in list(oracle.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, child_name, nn.Sequential(nn.ReLU(), _ClampMax6()))
            elif isinstance(child, nn.ReLU):
                child.inplace = False
    if arch == "densenet":  # its forward's functional in-place ReLU, rewritten with a module
        oracle.final_relu = nn.ReLU()
        oracle.forward = lambda z: oracle.classifier(torch.flatten(
            nn.functional.adaptive_avg_pool2d(oracle.final_relu(oracle.features(z)), (1, 1)), 1))
    return oracle


def test_the_matrix_covers_every_registered_explainer():
    covered = set(GRADIENT_FAMILY) | set(NOISE) | set(PER_IMAGE) | {"gradcam", "guided_backprop", "guided_gradcam",
                                                                     "lrp_epsilon"}
    assert covered == set(EXPLAINERS), f"add a verdict for {sorted(set(EXPLAINERS) - covered)}"


@pytest.fixture(scope="module", params=ARCHS)
def case(request):
    model, size = build(request.param)
    x = IMAGENET.normalize(torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(1),
                                      dtype=torch.float64))
    return request.param, model, x, torch.tensor([1, 4])


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_each_cell_matches_an_oracle_or_is_refused(case, name):
    arch, model, x, target = case
    if (name, arch) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name, arch]):
            get_explainer(name, **PER_IMAGE.get(name, {}))(model, x, target)
        return
    inputs = x.clone().requires_grad_(True)
    explain = get_explainer(name)
    if name == "gradient":
        expected = captum_attr.Saliency(model).attribute(inputs, target=target, abs=False)
        torch.testing.assert_close(explain(model, x, target), expected, rtol=1e-7, atol=1e-10)
    elif name == "grad_x_input":
        expected = captum_attr.InputXGradient(model).attribute(inputs, target=target)
        torch.testing.assert_close(explain(model, x, target), expected, rtol=1e-7, atol=1e-10)
    elif name == "integrated_gradients":
        expected = captum_attr.IntegratedGradients(model).attribute(inputs, target=target, n_steps=4,
                                                                   method="riemann_middle")
        torch.testing.assert_close(get_explainer(name, steps=4)(model, x, target), expected, rtol=1e-7, atol=1e-10)
    elif name in NOISE:
        gradient = get_explainer("gradient")(model, x, target)
        noiseless = get_explainer(name, samples=2, noise_level=0.0)(model, x, target)
        expected = {"smoothgrad": gradient, "smoothgrad_squared": gradient ** 2, "vargrad": torch.zeros_like(gradient)}
        torch.testing.assert_close(noiseless, expected[name], rtol=1e-7, atol=1e-10)
    elif name in ("gradcam", "guided_backprop", "guided_gradcam"):
        oracle = relu_modules_copy(model, arch)
        layer, call = last_spatial_layer(model, x)
        assert call is None
        cam = captum_attr.LayerGradCam(oracle, oracle.get_submodule(layer)).attribute(inputs, target=target,
                                                                                   relu_attributions=True)
        cam = captum_attr.LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")
        guided = captum_attr.GuidedBackprop(oracle).attribute(inputs, target=target) if name != "gradcam" else None
        expected = {"gradcam": cam, "guided_backprop": guided, "guided_gradcam": guided * cam if guided is not None
                    else None}[name]
        torch.testing.assert_close(explain(model, x, target), expected, rtol=1e-7, atol=1e-10)
    elif name == "lrp_epsilon":
        lrp = get_explainer(name, epsilon=1e-12)(model, x, target)
        expected = get_explainer("grad_x_input")(model, x, target)
        torch.testing.assert_close(lrp, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    else:  # per-image methods: the first image alone, with its own seed, gives the same map
        seeded = get_explainer(name, **PER_IMAGE[name])
        kwargs = {"generator": torch.Generator().manual_seed(3)} if name in ("rise", "dance") else {"seeds": [11, 12]}
        both = seeded(model, x, target, **kwargs)
        kwargs = {"generator": torch.Generator().manual_seed(3)} if name in ("rise", "dance") else {"seeds": [11]}
        alone = seeded(model, x[:1], target[:1], **kwargs)
        assert bool(torch.isfinite(both).all())
        torch.testing.assert_close(alone, both[:1], rtol=1e-7, atol=1e-9)
