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
    # Scenes whose objects are known (the synthetic task; see `score_referents`):
    num_objects: int = 0
    referent: bool | None = None  # single-target rows: the prediction picked the named object
    picked: bool | None = None  # single-target rows: the prediction picked some object
    targets_found: int | None = None  # multi-target rows: named objects some instance picked
    instances_on_target: int | None = None  # multi-target rows: instances that picked one
    superlative: str = ""  # superlative rows: the expression's word ("smallest", "leftmost")

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


def picked_object(pred_mask: np.ndarray, object_masks: np.ndarray) -> int | None:
    """The scene object a predicted mask picks: the one it overlaps more than any other
    (pixels of overlap); None when it overlaps none, or two equally."""
    if not len(object_masks):
        return None
    overlap = np.count_nonzero(object_masks & pred_mask[None], axis=(1, 2))
    best = int(np.argmax(overlap))
    if overlap[best] == 0 or np.count_nonzero(overlap == overlap[best]) > 1:
        return None
    return best


def score_referents(sample: SampleScore, pred_mask: np.ndarray,
                    instance_masks: Sequence[np.ndarray], object_masks: np.ndarray,
                    targets: Sequence[int]) -> SampleScore:
    """Fill the referent fields of `sample` from the scene's object masks ((N, H, W) bool,
    visible pixels) and the indices of the named ones. Single-target rows: `referent` is True
    when the union of the predicted masks overlaps the named object more than any other object.
    Multi-target rows: each predicted instance picks the object it overlaps most;
    `targets_found` counts named objects picked by some instance, `instances_on_target` the
    instances that picked a named object."""
    sample.num_objects = len(object_masks)
    if len(targets) == 1:
        pick = picked_object(pred_mask, object_masks)
        sample.picked, sample.referent = pick is not None, pick == targets[0]
    elif len(targets) > 1:
        picks = [picked_object(m, object_masks) for m in instance_masks]
        sample.targets_found = len({p for p in picks if p in targets})
        sample.instances_on_target = sum(p in targets for p in picks)
    return sample


