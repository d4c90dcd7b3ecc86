"""A weight-free proposer: connected regions of (quantized) colour, no download, any CPU.

A stand-in for SAM's "segment everything" on machines without SAM weights. On the bundled
synthetic scenes (flat or lightly textured shapes) a shape is one colour region, so the
proposals are the shapes themselves; on natural photographs it over-segments, and SAM should
be used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label

from tokens.decoders.base import MaskProposals, grid_points_px
from tokens.vocab import SpatialVocab


class ColorRegionProposer:
    """Proposals = connected regions of equal quantized colour hit by a lattice point.

    Args:
        levels: quantization levels per channel (8 → 3 bits); coarser merges texture.
        min_area: regions smaller than this many pixels are not proposed.
        max_area_frac: regions larger than this fraction of the image (the background) are not
            proposed.
    """

    def __init__(self, levels: int = 8, min_area: int = 4, max_area_frac: float = 0.5):
        self.levels = levels
        self.min_area = min_area
        self.max_area_frac = max_area_frac

    def regions(self, image_hw3: np.ndarray) -> np.ndarray:
        """(H, W) int labels of connected equal-colour regions (4-connectivity), from 1."""
        img = np.asarray(image_hw3)
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
        q = (img[..., :3].astype(np.int64) * self.levels) // 256
        colour = (q[..., 0] * self.levels + q[..., 1]) * self.levels + q[..., 2]
        return label(colour + 1, background=0, connectivity=1)

    def propose(self, image_hw3: np.ndarray, vocab: SpatialVocab) -> MaskProposals:
        return proposals_from_labels(self.regions(image_hw3), vocab, self.min_area,
                                     self.max_area_frac)


class SuperpixelProposer:
    """Proposals = SLIC superpixels hit by a lattice point: object parts rather than objects,
    so a mask needs several of them (closer to SAM's multi-granular proposals than whole
    colour regions). Args go to `skimage.segmentation.slic`."""

    def __init__(self, n_segments: int = 256, compactness: float = 10.0, min_area: int = 4,
                 max_area_frac: float = 0.5):
        self.n_segments = n_segments
        self.compactness = compactness
        self.min_area = min_area
        self.max_area_frac = max_area_frac

    def regions(self, image_hw3: np.ndarray) -> np.ndarray:
        from skimage.segmentation import slic

        img = np.asarray(image_hw3)
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
        return slic(img[..., :3], n_segments=self.n_segments, compactness=self.compactness,
                    start_label=1, enforce_connectivity=True)

    def propose(self, image_hw3: np.ndarray, vocab: SpatialVocab) -> MaskProposals:
        return proposals_from_labels(self.regions(image_hw3), vocab, self.min_area,
                                     self.max_area_frac)


def proposals_from_labels(labels: np.ndarray, vocab: SpatialVocab, min_area: int = 4,
                          max_area_frac: float = 0.5) -> MaskProposals:
    """One proposal per labelled region (labels >= 1) that a lattice point hits, tagged with
    the lattice point deepest inside it; regions outside [min_area, max_area_frac·H·W] are
    skipped (specks and the background)."""
    h, w = labels.shape
    pts, cells = grid_points_px(vocab, w, h)
    cols = np.clip(pts[:, 0].astype(np.int64), 0, w - 1)
    rows = np.clip(pts[:, 1].astype(np.int64), 0, h - 1)
    hit = labels[rows, cols]
    areas = np.bincount(labels.ravel())
    masks, out_cells, scores = [], [], []
    for lab in np.unique(hit):
        if lab < 1 or not (min_area <= areas[lab] <= max_area_frac * h * w):
            continue
        region = labels == lab
        # The lattice point deepest inside the region represents it: a point prompt there is
        # the least ambiguous one a decoder can get.
        depth = ndimage.distance_transform_edt(region)
        idx = np.flatnonzero(hit == lab)
        best = idx[np.argmax(depth[rows[idx], cols[idx]])]
        masks.append(region)
        out_cells.append(cells[best])
        scores.append(float(depth[rows[best], cols[best]]))
    stack = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return MaskProposals(stack, out_cells, np.asarray(scores, dtype=np.float64))
