"""RefCOCO, RefCOCO+, RefCOCOg and gRefCOCO to contract records.

Layout (as the refer / gRefCOCO toolkits ship it):

    ROOT/refs(unc).p      (or refs(umd).p, refs(google).p)  a pickle: list of refs
    ROOT/grefs(unc).json                                      gRefCOCO: list of refs
    ROOT/instances.json                                       COCO images + annotations
    IMAGES/COCO_train2014_000000xxxxxx.jpg                    COCO train2014 images

A ref has `ref_id`, `image_id`, `split`, `sentences` (each with `sent`), and `ann_id` (one id;
in gRefCOCO a list, `[-1]` with `no_target: true` for expressions that refer to nothing). One
record per (ref, sentence): results per expression. Pickles are read with the restricted
unpickler (plain containers only), image paths cannot leave the images folder.

As the reference toolkits read them: polygons are rasterized by pycocotools on their raw
vertices (COCO and REFER do not clip them first); gRefCOCO's crowd annotations (`iscrowd: 1`)
are left out of the target, as the gRefCOCO API does (`crowd="keep"` keeps them), and a ref
left with no annotation by that is an error; a COCO `bbox` [x, y, w, h] is clipped to the image
on all four sides when it leaves it by at most a pixel, and is an error naming the file, the
annotation and the field when it leaves it by more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rewards.solution import SolutionError, make_solution
from rl.data.common import (
    DataError,
    Record,
    Skips,
    data_error,
    load_pickle_restricted,
    read_image,
    safe_join,
    segmentation_to_mask,
)


def load_coco_instances(path: Path) -> tuple[dict, dict]:
    """(images by id, annotations by id) from a COCO `instances.json`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: COCO instances file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: field {key!r}: expected a list")
    images = {im["id"]: im for im in data["images"]}
    anns = {a["id"]: a for a in data["annotations"]}
    return images, anns


def _ann_ids(ref: dict, refs_path, k) -> list[int]:
    ann = ref.get("ann_id")
    ids = ann if isinstance(ann, list) else [ann]
    if not ids or not all(isinstance(a, int) for a in ids):
        raise data_error(refs_path, k, "ann_id", f"expected an int or a list of ints, got {ann!r}")
    return [a for a in ids if a != -1]


