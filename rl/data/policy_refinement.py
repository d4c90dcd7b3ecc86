"""Refinement dialogues built from what the policy actually proposes (issue 15, method §5).

The simulated dialogues of `build_sft` start from sampled Inside/Ring/Delete points; a cold-start
model proposes something else (one or two points per instance, sometimes on the wrong object).
Here the stage-1 answer of a dialogue is the model's own proposal for a training scene, and its
target is what the stage-2 rewards score as right, computed against the ground truth:

- each proposed instance is matched to a ground-truth object by the rewards' Hungarian matching
  (`rewards.matching.match`, §6);
- a matched instance: each box corner gets the offset that brings it closest to the true corner
  (`SpatialVocab.best_offset`; with `box_target` "mask", "gain" or "open", by the decoded
  mask, see below), each point the target of its cell for the matched mask
  (`tokens.offsets.grid_targets`: `<off_0_0>` inside, the deepest move into the mask from the
  ring, `<DELETE>` otherwise);
- an unmatched instance (more instances than objects, or a no-target scene): every point
  `<DELETE>`, box corners left where they are (`<off_0_0>`).

A proposal with no instance gets no dialogue: evaluation asks for no refinement then either.

Box targets by the decoded mask (`box_target` "mask", "gain" or "open"). The nearest corner is the
spec's target (method §5), but a model that cannot see where inside its cell the object's edge
lies learns the marginal of those targets, and they are spread about evenly over all nine
offsets: its greedy corner moves are then arbitrary (the default's round moved both corners by
(-1, -1) and cost gIoU). What the mask decoder makes of a box is what the task scores: with
"mask" each corner, moved by each offset with the other corner and the points as proposed, is
decoded, and the target is the nearest corner among the offsets whose mask has the best IoU
with the matched object (the nearest corner itself whenever its mask is among the best). A box
that clips its object's mask is taught to open; the others keep the spec's target. With
"gain" (the default recipe's at 037eb15) a corner's target is `<off_0_0>` whenever no move
decodes to a better mask, so only the moves that change the decoded mask for the better are
taught (on the default's own proposals: keep on 1,780 of 2,018 box lines, against 62 with the
nearest corner). With "open" (the default recipe's now) a corner's target is, among the
best-decoding moves, the one that leaves the largest box: a box is opened by half a cell per
side wherever that costs the decoded mask nothing, which a model blind to sub-cell edges can
learn (on the same proposals: both corners opened on 1,952 of 2,018 box lines), and which pays
wherever the proposed box clips its mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rewards.masks import iou_or_one
from rewards.matching import match
from rewards.solution import GroundTruth, parse_solution
from rl.data.samples import assistant_turn, user_turn
from tokens import SpatialVocab, serialize_refinement
from tokens.answer import Instance
from tokens.decoders import instance_masks
from tokens.offsets import grid_targets
from tokens.refine import Offset

Line = tuple[list[Offset] | None, list[Offset | None] | None]
BOX_TARGETS = ("corner", "mask", "gain", "open")


def _mask_corner_offsets(inst: Instance, target_mask, corners, vocab: SpatialVocab,
                         decoder, image, frame, rule: str) -> list[Offset]:
    """Each box corner's target by the decoded mask (module doc): `corners` are the true
    corners ((x1, y1), (x2, y2)); a move that would turn the box inside out is no candidate.
    Among the moves whose mask is best, `rule` "mask" takes the nearest corner, "gain" (0, 0)
    when it is among them, "open" the move that leaves the largest box (ties: nearest)."""
    x1, y1, x2, y2 = inst.box
    cands = []
    for c, (cx, cy) in enumerate(((x1, y1), (x2, y2))):
        for d in vocab.offsets():
            px, py = vocab.apply_offset(cx, cy, *d)
            box = (px, py, x2, y2) if c == 0 else (x1, y1, px, py)
            if box[0] <= box[2] and box[1] <= box[3]:
                cands.append((c, d, Instance(box, list(inst.points))))
    masks = instance_masks(decoder, image, [i for _, _, i in cands], frame)
    ious = [iou_or_one(m, target_mask) for m in masks]
    out = []
    for c, (cx, cy) in enumerate(((x1, y1), (x2, y2))):
        best = max(u for (k, _, _), u in zip(cands, ious, strict=True) if k == c)
        top = [(d, i.box) for (k, d, i), u in zip(cands, ious, strict=True)
               if k == c and u >= best - 1e-9]
        if rule == "open":
            area = max(_area(b) for _, b in top)
            top = [(d, b) for d, b in top if _area(b) >= area - 1e-12]
        moves = [d for d, _ in top]
        out.append((0, 0) if rule == "gain" and (0, 0) in moves
                   else vocab.best_offset(cx, cy, *corners[c], among=moves))
    return out


def _area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def refinement_lines(proposal: Sequence[Instance], gt: GroundTruth, vocab: SpatialVocab,
                     box_target: str = "corner", decoder=None, image=None) -> list[Line]:
    """(box offsets, point ops) for every proposed instance, in order (see the module doc).
    `box_target` "mask", "gain" or "open" needs the mask `decoder` and the scene's `image`."""
    if box_target not in BOX_TARGETS:
        raise ValueError(f"box_target: expected one of {BOX_TARGETS}, not {box_target!r}")
    if box_target != "corner" and (decoder is None or image is None):
        raise ValueError(f"box_target {box_target!r} needs the mask decoder and the scene's "
                         f"image")
    matching = match(proposal, gt)
    lines: list[Line] = []
    for i, inst in enumerate(proposal):
        g = matching.gt_of(i)
        box_ops = None
        if inst.box is not None:
            if g is None:
                box_ops = [(0, 0), (0, 0)]
            else:
                x1, y1, x2, y2 = (float(c) for c in gt.boxes_norm[g])
                if box_target != "corner":
                    box_ops = _mask_corner_offsets(inst, gt.masks[g], ((x1, y1), (x2, y2)),
                                                   vocab, decoder, image, (gt.width, gt.height),
                                                   rule=box_target)
                else:
                    box_ops = [vocab.best_offset(inst.box[0], inst.box[1], x1, y1),
                               vocab.best_offset(inst.box[2], inst.box[3], x2, y2)]
        seg_ops = None
        if inst.points:
            if g is None:
                seg_ops = [None] * len(inst.points)
            else:
                targets = grid_targets(gt.masks[g], vocab)
                index = {cell: k for k, cell in enumerate(targets.cells)}
                seg_ops = [targets.targets[index[vocab.point_to_cell(*p)]]
                           for p in inst.points]
        lines.append((box_ops, seg_ops))
    return lines


