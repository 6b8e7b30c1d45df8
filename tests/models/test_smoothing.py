"""Softplus copies of ReLU networks (reliable_saliency.models.smoothing)."""

import pytest
import torch
from torch import nn

from reliable_saliency import models


def test_to_softplus_leaves_the_original_untouched():
    model = models.build("lenet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    smooth = models.to_softplus(model, beta=10.0)
    assert all(isinstance(m, nn.ReLU) for m in model.modules() if isinstance(m, (nn.ReLU, nn.Softplus)))
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert sum(isinstance(m, nn.Softplus) and m.beta == 10.0 for m in smooth.modules()) == 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    # Softplus(beta) -> ReLU as beta grows: a large beta gives nearly the same logits
    assert torch.allclose(models.to_softplus(model, 1e4)(x), model(x), atol=1e-3)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        models.to_softplus(nn.Sequential(nn.Linear(2, 2)), 5.0)


def test_smooth_relu6_tends_to_relu6_and_mobilenet_is_fully_smoothed():
    torchvision = pytest.importorskip("torchvision")
    x = torch.linspace(-3, 9, 121)
    for beta, tolerance in ((1.0, 0.8), (10.0, 0.08), (1e3, 1e-3)):
        smooth = models.smoothing.SmoothReLU6(beta)(x)
        assert float((smooth - nn.functional.relu6(x)).abs().max()) <= tolerance
    net = torchvision.models.mobilenet_v2(num_classes=10).eval()
    smooth_net = models.to_softplus(net, 1e3)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in smooth_net.modules())
    assert any(isinstance(m, nn.ReLU6) for m in net.modules())  # the original is untouched
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(smooth_net(images), net(images), atol=2e-2, rtol=0)
    # second derivative exists: the gradient of a gradient is not identically zero
    xg = images.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(models.to_softplus(net, 5.0)(xg)[:, 0].sum(), xg, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), xg)
    assert bool(gg.abs().sum() > 0)
