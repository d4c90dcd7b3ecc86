"""Stage-2 rewards: offset refinement (method spec §8).

The stage-1 instances come from the `stage1` column (the policy's stage-1 answer, the previous
assistant turn). The refinement is the completion, or the `refinement` column when the batch has
one (on-policy stage 2, `rl.rollout`, where the completion is the proposal, the request and the
refinement together). Their matching to the ground truth is computed once, on the stage-1 geometry,
and kept; a stage-1 instance with no match has an empty ground truth, so every deletion of its
points is valid. A reward with nothing to score in a sample (no points anywhere for
`point_refine`, no box for `box_refine`, no stage-1 instance for `mask_gain`) returns None,
which TRL leaves out of the sum.
"""

from __future__ import annotations

import numpy as np

from rewards.batch import RefinementRow, Stage2Batch, refinement_batch
from rewards.common import Reward, column, log
from rewards.masks import iou_or_one, shared_decoder
from rewards.matching import box_iou
from tokens.decoders import MAX_PROMPT_POINTS, point_in_mask
from tokens.refine import ParsedRefinement


class _Stage2Reward(Reward):
    """Shared reading of a stage-2 batch (`rewards.batch.Stage2Batch`): stage-1 instances,
    their matches, the refinement and the refined instances, built once for every term."""

    def batch(self, completions, kwargs) -> Stage2Batch:
        texts = self.texts(completions)
        if kwargs.get("refinement") is not None:
            # On-policy stage 2 (rl.rollout): the completion holds the whole dialogue after
            # the stage-1 prompt; the refinement alone comes in its own column.
            texts = self.texts(column(kwargs, "refinement", len(texts), self.name))
        gts = self.ground_truth(kwargs, len(texts))
        stage1 = column(kwargs, "stage1", len(texts), self.name)
        for row, s1 in enumerate(stage1):
            if not isinstance(s1, str):
                raise ValueError(f"reward {self.name!r}: row {row}: column 'stage1' must hold "
                                 f"the stage-1 answer text, got {type(s1).__name__}")
        return refinement_batch(texts, stage1, gts, self.codec, self.vocab, self.match_weights,
                                self.l1_scale)

    def rows(self, completions, kwargs) -> list[RefinementRow]:
        return self.batch(completions, kwargs).rows

    def log_signal(self, kwargs, values, rows: list[RefinementRow]) -> None:
        """Log `<name>/nonzero`: among the samples with a stage-1 instance (something to
        refine), the share whose value is neither None nor 0, the samples that give this term a
        learning signal. A sample whose proposal is empty is left out: its group has nothing to
        refine (every term None, `refine_format` 0 for every answer)."""
        log(kwargs, f"{self.name}/nonzero",
            [float(v is not None and v != 0) if row.stage1 else None
             for v, row in zip(values, rows, strict=True)])