def policy_refinement_rows(rows: Iterable[Mapping], proposals: Iterable[str], codec,
                           vocab: SpatialVocab, prompts: Mapping[str, str],
                           skipped: dict | None = None, box_target: str = "corner",
                           decoder=None) -> list[dict]:
    """SFT rows (prompt, completion, image, solution, stage1) of refinement dialogues, one per
    stage-1 row (`build_grpo_stage1` rows) whose proposal (the model's answer text, one per row)
    has an instance. `skipped`, when given, counts the rows left out and why. `box_target` and
    `decoder`: as `refinement_lines` (the rows' `image` is decoded)."""
    rows, proposals = list(rows), list(proposals)
    if len(rows) != len(proposals):
        raise ValueError(f"{len(proposals)} proposals for {len(rows)} rows")
    skipped = skipped if skipped is not None else {}
    out = []
    for n, (row, text) in enumerate(zip(rows, proposals, strict=True)):
        instances = codec.parse_answer(text).instances
        if not instances:
            skipped["no instance proposed"] = skipped.get("no instance proposed", 0) + 1
            continue
        gt = parse_solution(row["solution"], row=row.get("id", n))
        if box_target != "corner" and row.get("image") is None:
            raise ValueError(f"row {row.get('id', n)}: field image: box targets by the decoded "
                             "mask need the scene's image")
        lines = refinement_lines(instances, gt, vocab, box_target, decoder,
                                 row.get("image") if box_target != "corner" else None)
        target = serialize_refinement(lines, think=prompts["think_refine"], vocab=vocab)
        out.append({**row, "task": "refine_policy",
                    "prompt": list(row["prompt"]) + [assistant_turn(text),
                                                     user_turn(prompts["stage2"])],
                    "completion": [assistant_turn(target)], "stage1": text})
    return out
