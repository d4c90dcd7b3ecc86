"""Issue 20: ground truth and metrics agree with what the field evaluates against.

Every expected mask here is computed independently of the converters: with OpenCV's polygon
fill called directly, as LISA's ReasonSeg loader calls it, or with pycocotools on the raw
vertices, as COCO and REFER rasterize polygons.
"""

import json

import cv2
import numpy as np
import pytest
from data_fixtures import grefcoco_fixture, reasonseg_fixture, refcoco_fixture
from pycocotools import mask as mask_utils

from rewards.matching import box_iou
from rewards.solution import parse_solution
from rl.data.common import DataError, Skips
from rl.data.reasonseg import reasonseg_records
from rl.data.refcoco import refer_records
from rl.metrics import SampleScore, score_sample, summarize

W, H = 64, 48


def opencv_fill(points, w=W, h=H):
    """One polygon as LISA draws it: int32 vertices, outline of width 1, then the fill."""
    canvas = np.zeros((h, w), np.uint8)
    pts = np.array([points], dtype=np.int32)
    cv2.polylines(canvas, pts, True, 1, 1)
    cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def coco_fill(flat, w=W, h=H):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], h, w))).astype(bool)


def square(x, y, side):
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


def write_reasonseg(tmp_path, shapes):
    root = reasonseg_fixture(tmp_path)
    ann = json.loads((root / "a1.json").read_text())
    ann["shapes"] = shapes
    (root / "a1.json").write_text(json.dumps(ann))
    return root


def masks_of(record):
    gt = parse_solution(record.solution)
    ignore = (mask_utils.decode(gt.ignore_rle).astype(bool) if gt.ignore_rle is not None
              else np.zeros((gt.height, gt.width), bool))
    return gt.masks[0], ignore


# ---- ReasonSeg -----------------------------------------------------------------------------------
def test_a_target_inside_a_larger_ignore_region_survives(tmp_path):
    big, small = square(5, 5, 35), square(15, 12, 10)
    root = write_reasonseg(tmp_path, [{"label": "target", "points": small},
                                      {"label": "ignore", "points": big}])
    target, ignore = masks_of(next(reasonseg_records(root)))
    # The reference paints the larger polygon first, the smaller over it.
    expected_target = opencv_fill(small)
    expected_ignore = opencv_fill(big) & ~expected_target
    assert (target == expected_target).all() and target.sum() == 11 * 11
    assert (ignore == expected_ignore).all()
    # The earlier rule subtracted every ignore polygon: nothing was left of the target.
    with pytest.raises(DataError, match="no target polygon"):
        list(reasonseg_records(root, masks="subtract_ignore"))


def test_an_ignore_square_of_side_10_covers_121_pixels(tmp_path):
    root = write_reasonseg(tmp_path, [{"label": "target", "points": square(30, 5, 20)},
                                      {"label": "ignore", "points": square(5, 30, 10)}])
    _, ignore = masks_of(next(reasonseg_records(root)))
    assert ignore.sum() == 121 and (ignore == opencv_fill(square(5, 30, 10))).all()
    _, old = masks_of(next(reasonseg_records(root, masks="subtract_ignore")))
    assert old.sum() == 100  # pycocotools fill of the same square


def test_vertices_are_truncated_and_a_small_ignore_cuts_a_hole(tmp_path):
    target = [[10.9, 10.2], [40.7, 11.9], [38.3, 40.99], [9.5, 35.5]]
    hole = [[20.6, 20.6], [26.9, 20.1], [24.2, 27.8]]
    root = write_reasonseg(tmp_path, [{"label": "ignore", "points": hole},
                                      {"label": "target", "points": target}])
    got_target, got_ignore = masks_of(next(reasonseg_records(root)))
    assert (got_ignore == opencv_fill(hole)).all()
    assert (got_target == (opencv_fill(target) & ~opencv_fill(hole))).all()


def test_the_rule_is_checked(tmp_path):
    with pytest.raises(ValueError, match="ReasonSeg mask rule 'lisa'"):
        list(reasonseg_records(reasonseg_fixture(tmp_path), masks="lisa"))


# ---- gRefCOCO crowd annotations ------------------------------------------------------------------
def _crowd_fixture(tmp_path):
    root, images = grefcoco_fixture(tmp_path)
    grefs = json.loads((root / "grefs(unc).json").read_text())
    grefs[2]["ann_id"] = [201, 101]  # annotation 201 is a crowd RLE (iscrowd: 1)
    grefs[2]["image_id"] = 1
    data = json.loads((root / "instances.json").read_text())
    data["annotations"][2]["image_id"] = 1
    (root / "instances.json").write_text(json.dumps(data))
    (root / "grefs(unc).json").write_text(json.dumps(grefs))
    return root, images


def test_grefcoco_crowd_annotations_are_left_out(tmp_path):
    root, images = _crowd_fixture(tmp_path)
    rec = list(refer_records(root, images, grefs=True))[2]
    gt = parse_solution(rec.solution)
    assert len(gt) == 1 and rec.kind == "single"  # the ref names two; one is a crowd
    assert (gt.masks[0] == coco_fill([10, 10, 30, 10, 30, 20, 10, 20])).all()
    kept = parse_solution(list(refer_records(root, images, grefs=True, crowd="keep"))[2]
                          .solution)
    assert len(kept) == 2


