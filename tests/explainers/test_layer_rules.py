"""Methods with layer hooks or gradient rules (reliable_saliency.explainers.layer_rules: Grad-CAM,
guided backprop, guided Grad-CAM, LRP-epsilon) against closed forms, captum and zennit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.explainers import images
from reliable_saliency import explainers

captum_attr = pytest.importorskip("captum.attr")


class CaptumLrpNet(nn.Module):
    """Only layer types captum's LRP has rules for (flatten is functional)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.relu1, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        self.fc1, self.relu3, self.fc2 = nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


# ----------------------------------------------------------------------------- closed forms


def test_lrp_epsilon_closed_form_single_linear_layer(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.randn((4, 3, 2, 2), generator=rng, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    for eps in (1e-9, 0.5, 3.0):
        w, b = model[1].weight[target].detach(), model[1].bias[target].detach()
        z = (x.flatten(1) * w).sum(1) + b
        sign = torch.where(z >= 0, 1.0, -1.0).double()
        expected = (x.flatten(1) * w * (z / (z + eps * sign))[:, None]).view_as(x)
        torch.testing.assert_close(explainers.lrp_epsilon(model, x, target, epsilon=eps), expected)


def test_guided_backprop_closed_form_two_layer(rng):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn((5, 3, 2, 2), generator=rng, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0])
    w1, b1, w2 = model[1].weight.detach(), model[1].bias.detach(), model[3].weight.detach()
    active = (x.flatten(1) @ w1.T + b1 > 0).double()
    expected = ((active * w2[target].clamp(min=0)) @ w1).view_as(x)
    torch.testing.assert_close(explainers.guided_backprop(model, x, target), expected)


def test_gradcam_closed_form_gap_linear_head(rng):
    """With A at input resolution and a GAP + linear head, Grad-CAM is ReLU(sum_k v_tk A_k) / (h w)."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4)
    ).double().eval()
    x = images(rng, 3, 3, 6, 6)
    target = torch.tensor([3, 0, 1])
    activation = torch.tanh(model[0](x)).detach()
    v = model[4].weight[target].detach()
    expected = torch.relu((v[:, :, None, None] * activation).sum(1, keepdim=True)) / 36
    torch.testing.assert_close(explainers.gradcam(model, x, target, layer=model[1]), expected)


# ----------------------------------------------------------------------------- captum / zennit oracles


def test_gradcam_matches_captum_layer_gradcam(cnn_case):
    model, x, t = cnn_case
    for layer in ("3", "4"):
        module = model.get_submodule(layer)
        oracle = captum_attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
        ref = captum_attr.LayerAttribution.interpolate(oracle, (8, 8), "bilinear")
        torch.testing.assert_close(explainers.gradcam(model, x, t, layer=layer), ref)
        torch.testing.assert_close(explainers.gradcam(model, x, t, layer=module), ref)
        signed = captum_attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=False)
        torch.testing.assert_close(explainers.gradcam(model, x, t, layer=layer, relu=False),
                                   captum_attr.LayerAttribution.interpolate(signed, (8, 8), "bilinear"))
    frozen = copy.deepcopy(model).requires_grad_(False)  # no graph above the layer: A becomes a leaf
    torch.testing.assert_close(
        explainers.gradcam(frozen, x, t, layer="3"), explainers.gradcam(model, x, t, layer="3")
    )
    # default: the last leaf module with a spatial output (the second ReLU here)
    default = explainers.gradcam(model, x, t)
    torch.testing.assert_close(default, explainers.gradcam(model, x, t, layer=model[4]))


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_backprop_matches_captum(cnn_case, inplace):
    model, x, t = cnn_case
    if inplace:
        for module in model:
            if isinstance(module, nn.ReLU):
                module.inplace = True
    ref = captum_attr.GuidedBackprop(copy.deepcopy(model)).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(explainers.guided_backprop(model, x, t), ref)


@pytest.mark.parametrize("layer", ["3", "4"])
def test_guided_gradcam_matches_captum_guided_gradcam(cnn_case, layer):
    model, x, t = cnn_case
    oracle = copy.deepcopy(model)
    ref = captum_attr.GuidedGradCam(oracle, oracle.get_submodule(layer)).attribute(
        x.clone().requires_grad_(), target=t, interpolate_mode="bilinear")
    got = explainers.guided_gradcam(model, x, t, layer=layer)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref)


def test_guided_gradcam_is_the_product_of_the_two_library_maps(cnn_case):
    """Default layer, other outputs, chunking: always guided backprop x the upsampled Grad-CAM."""
    model, x, t = cnn_case
    for output in ("logit", "probability"):
        product = explainers.guided_backprop(model, x, t, output=output) * explainers.gradcam(
            model, x, t, output=output)
        for batch_size in (1, 64):
            torch.testing.assert_close(
                explainers.guided_gradcam(model, x, t, output=output, batch_size=batch_size), product)
    assert explainers.EXPLAINERS["guided_gradcam"] is explainers.guided_gradcam


def test_guided_gradcam_create_graph_is_differentiable(rng):
    """create_graph=True: the same map, and its derivative w.r.t. x matches finite differences."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(beta=2.0), nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), nn.Softplus(beta=2.0), nn.Flatten(), nn.Linear(27, 4),
    ).double().eval()
    x = torch.randn((2, 1, 6, 6), generator=rng, dtype=torch.float64)
    t = torch.tensor([1, 3])

    def of_x(z):
        return explainers.guided_gradcam(model, z, t, create_graph=True, layer="4")

    torch.testing.assert_close(of_x(x.clone().requires_grad_(True)).detach(),
                               explainers.guided_gradcam(model, x, t, layer="4"))
    assert torch.autograd.gradcheck(of_x, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("epsilon", [1e-9, 0.05, 1.0])
def test_lrp_epsilon_matches_captum(rng, epsilon):
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = CaptumLrpNet().double().eval()
    x, t = images(rng), torch.tensor([0, 2, 4])
    oracle = copy.deepcopy(model)
    for module in oracle.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.AvgPool2d)):
            module.rule = EpsilonRule(epsilon=epsilon)
    ref = captum_attr.LRP(oracle).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(explainers.lrp_epsilon(model, x, t, epsilon=epsilon), ref)


