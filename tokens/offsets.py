"""Offset-aware refinement data (method spec §5, paper §3.2.2 and C.2).

For a ground-truth mask at the model's resolution, every grid centre gets one category and one
target, in this order:

1. Inside       (centre in M)                         → `<off_0_0>`
2. Ring         (some non-zero offset moves it into M) → the offset landing deepest inside M
3. Hard-Delete  (centre in dilate(M, 2 steps) \\ M)     → `<DELETE>`
4. Far          (everything else)                      → `<DELETE>`

A sample draws K points (default 12) with quotas 40/40/10/10 %, topping up from the other pools
when one runs short. Box corners are the ground-truth corners jittered by up to one cell, and
their target is the offset that brings each corner closest to the true corner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import dilation

from tokens.answer import Instance
from tokens.decoders.base import points_in_mask
from tokens.refine import Offset, format_offset_line
from tokens.vocab import SpatialVocab

CATEGORIES = ("inside", "ring", "hard_delete", "far")
DEFAULT_QUOTAS = {"inside": 0.4, "ring": 0.4, "hard_delete": 0.1, "far": 0.1}


@dataclass
class GridTargets:
    """Per grid cell (column-major, the order of `vocab.grid_tokens()`):
    categories: (G²,) index into CATEGORIES; targets: (dx, dy) or None for `<DELETE>`."""

    cells: list[tuple[int, int]]
    categories: np.ndarray
    targets: list[Offset | None]


def _footprint(vocab: SpatialVocab, height: int, width: int, steps: int) -> np.ndarray:
    """Rectangle of half-sides `steps·round(s_px)` (square when the image is square)."""
    rx = steps * max(1, round(vocab.offset_step * width))
    ry = steps * max(1, round(vocab.offset_step * height))
    return np.ones((2 * ry + 1, 2 * rx + 1), dtype=bool)


def grid_targets(mask_hw: np.ndarray, vocab: SpatialVocab) -> GridTargets:
    """Category and offset target of every grid centre for one (H, W) bool mask."""
    m = np.asarray(mask_hw, dtype=bool)
    h, w = m.shape
    near = dilation(m, _footprint(vocab, h, w, 2)) & ~m
    depth = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    g = vocab.grid_size
    cells = [(i, j) for i in range(g) for j in range(g)]
    centres = np.array([vocab.cell_center(i, j) for i, j in cells])
    inside = points_in_mask(m, centres)
    moves = [d for d in vocab.offsets() if d != (0, 0)]
    s = vocab.offset_step
    # Depth of every destination, (G², n_moves); 0 where the destination is outside M.
    dests = np.clip(centres[:, None, :] + np.array(moves)[None, :, :] * s, 0.0, 1.0)
    cols = np.clip(np.floor(dests[..., 0] * w), 0, w - 1).astype(np.int64)
    rows = np.clip(np.floor(dests[..., 1] * h), 0, h - 1).astype(np.int64)
    dest_depth = np.where(m[rows, cols], depth[rows, cols], 0.0)
    # Ties go to the smallest move: order moves by size, then take the first maximum.
    by_size = sorted(range(len(moves)), key=lambda k: (abs(moves[k][0]) + abs(moves[k][1]),
                                                      moves[k]))
    dest_depth = dest_depth[:, by_size]
    near_hit = points_in_mask(near, centres)

    categories = np.empty(len(cells), dtype=np.int64)
    targets: list[Offset | None] = []
    for n in range(len(cells)):
        if inside[n]:
            categories[n], t = 0, (0, 0)
        elif dest_depth[n].max() > 0:
            categories[n], t = 1, moves[by_size[int(np.argmax(dest_depth[n]))]]
        elif near_hit[n]:
            categories[n], t = 2, None
        else:
            categories[n], t = 3, None
        targets.append(t)
    return GridTargets(cells, categories, targets)


def _quota_counts(n: int, quotas: Mapping[str, float]) -> dict[str, int]:
    """Split n by the quotas with the largest-remainder rule (12 → 5, 5, 1, 1)."""
    unknown = set(quotas) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown quota categories {sorted(unknown)}; known: {CATEGORIES}")
    total = sum(quotas.get(c, 0.0) for c in CATEGORIES)
    if total <= 0:
        raise ValueError("quotas must have a positive sum")
    raw = {c: n * quotas.get(c, 0.0) / total for c in CATEGORIES}
    counts = {c: int(np.floor(v)) for c, v in raw.items()}
    rest = n - sum(counts.values())
    for c in sorted(CATEGORIES, key=lambda c: (counts[c] - raw[c], CATEGORIES.index(c)))[:rest]:
        counts[c] += 1
    return counts


def sample_points(targets: GridTargets, rng: np.random.Generator, n_points: int = 12,
                  quotas: Mapping[str, float] = DEFAULT_QUOTAS) -> list[int]:
    """Indices into `targets.cells`: n_points drawn by category quotas, each pool without
    replacement; a short pool's shortfall is drawn from the other pools in category order."""
    counts = _quota_counts(n_points, quotas)
    pools = {c: list(rng.permutation(np.flatnonzero(targets.categories == k)))
             for k, c in enumerate(CATEGORIES)}
    chosen: list[int] = []
    short = 0
    for c in CATEGORIES:
        take = pools[c][: counts[c]]
        pools[c] = pools[c][counts[c]:]
        chosen += take
        short += counts[c] - len(take)
    for c in CATEGORIES:
        take = pools[c][:short]
        pools[c] = pools[c][short:]
        chosen += take
        short -= len(take)
    return [int(k) for k in chosen]


