"""Every registered explainer on real architectures built without weights: torchvision's ResNet-18
(residual ``out += identity``, ``ReLU(inplace=True)`` used twice per block), MobileNetV2 (in-place
ReLU6), a small DenseNet (concatenations, a functional in-place ReLU after the features) and the
library's own models. Where captum or zennit implement the same method, the map must equal
theirs, computed on a copy with every in-place flag off (the same function, without the traps)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from reliable_saliency import models
from reliable_saliency.core.inputs import CIFAR10, IMAGENET
from reliable_saliency.explainers import EXPLAINERS, get_explainer
from reliable_saliency.core.hooks import last_spatial_layer

captum_attr = pytest.importorskip("captum.attr")


def _torchvision(builder, size):
    def build():
        torch.manual_seed(0)
        model = builder(weights=None, num_classes=7) if builder is not torchvision.models.DenseNet else \
            builder(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=7)
        model.input_space = IMAGENET
        # batch-norm statistics from a random batch, so activations neither vanish nor explode
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None
        with torch.no_grad():
            model.train()(IMAGENET.normalize(torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(5))))
        return model
    return build


def _library(name):
    def build():
        torch.manual_seed(0)
        return models.build(name)
    return build


ARCHITECTURES = {  # name: (builder, image size)
    "tv_resnet18": (_torchvision(torchvision.models.resnet18, 64), 64),
    "tv_mobilenet_v2": (_torchvision(torchvision.models.mobilenet_v2, 64), 64),
    "tv_densenet_small": (_torchvision(torchvision.models.DenseNet, 32), 32),
    "lenet": (_library("lenet"), 32),
    "cifar_resnet18": (_library("resnet18"), 32),
}
DEFAULT_GRADCAM_LAYER = {
    "tv_resnet18": "layer4.1", "tv_mobilenet_v2": "features.18.2", "tv_densenet_small": "features.norm5",
    "lenet": "features.9", "cifar_resnet18": "layers.7.act2",
}
CHEAP = {
    "integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3}, "smoothgrad_squared": {"samples": 3},
    "vargrad": {"samples": 3}, "rise": {"masks": 8, "grid_size": 3}, "relex": {"iterations": 2, "samples": 2},
    "mask_search": {"passes": 6, "grid_size": 3}, "dance": {"steps": 1, "patch": 8, "stride": 16},
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def case(request):
    builder, size = ARCHITECTURES[request.param]
    model = builder().double().eval()
    space = model.input_space
    pixels = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = space.normalize(pixels)
    target = torch.tensor([1, 4])
    return request.param, model, x, target


class FunctionalPool(nn.Module):
    """DenseNet's functional global average pooling as a module, so zennit can give it a rule."""

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)


def oracle_copy(model):
    """A copy without in-place operations: module flags off; DenseNet's functional in-place ReLU and
    pooling rewritten. (torchvision ResNet's ``out += identity`` stays: zennit's canonizer removes it.)"""
    oracle = copy.deepcopy(model)
    for module in oracle.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    if isinstance(oracle, torchvision.models.DenseNet):
        oracle.pool = FunctionalPool()
        oracle.forward = lambda x: oracle.classifier(oracle.pool(torch.relu(oracle.features(x))))
    return oracle


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_every_explainer_runs_and_is_finite(case, name):
    arch, model, x, target = case
    maps = get_explainer(name, **CHEAP.get(name, {}))(model, x, target, generator=torch.Generator().manual_seed(0))
    assert maps.shape[0] == 2 and maps.shape[-2:] == x.shape[-2:] and bool(torch.isfinite(maps).all())


def test_default_gradcam_layer_is_named_and_runs_once(case):
    arch, model, x, target = case
    name, call = last_spatial_layer(model, x)
    assert (name, call) == (DEFAULT_GRADCAM_LAYER[arch], None)
    torch.testing.assert_close(get_explainer("gradcam")(model, x, target),
                               get_explainer("gradcam", layer=name)(model, x, target))


def test_gradient_methods_match_captum(case):
    arch, model, x, target = case
    oracle = oracle_copy(model)
    inputs = x.clone().requires_grad_(True)
    torch.testing.assert_close(get_explainer("gradient")(model, x, target),
                               captum_attr.Saliency(oracle).attribute(inputs, target=target, abs=False))
    torch.testing.assert_close(get_explainer("grad_x_input")(model, x, target),
                               captum_attr.InputXGradient(oracle).attribute(inputs, target=target))
    ig = captum_attr.IntegratedGradients(oracle).attribute(inputs, target=target, n_steps=4, method="riemann_middle")
    torch.testing.assert_close(get_explainer("integrated_gradients", steps=4)(model, x, target), ig)


