"""Refinement dialogues built from what the policy actually proposes (issue 15, method §5).

The simulated dialogues of `build_sft` start from sampled Inside/Ring/Delete points; a cold-start
model proposes something else (one or two points per instance, sometimes on the wrong object).
Here the stage-1 answer of a dialogue is the model's own proposal for a training scene, and its
target is what the stage-2 rewards score as right, computed against the ground truth:

- each proposed instance is matched to a ground-truth object by the rewards' Hungarian matching
  (`rewards.matching.match`, §6);
- a matched instance: each box corner gets the offset that brings it closest to the true corner
  (`SpatialVocab.best_offset`), each point the target of its cell for the matched mask
  (`tokens.offsets.grid_targets`: `<off_0_0>` inside, the deepest move into the mask from the
  ring, `<DELETE>` otherwise);
- an unmatched instance (more instances than objects, or a no-target scene): every point
  `<DELETE>`, box corners left where they are (`<off_0_0>`).

A proposal with no instance gets no dialogue: evaluation asks for no refinement then either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rewards.matching import match
from rewards.solution import GroundTruth, parse_solution
from rl.data.samples import assistant_turn, user_turn
from tokens import SpatialVocab, serialize_refinement
from tokens.answer import Instance
from tokens.offsets import grid_targets
from tokens.refine import Offset

Line = tuple[list[Offset] | None, list[Offset | None] | None]


def refinement_lines(proposal: Sequence[Instance], gt: GroundTruth,
                     vocab: SpatialVocab) -> list[Line]:
    """(box offsets, point ops) for every proposed instance, in order (see the module doc)."""
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
                           skipped: dict | None = None) -> list[dict]:
    """SFT rows (prompt, completion, image, solution, stage1) of refinement dialogues, one per
    stage-1 row (`build_grpo_stage1` rows) whose proposal (the model's answer text, one per row)
    has an instance. `skipped`, when given, counts the rows left out and why."""
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
        lines = refinement_lines(instances, gt, vocab)
        target = serialize_refinement(lines, think=prompts["think_refine"], vocab=vocab)
        out.append({**row, "task": "refine_policy",
                    "prompt": list(row["prompt"]) + [assistant_turn(text),
                                                     user_turn(prompts["stage2"])],
                    "completion": [assistant_turn(target)], "stage1": text})
    return out
