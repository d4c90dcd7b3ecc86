"""The field's metrics (method spec §10): gIoU, cIoU, REC Acc@τ, gRES (no-)target accuracy.

Per sample, P is the union of the predicted masks and G the union of the ground-truth masks:
I = |P ∩ G|, U = |P ∪ G| (pixels of the `ignore` mask left out of both), IoU = I/U; when U = 0
(a no-target row answered with nothing) IoU = 1 if the completion parsed, else 0: garbage is not
a correct "nothing there" (LISA, Seg-Zero and VisionReasoner score it 0 too). gIoU is the mean
of per-sample IoU, cIoU = ΣI / ΣU, and 0 when ΣU = 0 (as LISA's and VisionReasoner's
accumulators give). A completion that does not parse is scored on what can be read from it,
never skipped. Acc@τ counts box IoU > τ, compared with a margin of 1e-9 (`IOU_MARGIN`): an IoU
that is τ exactly in pixels may come out a rounding error above τ in normalized coordinates
(0.5000000000000001), and is no hit. See docs/method.md §10–§11.

Results are per expression (every sample counts once) and, where several expressions describe
one object (RefCOCO's `ref` with its sentences), also per instance: each object's samples are
averaged first, then the objects (see `summarize_per_instance`). `report` groups samples by
dataset and split and `markdown_table` writes the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rewards.matching import box_iou

# Box IoUs within this of a threshold τ count as τ (not above it): rounding of normalized
# coordinates, not a better box.
IOU_MARGIN = 1e-9


def above(iou: float, tau: float) -> bool:
    """The Acc@τ test: iou > τ beyond rounding (`IOU_MARGIN`)."""
    return iou > tau + IOU_MARGIN


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
    instance: str = ""  # the object the expression refers to (per-instance results)

    @property
    def iou(self) -> float:
        if self.union == 0:  # nothing predicted, nothing there: right only if it parsed
            return 1.0 if self.parsed else 0.0
        return self.intersection / self.union


def score_sample(pred_mask: np.ndarray, gt_mask: np.ndarray, ignore: np.ndarray | None,
                 pred_boxes: Sequence, gt_boxes: Sequence, parsed: bool,
                 kind: str = "", instance: str = "") -> SampleScore:
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
    return SampleScore(inter, union, len(gt_boxes), len(pred_boxes), b_iou, parsed, kind,
                       instance)


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
        "cIoU": float(inter / union) if union else 0.0,
        "Acc@0.5": float(np.mean([above(b, 0.5) for b in rec])) if rec else None,
        "Acc@0.8": float(np.mean([above(b, 0.8) for b in rec])) if rec else None,
        "rec_samples": len(rec),
        "parse_failures": sum(not s.parsed for s in scores),
        "no_target_samples": len(no_target),
        "no_target_parse_failures": sum(not s.parsed for s in no_target),
        "no_target_accuracy": float(np.mean([s.num_pred == 0 and s.parsed
                                             for s in no_target])) if no_target else None,
        "target_accuracy": float(np.mean([s.num_pred > 0 for s in target])) if target else None,
    }
    kinds = sorted({s.kind for s in scores if s.kind})
    if len(kinds) > 1:
        out["gIoU_by_kind"] = {k: float(np.mean([s.iou for s in scores if s.kind == k]))
                               for k in kinds}
    return out


def summarize_per_instance(scores: Sequence[SampleScore]) -> dict:
    """Per-instance results: the samples of each object (same `instance`; a sample without one
    is its own object) are averaged first, then the objects, so an object described by five
    expressions weighs as much as one described by one. gIoU and Acc@τ average the per-object
    means; cIoU = Σ mean I / Σ mean U over objects."""
    groups: dict[str, list[SampleScore]] = {}
    for k, s in enumerate(scores):
        groups.setdefault(s.instance or f"#{k}", []).append(s)
    if not groups:
        return {"instances": 0}
    g_iou, inter, union, acc5, acc8 = [], 0.0, 0.0, [], []
    for members in groups.values():
        g_iou.append(np.mean([s.iou for s in members]))
        inter += np.mean([s.intersection for s in members])
        union += np.mean([s.union for s in members])
        rec = [s.box_iou for s in members if s.box_iou is not None]
        if rec:
            acc5.append(np.mean([above(b, 0.5) for b in rec]))
            acc8.append(np.mean([above(b, 0.8) for b in rec]))
    return {
        "instances": len(groups),
        "gIoU": float(np.mean(g_iou)),
        "cIoU": float(inter / union) if union else 0.0,
        "Acc@0.5": float(np.mean(acc5)) if acc5 else None,
        "Acc@0.8": float(np.mean(acc8)) if acc8 else None,
    }


def report(scores: Sequence[SampleScore], datasets: Sequence[str]) -> dict:
    """Results per dataset/split name (one per score, e.g. `refcoco/testA`): per expression
    always, per instance when some object has more than one expression."""
    if len(datasets) != len(scores):
        raise ValueError(f"{len(datasets)} dataset names for {len(scores)} scores")
    out = {}
    for name in dict.fromkeys(datasets):
        part = [s for s, d in zip(scores, datasets, strict=True) if d == name]
        entry = {"per_expression": summarize(part)}
        ids = [s.instance for s in part if s.instance]
        if len(set(ids)) < len(ids):
            entry["per_instance"] = summarize_per_instance(part)
        out[name] = entry
    return out


_COLUMNS = (("samples", "samples", "d"), ("gIoU", "gIoU", "pct"), ("cIoU", "cIoU", "pct"),
            ("Acc@0.5", "Acc@0.5", "pct"), ("Acc@0.8", "Acc@0.8", "pct"),
            ("no_target_accuracy", "N-acc", "pct"), ("target_accuracy", "T-acc", "pct"),
            ("parse_failures", "parse failures", "d"), ("no_target_samples", "no-target", "d"),
            ("no_target_parse_failures", "no-target parse failures", "d"))


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if fmt == "pct" else f"{int(value)}"


def markdown_table(results: dict, model: str = "") -> str:
    """A Markdown table of `report` output: a row per dataset/split (and per-instance rows where
    present); scores in percent."""
    head = "| dataset / split | " + " | ".join(c[1] for c in _COLUMNS) + " |"
    lines = ([f"Model: `{model}`", ""] if model else []) + [
        head, "|" + "---|" * (len(_COLUMNS) + 1)]
    for name, entry in results.items():
        m = entry["per_expression"]
        lines.append(f"| {name} (per expression) | "
                     + " | ".join(_cell(m.get(k), f) for k, _, f in _COLUMNS) + " |")
        if "per_instance" in entry:
            pi = {**entry["per_instance"], "samples": entry["per_instance"]["instances"]}
            lines.append(f"| {name} (per instance: {pi['samples']} objects) | "
                         + " | ".join(_cell(pi.get(k), f) if k in pi else "" for k, _, f
                                      in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"
