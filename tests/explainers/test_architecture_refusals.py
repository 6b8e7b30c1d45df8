"""#24 finding 1: a model with a stochastic module in training mode is refused by every explainer
(a ConvNeXt in train() gave maps differing by up to 0.66 between two identical calls, silently)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import convnext_tiny
from torchvision.ops import StochasticDepth

from reliable_saliency.core import inputs
from reliable_saliency.explainers import get_explainer


class DropPath(nn.Module):  # timm's name for stochastic depth
    def forward(self, x):
        return x * (torch.rand(x.shape[0], 1, 1, 1) > 0.5) if self.training else x


def tiny(extra: nn.Module) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), extra, nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model.input_space = inputs.SYNTHETIC
    return model


@pytest.mark.parametrize("module, kind", [
    (StochasticDepth(0.5, "row"), "StochasticDepth"), (DropPath(), "DropPath"), (nn.Dropout2d(0.1), "Dropout"),
    (nn.AlphaDropout(0.1), "Dropout"),
])
def test_stochastic_modules_in_training_mode_are_refused(module, kind):
    model = tiny(module)
    x = inputs.SYNTHETIC.normalize(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=f"{kind} layer in training mode.*model.eval"):
        get_explainer("gradient")(model, x, 0)
    model.eval()
    assert get_explainer("gradient")(model, x, 0).shape == x.shape


def test_attention_dropout_only_counts_when_it_drops():
    quiet, noisy = nn.MultiheadAttention(4, 1, dropout=0.0), nn.MultiheadAttention(4, 1, dropout=0.1)
    inputs.check_model_ready(quiet)  # training mode, but nothing random
    with pytest.raises(ValueError, match="attention dropout"):
        inputs.check_model_ready(noisy)


def test_a_torchvision_convnext_in_train_mode_is_refused():
    torch.manual_seed(0)
    model = convnext_tiny()
    model.input_space = inputs.IMAGENET
    x = inputs.IMAGENET.normalize(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="StochasticDepth layer in training mode"):
        get_explainer("gradient")(model, x, 0)


def tiny_vit(layers: int = 2) -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5).eval()
    vit.input_space = inputs.IMAGENET
    return vit


def test_gradcam_and_decoys_refuse_a_vision_transformer_default_layer():
    """#24 finding 3: on a ViT the default layer was the patch embedding, silently."""
    vit = tiny_vit()
    x = inputs.IMAGENET.normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="conv_proj.*token-sequence layers.*vision transformer"):
        get_explainer("gradcam")(vit, x, 0)
    with pytest.raises(ValueError, match="vision transformer"):
        get_explainer("dance", base="gradient")(vit, x, 0)
    assert get_explainer("gradcam", layer="conv_proj")(vit, x, 0).shape == (2, 1, 32, 32)  # explicit: allowed


class FunctionalTail(nn.Module):
    """DenseNet's shape: ReLU modules inside, and a functional F.relu in the model's own forward."""

    def __init__(self, functional: bool):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.tail = None if functional else nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        self.input_space = inputs.SYNTHETIC

    def forward(self, x):
        h = self.features(x)
        h = torch.nn.functional.relu(h) if self.tail is None else self.tail(h)
        return self.head(h)


def test_guided_backprop_guides_a_functional_relu_as_its_module_twin():
    """#24 finding 4: DenseNet's last ReLU is functional and was left unguided."""
    torch.manual_seed(0)
    functional, modular = FunctionalTail(True).eval(), FunctionalTail(False).eval()
    modular.load_state_dict(functional.state_dict())
    x = inputs.SYNTHETIC.normalize(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)))
    guided = get_explainer("guided_backprop")
    torch.testing.assert_close(guided(functional, x, 1), guided(modular, x, 1))
    assert not torch.allclose(guided(functional, x, 1), get_explainer("gradient")(functional, x, 1))


@pytest.mark.parametrize("activation, name", [(nn.Hardswish(), "hardswish"), (nn.SiLU(), "silu"), (nn.GELU(), "gelu")])
def test_guided_backprop_refuses_activations_it_has_no_rule_for(activation, name):
    model = tiny(activation).eval()
    x = inputs.SYNTHETIC.normalize(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=rf"guided_backprop has no rule for {name} \(in 1\)"):
        get_explainer("guided_backprop")(model, x, 0)


@pytest.mark.parametrize("activation, name", [(nn.Hardswish(), "hardswish"), (nn.SiLU(), "silu"), (nn.GELU(), "gelu"),
                                              (nn.Softplus(), "softplus")])
def test_lrp_refuses_units_it_has_no_rule_for(activation, name):
    """#24 finding 2: on SiLU / Hardswish / GELU networks LRP-epsilon returned gradient x input silently."""
    model = tiny(activation).eval()
    x = inputs.SYNTHETIC.normalize(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=rf"lrp_epsilon has no rule for {name} \(in 1\).*grad_x_input"):
        get_explainer("lrp_epsilon")(model, x, 0)


def test_lrp_refuses_layer_norm_and_attention():
    vit = tiny_vit(layers=1)
    x = inputs.IMAGENET.normalize(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="lrp_epsilon has no rule for layer_norm.*attention"):
        get_explainer("lrp_epsilon")(vit, x, 0)


def test_guided_backprop_works_on_the_smooth_surrogate_of_a_relu6_model():
    """#24 finding 8: attacking guided backprop on a ReLU6 model through its Softplus surrogate said
    'found no ReLU, ReLU6, Softplus module'."""
    from reliable_saliency.models import to_softplus

    torch.manual_seed(0)
    model = tiny(nn.ReLU6()).eval()
    surrogate = to_softplus(model, 10.0)
    x = inputs.SYNTHETIC.normalize(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    guided = get_explainer("guided_backprop")(surrogate, x, 0)
    assert torch.isfinite(guided).all() and (guided != get_explainer("gradient")(surrogate, x, 0)).any()
    assert torch.nn.functional.cosine_similarity(guided.flatten(), get_explainer("guided_backprop")(
        model, x, 0).flatten(), dim=0) > 0.9  # the smooth surrogate guides like the ReLU6 model it stands for
