"""What a parsed answer is, and the parts of parsing that do not depend on the codec.

A completion is `<think>…</think><answer>…</answer>` with one instance per non-empty answer line
(method spec §2). The codec (`tokens.codec`) reads geometry out of a line; this module finds the
answer, splits it into lines and records what was wrong. Nothing here raises on model output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# Errors past this many per parse are counted, not listed: a 10k-token answer stays cheap.
MAX_ERRORS = 64

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class Instance:
    """One predicted object in normalized coordinates.

    box: (x1, y1, x2, y2) in [0, 1], x1 <= x2 and y1 <= y2, or None.
    points: normalized (x, y) points inside the object (the `<seg>` set), possibly empty.
    coarse: a mask the answer spells out itself, an (n, n) bool grid over the image (the
    `rle_text` codec); decoding upsamples it instead of prompting the mask decoder.
    """

    box: Box | None = None
    points: list[Point] = field(default_factory=list)
    coarse: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        return self.box is None and not self.points


class Errors(list):
    """A list of error strings that stops growing at MAX_ERRORS and counts the rest."""

    dropped: int = 0

    def add(self, message: str) -> None:
        if len(self) < MAX_ERRORS:
            self.append(message)
        else:
            self.dropped += 1

    def summary(self) -> list[str]:
        return list(self) + ([f"... and {self.dropped} more errors"] if self.dropped else [])


@dataclass
class ParsedAnswer:
    """The result of parsing a stage-1 completion.

    instances: what could be read (§6: a line with a valid box or at least one valid point).
    errors: human-readable descriptions of everything that was wrong; empty for a clean answer.
    structure_ok: the completion is exactly `<think>…</think>` then `<answer>…</answer>`.
    lines_ok: every non-empty answer line is one well-formed instance.
    has_answer: an `<answer>` tag was found (instances are read only from inside it).
    num_lines: non-empty answer lines.
    answer_text: the text inside the first `<answer>` block (to the end of a truncated
    completion), None without one.
    """

    instances: list[Instance]
    errors: list[str]
    structure_ok: bool
    lines_ok: bool
    has_answer: bool
    num_lines: int
    answer_text: str | None = None

    @property
    def well_formed(self) -> bool:
        return self.structure_ok and self.lines_ok


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_STRUCTURE_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def check_structure(text: str, require_think: bool = True) -> bool:
    """True when `text` is `<think>…</think><answer>…</answer>` (whitespace aside) and each of
    the four tags occurs exactly once. With `require_think=False` the think block may be absent
    (stage-2 answers), but if present it must come first and be unique."""
    counts = [text.count(t) for t in _TAGS]
    if not require_think and counts[0] == counts[1] == 0:
        return counts[2] == counts[3] == 1 and re.fullmatch(
            r"\s*<answer>.*</answer>\s*", text, re.DOTALL) is not None
    return counts == [1, 1, 1, 1] and _STRUCTURE_RE.fullmatch(text) is not None


def answer_region(text: str, errors: Errors) -> str | None:
    """The text between the first `<answer>` and the next `</answer>` (or the end of a
    truncated completion); None when there is no `<answer>` at all."""
    start = text.find("<answer>")
    if start < 0:
        errors.add("no <answer> tag")
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    if end < 0:
        errors.add("<answer> is not closed (truncated completion?)")
        return text[start:]
    if text.count("<answer>") > 1:
        errors.add("more than one <answer> block; only the first is read")
    return text[start:end]


def answer_lines(region: str) -> list[str]:
    """The non-empty lines of an answer region, stripped."""
    return [s for s in (line.strip() for line in region.splitlines()) if s]


# A line is a sequence of items: `<…>` tags and tokens, and text between them.
LINE_ITEM_RE = re.compile(r"<[^<>\s]{1,48}>|[^<]+|<")


def line_items(line: str):
    """Yield the non-whitespace items of a line: tags/tokens like `<box>` and stray text."""
    for m in LINE_ITEM_RE.finditer(line):
        item = m.group(0)
        if not item.isspace():
            yield item.strip() if item[0] != "<" else item


# What a token reader gives the group walker for one item: None when the item is no token of
# its grammar, (True, value) for a token to keep, (False, message) for one to reject.
TokenRead = tuple[bool, object] | None


@dataclass
class GroupRun:
    """One `<box>` or `<seg>` group as written: the values of the tokens kept inside it, whether
    its own closing tag ended it (not the next opening tag or the end of the line) and whether a
    token inside it was rejected."""

    name: str
    values: list = field(default_factory=list)
    closed: bool = False
    rejected: bool = False


@dataclass
class GroupWalk:
    """The groups of one answer line in the order written. `ok`: every tag in its place, each
    group at most once, every item a kept token inside a group. `wrapped`: the line is inside
    its wrapper tags (True when the grammar has no wrapper)."""

    runs: list[GroupRun]
    ok: bool
    wrapped: bool

    def first(self, name: str, closed: bool = False) -> GroupRun | None:
        """The first run of group `name` (the first one its own tag closed, with `closed`)."""
        return next((r for r in self.runs if r.name == name and (r.closed or not closed)), None)


GROUP_TAGS = ("<box>", "<seg>")


def walk_groups(line: str, read_token, errors: Errors, wrapper: str | None = None) -> GroupWalk:
    """Walk the `<box>…</box><seg>…</seg>` groups of one line: the one grammar of the stage-1
    and the offset lines. `read_token(item)` reads one item (see `TokenRead`); `wrapper`
    ("offset") names the tag pair the groups must sit in. Every problem is recorded in `errors`;
    what is read is left to the caller (the first run of each group, closed or not)."""
    runs: list[GroupRun] = []
    run: GroupRun | None = None  # the open group
    ok = True
    opened = closed = wrapper is None  # the wrapper's two tags seen

    def fail(message: str) -> None:
        nonlocal ok
        ok = False
        errors.add(message)

    for item in line_items(line):
        if wrapper is not None and item in (f"<{wrapper}>", f"</{wrapper}>"):
            if item[1] != "/" and (opened or runs):
                fail(f"{item} out of place")
            elif item[1] == "/" and (not opened or closed or run is not None):
                fail(f"{item} out of place")
            opened |= item[1] != "/"
            closed |= item[1] == "/"
        elif item in GROUP_TAGS:
            name = item[1:-1]
            if run is not None:
                fail(f"<{run.name}> is not closed before {item}")
            elif any(r.name == name for r in runs):
                fail(f"more than one {item}; only the first is read")
            elif wrapper is not None and (not opened or closed):
                fail(f"{item} outside <{wrapper}>…</{wrapper}>")
            run = GroupRun(name)
            runs.append(run)
        elif item[:2] == "</" and item[2:] in ("box>", "seg>"):
            if run is None or run.name != item[2:-1]:
                fail(f"{item} without its opening tag")
            else:
                run.closed, run = True, None
        elif (read := read_token(item)) is None:
            fail(f"unexpected {item[:40]!r}")
        elif run is None:
            fail(f"{item} outside <box>/<seg>")
        elif read[0]:
            run.values.append(read[1])
        else:
            run.rejected = True
            fail(read[1])
    if run is not None:
        fail(f"<{run.name}> is not closed at the end of the line")
    return GroupWalk(runs, ok, opened and closed)


_TAG_RE = re.compile(r"<[^<>]*>")
_SENTENCE_SPLIT_RE = re.compile(r"[.\n]")


def sentences(text: str) -> list[str]:
    """Sentences for the non-repeat reward (§7): every `<…>` tag replaced by a newline, split on
    `.` and newlines, stripped, empty ones dropped."""
    plain = _TAG_RE.sub("\n", text)
    return [s for s in (p.strip() for p in _SENTENCE_SPLIT_RE.split(plain)) if s]
