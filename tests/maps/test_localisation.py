"""Localisation measures (reliable_saliency.maps.localisation): centre of mass against scipy,
pointing game and box IoU on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import gen
from reliable_saliency import maps


def test_center_of_mass_hand_cases_and_scipy():
    m = torch.zeros(3, 6, 8)
    m[0, 2, 5] = 3.0
    m[1, 0, 0] = m[1, 2, 4] = 1.0
    m[2] = torch.rand(6, 8, generator=gen(9))
    com = maps.center_of_mass(m)
    assert com[0].tolist() == [2.0, 5.0] and com[1].tolist() == [1.0, 2.0]
    np.testing.assert_allclose(com[2].numpy(), ndimage.center_of_mass(m[2].numpy()), atol=1e-5)
    shift = maps.center_of_mass_shift(m[:2], m[1:])
    np.testing.assert_allclose(shift.numpy(), [np.hypot(1, 3), np.hypot(*(com[2] - com[1]).numpy())], atol=1e-5)
    assert torch.isnan(maps.center_of_mass(torch.zeros(1, 4, 4))).all()
    with pytest.raises(ValueError, match="non-negative"):
        maps.center_of_mass(-m)


def test_pointing_game_hand_cases():
    m = torch.zeros(3, 6, 6)
    m[0, 1, 1] = 1  # inside (0, 0, 2, 2)
    m[1, 2, 2] = 1  # on the exclusive end -> outside
    m[2] = 1.0  # constant: first maximum (0, 0)
    boxes = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]])
    assert maps.pointing_game(m, boxes).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="box 1"):
        maps.pointing_game(m, torch.tensor([[0, 0, 2, 2], [3, 0, 3, 2], [0, 0, 1, 1]]))
    with pytest.raises(TypeError, match="integer"):
        maps.pointing_game(m, boxes.float())


def test_box_iou_hand_cases():
    m = torch.zeros(2, 8, 8)
    m[0, 2:5, 3:7] = 1.0  # predicted box (2, 3, 5, 7), area 12
    m[0, 7, 0] = 0.4  # below 0.5 * max, inside 0.3 * max
    m[1] = 0.0
    boxes = torch.tensor([[3, 3, 6, 7], [0, 0, 8, 8]])  # area 12, overlap rows 3-4 x cols 3-6 = 8
    iou = maps.box_iou(m, boxes, threshold=0.5)
    assert iou[0].item() == pytest.approx(8 / 16) and torch.isnan(iou[1])
    # at 0.3 the pixel (7, 0) joins: predicted box (2, 0, 8, 7), area 42, overlap 12
    assert maps.box_iou(m[:1], boxes[:1], threshold=0.3).item() == pytest.approx(12 / 42)
    with pytest.raises(ValueError, match="threshold"):
        maps.box_iou(m, boxes, threshold=0.0)
