"""The ground-truth contract every dataset, reward and metric uses.

A `solution` value (a dict, or its JSON text) describes one sample in its image's pixel frame:

    {"size": [W, H],
     "instances": [{"box": [x1, y1, x2, y2], "mask": {"size": [H, W], "counts": "..."}}, ...]}

- `box` is in pixels, x1 <= x2 <= W, y1 <= y2 <= H; optional, the mask's tight box on pixel
  edges `(xmin, ymin, xmax + 1, ymax + 1)` when absent.
- `mask` is a COCO RLE (pycocotools; `counts` compressed as a string, or uncompressed as a list).
- no instances means "no target".
- `ignore` (optional): a COCO RLE of pixels left out of both intersection and union by the
  metrics (ReasonSeg's `ignore` polygons).

Bad ground truth is bad input, not model output: it raises `SolutionError` naming the row and
field, and is never scored (a silent score would inflate the metrics).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils


class SolutionError(ValueError):
    """A `solution` value that breaks the contract."""


@dataclass
class GroundTruth:
    """A parsed `solution`.

    width, height: the pixel frame. boxes_norm: (N, 4) normalized xyxy. rles: N compressed COCO
    RLEs. masks: (N, H, W) bool, decoded once on first use.
    """

    width: int
    height: int
    boxes_norm: np.ndarray
    rles: list[dict]
    ignore_rle: dict | None = None
    _masks: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rles)

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            if self.rles:
                self._masks = mask_utils.decode(self.rles).transpose(2, 0, 1).astype(bool)
            else:
                self._masks = np.zeros((0, self.height, self.width), dtype=bool)
        return self._masks

    @property
    def areas_px(self) -> np.ndarray:
        """(N,) mask areas in pixels."""
        return mask_utils.area(self.rles).astype(np.int64) if self.rles else np.zeros(0, np.int64)

    @property
    def areas_norm(self) -> np.ndarray:
        """(N,) mask areas as fractions of the image."""
        return self.areas_px / float(self.width * self.height)

    def union_mask(self) -> np.ndarray:
        return self.masks.any(axis=0) if len(self) else np.zeros((self.height, self.width), bool)


def _fail(row, path: str, message: str):
    where = f"solution row {row}" if row is not None else "solution"
    raise SolutionError(f"{where}: {path}: {message}")


def _parse_rle(value, width: int, height: int, row, path: str) -> dict:
    if not isinstance(value, dict) or "counts" not in value or "size" not in value:
        _fail(row, path, "expected a COCO RLE {'size': [H, W], 'counts': ...}")
    size = value["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and list(size) == [height, width]):
        _fail(row, f"{path}.size", f"expected [H, W] = [{height}, {width}], got {size!r}")
    counts = value["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != width * height:
            _fail(row, f"{path}.counts", f"uncompressed counts must be non-negative ints "
                                         f"summing to H·W = {height * width}")
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        _fail(row, f"{path}.counts", f"expected a string or a list, got {type(counts).__name__}")
    rle = {"size": [height, width], "counts": counts.encode("ascii", errors="replace")}
    # pycocotools accepts some corrupt strings (an empty one decodes to uninitialized memory):
    # a valid string is the one its own mask encodes to.
    try:
        decoded = mask_utils.decode(rle)
    except Exception as e:  # pycocotools raises bare Exception on corrupt strings
        _fail(row, f"{path}.counts", f"not a valid compressed RLE ({e})")
    if mask_utils.encode(np.asfortranarray(decoded))["counts"] != rle["counts"]:
        _fail(row, f"{path}.counts", f"not a valid compressed RLE for a {width}x{height} mask")
    return rle


def parse_solution(value, row: int | None = None) -> GroundTruth:
    """Validate and parse one `solution` value; raises SolutionError naming row and field."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            _fail(row, "(json)", f"not valid JSON ({e})")
    if not isinstance(value, dict):
        _fail(row, "(value)", f"expected a dict with 'size' and 'instances', got "
                              f"{type(value).__name__}")
    size = value.get("size")
    if not (isinstance(size, list | tuple) and len(size) == 2
            and all(isinstance(s, int) and s > 0 for s in size)):
        _fail(row, "size", f"expected [W, H] positive ints, got {size!r}")
    width, height = size
    instances = value.get("instances")
    if not isinstance(instances, list):
        _fail(row, "instances", f"expected a list, got {type(instances).__name__}")
    boxes, rles = [], []
    for j, inst in enumerate(instances):
        path = f"instances[{j}]"
        if not isinstance(inst, dict):
            _fail(row, path, f"expected a dict with 'mask' (and 'box'), got {type(inst).__name__}")
        if "mask" not in inst:
            _fail(row, f"{path}.mask", "missing: every instance needs its mask as a COCO RLE")
        rle = _parse_rle(inst["mask"], width, height, row, f"{path}.mask")
        box = inst.get("box")
        if box is None:
            if int(mask_utils.area(rle)) == 0:
                _fail(row, f"{path}.mask", "empty mask and no box")
            x, y, w, h = mask_utils.toBbox(rle)
            box = [x, y, x + w, y + h]
        elif not (isinstance(box, list | tuple) and len(box) == 4
                  and all(isinstance(b, int | float) for b in box)):
            _fail(row, f"{path}.box", f"expected [x1, y1, x2, y2] in pixels, got {box!r}")
        x1, y1, x2, y2 = (float(b) for b in box)
        if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
            _fail(row, f"{path}.box", f"{list(box)} is not inside the {width}x{height} image "
                                      "with x1 <= x2 and y1 <= y2")
        boxes.append((x1 / width, y1 / height, x2 / width, y2 / height))
        rles.append(rle)
    ignore = None
    if value.get("ignore") is not None:
        ignore = _parse_rle(value["ignore"], width, height, row, "ignore")
    return GroundTruth(width, height, np.array(boxes, dtype=np.float64).reshape(-1, 4), rles,
                       ignore)


class SolutionCache:
    """Parsed solutions of recent rows. A batch repeats each row G times (the rollouts), and
    the same rows come back across rewards; parse and decode each once."""

    def __init__(self, max_items: int = 512):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()

    def get(self, value, row: int | None = None) -> GroundTruth:
        key = value if isinstance(value, str | bytes) else id(value)
        hit = self._items.get(key)
        if hit is not None and (hit[0] is value or hit[0] == value):
            self._items.move_to_end(key)
            return hit[1]
        gt = parse_solution(value, row)
        self._items[key] = (value, gt)  # holding the value keeps its id from being reused
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return gt


def encode_mask(mask_hw: np.ndarray) -> dict:
    """A compressed COCO RLE of an (H, W) bool mask, JSON-ready (`counts` as str)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask_hw, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_solution(width: int, height: int, masks_hw, boxes_xyxy_px=None) -> dict:
    """Build a contract `solution` dict from (H, W) masks (and pixel boxes, else tight boxes)."""
    instances = []
    for k, m in enumerate(masks_hw):
        inst = {"mask": encode_mask(m)}
        if boxes_xyxy_px is not None:
            inst["box"] = [float(b) for b in boxes_xyxy_px[k]]
        instances.append(inst)
    sol = {"size": [int(width), int(height)], "instances": instances}
    parse_solution(sol)
    return sol
