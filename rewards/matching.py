"""Multi-instance matching (method spec §6, paper C.3 Eq. 6–9).

Predictions P_1..P_M (optional box b_i, point set X_i) against ground truth G_1..G_N (mask M_j,
tight box B_j), all in normalized coordinates:

    iou_ij  = IoU(b_i, B_j), 0 without a box
    hit_ij  = fraction of X_i inside M_j, 0 without points
    nbox_ij = max(0, 1 − l1_ij / l1_scale), l1_ij the mean absolute corner error, 0 without a box
    S_ij    = w_iou·iou_ij + w_hit·hit_ij + w_box·nbox_ij

and the Hungarian assignment maximizing S gives min(M, N) pairs. Every instance-level reward
divides by max(M, N), so missing and extra instances both cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from rewards.solution import GroundTruth
from tokens.answer import Instance
from tokens.decoders import points_in_mask


@dataclass
class Matching:
    """pairs: (prediction index, ground-truth index), min(M, N) of them.
    iou, hit, nbox: the (M, N) pairwise matrices."""

    pairs: list[tuple[int, int]]
    num_pred: int
    num_gt: int
    iou: np.ndarray
    hit: np.ndarray
    nbox: np.ndarray

    @property
    def denominator(self) -> int:
        """max(M, N): what instance-level rewards divide by."""
        return max(self.num_pred, self.num_gt)

    def gt_of(self, i: int) -> int | None:
        """The ground-truth index matched to prediction i, or None."""
        for p, g in self.pairs:
            if p == i:
                return g
        return None


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 4) × (N, 4) xyxy → (M, N) IoU; zero-area boxes have IoU 0 with everything."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pairwise(instances: Sequence[Instance], gt: GroundTruth, l1_scale: float = 0.05):
    """The (M, N) matrices iou, hit, nbox of §6."""
    m, n = len(instances), len(gt)
    iou = np.zeros((m, n))
    hit = np.zeros((m, n))
    nbox = np.zeros((m, n))
    if m == 0 or n == 0:
        return iou, hit, nbox
    with_box = [i for i, inst in enumerate(instances) if inst.box is not None]
    if with_box:
        boxes = np.array([instances[i].box for i in with_box])
        iou[with_box] = box_iou(boxes, gt.boxes_norm)
        l1 = np.abs(boxes[:, None, :] - gt.boxes_norm[None, :, :]).mean(axis=2)
        nbox[with_box] = np.clip(1.0 - l1 / l1_scale, 0.0, None)
    counts = np.array([len(inst.points) for inst in instances])
    if counts.any():  # every point of every instance against every mask at once
        pts = np.array([p for inst in instances for p in inst.points], dtype=np.float64)
        owner = np.repeat(np.arange(m), counts)
        masks = gt.masks
        for j in range(n):
            inside = points_in_mask(masks[j], pts)
            hit[:, j] = np.bincount(owner, weights=inside, minlength=m) / np.maximum(counts, 1)
    return iou, hit, nbox


def match(instances: Sequence[Instance], gt: GroundTruth,
          weights: Sequence[float] = (1.0, 1.0, 1.0), l1_scale: float = 0.05) -> Matching:
    """Hungarian matching maximizing S = w_iou·iou + w_hit·hit + w_box·nbox."""
    iou, hit, nbox = pairwise(instances, gt, l1_scale)
    pairs: list[tuple[int, int]] = []
    if len(instances) and len(gt):
        w_iou, w_hit, w_box = weights
        rows, cols = linear_sum_assignment(w_iou * iou + w_hit * hit + w_box * nbox,
                                           maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
    return Matching(pairs, len(instances), len(gt), iou, hit, nbox)
