"""ReasonSeg (LISA) and the Seg-Zero / VisionReasoner format to contract records.

ReasonSeg: a folder of `NAME.jpg` + `NAME.json` pairs; the JSON holds `text` (a string or a list
of queries), `is_sentence`, and `shapes`, each `{"label": ..., "points": [[x, y], ...]}`.
Polygons labelled `target` (any label without "ignore" in it) make up the target, `ignore` ones
mark pixels left out of the metrics (kept as the solution's `ignore` mask), and `flag` ones are
deprecated and dropped. The target is one instance. One record per query.

How polygons become masks (`masks=`):
- `"reference"` (default): as the loader that LISA, Seg-Zero and VisionReasoner evaluate against
  draws them, so our ground truth is theirs: vertices truncated to integers, each polygon
  filled with its outline (OpenCV), and the polygons painted largest first, each over the
  earlier ones, so a small target inside a larger `ignore` region stays target and a small
  `ignore` inside a target cuts a hole.
- `"subtract_ignore"`: this package's earlier rule: polygons rasterized by pycocotools on their
  vertices, the target the union of target polygons minus every `ignore` polygon.

Seg-Zero / VisionReasoner: a `datasets.Dataset` saved with `save_to_disk`, with `image`,
`problem` (or `text`), `solution` (JSON: a list of `{"bbox_2d": [x1, y1, x2, y2],
"point_2d": [x, y]}` in the stored image's pixel frame), `img_height`, `img_width`. It has no
masks: each instance's mask is decoded from its box and point with the configured mask decoder
(as Seg-Zero's own data preparation does with SAM 2), and an instance whose decoded mask is empty
is an error (or a counted skip).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rewards.solution import encode_mask, make_solution
from rl.data.common import (
    DataError,
    Record,
    Skips,
    check_vertices,
    data_error,
    polygons_to_mask,
    read_image,
)


def _read_json(path: Path):
    raw = path.read_bytes()
    for encoding in ("utf-8", "cp1252"):  # some ReasonSeg files are not UTF-8
        try:
            return json.loads(raw.decode(encoding))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    raise DataError(f"{path}: not valid JSON")


MASK_RULES = ("reference", "subtract_ignore")


def _polygon_points(shape, width: int, height: int, *, path, rec, field_name: str,
                    tolerance: float = 1.0) -> np.ndarray:
    """The (K, 2) vertices of one shape, checked: finite numbers, at least one vertex, none more
    than `tolerance` px outside the image."""
    try:
        pts = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise data_error(path, rec, field_name, "expected a list of [x, y] vertices") from None
    if len(pts) == 0 or not np.isfinite(pts).all():
        raise data_error(path, rec, field_name, "expected at least one finite [x, y] vertex")
    check_vertices(pts[:, 0], pts[:, 1], width, height, source=path, record=rec,
                   field_name=field_name, tolerance=tolerance)
    return pts


def _reference_fill(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """One polygon as the reference loader draws it: integer vertices (truncated toward zero),
    the closed outline one pixel wide, and the inside."""
    import cv2

    poly = [pts.astype(np.int32)]
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(canvas, poly, True, 1, 1)
    cv2.fillPoly(canvas, poly, 1)
    return canvas.astype(bool)


def reasonseg_masks(shapes: list, width: int, height: int, masks: str = "reference", *,
                    path=None, rec=None) -> tuple[np.ndarray, np.ndarray]:
    """(target, ignore) (H, W) bool masks of a ReasonSeg file's `shapes` under rule `masks`
    (see the module doc). Bad shapes raise DataError naming file, record and field."""
    if masks not in MASK_RULES:
        raise ValueError(f"ReasonSeg mask rule {masks!r}: expected one of {MASK_RULES}")
    polygons = []  # (is_ignore, mask)
    for s, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise data_error(path, rec, f"shapes[{s}]", "expected an object")
        label = str(shape.get("label", "")).lower()
        if label == "flag":
            continue
        where = f"shapes[{s}].points"
        if masks == "reference":
            pts = _polygon_points(shape, width, height, path=path, rec=rec, field_name=where)
            m = _reference_fill(pts, width, height)
        else:
            pts = np.asarray(shape.get("points", []), dtype=np.float64)
            m = polygons_to_mask([pts.reshape(-1)], width, height, source=path, record=rec,
                                 field_name=where)
        polygons.append(("ignore" in label, m))
    target = np.zeros((height, width), bool)
    ignore = np.zeros((height, width), bool)
    if masks == "reference":
        # Largest first, later (smaller) polygons painted over earlier ones; the order of
        # equal areas is numpy's argsort reversed, as in the reference.
        areas = [int(m.sum()) for _, m in polygons]
        for k in np.argsort(areas)[::-1]:
            is_ignore, m = polygons[k]
            target[m], ignore[m] = not is_ignore, is_ignore
    else:
        for is_ignore, m in polygons:
            (ignore if is_ignore else target)[m] = True
        target &= ~ignore
    return target, ignore


def reasonseg_records(root: str | Path, skips: Skips | None = None,
                      masks: str = "reference") -> Iterator[Record]:
    """Records of one ReasonSeg split folder (`train`, `val` or `test`); `masks` is the
    polygon rule (module doc)."""
    if masks not in MASK_RULES:
        raise ValueError(f"ReasonSeg mask rule {masks!r}: expected one of {MASK_RULES}")
    skips = skips if skips is not None else Skips()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ReasonSeg folder not found")
    files = sorted(root.glob("*.json"))
    if not files:
        raise DataError(f"{root}: no ReasonSeg .json files")
    for path in files:
        rec = path.stem
        try:
            ann = _read_json(path)
            if not isinstance(ann, dict):
                raise data_error(path, rec, "(file)", "expected a JSON object")
            texts = ann.get("text")
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list) or not texts or not all(
                    isinstance(t, str) and t.strip() for t in texts):
                raise data_error(path, rec, "text", "expected a query or a list of queries")
            shapes = ann.get("shapes")
            if not isinstance(shapes, list):
                raise data_error(path, rec, "shapes", "expected a list of polygons")
            image_path = path.with_suffix(".jpg")
            image = read_image(image_path, source=path, record=rec, field_name="(image)")
            height, width = image.shape[:2]
            target, ignore = reasonseg_masks(shapes, width, height, masks, path=path, rec=rec)
            if not target.any():
                raise data_error(path, rec, "shapes", "no target polygon (every query of "
                                 "ReasonSeg refers to something)")
        except DataError as e:
            skips.skip(e.reason, e)
            continue
        solution = make_solution(width, height, [target])
        if ignore.any():
            solution["ignore"] = encode_mask(ignore)
        for q, text in enumerate(texts):
            yield Record(id=f"reasonseg-{rec}-{q}", source="reasonseg", image=image,
                         expression=text.strip(), solution=solution,
                         kind="sentence" if ann.get("is_sentence") else "phrase",
                         extra={"split": root.name, "mask_rule": masks})


def segzero_records(root: str | Path, decoder, skips: Skips | None = None) -> Iterator[Record]:
    """Records of a saved Seg-Zero / VisionReasoner dataset; masks decoded from box + point."""
    from datasets import load_from_disk

    from tokens.decoders import Prompt

    skips = skips if skips is not None else Skips()
    root = Path(root)
    try:
        ds = load_from_disk(str(root))
    except FileNotFoundError:
        raise DataError(f"{root}: no dataset saved with save_to_disk here") from None
    if hasattr(ds, "keys") and not hasattr(ds, "features"):  # a DatasetDict
        raise DataError(f"{root}: a DatasetDict with splits {list(ds.keys())}; point --root "
                        "at one split's folder")
    for name in ("image", "solution"):
        if name not in ds.column_names:
            raise DataError(f"{root}: column {name!r} is missing (columns: {ds.column_names})")
    text_col = "problem" if "problem" in ds.column_names else "text"
    if text_col not in ds.column_names:
        raise DataError(f"{root}: column 'problem' (or 'text') is missing")
    for k, row in enumerate(ds):
        rec = row.get("id", k)
        try:
            if row["image"] is None:
                raise data_error(root, rec, "image", "missing image")
            image = np.asarray(row["image"].convert("RGB"))
            height, width = image.shape[:2]
            try:
                items = json.loads(row["solution"])
            except (TypeError, json.JSONDecodeError) as e:
                raise data_error(root, rec, "solution", f"not valid JSON ({e})") from None
            items = [items] if isinstance(items, dict) else items
            if not isinstance(items, list) or not items:
                raise data_error(root, rec, "solution", "expected a non-empty list of objects")
            prompts, boxes = [], []
            for j, item in enumerate(items):
                box, pt = item.get("bbox_2d"), item.get("point_2d")
                if not (isinstance(box, list) and len(box) == 4):
                    raise data_error(root, rec, f"solution[{j}].bbox_2d", f"expected [x1, y1, "
                                     f"x2, y2], got {box!r}")
                x1, y1, x2, y2 = (float(b) for b in box)
                if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
                    raise data_error(root, rec, f"solution[{j}].bbox_2d", f"{box} is not inside "
                                     f"the {width}x{height} image")
                points = ()
                if pt is not None:
                    if not (isinstance(pt, list) and len(pt) == 2):
                        raise data_error(root, rec, f"solution[{j}].point_2d",
                                         f"expected [x, y], got {pt!r}")
                    points = ((float(pt[0]), float(pt[1])),)
                prompts.append(Prompt((x1, y1, x2, y2), points))
                boxes.append([x1, y1, x2, y2])
            masks = decoder.decode(image, prompts)
            for j, m in enumerate(masks):
                if not m.any():
                    raise data_error(root, rec, f"solution[{j}]",
                                     f"the {decoder.name} decoder gives an empty mask")
            text = row[text_col]
            if not isinstance(text, str) or not text.strip():
                raise data_error(root, rec, text_col, "empty expression")
        except DataError as e:
            skips.skip(e.reason, e)
            continue
        extra = {k2: row[k2] for k2 in ("img_height", "img_width") if k2 in row}
        yield Record(id=f"segzero-{rec}", source="segzero", image=image,
                     expression=text.strip(), solution=make_solution(width, height, masks, boxes),
                     kind="segzero", extra={**extra, "mask_source": decoder.name})