def test_lrp_epsilon_matches_zennit_with_max_pooling(cnn_case):
    zennit = pytest.importorskip("zennit")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon

    model, x, t = cnn_case
    for epsilon in (1e-6, 0.3):
        composite = LayerMapComposite([(nn.Conv2d, Epsilon(epsilon)), (nn.Linear, Epsilon(epsilon))])
        oracle = copy.deepcopy(model)
        onehot = torch.eye(5, dtype=x.dtype)[t]
        with Gradient(oracle, composite) as attributor:
            _, ref = attributor(x.clone().requires_grad_(), lambda out: out * onehot)
        torch.testing.assert_close(explainers.lrp_epsilon(model, x, t, epsilon=epsilon), ref)
    assert zennit is not None


# ----------------------------------------------------------------------------- hooks


def test_lrp_epsilon_rule_reads_each_forward_ratio_once(cnn_case, monkeypatch):
    """The epsilon rule writes its product into the ratio kept from the forward pass (no new
    tensor per layer), which is only right while each forward pass is backpropagated once. A change
    to the gradient engine that backpropagates one forward pass twice (retain_graph, several
    targets per forward) must fail here, not silently scale relevance by the ratio twice."""
    from reliable_saliency.explainers import layer_rules

    read: list[torch.Tensor] = []  # every ratio the rule read, kept alive so that no two share an id
    real_output_rule = layer_rules._output_rule

    def counting_output_rule(model, objective, types, rule, what, prepare=None):
        def counted(grad, kept):
            read.append(kept)
            return rule(grad, kept)
        return real_output_rule(model, objective, types, counted, what, prepare=prepare)

    monkeypatch.setattr(layer_rules, "_output_rule", counting_output_rule)
    model, x, t = cnn_case
    layers = sum(isinstance(m, layer_rules._LRP_LINEAR) for m in model.modules())
    for create_graph in (False, True):
        read.clear()
        explainers.lrp_epsilon(model, x, t, create_graph=create_graph, batch_size=2)  # 3 images: 2 forward passes
        assert len(read) == 2 * layers and len({id(k) for k in read}) == len(read), (create_graph, len(read))



def test_gradcam_layer_that_runs_twice_is_an_error_and_leaves_no_hook(rng):
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu, nn.Conv2d(4, 4, 3, padding=1), relu,
                          nn.Flatten(), nn.Linear(256, 3)).double().eval()
    with pytest.raises(ValueError, match="ran 2 times"):
        explainers.gradcam(model, images(rng), 0, layer=relu)
    assert not relu._forward_hooks
