import numpy as np
import pytest

from rl.metrics import score_sample, summarize


def rect(y0, y1, x0, x1, size=8):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


GT = rect(0, 4, 0, 4)  # 16 px, box (0, 0, .5, .5)
BOX = [(0.0, 0.0, 0.5, 0.5)]


def test_perfect_half_empty_and_no_target():
    perfect = score_sample(GT, GT, None, BOX, BOX, True)
    half = score_sample(rect(0, 4, 2, 6), GT, None, [(0.25, 0, 0.75, 0.5)], BOX, True)
    empty = score_sample(np.zeros((8, 8), bool), GT, None, [], BOX, True)
    no_target = score_sample(np.zeros((8, 8), bool), np.zeros((8, 8), bool), None, [], [], True)
    assert perfect.iou == 1.0 and perfect.box_iou == 1.0
    assert half.iou == pytest.approx(8 / 24) and half.box_iou == pytest.approx(8 / 24)
    assert empty.iou == 0.0 and empty.box_iou == 0.0
    assert no_target.iou == 1.0 and no_target.box_iou is None
    s = summarize([perfect, half, empty, no_target])
    assert s["gIoU"] == pytest.approx((1 + 8 / 24 + 0 + 1) / 4)
    assert s["cIoU"] == pytest.approx((16 + 8) / (16 + 24 + 16))
    assert s["Acc@0.5"] == pytest.approx(1 / 3) and s["Acc@0.8"] == pytest.approx(1 / 3)
    assert s["no_target_accuracy"] == 1.0 and s["target_accuracy"] == pytest.approx(2 / 3)


def test_parse_failure_is_an_empty_prediction_and_counted():
    failed = score_sample(np.zeros((8, 8), bool), GT, None, [], BOX, parsed=False)
    s = summarize([failed])
    assert s["gIoU"] == 0.0 and s["parse_failures"] == 1 and s["samples"] == 1


def test_several_instances_use_unions_and_ignore_pixels():
    gt = rect(0, 4, 0, 4) | rect(4, 8, 4, 8)
    pred = rect(0, 4, 0, 4)
    s = score_sample(pred, gt, None, [(0, 0, .5, .5)], [(0, 0, .5, .5), (.5, .5, 1, 1)], True)
    assert s.iou == 0.5 and s.box_iou is None  # REC is for single-target samples
    ignore = rect(4, 8, 4, 8)
    assert score_sample(pred, gt, ignore, [], [(0, 0, 1, 1), (0, 0, 1, 1)], True).iou == 1.0


def test_box_from_the_mask_when_the_answer_has_none():
    s = score_sample(GT, GT, None, [None], BOX, True)
    assert s.box_iou == 1.0