def coco_box(bbox, width: int, height: int, *, source, record,
             tolerance: float = 1.0) -> list[float]:
    """A COCO `bbox` [x, y, w, h] as [x1, y1, x2, y2] pixels inside the image: clipped on all
    four sides when it leaves the image by at most `tolerance` px, a DataError otherwise."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise data_error(source, record, "bbox", f"expected [x, y, w, h], got {bbox!r}") from None
    x1, y1, x2, y2 = x, y, x + w, y + h
    if not (np.isfinite([x1, y1, x2, y2]).all() and w >= 0 and h >= 0):
        raise data_error(source, record, "bbox", f"expected finite [x, y, w >= 0, h >= 0], got "
                         f"{bbox!r}")
    if (x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance
            or y2 > height + tolerance):
        raise data_error(source, record, "bbox", f"{list(bbox)} reaches ({x1:g}, {y1:g})–"
                         f"({x2:g}, {y2:g}), outside the {width}x{height} image by more than "
                         f"{tolerance:g} px")
    return [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
            min(max(x2, 0.0), width), min(max(y2, 0.0), height)]


def refer_records(root: str | Path, images_dir: str | Path, split: str | None = None,
                  split_by: str = "unc", dataset: str = "refcoco", grefs: bool = False,
                  skips: Skips | None = None, crowd: str = "skip") -> Iterator[Record]:
    """Records of RefCOCO/+/g (`grefs=False`, `refs({split_by}).p`) or gRefCOCO
    (`grefs=True`, `grefs({split_by}).json`), optionally of one split. `crowd` ("skip" or
    "keep"): gRefCOCO's crowd annotations (module doc)."""
    if crowd not in ("skip", "keep"):
        raise ValueError(f"crowd must be 'skip' or 'keep', got {crowd!r}")
    skips = skips if skips is not None else Skips()
    root, images_dir = Path(root), Path(images_dir)
    if grefs:
        refs_path = root / f"grefs({split_by}).json"
        if not refs_path.is_file():
            raise DataError(f"{refs_path}: gRefCOCO refs file not found")
        try:
            refs = json.loads(refs_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{refs_path}: not valid JSON ({e})") from None
    else:
        refs_path = root / f"refs({split_by}).p"
        if not refs_path.is_file():
            raise DataError(f"{refs_path}: refs file not found")
        refs = load_pickle_restricted(refs_path)
    if not isinstance(refs, list):
        raise DataError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    images, anns = load_coco_instances(root / "instances.json")
    source = "grefcoco" if grefs else dataset
    last_path = last_image = None  # refs of one image are usually adjacent
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict):
            skips.skip("corrupt ref", data_error(refs_path, k, "(ref)", "expected a dict"))
            continue
        if split is not None and ref.get("split") != split:
            continue
        rec = ref.get("ref_id", k)
        try:
            ids = _ann_ids(ref, refs_path, rec)
            no_target = bool(ref.get("no_target", False)) or not ids
            if not grefs and no_target:
                raise data_error(refs_path, rec, "ann_id", "RefCOCO expressions refer to one "
                                 "object; this one has none")
            image_id = ref.get("image_id")
            if image_id not in images:
                raise data_error(refs_path, rec, "image_id",
                                 f"image {image_id!r} is not in instances.json")
            im = images[image_id]
            path = safe_join(images_dir, im.get("file_name"), source=root / "instances.json",
                             record=f"image {image_id}", field_name="file_name")
            width, height = int(im["width"]), int(im["height"])
            masks, boxes = [], []
            missing = [a for a in ids if a not in anns]
            if missing:
                raise data_error(refs_path, rec, "ann_id",
                                 f"annotation {missing[0]} is not in instances.json")
            if grefs and crowd == "skip":
                kept = [a for a in ids if not anns[a].get("iscrowd", 0)]
                if ids and not kept:
                    raise data_error(refs_path, rec, "ann_id", f"every annotation {ids} is a "
                                     "crowd annotation, which the gRefCOCO API leaves out: no "
                                     "target is left (--grefcoco-crowd keep keeps them)")
                ids = kept
            for a in ids:
                ann = anns[a]
                where = {"source": root / "instances.json", "record": f"annotation {a}"}
                masks.append(segmentation_to_mask(ann.get("segmentation"), width, height,
                                                  field_name="segmentation", **where))
                boxes.append(coco_box(ann.get("bbox"), width, height, **where))
            sentences = ref.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                raise data_error(refs_path, rec, "sentences", "expected a non-empty list")
            if path != last_path:
                last_image = read_image(path, source=refs_path, record=rec,
                                        field_name="file_name")
                last_path = path
            image = last_image
            if image.shape[:2] != (height, width):
                raise data_error(refs_path, rec, "file_name",
                                 f"{path.name} is {image.shape[1]}x{image.shape[0]}, "
                                 f"instances.json says {width}x{height}")
            try:
                solution = make_solution(width, height, masks, boxes)
            except SolutionError as e:
                raise data_error(refs_path, rec, "ann_id", str(e)) from None
        except DataError as e:
            skips.skip(e.reason, e)
            continue
        for s, sent in enumerate(sentences):
            text = sent.get("sent") if isinstance(sent, dict) else None
            if not isinstance(text, str) or not text.strip():
                skips.skip("empty sentence",
                           data_error(refs_path, rec, f"sentences[{s}].sent", "empty or missing"))
                continue
            yield Record(id=f"{source}-{rec}-{s}", source=source, image=image,
                         expression=text.strip(), solution=solution,
                         kind="none" if no_target else ("multi" if len(ids) > 1 else "single"),
                         extra={"split": ref.get("split", ""), "image_id": image_id,
                                "instance": f"{source}-{rec}"})
