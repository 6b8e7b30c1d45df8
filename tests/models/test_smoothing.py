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