def test_smoothgrad_without_noise_is_the_gradient(case):
    arch, model, x, target = case
    torch.testing.assert_close(get_explainer("smoothgrad", samples=2, noise_level=0.0)(model, x, target),
                               get_explainer("gradient")(model, x, target))


class ClampMax6(nn.Module):
    def forward(self, x):
        return x.clamp(max=6)


def relu6_as_relu(model):
    """ReLU6 as ReLU then min(., 6): captum's guided backprop acts on nn.ReLU modules only."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, child_name, nn.Sequential(nn.ReLU(), ClampMax6()))
    return model


def test_guided_backprop_and_guided_gradcam_match_captum(case):
    arch, model, x, target = case
    oracle = relu6_as_relu(oracle_copy(model))
    if arch.startswith("tv_densenet"):
        # DenseNet's forward ends with a functional F.relu, which captum cannot hook and the library
        # guides: give captum the same ReLU as a module (the functional one after it then changes nothing)
        oracle.features.add_module("final_relu", nn.ReLU())
    inputs = x.clone().requires_grad_(True)
    ref = captum_attr.GuidedBackprop(oracle).attribute(inputs, target=target)
    torch.testing.assert_close(get_explainer("guided_backprop")(model, x, target), ref)
    layer = DEFAULT_GRADCAM_LAYER[arch]
    cam = captum_attr.LayerGradCam(oracle, oracle.get_submodule(layer)).attribute(
        inputs, target=target, relu_attributions=True)
    cam = captum_attr.LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")
    torch.testing.assert_close(get_explainer("gradcam")(model, x, target), cam)
    torch.testing.assert_close(get_explainer("guided_gradcam")(model, x, target), ref * cam)


def test_lrp_epsilon_does_not_depend_on_in_place_flags(case):
    """The rule reads each layer's output as the forward pass made it, not after a later in-place
    ReLU changed it (the bug torchvision's in-place ReLUs exposed)."""
    arch, model, x, target = case
    explain = get_explainer("lrp_epsilon", epsilon=0.1)
    torch.testing.assert_close(explain(model, x, target), explain(oracle_copy(model), x, target))


@pytest.mark.parametrize("epsilon", [1e-6, 0.1])
@pytest.mark.parametrize("arch", ["tv_resnet18", "tv_densenet_small", "lenet"])
def test_lrp_epsilon_matches_zennit(arch, epsilon):
    """zennit with the epsilon rule on every linear module; sums and functional poolings, which
    the library cannot hook, get the z-rule (relevance in proportion to each input's
    contribution), which is what lrp_epsilon does there: zennit's ResNet canonizer turns the
    residual ``out += identity`` into a Sum module for that."""
    pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon
    from zennit.torchvision import ResNetBasicBlockCanonizer

    builder, size = ARCHITECTURES[arch]
    model = builder().double().eval()
    x = model.input_space.normalize(torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(1),
                                               dtype=torch.float64))
    target = torch.tensor([1, 4])
    linear = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    rules = [(kind, Epsilon(epsilon)) for kind in linear] + [(kind, Epsilon(1e-12)) for kind in (Sum, FunctionalPool)]
    canonizers = [ResNetBasicBlockCanonizer()] if arch == "tv_resnet18" else []
    oracle = oracle_copy(model)
    onehot = torch.eye(7 if arch.startswith("tv_") else 10, dtype=x.dtype)[target]
    with Gradient(oracle, LayerMapComposite(rules, canonizers=canonizers)) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), lambda out: out * onehot)
    got = get_explainer("lrp_epsilon", epsilon=epsilon)(model, x, target)
    scale = relevance.abs().max()
    torch.testing.assert_close(got / scale, relevance / scale, rtol=1e-6, atol=1e-8)


def test_guided_backprop_accepts_a_relu6_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model.input_space = CIFAR10
    x = CIFAR10.normalize(torch.rand(2, 3, 8, 8))
    oracle = relu6_as_relu(copy.deepcopy(model))
    ref = captum_attr.GuidedBackprop(oracle).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(get_explainer("guided_backprop")(model.eval(), x, 1), ref)
    assert not torch.allclose(ref, captum_attr.Saliency(oracle).attribute(x.clone().requires_grad_(True), target=1,
                                                                          abs=False))


def test_gradcam_default_on_efficientnet_lite_reads_the_last_call_of_its_shared_swish():
    torch.manual_seed(0)
    model = models.efficientnet_lite0().eval()
    x = model.input_space.normalize(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1)))
    name, call = last_spatial_layer(model, x)
    assert name == "_swish" and call is not None and call > 1  # one module for every swish of the net
    cam = get_explainer("gradcam")(model, x, 3)
    assert cam.shape == (1, 1, 96, 96) and bool(torch.isfinite(cam).all()) and bool(cam.max() > 0)
    with pytest.raises(ValueError, match="'_swish' ran .* times"):
        get_explainer("gradcam", layer="_swish")(model, x, 3)
