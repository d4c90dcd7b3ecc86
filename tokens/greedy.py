"""Masks to tokens: the greedy conversion over mask proposals (method spec §4, paper Eq. 1).

Proposals are sorted by IoU with the ground-truth mask; each is added to the union when it
raises the union's IoU; the grid points of the accepted proposals are the `<seg>` tokens. The
conversion stops at IoU τ or at a token budget. When no proposal helps (tiny objects), the
fallback lists the grid cells whose centres lie inside the mask, farthest-point sampled, or the
cell of the mask's distance-transform peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tokens.decoders.base import MaskProposals, MaskProposer, points_in_mask
from tokens.vocab import SpatialVocab


@dataclass
class GreedyResult:
    """cells: the chosen grid cells (i, j), in the order they were accepted.
    iou: IoU of the union of their proposals with the mask (what the tokens can reproduce).
    fallback: True when no proposal helped and the cells come from the fallback.
    """

    cells: list[tuple[int, int]]
    iou: float
    fallback: bool = False

    def tokens(self, vocab: SpatialVocab) -> list[str]:
        return [vocab.grid_token(i, j) for i, j in self.cells]

    def points(self, vocab: SpatialVocab) -> list[tuple[float, float]]:
        return [vocab.cell_center(i, j) for i, j in self.cells]


def _farthest_point_sample(points: np.ndarray, k: int) -> list[int]:
    """Indices of k points chosen greedily, each farthest from those already chosen; starts
    from the point nearest the centroid so the result does not depend on input order."""
    first = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((points - points[first]) ** 2).sum(axis=1)
    while len(chosen) < min(k, len(points)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(axis=1))
    return chosen


def fallback_cells(mask_hw: np.ndarray, vocab: SpatialVocab, max_points: int = 3) -> list:
    """Cells for a mask no proposal covers: the cells whose centres lie inside it (farthest-point
    sampled down to `max_points`), or else the cell of its distance-transform peak."""
    g = vocab.grid_size
    cells = [(i, j) for i in range(g) for j in range(g)]
    centres = np.array([vocab.cell_center(i, j) for i, j in cells])
    inside = np.flatnonzero(points_in_mask(mask_hw, centres))
    if len(inside):
        pick = _farthest_point_sample(centres[inside], max_points)
        return [cells[inside[p]] for p in pick]
    if not mask_hw.any():
        return []
    depth = ndimage.distance_transform_edt(np.pad(mask_hw, 1))[1:-1, 1:-1]
    # The middle of the peak plateau (a 2×2 plateau has no single peak), or the peak pixel
    # nearest it when the middle falls outside the mask.
    peaks = np.argwhere(depth == depth.max())
    r, c = peaks.mean(axis=0)
    if not mask_hw[int(r + 0.5), int(c + 0.5)]:
        r, c = peaks[int(np.argmin(((peaks - (r, c)) ** 2).sum(axis=1)))]
    h, w = mask_hw.shape
    return [vocab.point_to_cell((c + 0.5) / w, (r + 0.5) / h)]


def greedy_convert(mask_hw: np.ndarray, proposals: MaskProposals, vocab: SpatialVocab,
                   tau: float = 0.8, max_tokens: int | None = 32,
                   fallback_points: int = 3) -> GreedyResult:
    """Convert one ground-truth mask to grid cells with the proposals of its image.

    Args:
        mask_hw: (H, W) bool ground-truth mask, same frame as the proposals.
        proposals: candidates of the image (`MaskProposer.propose`).
        tau: stop once the union reaches this IoU (spec default 0.8).
        max_tokens: token budget (None: unlimited).
        fallback_points: cells the fallback keeps at most.
    An empty mask gives no cells and IoU 1 (nothing to reproduce).
    """
    gt = np.asarray(mask_hw, dtype=bool)
    if len(proposals) and proposals.masks.shape[1:] != gt.shape:
        raise ValueError(f"proposal masks are {proposals.masks.shape[1:]}, mask is {gt.shape}")
    area_gt = int(gt.sum())
    if area_gt == 0:
        return GreedyResult([], 1.0)
    flat = proposals.masks.reshape(len(proposals), gt.size)
    gt_flat = gt.ravel()
    inter = flat[:, gt_flat].sum(axis=1)
    area = flat.sum(axis=1)
    iou = inter / np.maximum(area + area_gt - inter, 1)
    # Stable sort: ties keep the proposer's order, so the result is deterministic.
    order = [k for k in np.argsort(-iou, kind="stable") if inter[k] > 0]

    union = np.zeros_like(gt_flat)
    u_inter, u_union, best = 0, area_gt, 0.0  # |U ∩ M|, |U ∪ M|, IoU(U, M)
    cells: list[tuple[int, int]] = []
    for k in order:
        if best >= tau or (max_tokens is not None and len(cells) >= max_tokens):
            break
        new = flat[k] & ~union
        d_inter = int(np.count_nonzero(new & gt_flat))
        d_out = int(np.count_nonzero(new)) - d_inter
        cand = (u_inter + d_inter) / (u_union + d_out)
        if cand > best:
            union |= new
            u_inter, u_union, best = u_inter + d_inter, u_union + d_out, cand
            cells.append(proposals.cells[k])
    if cells:
        return GreedyResult(cells, float(best))

    cells = fallback_cells(gt, vocab, fallback_points)
    # What those cells reproduce: the union of the proposals they produced, if any.
    hit = [k for k, c in enumerate(proposals.cells) if c in set(cells)]
    u = flat[hit].any(axis=0) if hit else np.zeros_like(gt_flat)
    iou_fb = np.count_nonzero(u & gt_flat) / max(np.count_nonzero(u | gt_flat), 1)
    return GreedyResult(cells, float(iou_fb), fallback=True)


def mask_to_tokens(image_hw3: np.ndarray, masks_hw: list[np.ndarray], proposer: MaskProposer,
                   vocab: SpatialVocab, **kwargs) -> list[GreedyResult]:
    """Convert every ground-truth mask of one image; the image is proposed on once."""
    proposals = proposer.propose(image_hw3, vocab)
    return [greedy_convert(m, proposals, vocab, **kwargs) for m in masks_hw]
