"""The bridge between tokens and masks (method spec §3, §4).

A `MaskDecoder` embeds an image once and then answers many prompts (a box and/or positive
points, in pixels) with masks; it also proposes masks on the G×G lattice for the greedy
conversion (`tokens.greedy`). Image embeddings are the expensive part, so every decoder keeps
them in a cache keyed by image content and bounded in size, shared by all rollouts of a prompt
and across steps; `decode` takes all prompts of one image at once, decodes each distinct prompt
once, and batches prompts of the same shape into one forward pass.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokens.vocab import SpatialVocab


@dataclass
class MaskProposals:
    """Candidate masks of one image.

    masks: (K, H, W) bool, in the image's pixel frame.
    cells: K grid cells (i, j); cells[k] is the lattice point that produced masks[k].
    scores: (K,) float, the proposer's confidence (higher is better), or None.
    """

    masks: np.ndarray
    cells: list[tuple[int, int]]
    scores: np.ndarray | None = None

    def __post_init__(self):
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (K, H, W), got shape {self.masks.shape}")
        if len(self.cells) != self.masks.shape[0]:
            raise ValueError(f"{len(self.cells)} cells for {self.masks.shape[0]} masks")

    def __len__(self) -> int:
        return self.masks.shape[0]


@runtime_checkable
class MaskProposer(Protocol):
    """Anything that proposes masks at the lattice points of `vocab` for an (H, W, 3) image."""

    def propose(self, image_hw3: np.ndarray, vocab: SpatialVocab) -> MaskProposals: ...



# The most distinct points a decoder prompt keeps (in order); every caller uses this cap, so a
# reward and the evaluation decode the same mask from the same answer.
MAX_PROMPT_POINTS = 64

def grid_points_px(vocab: SpatialVocab, width: int, height: int) -> tuple[np.ndarray, list]:
    """Pixel coordinates (G², 2) as (x, y) of every cell centre, and the cells in the same
    order (column-major, the order of `vocab.grid_tokens()`). Fresh copies of a table kept per
    (grid size, width, height): every scene of a data build asks for the same one."""
    pts, cells = _grid_points_px(vocab.grid_size, int(width), int(height))
    return pts.copy(), list(cells)


@functools.lru_cache(maxsize=64)
def _grid_points_px(grid_size: int, width: int, height: int) -> tuple[np.ndarray, tuple]:
    cells = tuple((i, j) for i in range(grid_size) for j in range(grid_size))
    centre = (np.arange(grid_size, dtype=np.float64) + 0.5) / grid_size
    pts = np.stack([np.repeat(centre, grid_size), np.tile(centre, grid_size)], axis=1)
    return pts * np.array([width, height], dtype=np.float64), cells


def point_in_mask(mask_hw: np.ndarray, x: float, y: float) -> bool:
    """The convention of spec §6: (x, y) normalized is inside a W×H mask when
    mask[min(H−1, floor(y·H)), min(W−1, floor(x·W))]."""
    h, w = mask_hw.shape
    return bool(mask_hw[min(h - 1, max(0, int(y * h))), min(w - 1, max(0, int(x * w)))])


def resize_mask(mask_hw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) mask to (height, width); pixel centres map to
    pixel centres."""
    if mask_hw.shape == (height, width):
        return mask_hw
    rows = np.minimum(((np.arange(height) + 0.5) * mask_hw.shape[0] / height).astype(np.int64),
                      mask_hw.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask_hw.shape[1] / width).astype(np.int64),
                      mask_hw.shape[1] - 1)
    return mask_hw[rows][:, cols]


def instance_masks(decoder, image, instances, frame: tuple[int, int] | None = None,
                   max_points: int = MAX_PROMPT_POINTS) -> list[np.ndarray]:
    """One mask per parsed instance, in the (W, H) `frame` (default: the image's). An instance
    that spells out its own coarse mask (`Instance.coarse`) is upsampled; the others are
    decoded from their box and points (at most `max_points` distinct points), in one call."""
    img = as_image_array(image)
    h, w = img.shape[:2]
    fw, fh = frame or (w, h)
    out: list = [None] * len(instances)
    prompts, owners = [], []
    for k, inst in enumerate(instances):
        if inst.coarse is not None:
            out[k] = resize_mask(np.asarray(inst.coarse, dtype=bool), fh, fw)
        else:
            prompts.append(Prompt.from_instance(inst, w, h, max_points))
            owners.append(k)
    if prompts:
        for k, m in zip(owners, decoder.decode(img, prompts), strict=True):
            out[k] = resize_mask(m.astype(bool), fh, fw)
    return out


def points_in_mask(mask_hw: np.ndarray, points_norm: np.ndarray) -> np.ndarray:
    """Vectorized `point_in_mask` for (N, 2) normalized points; returns (N,) bool."""
    pts = np.asarray(points_norm, dtype=np.float64).reshape(-1, 2)
    h, w = mask_hw.shape
    cols = np.clip(np.floor(pts[:, 0] * w), 0, w - 1).astype(np.int64)
    rows = np.clip(np.floor(pts[:, 1] * h), 0, h - 1).astype(np.int64)
    return mask_hw[rows, cols].astype(bool)


