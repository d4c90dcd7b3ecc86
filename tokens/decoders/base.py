"""The interface between tokens and masks: proposals for the greedy conversion (spec §4).

A proposer looks at an image and returns candidate object masks, each tagged with the grid cell
whose centre produced it (SAM's "segment everything" prompted on the G×G lattice, or the
weight-free region proposer). The greedy conversion (`tokens.greedy`) picks among them. The
prompt-to-mask decoders (boxes and points → masks) share this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


def grid_points_px(vocab: SpatialVocab, width: int, height: int) -> tuple[np.ndarray, list]:
    """Pixel coordinates (G², 2) as (x, y) of every cell centre, and the cells in the same
    order (column-major, the order of `vocab.grid_tokens()`)."""
    cells = [(i, j) for i in range(vocab.grid_size) for j in range(vocab.grid_size)]
    pts = np.array([vocab.cell_center(i, j) for i, j in cells], dtype=np.float64)
    return pts * np.array([width, height], dtype=np.float64), cells


def point_in_mask(mask_hw: np.ndarray, x: float, y: float) -> bool:
    """The convention of spec §6: (x, y) normalized is inside a W×H mask when
    mask[min(H−1, floor(y·H)), min(W−1, floor(x·W))]."""
    h, w = mask_hw.shape
    return bool(mask_hw[min(h - 1, max(0, int(y * h))), min(w - 1, max(0, int(x * w)))])


def points_in_mask(mask_hw: np.ndarray, points_norm: np.ndarray) -> np.ndarray:
    """Vectorized `point_in_mask` for (N, 2) normalized points; returns (N,) bool."""
    pts = np.asarray(points_norm, dtype=np.float64).reshape(-1, 2)
    h, w = mask_hw.shape
    cols = np.clip(np.floor(pts[:, 0] * w), 0, w - 1).astype(np.int64)
    rows = np.clip(np.floor(pts[:, 1] * h), 0, h - 1).astype(np.int64)
    return mask_hw[rows, cols].astype(bool)
