import numpy as np
import pytest

from rewards.matching import box_iou, match
from rewards.solution import make_solution, parse_solution
from tokens import Instance


def gt_squares(*boxes, size=8):
    masks = []
    for x1, y1, x2, y2 in boxes:
        m = np.zeros((size, size), bool)
        m[y1:y2, x1:x2] = True
        masks.append(m)
    return parse_solution(make_solution(size, size, masks))


def test_box_iou():
    a = np.array([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.1, 0.5]])
    b = np.array([[0, 0, 0.5, 0.5]])
    assert box_iou(a, b)[:, 0].tolist() == pytest.approx([1.0, 0.0625 / 0.4375, 0.0])


def test_pairwise_terms_by_hand():
    gt = gt_squares((0, 0, 4, 4))  # normalized (0, 0, .5, .5)
    inst = Instance((0.125, 0.125, 0.375, 0.375), [(0.1, 0.1), (0.9, 0.9)])
    m = match([inst], gt, l1_scale=0.25)
    assert m.iou[0, 0] == pytest.approx(0.25)
    assert m.nbox[0, 0] == pytest.approx(1 - 0.125 / 0.25)
    assert m.hit[0, 0] == 0.5
    assert m.pairs == [(0, 0)] and m.denominator == 1


def test_matching_ignores_order_and_counts_both_sides():
    gt = gt_squares((0, 0, 4, 4), (4, 4, 8, 8))
    a = Instance((0, 0, 0.5, 0.5))
    b = Instance(None, [(0.75, 0.75)])
    m1 = match([a, b], gt)
    m2 = match([b, a], gt)
    assert sorted(m1.pairs) == [(0, 0), (1, 1)] and sorted(m2.pairs) == [(0, 1), (1, 0)]
    m3 = match([a, b, Instance(None, [(0.1, 0.9)])], gt)
    assert len(m3.pairs) == 2 and m3.denominator == 3
    assert m1.gt_of(1) == 1 and m3.gt_of(2) is None


def test_empty_sides():
    gt = gt_squares((0, 0, 4, 4))
    assert match([], gt).pairs == [] and match([], gt).denominator == 1
    empty = parse_solution({"size": [8, 8], "instances": []})
    assert match([Instance(None, [(0.1, 0.1)])], empty).pairs == []