class RefineFormatReward(_Stage2Reward):
    """1 when there is exactly one well-formed `<offset>` line per stage-1 instance; else the
    line credits summed over max(lines, instances): 1 per well-formed line, and, with
    `partial` (the default), half the share of checks a malformed line passes (wrapper,
    nesting, box part, seg part; see `OffsetLine.conformity`), so a policy whose every line is
    malformed still sees which samples come closer. With no stage-1 instance there is nothing
    to refine and every answer scores 0: a constant, so such a group carries no advantage
    (paying 1 for `<answer></answer>` there trained the shared weights to close answers
    early, and on-policy stage 2 drifted into empty proposals; method spec §11). No `<answer>`
    at all scores 0, and anything outside `[<think>…</think>]<answer>…</answer>` halves the
    score. Range [0, 1].
    Logs `refine_format/complete` (among the samples with a stage-1 instance, the share with
    every line right) and `refine_format/no_proposal` (the share of samples whose stage-1 answer
    has no instance: nothing to refine, left out of every other share).
    """

    name = "refine_format"

    def __init__(self, *args, partial: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.partial = bool(partial)

    def score(self, ref: ParsedRefinement) -> float:
        if not ref.has_answer or ref.num_instances == 0:
            return 0.0
        if ref.complete:
            frac = 1.0
        else:
            credit = sum(1.0 if line.well_formed else 0.5 * line.conformity * self.partial
                         for line in ref.lines[: ref.num_instances])
            frac = credit / max(len(ref.lines), ref.num_instances)
        return frac if ref.structure_ok else 0.5 * frac

    def __call__(self, completions, **kwargs) -> list[float]:
        out, complete, empty = [], [], []
        for row in self.rows(completions, kwargs):
            out.append(self.score(row.refinement))
            empty.append(float(not row.stage1))
            complete.append(float(row.refinement.complete and row.refinement.structure_ok)
                            if row.stage1 else None)
        log(kwargs, "refine_format/complete", complete)
        log(kwargs, "refine_format/no_proposal", empty)
        return out


class PointRefineReward(_Stage2Reward):
    """Per stage-1 point: −1 when it was inside M and ends outside (moved out or deleted); +1
    when it ends inside (entered or stayed) or is a valid deletion (`<DELETE>` and no position
    reachable by one offset from it lies in M); 0 otherwise, and 0 for every point of a
    missing or malformed line. Mean over an instance's points, then over instances with
    points; None when no stage-1 instance has points. Range [−1, 1].
    Logs `point_refine/deleted` (share of points deleted) and `point_refine/valid_deletions`;
    every geometric term logs `<name>/nonzero` (share of the samples with a stage-1
    instance whose value is non-zero).
    """

    name = "point_refine"
    value_range = (-1.0, 1.0)

    def _reach_in(self, mask, x, y) -> bool:
        return any(point_in_mask(mask, *self.vocab.apply_offset(x, y, dx, dy))
                   for dx, dy in self.vocab.offsets())

    def __call__(self, completions, **kwargs) -> list[float | None]:
        out, deleted, valid = [], [], []
        rows = self.rows(completions, kwargs)
        for row in rows:
            per_instance = []
            lines = row.refinement.lines
            for k, inst in enumerate(row.stage1):
                if not inst.points:
                    continue
                line = lines[k] if k < len(lines) else None
                if line is None or not line.well_formed:
                    per_instance.append(0.0)
                    continue
                j = row.owners[k]
                mask = row.gt.masks[j] if j is not None else None
                scores = []
                for (x, y), op in zip(inst.points, line.seg, strict=True):
                    was_in = mask is not None and point_in_mask(mask, x, y)
                    if op is None:
                        deleted.append(1.0)
                        ok = not was_in and (mask is None or not self._reach_in(mask, x, y))
                        valid.append(float(ok))
                        scores.append(-1.0 if was_in else 1.0 if ok else 0.0)
                        continue
                    deleted.append(0.0)
                    nx, ny = self.vocab.apply_offset(x, y, *op)
                    ends_in = mask is not None and point_in_mask(mask, nx, ny)
                    scores.append(1.0 if ends_in else -1.0 if was_in else 0.0)
                per_instance.append(float(np.mean(scores)))
            out.append(float(np.mean(per_instance)) if per_instance else None)
        self.log_signal(kwargs, out, rows)
        log(kwargs, "point_refine/deleted", deleted)
        log(kwargs, "point_refine/valid_deletions", valid)
        return out


class BoxRefineReward(_Stage2Reward):
    """Per stage-1 instance with a box: 1 when IoU(refined box, B) > IoU(stage-1 box, B),
    `worse_value` (default −1) when it is lower, else 0; an already-exact box (no single offset
    per corner brings it closer to B) left unchanged scores `exact_value`. Mean over instances
    with a box; None when there is none. Range [−1, 1] (for `exact_value` in [0, 1]). An
    unmatched instance's box can only score 0.

    The paper scores a worse box 0, as it scores a box left alone: then moving a corner never
    costs and sometimes pays, so a policy that cannot see where the object's edge lies learns
    to move every corner (on the default run, stage 2's greedy refinement came to move both
    corners by `<off_-1_-1>` on 98 % of instances and the round cost gIoU; docs/method.md §11).
    `worse_value=0` gives the paper's form.
    """

    name = "box_refine"
    value_range = (-1.0, 1.0)

    def __init__(self, exact_value: float = 1.0, worse_value: float = -1.0, **kwargs):
        super().__init__(**kwargs)
        if not -1.0 <= float(worse_value) <= 0.0:
            raise ValueError(f"box_refine worse_value must lie in [-1, 0], got {worse_value!r}")
        self.exact_value = float(exact_value)
        self.worse_value = float(worse_value)

    def _exact(self, box, target) -> bool:
        return (self.vocab.best_offset(box[0], box[1], target[0], target[1]) == (0, 0)
                and self.vocab.best_offset(box[2], box[3], target[2], target[3]) == (0, 0))

    def __call__(self, completions, **kwargs) -> list[float | None]:
        out, improved = [], []
        rows = self.rows(completions, kwargs)
        for row in rows:
            refined, lines = row.refined, row.refinement.lines
            scores = []
            for k, inst in enumerate(row.stage1):
                if inst.box is None:
                    continue
                j = row.owners[k]
                new = refined[k].box if refined[k] is not None else None
                if j is None or new is None:
                    scores.append(0.0)
                    continue
                target = row.gt.boxes_norm[j]
                before = box_iou([inst.box], [target])[0, 0]
                after = box_iou([new], [target])[0, 0]
                line = lines[k] if k < len(lines) else None
                unchanged = line is not None and line.well_formed and tuple(new) == inst.box
                if after > before:
                    scores.append(1.0)
                elif after < before:
                    scores.append(self.worse_value)
                elif unchanged and self._exact(inst.box, target):
                    scores.append(self.exact_value)
                else:
                    scores.append(0.0)
                improved.append(float(after > before))
            out.append(float(np.mean(scores)) if scores else None)
        self.log_signal(kwargs, out, rows)
        log(kwargs, "box_refine/improved", improved)
        return out


class MaskGainReward(_Stage2Reward):
    """Per stage-1 instance, with u0/u1 the decoded-mask IoU before/after refinement against
    the matched mask (an unmatched instance's target is empty, and an empty mask against an
    empty target has IoU 1, so removing a false positive gains):

        gain = (u1 − u0)/(1 − u0)   when u1 ≥ u0 (the share of the possible gain reached),
               (u1 − u0)/u0         when u1 < u0 (the share of the IoU lost),

    and 0 when u0 = u1 < 1. A mask that was already exact and stays exact (u0 = u1 = 1, where
    the spec's ratio is 0/0) scores `exact_value` (default 0), as `box_refine` pays an exact box
    left alone. Mean over stage-1 instances; None when there is none. Range [−1, 1]. Needs the
    `image` column. Logs `mask_gain/u0`, `mask_gain/u1`.

    The spec's `(u1 − u0)/(1 − u0)` for every u0 < 1 is unbounded below (u0 = 0.9, u1 = 0
    gives −9; u0 → 1 gives −517 and worse), so one bad refinement of a good proposal would
    decide the group's normalized advantages; a loss is normalized by u0 instead, which also
    equals the spec's `u1 − 1` at u0 = 1 (docs/method.md §8).
    """

    name = "mask_gain"
    value_range = (-1.0, 1.0)

    def __init__(self, decoder="region", max_points: int = MAX_PROMPT_POINTS,
                 exact_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(exact_value) <= 1.0:
            raise ValueError(f"mask_gain exact_value must lie in [0, 1], got {exact_value!r}")
        self.decoder = shared_decoder(decoder)
        self.max_points = max_points
        self.exact_value = float(exact_value)

    @staticmethod
    def gain(u0: float, u1: float) -> float:
        u0, u1 = min(1.0, max(0.0, u0)), min(1.0, max(0.0, u1))
        if u1 > u0:
            return (u1 - u0) / (1.0 - u0)
        if u1 < u0:
            return (u1 - u0) / u0
        return 0.0

    def __call__(self, completions, **kwargs) -> list[float | None]:
        batch = self.batch(completions, kwargs)
        images = column(kwargs, "image", len(batch.rows), self.name)
        # Stage-1 and refined instances of every row decoded in one pass per image.
        masks = batch.masks(self.decoder, images, self.max_points)
        out, u0s, u1s = [], [], []
        for row, row_masks in zip(batch.rows, masks, strict=True):
            n, gt = len(row.stage1), row.gt
            if n == 0:
                out.append(None)
                continue
            gains = []
            for k in range(n):
                j = row.owners[k]
                target = gt.masks[j] if j is not None else np.zeros((gt.height, gt.width), bool)
                u0 = iou_or_one(row_masks[k], target)
                u1 = iou_or_one(row_masks[n + k], target)
                gains.append(self.exact_value if u0 == u1 == 1.0 else self.gain(u0, u1))
                u0s.append(u0)
                u1s.append(u1)
            out.append(float(np.mean(gains)))
        self.log_signal(kwargs, out, batch.rows)
        log(kwargs, "mask_gain/u0", u0s)
        log(kwargs, "mask_gain/u1", u1s)
        return out
