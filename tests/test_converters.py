import json
import pickle

import numpy as np
import pytest
from data_fixtures import (
    grefcoco_fixture,
    reasonseg_fixture,
    rect_poly,
    refcoco_fixture,
    segzero_fixture,
)
from pycocotools import mask as mask_utils

from rewards.solution import parse_solution
from rl.data.common import DataError, Skips, UnsafePickleError
from rl.data.reasonseg import reasonseg_records, segzero_records
from rl.data.refcoco import refer_records
from tokens.decoders import RegionDecoder

W, H = 64, 48


def coco_rect(x1, y1, x2, y2):
    """The mask pycocotools rasterizes for a rectangle polygon: the same rasterization."""
    rle = mask_utils.frPyObjects([rect_poly(x1, y1, x2, y2)], H, W)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ---- RefCOCO -------------------------------------------------------------------------------------
def test_refcoco_round_trip(tmp_path):
    root, images = refcoco_fixture(tmp_path)
    recs = list(refer_records(root, images))
    assert [r.expression for r in recs] == ["left cat", "the small cat", "dog", "cat on top"]
    assert [r.id for r in recs][:2] == ["refcoco-0-0", "refcoco-0-1"]
    gt = parse_solution(recs[0].solution)
    assert len(gt) == 1 and iou(gt.masks[0], coco_rect(10, 10, 30, 20)) == 1.0
    assert gt.boxes_norm[0].tolist() == [10 / W, 10 / H, 30 / W, 20 / H]  # bbox xywh → xyxy
    rle_gt = parse_solution(recs[3].solution)  # uncompressed RLE annotation
    expected = np.zeros((H, W), bool)
    expected[5:15, 40:60] = True
    assert (rle_gt.masks[0] == expected).all()
    assert recs[0].image.shape == (H, W, 3) and recs[0].kind == "single"
    assert [r.expression for r in refer_records(root, images, split="val")] == ["dog"]


