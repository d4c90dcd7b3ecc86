"""The representations of related work as codecs, all plain text (no new tokens).

- `text_norm`: normalized floats with k decimals, `[x1, y1, x2, y2] (x, y) …` (the SJTU
  paper's coordinates; LocVLM's NFP).
- `text_bins`: integers 0…n, value = round(coordinate·n), as Qwen-VL writes 0–1000 (LocVLM's
  IVB).
- `anchor_offset_text`: the image-grid anchor nearest the object's centre, then each coordinate
  as a signed pixel deviation from that anchor's centre in an F×F reference frame (LocVLM's
  DIGA; the signs are written, `+0` included).
- `rle_text`: Text4Seg's semantic descriptors: an n×n map of `others`/`target` words, each row
  run-length encoded (`others *5, target *4, others *7`), rows joined by ` | `. Decoded by
  upsampling the map, or (`refine=True`) read as a box and points for the mask decoder.

One answer line per instance, as for grid tokens; `<think>`/`<answer>` and the rewards are
shared. Each codec states its quantization bound (`bound`, in normalized units; `rle_text`
reproduces its own n×n map exactly instead).
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod

import numpy as np

from tokens.answer import Errors, Instance
from tokens.codec import Codec

# `[…]` and `(…)` groups, or any other run of non-space characters. Numbers are ASCII digits
# (`[0-9]`, not `\d`, which also matches other scripts' digits), as in `tokens.vocab`.
_ITEM_RE = re.compile(r"\[[^\[\]]*\]|\([^()]*\)|[^\s\[\](]+|\S")
_NUMBER_RE = re.compile(r"[+-]?[0-9]{1,9}(?:\.[0-9]{1,12})?")


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


class _CoordinateCodec(Codec):
    """A box `[a, b, c, d]` and points `(a, b)`, each value one coordinate in this codec's
    number form. Subclasses say how a coordinate is written and read. With `box_only` (the
    SJTU baseline) answers hold boxes only: points are not written, and read as errors."""

    bound: float = 0.0
    box_only: bool = False

    def new_tokens(self) -> list[str]:
        return []

    # -- one value ------------------------------------------------------------------------
    @abstractmethod
    def write(self, v: float, axis: int, ctx) -> str:
        """One coordinate (axis 0: x, 1: y) as text; `ctx` is what `prefix` returned."""

    @abstractmethod
    def read(self, text: str, axis: int, ctx, errors: Errors) -> float | None:
        """One coordinate back (normalized), or None with the problem added to `errors`."""

    # -- a line ---------------------------------------------------------------------------
    def prefix(self, instance: Instance) -> tuple[str, object]:
        """Text written before the box and points, and the context the values need."""
        return "", None

    def read_prefix(self, items: list[str], errors: Errors) -> tuple[object, int, bool]:
        """(context, items consumed, ok)."""
        return None, 0, True

    def format_instance(self, instance: Instance) -> str:
        head, ctx = self.prefix(instance)
        parts = [head] if head else []
        if instance.box is not None:
            parts.append("[" + ", ".join(self.write(v, k % 2, ctx)
                                         for k, v in enumerate(instance.box)) + "]")
        if not self.box_only:
            parts += ["(" + self.write(x, 0, ctx) + ", " + self.write(y, 1, ctx) + ")"
                      for x, y in instance.points]
        if len(parts) == (1 if head else 0):
            raise ValueError("an instance needs a box or at least one point to be written")
        return " ".join(parts)

    def _values(self, group: str, n: int, ctx, errors: Errors, what: str) -> list | None:
        fields = [f.strip() for f in group[1:-1].split(",")]
        if len(fields) != n:
            errors.add(f"{what} needs {n} values, got {len(fields)}")
            return None
        out = [self.read(f, k % 2, ctx, errors) for k, f in enumerate(fields)]
        return None if any(v is None for v in out) else out

    def parse_line(self, line: str, errors: Errors) -> tuple[Instance | None, bool]:
        items = _ITEM_RE.findall(line)
        ctx, used, ok = self.read_prefix(items, errors)
        if not ok and used == 0:  # a line without its required prefix: nothing can be read
            return None, False
        box, points, n_boxes = None, [], 0
        for item in items[used:]:
            if item.startswith("[") and item.endswith("]"):
                n_boxes += 1
                if n_boxes > 1:
                    errors.add("more than one box; only the first is read")
                    ok = False
                    continue
                vals = self._values(item, 4, ctx, errors, "a box")
                if vals is None:
                    ok = False
                    continue
                x1, y1, x2, y2 = vals
                if x1 > x2 or y1 > y2:
                    errors.add("box corners are not top-left then bottom-right")
                    ok = False
                box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
            elif item.startswith("(") and item.endswith(")") and self.box_only:
                errors.add("points are not part of a box-only answer")
                ok = False
            elif item.startswith("(") and item.endswith(")"):
                vals = self._values(item, 2, ctx, errors, "a point")
                if vals is None:
                    ok = False
                else:
                    points.append((vals[0], vals[1]))
            else:
                errors.add(f"unexpected {item[:40]!r}")
                ok = False
        if box is None and not points:
            if n_boxes == 0:
                errors.add("no box or point")
            ok = False
            return None, ok
        return Instance(box, points), ok


class TextNormCodec(_CoordinateCodec):
    """`[0.125, 0.250, 0.500, 0.750] (0.300, 0.400)`: normalized coordinates with `decimals`
    decimals. Bound: half a unit of the last decimal."""

    name = "text_norm"

    def __init__(self, decimals: int = 3, box_only: bool = False):
        if not 1 <= int(decimals) <= 8:
            raise ValueError(f"text_norm: decimals must be 1..8, got {decimals}")
        self.decimals, self.box_only = int(decimals), bool(box_only)
        self.bound = 0.5 * 10 ** -self.decimals

    def write(self, v, axis, ctx):
        return f"{_clip01(v):.{self.decimals}f}"

    def read(self, text, axis, ctx, errors):
        if not _NUMBER_RE.fullmatch(text):
            errors.add(f"{text[:20]!r} is not a number")
            return None
        v = float(text)
        if not 0.0 <= v <= 1.0:
            errors.add(f"{text} is outside [0, 1]")
            return None
        return v


class TextBinsCodec(_CoordinateCodec):
    """`[125, 250, 500, 750] (300, 400)`: integers 0…bins, value = round(coordinate·bins)
    (bins = 1000: how Qwen-VL writes boxes). Bound: half a bin, 1/(2·bins)."""

    name = "text_bins"

    def __init__(self, bins: int = 1000, box_only: bool = False):
        if int(bins) < 1:
            raise ValueError(f"text_bins: bins must be >= 1, got {bins}")
        self.bins, self.box_only = int(bins), bool(box_only)
        self.bound = 0.5 / self.bins

    def write(self, v, axis, ctx):
        return str(round(_clip01(v) * self.bins))

    def read(self, text, axis, ctx, errors):
        if not re.fullmatch(r"[0-9]{1,9}", text):
            errors.add(f"{text[:20]!r} is not a bin (an integer 0..{self.bins})")
            return None
        b = int(text)
        if b > self.bins:
            errors.add(f"{b} is past the last bin {self.bins}")
            return None
        return b / self.bins


class AnchorOffsetCodec(_CoordinateCodec):
    """`anchor (3, 7) [-12, -8, +15, +20] (+1, -2)`: the anchor (column p, row q) of an a×a
    grid that holds the object's centre (the box centre, else the mean point), then every
    coordinate as a signed integer deviation, in pixels of a `frame`×`frame` reference image,
    from that anchor's centre. Bound: half a reference pixel, 1/(2·frame)."""

    name = "anchor_offset_text"

    def __init__(self, anchors: int = 16, frame: int = 224):
        if int(anchors) < 1 or int(frame) < int(anchors):
            raise ValueError(f"anchor_offset_text: need 1 <= anchors <= frame, got {anchors}, "
                             f"{frame}")
        self.anchors, self.frame = int(anchors), int(frame)
        self.bound = 0.5 / self.frame

    def anchor_of(self, instance: Instance) -> tuple[int, int]:
        if instance.box is not None:
            x1, y1, x2, y2 = instance.box
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        else:
            cx = sum(x for x, _ in instance.points) / len(instance.points)
            cy = sum(y for _, y in instance.points) / len(instance.points)
        a = self.anchors
        return (min(a - 1, max(0, math.floor(cx * a))), min(a - 1, max(0, math.floor(cy * a))))

    def centre(self, p: int, q: int) -> tuple[float, float]:
        """The anchor centre in reference pixels."""
        size = self.frame / self.anchors
        return ((p + 0.5) * size, (q + 0.5) * size)

    def prefix(self, instance):
        if instance.box is None and not instance.points:
            raise ValueError("an instance needs a box or at least one point to be written")
        p, q = self.anchor_of(instance)
        return f"anchor ({p}, {q})", self.centre(p, q)

    def write(self, v, axis, ctx):
        return f"{round(_clip01(v) * self.frame - ctx[axis]):+d}"

    def read(self, text, axis, ctx, errors):
        if not re.fullmatch(r"[+-]?[0-9]{1,6}", text):
            errors.add(f"{text[:20]!r} is not a signed integer deviation")
            return None
        px = ctx[axis] + int(text)
        if not 0 <= px <= self.frame:
            errors.add(f"deviation {text} leaves the {self.frame}-pixel frame")
            return None
        return px / self.frame

    def read_prefix(self, items, errors):
        if len(items) < 2 or items[0] != "anchor" or not items[1].startswith("("):
            errors.add("a line starts with `anchor (p, q)`")
            return None, 0, False
        fields = [f.strip() for f in items[1][1:-1].split(",")]
        if len(fields) != 2 or not all(re.fullmatch(r"[0-9]{1,4}", f) for f in fields):
            errors.add(f"anchor {items[1][:20]!r} is not (p, q) with integer p, q")
            return None, 0, False
        p, q = (int(f) for f in fields)
        if p >= self.anchors or q >= self.anchors:
            errors.add(f"anchor ({p}, {q}) is out of range for {self.anchors}x{self.anchors}")
            return None, 0, False
        return self.centre(p, q), 2, True


