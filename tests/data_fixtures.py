"""Small dataset files written by hand in the exact formats the converters read."""

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 48


def write_image(path: Path, w=W, h=H, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def rect_poly(x1, y1, x2, y2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def coco_instances(images_dir: Path) -> dict:
    """Two images; annotations 101 (polygon), 102 (polygon), 201 (uncompressed RLE)."""
    write_image(images_dir / "COCO_train2014_000000000001.jpg", seed=1)
    write_image(images_dir / "COCO_train2014_000000000002.jpg", seed=2)
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 40:60] = 1
    # column-major runs, starting with background
    flat = mask.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    counts = runs
    return {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": W, "height": H},
            {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": [rect_poly(10, 10, 30, 20)], "bbox": [10, 10, 20, 10]},
            {"id": 102, "image_id": 1, "category_id": 2, "iscrowd": 0,
             "segmentation": [rect_poly(35, 25, 50, 40)], "bbox": [35, 25, 15, 15]},
            {"id": 201, "image_id": 2, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": counts}, "bbox": [40, 5, 20, 10]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def refcoco_fixture(tmp: Path) -> tuple[Path, Path]:
    root, images = tmp / "refcoco", tmp / "train2014"
    root.mkdir()
    images.mkdir()
    (root / "instances.json").write_text(json.dumps(coco_instances(images)))
    refs = [
        {"ref_id": 0, "ann_id": 101, "image_id": 1, "split": "train", "category_id": 1,
         "file_name": "COCO_train2014_000000000001_101.jpg", "sent_ids": [0, 1],
         "sentences": [{"sent": "left cat", "raw": "Left cat", "tokens": ["left", "cat"],
                        "sent_id": 0},
                       {"sent": "the small cat", "raw": "the small cat", "sent_id": 1,
                        "tokens": ["the", "small", "cat"]}]},
        {"ref_id": 1, "ann_id": 102, "image_id": 1, "split": "val", "category_id": 2,
         "sentences": [{"sent": "dog", "sent_id": 2}]},
        {"ref_id": 2, "ann_id": 201, "image_id": 2, "split": "train", "category_id": 1,
         "sentences": [{"sent": "cat on top", "sent_id": 3}]},
    ]
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root, images


def grefcoco_fixture(tmp: Path) -> tuple[Path, Path]:
    root, images = tmp / "grefcoco", tmp / "train2014"
    root.mkdir()
    images.mkdir()
    (root / "instances.json").write_text(json.dumps(coco_instances(images)))
    grefs = [
        {"ref_id": 0, "ann_id": [101, 102], "image_id": 1, "split": "train",
         "category_id": [1, 2], "no_target": False, "sentences": [{"sent": "both animals"}]},
        {"ref_id": 1, "ann_id": [-1], "image_id": 1, "split": "train", "category_id": [],
         "no_target": True, "sentences": [{"sent": "the giraffe"}]},
        {"ref_id": 2, "ann_id": [201], "image_id": 2, "split": "val", "category_id": [1],
         "no_target": False, "sentences": [{"sent": "cat"}]},
    ]
    (root / "grefs(unc).json").write_text(json.dumps(grefs))
    return root, images


def reasonseg_fixture(tmp: Path) -> Path:
    root = tmp / "ReasonSeg" / "train"
    root.mkdir(parents=True)
    write_image(root / "a1.jpg", seed=3)
    (root / "a1.json").write_text(json.dumps({
        "text": ["what can hold water?", "the container"], "is_sentence": True,
        "shapes": [
            {"label": "target", "points": [[10, 10], [30, 10], [30, 30], [10, 30]],
             "shape_type": "polygon"},
            {"label": "target", "points": [[40, 5], [50, 5], [50, 15], [40, 15]],
             "shape_type": "polygon"},
            {"label": "ignore", "points": [[20, 20], [30, 20], [30, 30], [20, 30]],
             "shape_type": "polygon"},
            {"label": "flag", "points": [[0, 0], [5, 0], [5, 5]], "shape_type": "polygon"},
        ]}))
    return root


def segzero_fixture(tmp: Path) -> Path:
    from datasets import Dataset

    img = np.full((H, W, 3), 96, np.uint8)
    img[10:20, 10:30] = (224, 32, 32)
    img[25:40, 35:50] = (32, 32, 224)
    rows = [{"id": "s0", "problem": "the red block", "image": Image.fromarray(img),
             "solution": json.dumps([{"bbox_2d": [10, 10, 30, 20], "point_2d": [20, 15]}]),
             "img_height": 480, "img_width": 640},
            {"id": "s1", "problem": "both blocks", "image": Image.fromarray(img),
             "solution": json.dumps([{"bbox_2d": [10, 10, 30, 20], "point_2d": [20, 15]},
                                     {"bbox_2d": [35, 25, 50, 40], "point_2d": [42, 32]}]),
             "img_height": 480, "img_width": 640}]
    path = tmp / "segzero"
    Dataset.from_list(rows).save_to_disk(str(path))
    return path