def test_refcoco_malicious_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, images = refcoco_fixture(tmp_path)

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, ("touch created_by_refs",))

    (root / "refs(unc).p").write_bytes(pickle.dumps([{"ref_id": 0, "x": Payload()}], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\).p: refused to load global"):
        list(refer_records(root, images))
    assert not (tmp_path / "created_by_refs").exists()


def _rewrite_refs(root, edit):
    refs = pickle.loads((root / "refs(unc).p").read_bytes())  # noqa: S301 - our own fixture
    edit(refs)
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


def _rewrite_instances(root, edit):
    data = json.loads((root / "instances.json").read_text())
    edit(data)
    (root / "instances.json").write_text(json.dumps(data))


@pytest.mark.parametrize("case, message, reason", [
    ("missing image", r"record 0: field 'file_name': image file .* does not exist",
     "bad file_name"),
    ("escaping path", r"image 1: field 'file_name': path '../outside.jpg' leaves the dataset "
                      r"root", "bad file_name"),
    ("corrupt annotation", r"record 0: field 'ann_id': annotation 999 is not in instances.json",
     "bad ann_id"),
    ("polygon outside", r"annotation 101: field 'segmentation\[0\]': polygon reaches .* outside "
                        r"the 64x48 image", "bad segmentation"),
    ("no instance", r"record 0: field 'ann_id': RefCOCO expressions refer to one object",
     "bad ann_id"),
])
def test_refcoco_bad_input(tmp_path, case, message, reason):
    root, images = refcoco_fixture(tmp_path)
    if case == "missing image":
        (images / "COCO_train2014_000000000001.jpg").unlink()
    elif case == "escaping path":
        _rewrite_instances(root, lambda d: d["images"][0].update(file_name="../outside.jpg"))
    elif case == "corrupt annotation":
        _rewrite_refs(root, lambda r: r[0].update(ann_id=999))
    elif case == "polygon outside":
        _rewrite_instances(root, lambda d: d["annotations"][0].update(
            segmentation=[rect_poly(10, 10, 90, 20)]))
    else:
        _rewrite_refs(root, lambda r: r[0].update(ann_id=-1))
    with pytest.raises(DataError, match=message):
        list(refer_records(root, images))
    skips = Skips(strict=False)
    recs = list(refer_records(root, images, skips=skips))
    assert skips.counts[reason] >= 1 and message.split(":")[0] in str(skips.examples[reason])
    assert all(not r.id.startswith("refcoco-0-") for r in recs)  # the bad ref is left out


# ---- gRefCOCO ------------------------------------------------------------------------------------
def test_grefcoco_multi_and_no_target(tmp_path):
    root, images = grefcoco_fixture(tmp_path)
    recs = list(refer_records(root, images, grefs=True, crowd="keep"))  # ref 2: a crowd RLE
    both, none, single = recs
    assert both.source == "grefcoco" and both.kind == "multi"
    gt = parse_solution(both.solution)
    assert len(gt) == 2 and iou(gt.masks[1], coco_rect(35, 25, 50, 40)) == 1.0
    assert none.kind == "none" and len(parse_solution(none.solution)) == 0
    assert single.kind == "single" and len(parse_solution(single.solution)) == 1


# ---- ReasonSeg -----------------------------------------------------------------------------------
def test_reasonseg_round_trip(tmp_path):
    # The earlier rule (tests/test_field_agreement.py checks the reference rule, the default).
    root = reasonseg_fixture(tmp_path)
    recs = list(reasonseg_records(root, masks="subtract_ignore"))
    assert [r.expression for r in recs] == ["what can hold water?", "the container"]
    assert recs[0].kind == "sentence"
    gt = parse_solution(recs[0].solution)
    ignore = coco_rect(20, 20, 30, 30)
    target = (coco_rect(10, 10, 30, 30) | coco_rect(40, 5, 50, 15)) & ~ignore
    assert len(gt) == 1 and (gt.masks[0] == target).all()  # one instance: the union
    ignore_mask = mask_utils.decode(gt.ignore_rle).astype(bool)
    assert (ignore_mask == ignore).all()
    assert not gt.masks[0][0:5, 0:5].any()  # the deprecated "flag" polygon is dropped


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(shapes=[{"label": "target", "points": [[10, 10], [90, 10], [90, 30]]}]),
     r"a1.json: record a1: field 'shapes\[0\].points': polygon reaches"),
    (lambda a: a.update(shapes=[{"label": "ignore", "points": [[1, 1], [9, 1], [9, 9]]}]),
     r"a1.json: record a1: field 'shapes': no target polygon"),
    (lambda a: a.update(text=[]), r"field 'text': expected a query"),
])
def test_reasonseg_bad_input(tmp_path, edit, message):
    root = reasonseg_fixture(tmp_path)
    ann = json.loads((root / "a1.json").read_text())
    edit(ann)
    (root / "a1.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match=message):
        list(reasonseg_records(root))


def test_reasonseg_missing_image(tmp_path):
    root = reasonseg_fixture(tmp_path)
    (root / "a1.jpg").unlink()
    skips = Skips(strict=False)
    assert list(reasonseg_records(root, skips)) == []
    assert skips.counts == {"bad (image)": 1}


# ---- Seg-Zero ------------------------------------------------------------------------------------
def test_segzero_masks_from_the_decoder(tmp_path):
    root = segzero_fixture(tmp_path)
    recs = list(segzero_records(root, RegionDecoder()))
    assert [r.expression for r in recs] == ["the red block", "both blocks"]
    gt = parse_solution(recs[1].solution)
    red = np.zeros((H, W), bool)
    red[10:20, 10:30] = True
    blue = np.zeros((H, W), bool)
    blue[25:40, 35:50] = True
    assert (gt.masks[0] == red).all() and (gt.masks[1] == blue).all()
    assert gt.boxes_norm[0].tolist() == [10 / W, 10 / H, 30 / W, 20 / H]
    assert recs[0].extra == {"img_height": 480, "img_width": 640, "mask_source": "region"}


def test_segzero_bad_input(tmp_path):
    from datasets import Dataset, load_from_disk

    root = segzero_fixture(tmp_path)
    rows = load_from_disk(str(root)).to_list()
    rows[0]["solution"] = json.dumps([{"bbox_2d": [10, 10, 300, 20], "point_2d": [20, 15]}])
    rows[1]["solution"] = "not json"
    from PIL import Image

    for r in rows:
        r["image"] = Image.open(__import__("io").BytesIO(r["image"]["bytes"]))
    bad = tmp_path / "bad"
    Dataset.from_list(rows).save_to_disk(str(bad))
    with pytest.raises(DataError, match=r"record s0: field 'solution\[0\].bbox_2d': .* is not "
                                        r"inside the 64x48 image"):
        list(segzero_records(bad, RegionDecoder()))
    skips = Skips(strict=False)
    assert list(segzero_records(bad, RegionDecoder(), skips)) == []
    assert skips.counts == {"bad solution": 2}
