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
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rewards.solution import make_solution
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


def refer_records(root: str | Path, images_dir: str | Path, split: str | None = None,
                  split_by: str = "unc", dataset: str = "refcoco", grefs: bool = False,
                  skips: Skips | None = None) -> Iterator[Record]:
    """Records of RefCOCO/+/g (`grefs=False`, `refs({split_by}).p`) or gRefCOCO
    (`grefs=True`, `grefs({split_by}).json`), optionally of one split."""
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
            for a in ids:
                if a not in anns:
                    raise data_error(refs_path, rec, "ann_id",
                                     f"annotation {a} is not in instances.json")
                ann = anns[a]
                masks.append(segmentation_to_mask(
                    ann.get("segmentation"), width, height, source=root / "instances.json",
                    record=f"annotation {a}", field_name="segmentation"))
                x, y, w, h = ann["bbox"]
                boxes.append([x, y, min(width, x + w), min(height, y + h)])
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
        except DataError as e:
            skips.skip(e.reason, e)
            continue
        solution = make_solution(width, height, masks, boxes)
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
