"""Codecs: geometry ↔ answer text. Grid tokens are the default; others plug in by name.

A codec knows how one instance is written on one answer line and read back from it. Everything
around the lines (`<think>`, `<answer>`, splitting, error collection) is shared, so the rewards,
the data builders and the trainer see the same `ParsedAnswer` whatever the representation.

To add a representation: subclass `Codec`, implement `new_tokens`, `format_instance` and
`parse_line`, and list the class in `tokens.registry.CODECS`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

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
from tokens.vocab import DEFAULT_VOCAB, GRID_TOKEN_PATTERN, GRID_TOKEN_RE, SpatialVocab


class Codec(ABC):
    """Writes instances as answer lines and reads them back."""

    name: str = ""
    uses_vocab: bool = False  # takes the SpatialVocab (`get_codec` passes it)

    @abstractmethod
    def new_tokens(self) -> list[str]:
        """Tokens this codec needs added to the tokenizer (empty for plain-text codecs)."""

    @abstractmethod
    def format_instance(self, instance: Instance) -> str:
        """One answer line for `instance` (normalized coordinates)."""

    def target_instance(self, box, points, mask_hw) -> Instance:
        """The instance an SFT answer writes for one ground-truth target: its normalized box,
        the points of the greedy conversion, and its mask (codecs that spell out masks use
        it)."""
        return Instance(box, list(points))

    @abstractmethod
    def parse_line(self, line: str, errors: Errors) -> tuple[Instance | None, bool]:
        """Read one non-empty answer line.

        Returns (instance or None when nothing valid could be read, well_formed). Problems are
        added to `errors`, prefixed by nothing: the caller adds the line number. Never raises.
        """

    def serialize_answer(self, instances: Sequence[Instance], think: str = "") -> str:
        """`<think>{think}</think>` then an `<answer>` block with one line per instance."""
        lines = [self.format_instance(inst) for inst in instances]
        body = "\n" + "".join(line + "\n" for line in lines) if lines else ""
        return f"<think>{think}</think>\n<answer>{body}</answer>"

    def parse_answer(self, text: str) -> ParsedAnswer:
        """Parse any completion; never raises. See `ParsedAnswer` for what comes back."""
        if not isinstance(text, str):
            return ParsedAnswer([], [f"completion is {type(text).__name__}, not str"],
                                False, False, False, 0)
        errors = Errors()
        structure_ok = check_structure(text)
        if not structure_ok:
            errors.add("completion is not exactly <think>…</think><answer>…</answer>")
        region = answer_region(text, errors)
        instances, lines_ok, n = [], region is not None, 0
        if region is not None:
            for n, line in enumerate(answer_lines(region), start=1):
                line_errors = Errors()
                inst, ok = self.parse_line(line, line_errors)
                for e in line_errors.summary():
                    errors.add(f"line {n}: {e}")
                lines_ok &= ok
                if inst is not None and not inst.is_empty:
                    instances.append(inst)
        return ParsedAnswer(instances, errors.summary(), structure_ok, lines_ok,
                            region is not None, n, region)


class GridCodec(Codec):
    """`<box><grid_i_j><grid_i_j></box><seg><grid_i_j>…</seg>` on the lattice of `vocab`.

    Quantization: every coordinate decodes to a cell centre, within half a cell (1/(2G)) of
    the point that was encoded.
    """

    name = "grid"
    uses_vocab = True

    def __init__(self, vocab: SpatialVocab = DEFAULT_VOCAB):
        self.vocab = vocab

    @property
    def bound(self) -> float:
        """Quantization bound per coordinate, normalized: half a cell."""
        return 0.5 / self.vocab.grid_size

    def new_tokens(self) -> list[str]:
        return self.vocab.all_tokens()

    def format_instance(self, instance: Instance) -> str:
        v = self.vocab
        parts = []
        if instance.box is not None:
            x1, y1, x2, y2 = instance.box
            parts.append(f"<box>{v.point_to_token(x1, y1)}{v.point_to_token(x2, y2)}</box>")
        if instance.points:
            parts.append("<seg>" + "".join(v.point_to_token(x, y) for x, y in instance.points)
                         + "</seg>")
        if not parts:
            raise ValueError("an instance needs a box or at least one point to be written")
        return "".join(parts)

    def parse_line(self, line: str, errors: Errors) -> tuple[Instance | None, bool]:
        clean = self._parse_clean_line(line, errors)
        return clean if clean is not None else self._walk_line(line, errors)

    # A line exactly as `format_instance` writes it: matched whole by one regex, and read
    # ~5x faster than by the item walk (most lines a trained policy writes look like this).
    _CLEAN_LINE_RE = re.compile(rf"(?:<box>((?:{GRID_TOKEN_PATTERN}){{2}})</box>)?"
                                rf"(?:<seg>((?:{GRID_TOKEN_PATTERN})+)</seg>)?")

    _UNORDERED = "<box> corners are not top-left then bottom-right"

    def _parse_clean_line(self, line: str, errors: Errors) -> tuple[Instance, bool] | None:
        """The instance of a line in canonical form with every token in range; None for any
        other line (the walk then reads it and says what is wrong). Gives what `_walk_line`
        gives for such a line, errors included."""
        m = self._CLEAN_LINE_RE.fullmatch(line)
        if m is None or (m.group(1) is None and m.group(2) is None):
            return None
        v = self.vocab
        cells = [[(int(i), int(j)) for i, j in GRID_TOKEN_RE.findall(g)] if g else None
                 for g in m.groups()]
        if not all(v.cell_in_range(i, j) for part in cells if part for i, j in part):
            return None
        box = None
        if cells[0] is not None:
            (x1, y1), (x2, y2) = (v.cell_center(*c) for c in cells[0])
            ordered = x1 <= x2 and y1 <= y2
            if not ordered:
                errors.add(self._UNORDERED)
            box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        return Instance(box, [v.cell_center(*c) for c in cells[1] or []]), box is None or ordered

    def _walk_line(self, line: str, errors: Errors) -> tuple[Instance | None, bool]:
        """Read any line item by item, recording every problem."""
        v = self.vocab

        def read_token(item: str) -> TokenRead:
            if (m := GRID_TOKEN_RE.fullmatch(item)) is None:
                return None
            cell = int(m.group(1)), int(m.group(2))
            if not v.cell_in_range(*cell):
                return False, f"{item} is out of range for a {v.grid_size}-grid"
            return True, cell

        walk = walk_groups(line, read_token, errors)
        ok = walk.ok
        first_box, first_seg = walk.first("box"), walk.first("seg")
        groups = {r.name: r.values for r in (first_box, first_seg) if r is not None}
        bad_box = first_box is not None and first_box.rejected

        box = None
        if "box" in groups:
            box_cells = groups["box"]
            if len(box_cells) != 2 or bad_box:
                errors.add(f"<box> needs exactly two in-range grid tokens, got {len(box_cells)}"
                           + (" valid" if bad_box else ""))
                ok = False
            else:
                (x1, y1), (x2, y2) = (v.cell_center(*c) for c in box_cells)
                if x1 > x2 or y1 > y2:
                    errors.add(self._UNORDERED)
                    ok = False
                box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        points = [v.cell_center(*c) for c in groups.get("seg", [])]
        if "seg" in groups and not points:
            errors.add("<seg> has no valid grid token")
            ok = False
        if not groups:
            errors.add("no <box> or <seg>")
            ok = False
        inst = Instance(box, points)
        return (None if inst.is_empty else inst), ok
