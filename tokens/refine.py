"""Stage-2 refinement answers: offset tokens and `<DELETE>` (method spec §2, second half).

The answer has one `<offset>` line per stage-1 instance, in the same order, holding one offset
per box corner and one offset or `<DELETE>` per seg point, in the same order:

    <answer>
    <offset><box><off_0_1><off_-1_0></box><seg><off_0_0><DELETE><off_1_0></seg></offset>
    </answer>

A line is applied only when it is well-formed for its instance; otherwise the instance keeps its
stage-1 geometry. Nothing here raises on model output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokens.answer import (
    Errors,
    Instance,
    ParsedAnswer,
    TokenRead,
    answer_lines,
    answer_region,
    check_structure,
    walk_groups,
)
from tokens.vocab import DEFAULT_VOCAB, DELETE_TOKEN, OFFSET_TOKEN_RE, SpatialVocab

Offset = tuple[int, int]
# One entry per token: an (dx, dy) offset, or None for <DELETE>.
Ops = list[Offset | None]


@dataclass
class OffsetLine:
    """One parsed `<offset>` line. `box`/`seg` hold the ops read (None when the part is absent);
    `well_formed` says whether it fits its stage-1 instance and will be applied. `conformity`
    is the share of the four checks the line passes (wrapped in `<offset>…</offset>`; tags
    nested with only offset tokens inside; the `<box>` part; the `<seg>` part), 1 exactly
    when well formed."""

    box: Ops | None
    seg: Ops | None
    well_formed: bool
    conformity: float = 0.0


@dataclass
class ParsedRefinement:
    """A parsed stage-2 completion, checked against the stage-1 instances it answers.

    lines: one per non-empty answer line, in order (line k answers stage-1 instance k).
    num_instances: how many stage-1 instances there were.
    structure_ok: `[<think>…</think>]<answer>…</answer>` and nothing else.
    """

    lines: list[OffsetLine]
    num_instances: int
    errors: list[str]
    structure_ok: bool
    has_answer: bool
    answer_text: str | None = None  # inside the first `<answer>` block

    @property
    def num_well_formed(self) -> int:
        return sum(line.well_formed for line in self.lines[: self.num_instances])

    @property
    def complete(self) -> bool:
        """Exactly one well-formed line per stage-1 instance."""
        return len(self.lines) == self.num_instances == self.num_well_formed


def _stage1_instances(stage1, vocab: SpatialVocab) -> list[Instance]:
    if isinstance(stage1, ParsedAnswer):
        return stage1.instances
    if isinstance(stage1, str):
        from tokens.codec import GridCodec

        return GridCodec(vocab).parse_answer(stage1).instances
    return list(stage1)


def _parse_offset_line(line: str, inst: Instance, vocab: SpatialVocab,
                       errors: Errors) -> OffsetLine:
    def read_token(item: str) -> TokenRead:
        if item == DELETE_TOKEN:
            return True, None
        if (m := OFFSET_TOKEN_RE.fullmatch(item)) is None:
            return None
        dx, dy = int(m.group(1)), int(m.group(2))
        if not vocab.offset_in_range(dx, dy):
            return False, f"{item} is out of range (K = {vocab.offset_radius})"
        return True, (dx, dy)

    walk = walk_groups(line, read_token, errors, wrapper="offset")
    # A part is read from the first group its own closing tag ended.
    parts = {r.name: r.values for r in (walk.first("box", closed=True),
                                        walk.first("seg", closed=True)) if r is not None}
    wrapped = walk.wrapped
    if not wrapped:
        errors.add("line is not wrapped in <offset>…</offset>")
    nested = walk.ok  # every tag in place, only offset tokens inside the parts
    box, seg = parts.get("box"), parts.get("seg")
    box_ok = seg_ok = True
    if (box is not None) != (inst.box is not None):
        box_ok = False
        errors.add("<box> part must be present exactly when the instance has a box")
    elif box is not None and (len(box) != 2 or None in box):
        box_ok = False
        errors.add(f"<box> needs two offset tokens (no {DELETE_TOKEN}), got {len(box)}")
    if (seg is not None) != bool(inst.points):
        seg_ok = False
        errors.add("<seg> part must be present exactly when the instance has points")
    elif seg is not None and len(seg) != len(inst.points):
        seg_ok = False
        errors.add(f"<seg> needs {len(inst.points)} tokens, got {len(seg)}")
    checks = (wrapped, nested, box_ok, seg_ok)
    return OffsetLine(box, seg, all(checks), sum(checks) / len(checks))


def parse_refinement(text: str, stage1, vocab: SpatialVocab = DEFAULT_VOCAB) -> ParsedRefinement:
    """Parse a stage-2 completion against its stage-1 answer; never raises on model output.

    Args:
        text: the stage-2 completion.
        stage1: the stage-1 answer as text, a `ParsedAnswer`, or a list of `Instance`.
    """
    instances = _stage1_instances(stage1, vocab)
    if not isinstance(text, str):
        return ParsedRefinement([], len(instances), [f"completion is {type(text).__name__}"],
                                False, False)
    errors = Errors()
    structure_ok = check_structure(text, require_think=False)
    if not structure_ok:
        errors.add("completion is not [<think>…</think>]<answer>…</answer>")
    region = answer_region(text, errors)
    lines = []
    if region is not None:
        texts = answer_lines(region)
        for k, line in enumerate(texts[: len(instances)]):
            line_errors = Errors()
            lines.append(_parse_offset_line(line, instances[k], vocab, line_errors))
            for e in line_errors.summary():
                errors.add(f"line {k + 1}: {e}")
        # A line past the last stage-1 instance answers nothing: it is counted (it lowers
        # `refine_format`) but not read, so a runaway completion costs one split, not a parse.
        extra = len(texts) - len(lines)
        if extra > 0:
            lines += [OffsetLine(None, None, False, 0.0) for _ in range(extra)]
            errors.add(f"lines {len(instances) + 1}-{len(texts)}: no stage-1 instance to answer")
    if region is not None and len(lines) != len(instances):
        errors.add(f"{len(lines)} <offset> lines for {len(instances)} stage-1 instances")
    return ParsedRefinement(lines, len(instances), errors.summary(), structure_ok,
                            region is not None, region)


def refine_instances(stage1, refinement: ParsedRefinement,
                     vocab: SpatialVocab = DEFAULT_VOCAB) -> list[Instance | None]:
    """Apply a refinement; one entry per stage-1 instance, in order, None where it was removed.

    Well-formed lines move box corners and points by `(dx, dy)·s` (clipped to the image) and
    delete points; other instances keep their stage-1 geometry. Corners that cross after the
    move are re-sorted into a valid box.
    """
    out: list[Instance | None] = []
    for k, inst in enumerate(_stage1_instances(stage1, vocab)):
        line = refinement.lines[k] if k < len(refinement.lines) else None
        if line is None or not line.well_formed:
            out.append(Instance(inst.box, list(inst.points)))
            continue
        box = None
        if inst.box is not None:
            x1, y1, x2, y2 = inst.box
            ax, ay = vocab.apply_offset(x1, y1, *line.box[0])
            bx, by = vocab.apply_offset(x2, y2, *line.box[1])
            box = (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
        points = [vocab.apply_offset(x, y, *op)
                  for (x, y), op in zip(inst.points, line.seg or []) if op is not None]
        refined = Instance(box, points)
        out.append(None if refined.is_empty else refined)
    return out


def apply_refinement(stage1, refinement: ParsedRefinement | str,
                     vocab: SpatialVocab = DEFAULT_VOCAB) -> list[Instance]:
    """The refined instances, with removed ones dropped (the next round answers these, in order).

    `refinement` may be the stage-2 completion text; it is parsed against `stage1` first.
    """
    if isinstance(refinement, str):
        refinement = parse_refinement(refinement, stage1, vocab)
    return [inst for inst in refine_instances(stage1, refinement, vocab) if inst is not None]


def format_offset_line(box: Sequence[Offset] | None, seg: Sequence[Offset | None] | None,
                       vocab: SpatialVocab = DEFAULT_VOCAB) -> str:
    """One `<offset>` line; `seg` entries of None are written as `<DELETE>`."""
    for d in list(box or []) + [d for d in seg or [] if d is not None]:
        if not vocab.offset_in_range(*d):
            raise ValueError(f"offset {d} is outside the radius K = {vocab.offset_radius}")
    parts = ["<offset>"]
    if box is not None:
        parts.append("<box>" + "".join(vocab.offset_token(*d) for d in box) + "</box>")
    if seg is not None:
        parts.append("<seg>" + "".join(DELETE_TOKEN if d is None else vocab.offset_token(*d)
                                       for d in seg) + "</seg>")
    return "".join(parts) + "</offset>"


def serialize_refinement(lines: Sequence[tuple[Sequence[Offset] | None,
                                                Sequence[Offset | None] | None]],
                         think: str | None = None,
                         vocab: SpatialVocab = DEFAULT_VOCAB) -> str:
    """A stage-2 answer from (box offsets, seg ops) per stage-1 instance."""
    body = "".join(format_offset_line(b, s, vocab) + "\n" for b, s in lines)
    head = f"<think>{think}</think>\n" if think is not None else ""
    return f"{head}<answer>\n{body}</answer>" if body else f"{head}<answer></answer>"
