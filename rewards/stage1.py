"""Stage-1 rewards: grid-token proposals (method spec §7). All in [0, 1].

Each is a TRL reward function `(completions, **columns) -> list[float]` with one value per
completion. `non_repeat` is a plain function; `format`, `box`, `mask` and `points` are classes
whose instances are the reward functions (picklable, `__name__` = config name), built with the
codec, grid size and constants of the config.
No target: M = N = 0 scores 1; exactly one side empty scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from rewards.common import Reward, column, completion_text, log
from rewards.masks import pair_mask_ious, shared_decoder
from rewards.matching import Matching
from tokens import sentences
from tokens.decoders import MAX_PROMPT_POINTS


def _empty_score(m: Matching) -> float | None:
    """1 for a correct "no target", 0 when exactly one side is empty, None otherwise."""
    if m.num_pred == 0 and m.num_gt == 0:
        return 1.0
    if m.num_pred == 0 or m.num_gt == 0:
        return 0.0
    return None


class FormatReward(Reward):
    """0.5 when the completion is exactly `<think>…</think><answer>…</answer>`; 0.5 more when,
    in addition, every non-empty answer line is one well-formed instance (of this reward's
    codec and grid size). Range [0, 1].

    >>> FormatReward()(["<think>x</think><answer><seg><grid_1_1></seg></answer>", "hi"])
    [1.0, 0.0]
    """

    name = "format"

    def __call__(self, completions, **kwargs) -> list[float]:
        return [0.5 * a.structure_ok + 0.5 * (a.structure_ok and a.lines_ok)
                for a in self.parsed(completions).answers]


format_reward = FormatReward()


def non_repeat_reward(completions, **kwargs) -> list[float]:
    """1 unless some sentence occurs twice or more, then 0. Sentences: the completion with
    every `<…>` tag replaced by a newline, split on `.` and newlines, stripped, non-empty.

    >>> non_repeat_reward(["<think>Red. Left.</think>", "<think>Red. Red.</think>"])
    [1.0, 0.0]
    """
    out = []
    for c in completions:
        s = sentences(completion_text(c))
        out.append(1.0 if len(s) == len(set(s)) else 0.0)
    return out


non_repeat_reward.__name__ = "non_repeat"
non_repeat_reward.value_range = (0.0, 1.0)


class BoxReward(Reward):
    """Per matched pair 0.5·iou + 0.5·nbox; summed, divided by max(M, N). Range [0, 1].
    Logs `box/pairs` (matched pairs per completion) and `box/iou` (mean IoU of matched boxes).
    """

    name = "box"

    def __call__(self, completions, **kwargs) -> list[float]:
        out, pairs, ious = [], [], []
        for m in self.matched(completions, kwargs).matchings:
            score = _empty_score(m)
            if score is None:
                score = sum(0.5 * m.iou[i, j] + 0.5 * m.nbox[i, j] for i, j in m.pairs)
                score /= m.denominator
                ious += [m.iou[i, j] for i, j in m.pairs]
            out.append(float(score))
            pairs.append(len(m.pairs))
        log(kwargs, "box/pairs", pairs)
        log(kwargs, "box/iou", ious)
        return out


class MaskReward(Reward):
    """Per matched pair u = IoU(decoded mask of P_i, M_j), mapped by tiers (u ≥ 0.8 → 1,
    ≥ 0.7 → 0.75, ≥ 0.5 → 0.5, else 0) or, with `linear=True`, u itself; summed, divided by
    max(M, N). Range [0, 1]. Needs the `image` column. Logs `mask/iou` (mean matched IoU).

    Args:
        decoder: a mask decoder config (`"region"`, `{"name": "sam", ...}`) or instance.
        tiers: (threshold, value) pairs, highest threshold first.
        max_points: points per prompt the decoder sees at most.
    """

    name = "mask"

    def __init__(self, decoder="region", tiers: Sequence[Sequence[float]] = ((0.8, 1.0),
                 (0.7, 0.75), (0.5, 0.5)), linear: bool = False,
                 max_points: int = MAX_PROMPT_POINTS,
                 **kwargs):
        super().__init__(**kwargs)
        self.decoder = shared_decoder(decoder)
        self.tiers = [(float(t), float(v)) for t, v in tiers]
        if [t for t, _ in self.tiers] != sorted((t for t, _ in self.tiers), reverse=True):
            raise ValueError(f"mask tiers must be sorted by threshold, highest first: {tiers}")
        self.linear = linear
        self.max_points = max_points

    def tier(self, u: float) -> float:
        if self.linear:
            return u
        return next((v for t, v in self.tiers if u >= t), 0.0)

    def __call__(self, completions, **kwargs) -> list[float]:
        batch = self.matched(completions, kwargs)
        images = column(kwargs, "image", len(batch.texts), self.name)
        # Only matched predictions are scored, so only they are decoded: a completion listing
        # thousands of instances costs at most one decode per ground-truth object.
        masks = batch.pair_masks(self.decoder, images, self.max_points)
        out, ious = [], []
        for m, gt, pair_masks in zip(batch.matchings, batch.gts, masks, strict=True):
            score = _empty_score(m)
            if score is None:
                pair_ious = pair_mask_ious(pair_masks, gt,
                                           [(k, j) for k, (_, j) in enumerate(m.pairs)])
                score = sum(self.tier(v) for v in pair_ious) / m.denominator
                ious += pair_ious
            out.append(float(score))
        log(kwargs, "mask/iou", ious)
        return out


class PointsReward(Reward):
    """Semantic points. Per matched pair whose prediction has n ≥ 1 points:

        q = clip(h·(1 − e^(−n/κ))·ŝ − λ·n, 0, 1)

    h the hit ratio in M_j, ŝ = 1 for n = 1, else min(1, d̄ / (γ·sqrt(A/n))) with d̄ the mean
    nearest-neighbour distance of the points and A the mask's area (normalized). The score is
    Σ n_i q_i / Σ n_i over those pairs, times (their number) / max(M, N). Range [0, 1].
    Logs `points/hit` (mean hit ratio) and `points/count` (mean points per matched instance).
    """

    name = "points"

    def __init__(self, kappa: float = 2.0, lam: float = 0.01, gamma: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.kappa, self.lam, self.gamma = float(kappa), float(lam), float(gamma)

    def quality(self, points: np.ndarray, hit: float, area: float) -> float:
        n = len(points)
        spacing = 1.0
        if n > 1:
            d, _ = cKDTree(points).query(points, k=2)
            mean_nn = float(d[:, 1].mean())
            spacing = min(1.0, mean_nn / (self.gamma * np.sqrt(area / n))) if area > 0 else 1.0
        q = hit * (1.0 - np.exp(-n / self.kappa)) * spacing - self.lam * n
        return float(np.clip(q, 0.0, 1.0))

    def __call__(self, completions, **kwargs) -> list[float]:
        batch = self.matched(completions, kwargs)
        out, hits, counts = [], [], []
        for insts, m, gt in zip(batch.instances, batch.matchings, batch.gts, strict=True):
            score = _empty_score(m)
            if score is None:
                areas = gt.areas_norm
                num = den = 0.0
                with_points = 0
                for i, j in m.pairs:
                    pts = np.asarray(insts[i].points, dtype=np.float64)
                    if len(pts) == 0:
                        continue
                    with_points += 1
                    num += len(pts) * self.quality(pts, m.hit[i, j], areas[j])
                    den += len(pts)
                    hits.append(m.hit[i, j])
                    counts.append(len(pts))
                score = (num / den) * with_points / m.denominator if den else 0.0
            out.append(float(score))
        log(kwargs, "points/hit", hits)
        log(kwargs, "points/count", counts)
        return out
