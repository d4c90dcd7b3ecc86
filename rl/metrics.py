"""The field's metrics (method spec §10): gIoU, cIoU, REC Acc@τ, gRES (no-)target accuracy.

Per sample, P is the union of the predicted masks and G the union of the ground-truth masks:
I = |P ∩ G|, U = |P ∪ G| (pixels of the `ignore` mask left out of both), IoU = I/U and IoU = 1
when U = 0 (a correct empty answer). gIoU is the mean of per-sample IoU, cIoU = ΣI / ΣU. A
completion that does not parse is an empty prediction: scored, never skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rewards.matching import box_iou


@dataclass
class SampleScore:
    """One evaluated sample. box_iou: IoU of the predicted box with the ground-truth box for
    single-target samples (None otherwise); parsed: the completion was well-formed."""

    intersection: int
    union: int
    num_gt: int
    num_pred: int
    box_iou: float | None
    parsed: bool
    kind: str = ""

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union


def score_sample(pred_mask: np.ndarray, gt_mask: np.ndarray, ignore: np.ndarray | None,
                 pred_boxes: Sequence, gt_boxes: Sequence, parsed: bool,
                 kind: str = "") -> SampleScore:
    """Score one sample; masks in the ground truth's (H, W) frame, boxes normalized xyxy.

    The predicted box of a single-target sample is its first instance's box, or the tight box
    of the predicted mask when the answer has no box tokens.
    """
    keep = ~ignore if ignore is not None else np.ones_like(gt_mask, dtype=bool)
    inter = int(np.count_nonzero(pred_mask & gt_mask & keep))
    union = int(np.count_nonzero((pred_mask | gt_mask) & keep))
    b_iou = None
    if len(gt_boxes) == 1:
        box = pred_boxes[0] if len(pred_boxes) and pred_boxes[0] is not None else None
        if box is None and pred_mask.any():
            ys, xs = np.nonzero(pred_mask)
            h, w = pred_mask.shape
            box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
        b_iou = float(box_iou([box], [gt_boxes[0]])[0, 0]) if box is not None else 0.0
    return SampleScore(inter, union, len(gt_boxes), len(pred_boxes), b_iou, parsed, kind)


def summarize(scores: Sequence[SampleScore]) -> dict:
    """gIoU, cIoU, Acc@0.5/0.8 (single-target samples), no-target and target accuracy, and the
    counts behind them."""
    n = len(scores)
    if n == 0:
        return {"samples": 0}
    ious = np.array([s.iou for s in scores])
    inter = sum(s.intersection for s in scores)
    union = sum(s.union for s in scores)
    rec = [s.box_iou for s in scores if s.box_iou is not None]
    no_target = [s for s in scores if s.num_gt == 0]
    target = [s for s in scores if s.num_gt > 0]
    out = {
        "samples": n,
        "gIoU": float(ious.mean()),
        "cIoU": float(inter / union) if union else 1.0,
        "Acc@0.5": float(np.mean([b > 0.5 for b in rec])) if rec else None,
        "Acc@0.8": float(np.mean([b > 0.8 for b in rec])) if rec else None,
        "rec_samples": len(rec),
        "parse_failures": sum(not s.parsed for s in scores),
        "no_target_samples": len(no_target),
        "no_target_accuracy": float(np.mean([s.num_pred == 0 for s in no_target]))
        if no_target else None,
        "target_accuracy": float(np.mean([s.num_pred > 0 for s in target])) if target else None,
    }
    kinds = sorted({s.kind for s in scores if s.kind})
    if len(kinds) > 1:
        out["gIoU_by_kind"] = {k: float(np.mean([s.iou for s in scores if s.kind == k]))
                               for k in kinds}
    return out
