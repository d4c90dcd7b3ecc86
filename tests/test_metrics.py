import numpy as np
import pytest

from rl.metrics import (
    SampleScore,
    markdown_table,
    report,
    score_sample,
    summarize,
    summarize_per_instance,
)


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


def _s(inter, union, box, instance, num_gt=1, num_pred=1):
    return SampleScore(inter, union, num_gt, num_pred, box, True, "", instance)


def test_per_instance_averages_each_object_first():
    # Object a: two expressions (IoU 0.5 and 1.0, box IoU 0.6 and 0.9); object b: one (IoU 0).
    scores = [_s(50, 100, 0.6, "a"), _s(100, 100, 0.9, "a"), _s(0, 50, 0.3, "b")]
    per_expr = summarize(scores)
    assert per_expr["gIoU"] == pytest.approx(0.5) and per_expr["cIoU"] == pytest.approx(0.6)
    assert per_expr["Acc@0.5"] == pytest.approx(2 / 3)
    assert per_expr["Acc@0.8"] == pytest.approx(1 / 3)
    per_inst = summarize_per_instance(scores)
    assert per_inst["instances"] == 2
    assert per_inst["gIoU"] == pytest.approx(0.375)  # (0.75 + 0) / 2
    assert per_inst["cIoU"] == pytest.approx(0.5)  # (75 + 0) / (100 + 50)
    assert per_inst["Acc@0.5"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert per_inst["Acc@0.8"] == pytest.approx(0.25)  # (0.5 + 0) / 2


def test_report_per_dataset_and_split_and_its_table():
    scores = [_s(50, 100, 0.6, "a"), _s(100, 100, 0.9, "a"), _s(0, 50, 0.3, "b"),
              _s(0, 0, None, "c", num_gt=0, num_pred=0),  # a correct empty answer
              SampleScore(0, 40, 2, 0, None, False, "", "d")]  # parse failure on 2 targets
    names = ["refcoco/testA"] * 3 + ["grefcoco/val"] * 2
    res = report(scores, names)
    assert list(res) == ["refcoco/testA", "grefcoco/val"]
    assert "per_instance" in res["refcoco/testA"] and "per_instance" not in res["grefcoco/val"]
    g = res["grefcoco/val"]["per_expression"]
    assert g["samples"] == 2 and g["gIoU"] == pytest.approx(0.5) and g["cIoU"] == 0.0
    assert g["no_target_samples"] == 1 and g["no_target_accuracy"] == 1.0
    assert g["target_accuracy"] == 0.0 and g["parse_failures"] == 1 and g["Acc@0.5"] is None
    table = markdown_table(res, "runs/x")
    assert table.startswith("Model: `runs/x`")
    assert "| refcoco/testA (per expression) | 3 | 50.0 | 60.0 | 66.7 | 33.3 |" in table
    assert "| refcoco/testA (per instance: 2 objects) | 2 | 37.5 | 50.0 | 50.0 | 25.0 |" in table
    assert "| grefcoco/val (per expression) | 2 | 50.0 | 0.0 | – | – | 100.0 | 0.0 | 1 | 1 |" \
        in table
    with pytest.raises(ValueError, match="3 dataset names for 5 scores"):
        report(scores, names[:3])