@dataclass
class RefinementExample:
    """One instance's simulated stage-1 answer and its stage-2 target.

    stage1: box (jittered corners, snapped to cell centres) and seg points (sampled cells).
    box_ops: offsets for the two corners; seg_ops: an offset or None (`<DELETE>`) per point.
    categories: the category name of each seg point.
    """

    stage1: Instance
    box_ops: list[Offset] | None
    seg_ops: list[Offset | None]
    categories: list[str]

    def offset_line(self, vocab: SpatialVocab) -> str:
        return format_offset_line(self.box_ops, self.seg_ops or None, vocab)


def jittered_box(box_norm, vocab: SpatialVocab, rng: np.random.Generator,
                 jitter_cells: float = 1.0) -> tuple[float, float, float, float]:
    """Ground-truth box corners moved by up to `jitter_cells` cells on each axis, snapped to
    the centres of their cells (what a stage-1 answer can express)."""
    x1, y1, x2, y2 = box_norm
    j = jitter_cells / vocab.grid_size
    a = vocab.cell_center(*vocab.point_to_cell(*(np.array([x1, y1]) + rng.uniform(-j, j, 2))))
    b = vocab.cell_center(*vocab.point_to_cell(*(np.array([x2, y2]) + rng.uniform(-j, j, 2))))
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))


def refinement_example(mask_hw: np.ndarray, box_norm, vocab: SpatialVocab,
                       rng: np.random.Generator, n_points: int = 12,
                       quotas: Mapping[str, float] = DEFAULT_QUOTAS,
                       jitter_cells: float = 1.0) -> RefinementExample:
    """Build one instance's refinement example from its mask and normalized box (or None)."""
    t = grid_targets(mask_hw, vocab)
    idx = sample_points(t, rng, n_points, quotas)
    points = [vocab.cell_center(*t.cells[k]) for k in idx]
    box = box_ops = None
    if box_norm is not None:
        box = jittered_box(box_norm, vocab, rng, jitter_cells)
        box_ops = [vocab.best_offset(box[0], box[1], box_norm[0], box_norm[1]),
                   vocab.best_offset(box[2], box[3], box_norm[2], box_norm[3])]
    return RefinementExample(Instance(box, points), box_ops, [t.targets[k] for k in idx],
                             [CATEGORIES[t.categories[k]] for k in idx])