def test_a_ref_of_crowd_annotations_only_is_an_error(tmp_path):
    root, images = grefcoco_fixture(tmp_path)  # ref 2 names only the crowd annotation 201
    with pytest.raises(DataError, match=r"record 2: field 'ann_id': every annotation \[201\] "
                                        r"is a crowd annotation"):
        list(refer_records(root, images, grefs=True))
    skips = Skips(strict=False)
    assert len(list(refer_records(root, images, grefs=True, skips=skips))) == 2
    assert skips.counts == {"bad ann_id": 1}


# ---- polygons on their raw vertices, boxes clipped or refused ------------------------------------
def _set_annotation(root, **fields):
    data = json.loads((root / "instances.json").read_text())
    data["annotations"][0].update(fields)
    (root / "instances.json").write_text(json.dumps(data))


def test_polygons_just_outside_the_image_are_rasterized_raw(tmp_path):
    root, images = refcoco_fixture(tmp_path)
    poly = [10.0, 10.0, 64.9, 12.0, 40.0, 48.8, 8.0, 30.0]  # two vertices past the edges
    _set_annotation(root, segmentation=[poly], bbox=[8.0, 10.0, 56.0, 38.0])
    got = parse_solution(next(refer_records(root, images)).solution).masks[0]
    clipped = list(np.clip(poly, 0, [W, H] * 4))
    assert not (coco_fill(poly) == coco_fill(clipped)).all()  # the fixture tells them apart
    assert (got == coco_fill(poly)).all()


def test_a_bbox_a_little_outside_is_clipped_on_all_four_sides(tmp_path):
    root, images = refcoco_fixture(tmp_path)
    _set_annotation(root, bbox=[-0.9, -0.7, 65.8, 49.5])
    gt = parse_solution(next(refer_records(root, images)).solution)
    assert np.allclose(gt.boxes_norm[0], [0, 0, 1, 1])


@pytest.mark.parametrize("bbox", [[-3.0, 10, 20, 10], [10, 10, 60, 10], [10, 10, 20, float("nan")]])
def test_a_bbox_outside_the_image_is_reported(tmp_path, bbox):
    root, images = refcoco_fixture(tmp_path)
    _set_annotation(root, bbox=bbox)
    with pytest.raises(DataError, match=r"instances.json: record annotation 101: field 'bbox'"):
        list(refer_records(root, images))
    skips = Skips(strict=False)
    recs = list(refer_records(root, images, skips=skips))
    assert skips.counts == {"bad bbox": 1} and len(recs) == 2  # ref 0's two sentences left out


# ---- metrics -------------------------------------------------------------------------------------
def test_an_iou_of_exactly_one_half_is_no_hit_at_0_5():
    w, h = 210, 168
    gt_px, pred_px = [113, 89, 159, 125], [113, 77, 159, 113]

    def norm(b):
        return [b[0] / w, b[1] / h, b[2] / w, b[3] / h]

    # In pixels: intersection 46 x 24 = 1104, each box 46 x 36 = 1656, union 2208: IoU = 1/2.
    assert box_iou([norm(pred_px)], [norm(gt_px)])[0, 0] > 0.5  # rounding: 0.5000000000000001
    gt_mask = np.zeros((h, w), bool)
    gt_mask[89:125, 113:159] = True
    pred_mask = np.zeros((h, w), bool)
    pred_mask[77:113, 113:159] = True
    s = score_sample(pred_mask, gt_mask, None, [norm(pred_px)], [norm(gt_px)], parsed=True)
    assert s.iou == 0.5
    assert summarize([s])["Acc@0.5"] == 0.0
    nudged = score_sample(pred_mask, gt_mask, None, [norm([113, 78, 159, 114])], [norm(gt_px)],
                          parsed=True)
    assert summarize([nudged])["Acc@0.5"] == 1.0  # one pixel closer: a hit


def test_ciou_is_zero_when_nothing_is_there_and_nothing_predicted():
    empty = SampleScore(0, 0, num_gt=0, num_pred=0, box_iou=None, parsed=True)
    m = summarize([empty, empty])
    assert m["cIoU"] == 0.0 and m["gIoU"] == 1.0 and m["no_target_accuracy"] == 1.0


def test_a_parse_failure_on_a_no_target_row_is_wrong_and_counted():
    right = SampleScore(0, 0, num_gt=0, num_pred=0, box_iou=None, parsed=True)
    garbage = SampleScore(0, 0, num_gt=0, num_pred=0, box_iou=None, parsed=False)
    assert right.iou == 1.0 and garbage.iou == 0.0
    m = summarize([right, garbage])
    assert m["gIoU"] == 0.5 and m["no_target_accuracy"] == 0.5
    assert m["no_target_parse_failures"] == 1 and m["parse_failures"] == 1
