"""The structure probes (last_spatial_layer, operations) run once per model and input shape."""

import torch
from torch import nn

from reliable_saliency.core.functional import operations
from reliable_saliency.core.hooks import last_spatial_layer, probed


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _counting(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_probe_runs_once_per_model_and_shape():
    model, x = _net(), torch.rand(5, 3, 8, 8)
    calls = _counting(model)
    assert last_spatial_layer(model, x) == ("3", None)
    assert last_spatial_layer(model, x[:2]) == ("3", None)  # the batch size is not part of the structure
    operations(model, x)
    operations(model, x)
    assert calls[0] == 2  # one probe each
    last_spatial_layer(model, torch.rand(1, 3, 16, 16))  # a new input shape probes again
    assert calls[0] == 3


def test_probe_again_when_the_model_changes():
    model, x = _net(), torch.rand(2, 3, 8, 8)
    assert last_spatial_layer(model, x) == ("3", None)
    model[3] = nn.Identity()  # the last ReLU gone: the last spatial output is now the second conv's
    assert last_spatial_layer(model, x) == ("2", None)
    calls = _counting(model)
    model.eval()  # a training flag is part of the structure
    last_spatial_layer(model, x)
    assert calls[0] == 1


def test_errors_are_not_remembered():
    model, x, tries = _net(), torch.rand(1, 3, 8, 8), []

    def failing():
        tries.append(1)
        raise ValueError("no")

    for _ in range(2):
        try:
            probed(model, x, "failing", failing)
        except ValueError:
            pass
    assert len(tries) == 2