def bootstrap_interval(values: np.ndarray, denominators: np.ndarray | None = None,
                       n_resamples: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> list[float] | None:
    """Percentile bootstrap interval of the mean of `values` over samples (or, with
    `denominators`, of the ratio of sums, e.g. cIoU = ΣI / ΣU), resampling samples."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, values.size, (n_resamples, values.size))
    if denominators is None:
        stats = values[idx].mean(axis=1)
    else:
        den = np.asarray(denominators, dtype=np.float64)[idx].sum(axis=1)
        stats = np.where(den > 0, values[idx].sum(axis=1) / np.maximum(den, 1e-300), 0.0)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _referent_entry(rows: Sequence[SampleScore]) -> dict:
    """Referent accuracy and its chance rate over `rows`; also over the rows where the
    prediction picked some object (`picked_share` of them): a model that answers "no such
    object" to an expression naming an absent one (the task's no-target rows teach it) lowers
    the first below chance by declining, not by picking a wrong object."""
    picked = [s for s in rows if s.picked]
    return {"samples": len(rows),
            "referent_accuracy": float(np.mean([s.referent for s in rows])),
            "chance": float(np.mean([1 / s.num_objects for s in rows])),
            "picked_share": float(np.mean([bool(s.picked) for s in rows])),
            "referent_accuracy_picked": (float(np.mean([s.referent for s in picked]))
                                         if picked else None),
            "chance_picked": float(np.mean([1 / s.num_objects for s in picked])) if picked
            else None}


def reading(scores: Sequence[SampleScore]) -> dict:
    """Metrics that show whether the expression was read (scenes with known objects): referent
    accuracy with its chance rate (mean of 1 / objects in the scene), per expression kind and
    per object count; instance recall and precision on multi-target rows."""
    single = [s for s in scores if s.referent is not None]
    multi = [s for s in scores if s.targets_found is not None]
    out: dict = {}
    if single:
        entry = _referent_entry(single)
        out["referent_samples"] = entry.pop("samples")
        out.update(entry)
        out["referent_interval"] = bootstrap_interval([float(s.referent) for s in single])
        picked = [s for s in single if s.picked]
        if picked:  # accuracy minus chance over the rows that picked an object, row by row
            gain = [float(s.referent) - 1 / s.num_objects for s in picked]
            out["picked_minus_chance"] = {"difference": float(np.mean(gain)),
                                          "interval": bootstrap_interval(gain),
                                          "samples": len(gain)}
        out["referent_by_kind"] = {k: _referent_entry([s for s in single if s.kind == k])
                                   for k in sorted({s.kind for s in single})}
        out["referent_by_objects"] = {
            str(n): _referent_entry([s for s in single if s.num_objects == n])
            for n in sorted({s.num_objects for s in single})}
        words = sorted({s.superlative for s in single if s.superlative})
        if words:  # which superlative words the model reads (the synthetic task)
            out["referent_by_superlative"] = {
                w: _referent_entry([s for s in single if s.superlative == w]) for w in words}
    if multi:
        found = sum(s.targets_found for s in multi)
        named = sum(s.num_gt for s in multi)
        on_target = sum(s.instances_on_target for s in multi)
        predicted = sum(s.num_pred for s in multi)
        out["multi_samples"] = len(multi)
        out["multi_instance_recall"] = found / named if named else None
        out["multi_instance_precision"] = on_target / predicted if predicted else None
    return out


def paired_difference(after: Sequence[float], before: Sequence[float],
                      n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of `after - before` over the same samples and its 95 % paired-bootstrap interval
    (samples resampled); `better` when the interval lies above 0, `worse` below, else `not
    distinguishable`."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired difference of {a.size} and {b.size} samples")
    d = a - b
    ci = bootstrap_interval(d, None, n_resamples, seed=seed)
    verdict = ("not distinguishable" if ci is None or ci[0] <= 0 <= ci[1]
               else "better" if ci[0] > 0 else "worse")
    return {"difference": float(d.mean()) if d.size else None, "interval": ci,
            "samples": int(d.size), "verdict": verdict}


def minus_rate(hits: Sequence[float], rates: Sequence[float]) -> dict:
    """Hits (1 / 0 per row) against the rate a given strategy would hit each row at (e.g. a
    reader of every expression under the retargeted control): the mean rate, the mean of
    hit - rate over the rows and its 95 % bootstrap interval (rows resampled)."""
    h, r = np.asarray(hits, dtype=np.float64), np.asarray(rates, dtype=np.float64)
    if h.shape != r.shape:
        raise ValueError(f"{h.size} hits against {r.size} rates")
    d = h - r
    return {"rate": float(r.mean()) if r.size else None,
            "difference": float(d.mean()) if d.size else None,
            "interval": bootstrap_interval(d) if d.size else None, "samples": int(d.size)}


def _seeded_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap means of `values` (seeds x samples): the samples (held-out scenes) resampled
    once per draw for every seed, then the seeds resampled; one seed resamples samples only, with
    the same draws as `bootstrap_interval`."""
    n_seeds, n = values.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_resamples, n))
    per_seed = np.stack([v[idx].mean(axis=1) for v in values])       # seeds x draws
    if n_seeds == 1:
        return per_seed[0]
    pick = rng.integers(0, n_seeds, (n_resamples, n_seeds))
    return np.take_along_axis(per_seed.T, pick, axis=1).mean(axis=1)


