"""#13's input rules, one test per rule, through the public explainers, attacks and measures."""

import pytest
import torch

from reliable_saliency import models
from reliable_saliency.attacks import pgd
from reliable_saliency.core.inputs import check_model_input
from reliable_saliency.evaluation import faithfulness
from reliable_saliency.explainers import get_explainer
from reliable_saliency.maps import localisation, similarity


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return models.build("lenet").eval()


def normalised(model, n=2):
    return model.input_space.normalize(torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


EMPTY = "is an empty batch"


@pytest.mark.parametrize("call", [
    lambda m, x: get_explainer("gradient")(m, x, 0),
    lambda m, x: get_explainer("smoothgrad", samples=2)(m, x, 0),
    lambda m, x: get_explainer("gradcam")(m, x, 0),
    lambda m, x: pgd(m, x, 0, eps=8 / 255, steps=1),
    lambda m, x: faithfulness.deletion_auc(m, x, torch.rand(0, 32, 32), 0),
    lambda m, x: similarity.spearman(torch.rand(0, 32, 32), torch.rand(0, 32, 32)),
    lambda m, x: localisation.center_of_mass(torch.rand(0, 32, 32)),
], ids=["gradient", "smoothgrad", "gradcam", "pgd", "deletion", "spearman", "center_of_mass"])
def test_an_empty_batch_gets_one_error_everywhere(lenet, call):
    with pytest.raises(ValueError, match=EMPTY):
        call(lenet, normalised(lenet)[:0])


@pytest.mark.parametrize("measure", [
    lambda m: similarity.spearman(m, m), lambda m: similarity.topk_intersection(m, m, 10),
    lambda m: similarity.cosine(m, m), lambda m: localisation.center_of_mass(m),
])
def test_a_single_hw_map_is_refused_not_read_as_rows(measure):
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        measure(torch.rand(32, 32))


def test_an_all_zero_map_has_no_centre_of_mass():
    centre = localisation.center_of_mass(torch.stack([torch.zeros(8, 8), torch.eye(8)]))
    assert torch.isnan(centre[0]).all() and torch.allclose(centre[1], torch.tensor([3.5, 3.5]))


def test_raw_pixels_given_to_a_normalised_model_warn(lenet):
    with pytest.warns(UserWarning, match=r"raw pixels.*input_space.normalize"):
        get_explainer("gradient")(lenet, torch.rand(2, 3, 32, 32), 0)


def test_normalised_images_do_not_warn(lenet, recwarn):
    get_explainer("gradient")(lenet, normalised(lenet), 0)
    assert not [w for w in recwarn if "raw pixels" in str(w.message)]


def test_model_and_input_on_different_devices_are_refused(lenet):
    with pytest.raises(ValueError, match="the model is on cpu but x is on meta"):
        check_model_input(lenet, torch.zeros(2, 3, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="the model is on cpu but x is on meta"):
        get_explainer("gradient")(lenet, torch.zeros(2, 3, 32, 32, device="meta"), 0)


def test_an_eps_above_one_is_refused_with_a_hint(lenet):
    with pytest.raises(ValueError, match="8/255"):
        pgd(lenet, normalised(lenet), 0, eps=8, steps=1)
