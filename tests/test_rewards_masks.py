"""Mask decoding for rewards: grouped by image, coarse masks upsampled, matched-pair IoU."""

import numpy as np

from rewards import make_solution, parse_solution
from rewards.masks import decode_masks, iou_or_one, pair_mask_ious, shared_decoder
from tokens import Instance


def image():
    img = np.full((16, 16, 3), 90, np.uint8)
    img[0:8, 0:8] = (220, 40, 40)
    return img


def test_decode_masks_per_row_in_the_solution_frame():
    dec = shared_decoder("region")
    assert shared_decoder("region") is dec  # one decoder per configuration
    coarse = np.zeros((2, 2), bool)
    coarse[0, 0] = True
    rows = [[Instance(None, [(0.1, 0.1)]), None], [Instance(None, [], coarse=coarse)]]
    out = decode_masks(dec, [image(), image()], rows, [(16, 16), (32, 32)])
    assert out[0][0][:8, :8].all() and not out[0][0][8:, :].any()
    assert not out[0][1].any()  # None: an empty mask
    assert out[1][0].shape == (32, 32) and out[1][0][:16, :16].all()  # upsampled, not decoded


def test_pair_ious_by_hand():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    gt = parse_solution(make_solution(4, 4, [m]))
    half = np.zeros((4, 4), bool)
    half[:2, :1] = True
    assert pair_mask_ious([half], gt, [(0, 0)]) == [0.5]
    assert iou_or_one(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