def seeded_interval(values, n_resamples: int = 2000, level: float = 0.95,
                    seed: int = 0) -> list[float] | None:
    """95 % bootstrap interval of the mean of `values`, one row per training seed, one column
    per held-out sample (the same samples in every row): samples and seeds resampled
    (`_seeded_means`). One row gives `bootstrap_interval`'s interval."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return None
    lo, hi = np.quantile(_seeded_means(v, n_resamples, seed), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def seeded_paired_difference(after, before, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """`paired_difference` over training seeds: `after` and `before` are seeds x held-out
    samples, row k of one paired with row k of the other (the same seed, e.g. a shared cold
    start) and column i with column i (the same scene). The difference's mean and its 95 %
    interval with samples and seeds resampled; one row gives `paired_difference`'s figures."""
    a = np.atleast_2d(np.asarray(after, dtype=np.float64))
    b = np.atleast_2d(np.asarray(before, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired difference of {a.shape} and {b.shape} (seeds x samples)")
    d = a - b
    ci = seeded_interval(d, n_resamples, seed=seed) if d.size else None
    verdict = ("not distinguishable" if ci is None or ci[0] <= 0 <= ci[1]
               else "better" if ci[0] > 0 else "worse")
    return {"difference": float(d.mean()) if d.size else None, "interval": ci,
            "samples": int(d.shape[1]), "seeds": int(d.shape[0]), "verdict": verdict}


def intervals(scores: Sequence[SampleScore], n_resamples: int = 2000, seed: int = 0) -> dict:
    """95 % bootstrap intervals (samples resampled) of gIoU, cIoU and Acc@0.5."""
    rec = [s.box_iou for s in scores if s.box_iou is not None]
    return {"gIoU": bootstrap_interval([s.iou for s in scores], None, n_resamples, seed=seed),
            "cIoU": bootstrap_interval([s.intersection for s in scores],
                                       [s.union for s in scores], n_resamples, seed=seed),
            "Acc@0.5": bootstrap_interval([float(above(b, 0.5)) for b in rec], None,
                                          n_resamples, seed=seed)}


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
    out["intervals"] = intervals(scores)
    out.update(reading(scores))
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
        entry = {"per_expression": {**summarize(part), "intervals": intervals(part)}}
        ids = [s.instance for s in part if s.instance]
        if len(set(ids)) < len(ids):
            entry["per_instance"] = summarize_per_instance(part)
        out[name] = entry
    return out


_COLUMNS = (("samples", "samples", "d"), ("gIoU", "gIoU", "pct"), ("cIoU", "cIoU", "pct"),
            ("Acc@0.5", "Acc@0.5", "pct"), ("Acc@0.8", "Acc@0.8", "pct"),
            ("no_target_accuracy", "N-acc", "pct"), ("target_accuracy", "T-acc", "pct"),
            ("parse_failures", "parse failures", "d"), ("no_target_samples", "no-target", "d"),
            ("no_target_parse_failures", "no-target parse failures", "d"),
            ("referent_accuracy", "referent acc.", "pct"), ("chance", "chance", "pct"))


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if fmt == "pct" else f"{int(value)}"


def _interval_cell(iv) -> str:
    return "" if not iv else f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def markdown_table(results: dict, model: str = "") -> str:
    """A Markdown table of `report` output: a row per dataset/split (and per-instance rows where
    present); scores in percent, gIoU, cIoU and Acc@0.5 per expression with their 95 % bootstrap
    intervals over samples."""
    head = "| dataset / split | " + " | ".join(c[1] for c in _COLUMNS) + " |"
    lines = ([f"Model: `{model}`", ""] if model else []) + [
        head, "|" + "---|" * (len(_COLUMNS) + 1)]
    for name, entry in results.items():
        m = entry["per_expression"]
        ivs = m.get("intervals") or {}
        lines.append(f"| {name} (per expression) | "
                     + " | ".join(_cell(m.get(k), f) + _interval_cell(ivs.get(k))
                                  for k, _, f in _COLUMNS) + " |")
        if "per_instance" in entry:
            pi = {**entry["per_instance"], "samples": entry["per_instance"]["instances"]}
            lines.append(f"| {name} (per instance: {pi['samples']} objects) | "
                         + " | ".join(_cell(pi.get(k), f) if k in pi else "" for k, _, f
                                      in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def reading_table(results: dict) -> str:
    """A Markdown table of referent accuracy (and its chance rate) per expression kind and per
    object count, for each dataset/split of `report` output that has scene objects; "" if none.
    The last columns: the share of rows whose prediction picked some object, and referent
    accuracy with its chance rate over those rows (a declined answer is no pick)."""
    def picked(r: dict) -> str:
        return (f"{_cell(r.get('picked_share'), 'pct')} | "
                f"{_cell(r.get('referent_accuracy_picked'), 'pct')} | "
                f"{_cell(r.get('chance_picked'), 'pct')}")

    lines = []
    for name, entry in results.items():
        m = entry["per_expression"]
        if "referent_accuracy" not in m:
            continue
        if not lines:
            lines = ["| dataset / split | group | samples | referent acc. | chance | 95 % "
                     "interval | picked an object | acc. where picked | chance where picked |",
                     "|---|---|---|---|---|---|---|---|---|"]
        lo, hi = m["referent_interval"]
        lines.append(f"| {name} | all single-target | {m['referent_samples']} | "
                     f"{_cell(m['referent_accuracy'], 'pct')} | {_cell(m['chance'], 'pct')} | "
                     f"{_cell(lo, 'pct')}–{_cell(hi, 'pct')} | {picked(m)} |")
        for group, key in (("kind", "referent_by_kind"), ("objects", "referent_by_objects"),
                           ("superlative", "referent_by_superlative")):
            for value, r in m.get(key, {}).items():
                lines.append(f"| {name} | {group} {value} | {r['samples']} | "
                             f"{_cell(r['referent_accuracy'], 'pct')} | "
                             f"{_cell(r['chance'], 'pct')} | | {picked(r)} |")
        if m.get("multi_samples"):
            lines.append(f"| {name} | multi-target: instance recall / precision | "
                         f"{m['multi_samples']} | {_cell(m['multi_instance_recall'], 'pct')} / "
                         f"{_cell(m['multi_instance_precision'], 'pct')} | | | | | |")
    return "\n".join(lines) + "\n" if lines else ""
