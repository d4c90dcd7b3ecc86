"""Weight-free mask decoding and proposals: no download, any CPU.

Stand-ins for SAM on machines without SAM weights. On the bundled synthetic scenes (flat or
lightly textured shapes) a shape is one colour region, so prompts and proposals give the shapes
themselves; on natural photographs they over-segment, and SAM should be used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label

from tokens.decoders.base import MaskDecoder, MaskProposals, as_image_array, grid_points_px
from tokens.vocab import SpatialVocab


class RegionDecoder(MaskDecoder):
    """Weight-free decoder: connected regions of equal quantized colour, seeded by the prompt.

    The "embedding" is the image's region label map (computed once per image, cached like a
    SAM embedding). A point selects the region under it; several points select the union of
    their regions. A box bounds the mask once grown by `box_pad` of its shorter side (boxes
    decoded from grid tokens join cell centres and fall short of the object), drops point
    regions lying mostly outside it (a point on the background), and on its own selects the
    region that best fills it (pixels inside the box × fraction of the region inside the box).
    Good enough on the bundled synthetic scenes to give real masks; a stand-in for machines
    without SAM weights, not a model of natural images.

    Args:
        levels: quantization levels per channel (4 → 2 bits); coarser merges texture. The
            synthetic scenes paint every colour inside one bin of 4 levels.
        min_area: regions smaller than this many pixels are not proposed.
        max_area_frac: regions larger than this fraction of the image (the background) are not
            proposed.
        box_pad: a box bounds the mask once grown by this fraction of its shorter side.
        cache_size: images whose label maps are kept.
    """

    name = "region"

    def __init__(self, levels: int = 4, min_area: int = 4, max_area_frac: float = 0.5,
                 box_pad: float = 0.25, cache_size: int = 64):
        super().__init__(cache_size)
        self.box_pad = box_pad
        self.levels = levels
        self.min_area = min_area
        self.max_area_frac = max_area_frac

    def regions(self, image_hw3: np.ndarray) -> np.ndarray:
        """(H, W) int labels of connected equal-colour regions (8-connectivity), from 1."""
        img = as_image_array(image_hw3)
        q = (img.astype(np.int64) * self.levels) // 256
        colour = (q[..., 0] * self.levels + q[..., 1]) * self.levels + q[..., 2]
        return label(colour + 1, background=0, connectivity=2)

    def _embed(self, image_hw3: np.ndarray):
        labels = self.regions(image_hw3)
        return labels, np.bincount(labels.ravel())

    def _decode_batch(self, embedding, image_hw3, prompts):
        labels, areas = embedding
        h, w = labels.shape
        masks = np.zeros((len(prompts), h, w), dtype=bool)
        for k, p in enumerate(prompts):
            window = None
            if p.box_xyxy_px is not None:
                x1, y1, x2, y2 = p.box_xyxy_px
                tight = _window(x1, y1, x2, y2, h, w)
                # Boxes decoded from grid tokens join cell centres, so they fall short of the
                # object by up to half a cell per side: bound the mask by the box grown by a
                # quarter of its shorter side, not by the box itself.
                pad = self.box_pad * min(x2 - x1, y2 - y1)
                window = _window(x1 - pad, y1 - pad, x2 + pad, y2 + pad, h, w)
            inside = (np.bincount(labels[window].ravel(), minlength=len(areas))
                      if window is not None else None)
            chosen = set()
            for x, y in p.points_xy_px:
                lab = labels[min(h - 1, max(0, int(y))), min(w - 1, max(0, int(x)))]
                if inside is None or inside[lab] >= 0.5 * areas[lab]:
                    chosen.add(int(lab))
            if not chosen and inside is not None and inside.sum() > 0:
                in_tight = np.bincount(labels[tight].ravel(), minlength=len(areas))
                fill = in_tight.astype(np.float64) ** 2 / np.maximum(areas, 1)
                chosen.add(int(np.argmax(fill)))
            if chosen:
                m = np.isin(labels, list(chosen))
                if window is not None:
                    bounded = np.zeros_like(m)
                    bounded[window] = m[window]
                    m = bounded
                masks[k] = m
        return masks, np.ones(len(prompts))

    def propose(self, image, vocab: SpatialVocab, min_score: float = 0.0,
                dedupe_iou: float = 0.9) -> MaskProposals:
        """The regions hit by lattice points, each tagged with the point deepest inside it
        (exact duplicates cannot occur: one region, one proposal)."""
        labels, _ = self.embedding(image)
        return proposals_from_labels(labels, vocab, self.min_area, self.max_area_frac)


def _window(x1, y1, x2, y2, h: int, w: int) -> tuple[slice, slice]:
    """The pixel rows and columns a pixel-frame box covers, clipped to the image."""
    c0, r0 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    c1, r1 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


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

        return slic(as_image_array(image_hw3), n_segments=self.n_segments,
                    compactness=self.compactness, start_label=1, enforce_connectivity=True)

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
    boxes = ndimage.find_objects(labels)
    masks, out_cells, scores = [], [], []
    for lab in np.unique(hit):
        if lab < 1 or not (min_area <= areas[lab] <= max_area_frac * h * w):
            continue
        region = labels == lab
        # The lattice point deepest inside the region represents it: a point prompt there is
        # the least ambiguous one a decoder can get.
        (y0, _), (x0, _), depth = _depth_in_box(region, boxes[lab - 1])
        idx = np.flatnonzero(hit == lab)
        at = depth[rows[idx] - y0, cols[idx] - x0]
        best = idx[np.argmax(at)]
        masks.append(region)
        out_cells.append(cells[best])
        scores.append(float(at.max()))
    stack = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return MaskProposals(stack, out_cells, np.asarray(scores, dtype=np.float64))


def _depth_in_box(region: np.ndarray, box: tuple[slice, slice]) -> tuple:
    """The Euclidean distance transform of `region` (distance of each pixel to the nearest
    pixel outside it) on the region's bounding `box` grown by one pixel, with the crop's
    origin: ((y0, y1), (x0, x1), depth). Equal to the whole image's transform on every
    pixel of the region: from a region pixel, the grown box's one-pixel ring lies outside
    the region and is no farther than any outside pixel beyond it (image edges add no ring,
    as the whole image's transform has none there)."""
    h, w = region.shape
    ys, xs = box
    y0, y1 = max(ys.start - 1, 0), min(ys.stop + 1, h)
    x0, x1 = max(xs.start - 1, 0), min(xs.stop + 1, w)
    return (y0, y1), (x0, x1), ndimage.distance_transform_edt(region[y0:y1, x0:x1])