@dataclass(frozen=True)
class Prompt:
    """One decoder prompt in the image's pixel frame.

    box_xyxy_px: (x1, y1, x2, y2) or None; points_xy_px: positive points ((x, y), ...).
    Hashable, so identical prompts from different rollouts are decoded once.
    """

    box_xyxy_px: tuple[float, float, float, float] | None = None
    points_xy_px: tuple[tuple[float, float], ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.box_xyxy_px is None and not self.points_xy_px

    @property
    def multimask(self) -> bool:
        """Spec §3: a single point without a box is ambiguous; ask for several masks."""
        return self.box_xyxy_px is None and len(self.points_xy_px) == 1

    @classmethod
    def from_instance(cls, instance, width: int, height: int,
                      max_points: int | None = None) -> Prompt:
        """The prompt for a parsed `tokens.Instance` (normalized) on a W×H image; with
        `max_points`, repeated points are dropped and at most that many are kept, in order."""
        box = None
        if instance.box is not None:
            x1, y1, x2, y2 = instance.box
            box = (x1 * width, y1 * height, x2 * width, y2 * height)
        pts = tuple((x * width, y * height) for x, y in instance.points)
        if max_points is not None:
            pts = tuple(dict.fromkeys(pts))[:max_points]
        return cls(box, pts)


def as_image_array(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an array (grayscale and RGBA are converted)."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8 in [0, 255], got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def image_key(image_hw3: np.ndarray) -> str:
    """A content key: the same pixels give the same key, whichever object holds them."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image_hw3.shape).encode())
    h.update(np.ascontiguousarray(image_hw3).data)
    return h.hexdigest()


class EmbeddingCache:
    """A least-recently-used cache of image embeddings, bounded by `max_items` images."""

    def __init__(self, max_items: int = 32):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class MaskDecoder(ABC):
    """Prompts → masks for one image at a time, with cached image embeddings.

    Subclasses implement `_embed(image_hw3)` (the expensive part) and
    `_decode_batch(embedding, image_hw3, prompts)` for prompts of one shape (same number of
    points, box or not), returning (masks (B, H, W) bool, scores (B,)).
    """

    name = ""
    # Prompts per model call. A promptable segmenter upsamples every prompt's masks to its input
    # size before resizing them to the image (SAM: 3 x 1024 x 1024 floats per prompt, 12 MiB),
    # so the 1,024 lattice prompts of a 32-grid `propose` in one call needed ~13 GiB; SAM's own
    # everything-mode decodes 64 points at a time.
    max_batch = 64

    def __init__(self, cache_size: int = 32):
        self.cache = EmbeddingCache(cache_size)

    @abstractmethod
    def _embed(self, image_hw3: np.ndarray) -> Any: ...

    @abstractmethod
    def _decode_batch(self, embedding: Any, image_hw3: np.ndarray,
                      prompts: Sequence[Prompt]) -> tuple[np.ndarray, np.ndarray]: ...

    def embedding(self, image) -> Any:
        img = as_image_array(image)
        return self.cache.get(image_key(img), lambda: self._embed(img))

    def decode(self, image, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """One (H, W) bool mask per prompt, in order; an empty prompt gives an empty mask.

        The image is embedded at most once (cached); each distinct prompt is decoded once;
        prompts with the same number of points and the same box/no-box shape go through the
        model together, `max_batch` at a time.
        """
        return [m for m, _ in self.decode_with_scores(image, prompts)]

    def decode_with_scores(self, image, prompts: Sequence[Prompt]):
        img = as_image_array(image)
        h, w = img.shape[:2]
        unique = list(dict.fromkeys(p for p in prompts if not p.is_empty))
        results: dict[Prompt, tuple[np.ndarray, float]] = {}
        if unique:
            emb = self.cache.get(image_key(img), lambda: self._embed(img))
            groups: dict[tuple[bool, int], list[Prompt]] = {}
            for p in unique:
                groups.setdefault((p.box_xyxy_px is not None, len(p.points_xy_px)), []).append(p)
            for group in groups.values():
                for start in range(0, len(group), self.max_batch):
                    chunk = group[start:start + self.max_batch]
                    masks, scores = self._decode_batch(emb, img, chunk)
                    for p, m, s in zip(chunk, masks, scores, strict=True):
                        results[p] = (m, float(s))
        empty = (np.zeros((h, w), dtype=bool), 0.0)
        return [results.get(p, empty) for p in prompts]

    def propose(self, image, vocab: SpatialVocab, min_score: float = 0.0,
                dedupe_iou: float = 0.9) -> MaskProposals:
        """SAM-style "segment everything" on the lattice: one single-point prompt per grid
        centre, masks scoring below `min_score` or empty dropped, near-duplicates (IoU above
        `dedupe_iou`) merged into the best-scoring one."""
        from pycocotools import mask as mask_utils

        img = as_image_array(image)
        h, w = img.shape[:2]
        pts, cells = grid_points_px(vocab, w, h)
        prompts = [Prompt(None, ((float(x), float(y)),)) for x, y in pts]
        decoded = self.decode_with_scores(img, prompts)
        keep = [k for k, (m, s) in enumerate(decoded) if s >= min_score and m.any()]
        keep.sort(key=lambda k: -decoded[k][1])
        rles = [mask_utils.encode(np.asfortranarray(decoded[k][0].astype(np.uint8)))
                for k in keep]
        chosen: list[int] = []
        chosen_rles: list = []
        for k, rle in zip(keep, rles, strict=True):
            if chosen_rles:
                ious = mask_utils.iou([rle], chosen_rles, [0] * len(chosen_rles))
                if np.max(ious) > dedupe_iou:
                    continue
            chosen.append(k)
            chosen_rles.append(rle)
        masks = (np.stack([decoded[k][0] for k in chosen]) if chosen
                 else np.zeros((0, h, w), dtype=bool))
        return MaskProposals(masks, [cells[k] for k in chosen],
                             np.array([decoded[k][1] for k in chosen], dtype=np.float64))