class RleTextCodec(Codec):
    """Text4Seg's semantic descriptors with row-wise run-length encoding, one instance a line:
    `others *16 | others *5, target *4, others *7 | …` (n rows of n cells over the image).

    A cell is `target` when at least half of it is covered by the mask (the best-covered cell
    when none is). Read back, the instance carries the n×n map (`coarse`, upsampled to decode)
    plus its tight box and the centres of its cells, so every reward scores it; with
    `refine=True` only the box and the points are kept and the mask decoder draws the mask.
    """

    name = "rle_text"

    def __init__(self, size: int = 16, labels: tuple = ("others", "target"),
                 refine: bool = False):
        labels = tuple(labels)
        if int(size) < 1 or len(labels) != 2 or labels[0] == labels[1] or not all(
                re.fullmatch(r"[A-Za-z][A-Za-z ]*[A-Za-z]|[A-Za-z]", w) for w in labels):
            raise ValueError(f"rle_text: need size >= 1 and two distinct word labels, got "
                             f"{size}, {labels}")
        self.size, self.labels, self.refine = int(size), labels, bool(refine)
        self._run_re = re.compile(r"\s*(" + "|".join(map(re.escape, labels))
                                  + r")\s*(?:\*\s*([0-9]{1,4}))?\s*")

    def new_tokens(self) -> list[str]:
        return []

    def coarse_of(self, mask_hw: np.ndarray) -> np.ndarray:
        """The n×n map of a full-resolution mask (cells at least half covered)."""
        m = np.asarray(mask_hw, dtype=bool)
        n = self.size
        h, w = m.shape
        ys = np.linspace(0, h, n + 1).round().astype(int)
        xs = np.linspace(0, w, n + 1).round().astype(int)
        cover = np.zeros((n, n))
        for r in range(n):
            for c in range(n):
                cell = m[ys[r]:max(ys[r + 1], ys[r] + 1), xs[c]:max(xs[c + 1], xs[c] + 1)]
                cover[r, c] = cell.mean() if cell.size else 0.0
        coarse = cover >= 0.5
        if not coarse.any() and m.any():
            coarse[np.unravel_index(np.argmax(cover), cover.shape)] = True
        return coarse

    def instance_from_coarse(self, coarse: np.ndarray) -> Instance | None:
        if not coarse.any():
            return None
        n = self.size
        rows, cols = np.nonzero(coarse)
        box = (float(cols.min() / n), float(rows.min() / n), float((cols.max() + 1) / n),
               float((rows.max() + 1) / n))
        points = [(float((c + 0.5) / n), float((r + 0.5) / n))
                  for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
        return Instance(box, points, None if self.refine else coarse)

    def target_instance(self, box, points, mask_hw) -> Instance:
        inst = self.instance_from_coarse(self.coarse_of(mask_hw))
        if inst is None:
            raise ValueError("rle_text: a target with an empty mask cannot be written")
        return Instance(inst.box, inst.points, self.coarse_of(mask_hw))

    def format_instance(self, instance: Instance) -> str:
        coarse = instance.coarse
        if coarse is None:
            raise ValueError("rle_text writes masks: build the instance with target_instance()")
        if coarse.shape != (self.size, self.size):
            raise ValueError(f"rle_text: map is {coarse.shape}, expected {self.size}x{self.size}")
        rows = []
        for row in coarse:
            runs, start = [], 0
            for k in range(1, self.size + 1):
                if k == self.size or row[k] != row[start]:
                    runs.append(f"{self.labels[int(row[start])]} *{k - start}")
                    start = k
            rows.append(", ".join(runs))
        return " | ".join(rows)

    def parse_line(self, line: str, errors: Errors) -> tuple[Instance | None, bool]:
        n, ok = self.size, True
        rows = line.split("|")
        if len(rows) != n:
            errors.add(f"{len(rows)} rows, expected {n}")
            ok = False
        coarse = np.zeros((n, n), dtype=bool)
        for r, row in enumerate(rows[:n]):
            col = 0
            for run in row.split(","):
                m = self._run_re.fullmatch(run)
                if m is None:
                    errors.add(f"row {r + 1}: {run.strip()[:30]!r} is not `label *count`")
                    ok = False
                    continue
                count = int(m.group(2) or 1)
                if m.group(1) == self.labels[1]:
                    coarse[r, col:col + count] = True
                col += count
            if col != n:
                errors.add(f"row {r + 1} covers {col} cells, expected {n}")
                ok = False
        inst = self.instance_from_coarse(coarse)
        if inst is None and ok:
            errors.add(f"no `{self.labels[1]}` cell")
            ok = False
        return inst, ok
