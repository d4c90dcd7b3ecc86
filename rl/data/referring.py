"""The bundled synthetic referring task: scenes of shapes and expressions that name some of them.

Expression kinds (weights are a parameter):

| kind        | example                                   | targets        |
|-------------|-------------------------------------------|----------------|
| attribute   | "the red circle", "the square"            | exactly one    |
| relation    | "the square left of the blue triangle"    | exactly one    |
| superlative | "the largest shape", "the leftmost star"  | exactly one    |
| multi       | "all triangles", "all red shapes"         | two or more    |
| none        | "the purple star" (there is none)         | none           |

Every expression is generated from the scene, then resolved back from its text by `resolve`,
and kept only when the resolution is unique and equals the intended targets: an expression is
never ambiguous. Relations and superlatives need a clear margin (`MARGIN` of the image for
positions, `AREA_RATIO` for sizes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rl.data.common import Record
from rl.data.scenes import (
    COLOURS,
    SHAPES,
    SceneObject,
    confusable_pairs,
    draw_scene,
    same_colour_pairs,
    same_shape_pairs,
)

KINDS = ("attribute", "relation", "superlative", "multi", "none")
DEFAULT_KIND_WEIGHTS = {"attribute": 0.4, "relation": 0.15, "superlative": 0.15, "multi": 0.15,
                        "none": 0.15}
DISTRACTORS = ("any", "share", "colour", "shape")
MARGIN = 0.05
AREA_RATIO = 1.25
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
OPPOSITE = {"largest": "smallest", "smallest": "largest", "leftmost": "rightmost",
            "rightmost": "leftmost", "topmost": "bottommost", "bottommost": "topmost"}
SUPERLATIVES = {"largest": None, "smallest": None, "leftmost": (0, -1), "rightmost": (0, 1),
                "topmost": (1, -1), "bottommost": (1, 1)}

_C = "|".join(COLOURS)
_S = "|".join(SHAPES)
_REL = "|".join(RELATIONS)
_SUP = "|".join(SUPERLATIVES)
_DESC = rf"(?:(?P<{{p}}c>{_C}) shape|(?P<{{p}}cs>{_C}) (?P<{{p}}s2>{_S})|(?P<{{p}}s>{_S}))"
_PATTERNS = [
    ("relation", re.compile(rf"^the {_DESC.format(p='t')} (?P<rel>{_REL}) the "
                            rf"(?P<ac>{_C}) (?P<as>{_S})$")),
    ("superlative", re.compile(rf"^the (?P<sup>{_SUP}) (?:shape|(?P<ss>{_S})|"
                               rf"(?P<sc>{_C}) shape)$")),
    ("multi", re.compile(rf"^all (?:(?P<ms>{_S})s|(?P<mc>{_C}) shapes)$")),
    ("attribute", re.compile(rf"^the {_DESC.format(p='')}$")),
]


class AmbiguousExpression(ValueError):
    """The expression does not pick its targets out unambiguously in this scene."""


@dataclass
class SceneView:
    """What resolving needs of an object: its names, visible area and centre (normalized)."""

    shape: str
    colour: str
    area: float
    cx: float
    cy: float

    @classmethod
    def of(cls, obj: SceneObject) -> SceneView:
        h, w = obj.mask_hw.shape
        return cls(obj.shape, obj.colour, obj.area / (h * w), *obj.centre_norm)

    def pos(self, axis: int) -> float:
        return self.cx if axis == 0 else self.cy


def _select(views, shape=None, colour=None) -> list[int]:
    return [k for k, v in enumerate(views) if (shape is None or v.shape == shape)
            and (colour is None or v.colour == colour)]


def _extreme(views, candidates: list[int], sup: str) -> int:
    """The candidate with the extreme value, if it beats the runner-up by the margin."""
    if not candidates:
        raise AmbiguousExpression("no object of that kind")
    if sup in ("largest", "smallest"):
        key = [views[k].area for k in candidates]
        order = np.argsort(key)[::-1] if sup == "largest" else np.argsort(key)
        best = candidates[order[0]]
        if len(candidates) > 1:
            a, b = views[best].area, views[candidates[order[1]]].area
            if max(a, b) < AREA_RATIO * min(a, b):
                raise AmbiguousExpression(f"no clearly {sup} object")
        return best
    axis, sign = SUPERLATIVES[sup]
    key = [sign * views[k].pos(axis) for k in candidates]
    order = np.argsort(key)[::-1]
    best = candidates[order[0]]
    if len(candidates) > 1 and key[order[0]] - key[order[1]] < MARGIN:
        raise AmbiguousExpression(f"no clearly {sup} object")
    return best


def resolve(text: str, views: Sequence[SceneView]) -> list[int]:
    """The indices of the objects `text` refers to in a scene; raises AmbiguousExpression when
    it does not pick them out, ValueError when it is not one of the templates."""
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        g = m.groupdict()
        if kind == "attribute":
            cands = _select(views, g["s"] or g["s2"], g["c"] or g["cs"])
            if len(cands) > 1:
                raise AmbiguousExpression(f"{len(cands)} objects match {text!r}")
            return cands
        if kind == "multi":
            return _select(views, g["ms"], g["mc"])
        if kind == "superlative":
            return [_extreme(views, _select(views, g["ss"], g["sc"]), g["sup"])]
        anchors = _select(views, g["as"], g["ac"])
        if len(anchors) != 1:
            raise AmbiguousExpression(f"{len(anchors)} anchors for {text!r}")
        a = views[anchors[0]]
        axis, sign = RELATIONS[g["rel"]]
        cands = [k for k in _select(views, g["ts"] or g["ts2"], g["tc"] or g["tcs"])
                 if k != anchors[0]]
        hits = [k for k in cands if sign * (views[k].pos(axis) - a.pos(axis)) > MARGIN]
        near = [k for k in cands if 0 < sign * (views[k].pos(axis) - a.pos(axis)) <= MARGIN]
        if len(hits) != 1 or near:
            raise AmbiguousExpression(f"{len(hits)} objects are {g['rel']} the anchor")
        return hits
    raise ValueError(f"not a synthetic expression: {text!r}")


def _describe(views, k: int, rng) -> str:
    """A short description of object k that is unique in the scene, or the full name."""
    v = views[k]
    options = [f"{v.colour} {v.shape}"]
    if len(_select(views, shape=v.shape)) == 1:
        options.append(v.shape)
    if len(_select(views, colour=v.colour)) == 1:
        options.append(f"{v.colour} shape")
    return options[int(rng.integers(len(options)))]


def _distinct(names) -> list[str]:
    """The distinct names in first-seen order. Not a set: a set of strings iterates in an order
    that changes with each process's hash seed, and so would the expressions drawn from it."""
    return list(dict.fromkeys(names))


def _candidates(kind: str, views, rng) -> list[tuple[str, list[int]]]:
    """Expressions of `kind` with their intended targets (checked by `resolve` afterwards)."""
    n = len(views)
    out: list[tuple[str, list[int]]] = []
    if kind == "attribute":
        out = [(f"the {_describe(views, k, rng)}", [k]) for k in range(n)]
    elif kind == "relation":
        for a in range(n):
            for t in range(n):
                if a == t:
                    continue
                for rel in RELATIONS:
                    tv, av = views[t], views[a]
                    target = rng.choice([tv.shape, f"{tv.colour} shape", f"{tv.colour} {tv.shape}"])
                    out.append((f"the {target} {rel} the {av.colour} {av.shape}", [t]))
    elif kind == "superlative":
        for sup in SUPERLATIVES:
            out.append((f"the {sup} shape", []))
            for s in _distinct(v.shape for v in views):
                out.append((f"the {sup} {s}", []))
    elif kind == "multi":
        for s in _distinct(v.shape for v in views):
            out.append((f"all {s}s", _select(views, shape=s)))
        for c in _distinct(v.colour for v in views):
            out.append((f"all {c} shapes", _select(views, colour=c)))
        out = [(t, ks) for t, ks in out if len(ks) >= 2]
    elif kind == "none":
        present = {(v.shape, v.colour) for v in views}
        out = [(f"the {c} {s}", []) for s in SHAPES for c in COLOURS if (s, c) not in present]
    else:
        raise ValueError(f"unknown expression kind {kind!r}; known: {KINDS}")
    return out


SINGLE_TARGET_KINDS = ("attribute", "relation", "superlative")


def _shares(views, name: tuple[str, str]) -> int:
    """How many of (shape, colour) of `name` some object of the scene has (0, 1 or 2)."""
    shape, colour = name
    return int(any(v.shape == shape for v in views)) + int(any(v.colour == colour for v in views))


def make_expression(objects: Sequence[SceneObject], kind: str, rng: np.random.Generator,
                    focus: int | None = None,
                    superlatives: Mapping[str, float] | None = None
                    ) -> tuple[str, list[int]] | None:
    """One unambiguous expression of `kind` for the scene, with its targets; None if the scene
    admits none (e.g. "multi" with every shape and colour unique).

    With `focus` (the anchor of a `confusable_pairs` scene), a single-target expression must
    name that object, and a no-target expression names an absent object whose shape and colour
    both occur in the scene where one exists, else one that shares one of them: the text has
    to be read to tell the answer from its distractors.

    With `superlatives` (weights by word, e.g. {"smallest": 3.0}; a word left out weighs 0),
    a superlative expression is tried in an order drawn with those weights, so the words are
    asked about in proportion to them wherever the scene allows (see `superlative_order`)."""
    views = [SceneView.of(o) for o in objects]
    cands = _candidates(kind, views, rng)
    if kind == "superlative" and superlatives is not None:
        order = superlative_order([t for t, _ in cands], superlatives, rng)
    else:
        order = [int(k) for k in rng.permutation(len(cands))]
    if focus is not None and kind == "none":
        names = [tuple(t.removeprefix("the ").split(" ")[::-1]) for t, _ in cands]
        best = max((_shares(views, n) for n in names), default=0)
        order = [k for k in order if _shares(views, names[k]) == best]
    for k in order:
        text, intended = cands[k]
        try:
            got = resolve(text, views)
        except AmbiguousExpression:
            continue
        if focus is not None and kind in SINGLE_TARGET_KINDS and got != [focus]:
            continue
        if kind == "superlative" and len(got) == 1:
            return text, got
        if sorted(got) == sorted(intended):
            return text, got
    return None


def check_superlatives(weights: Mapping[str, float]) -> None:
    """Raise ValueError unless `weights` maps superlative words to non-negative numbers, one
    of them positive."""
    unknown = set(weights) - set(SUPERLATIVES)
    if unknown:
        raise ValueError(f"unknown superlative words {sorted(unknown)}; known: "
                         f"{list(SUPERLATIVES)}")
    bad = {k: w for k, w in weights.items()
           if not isinstance(w, int | float) or isinstance(w, bool) or not w >= 0}
    if bad:
        raise ValueError(f"superlative weights must be non-negative numbers, got {bad}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("superlative weights need at least one positive weight")


def superlative_order(texts: Sequence[str], weights: Mapping[str, float],
                      rng: np.random.Generator) -> list[int]:
    """The indices of the superlative expressions `texts` ("the <word> ..."), in a random order
    drawn with the weights of their words (sampling without replacement; a word of weight 0,
    or not in `weights`, is never tried). The first expression that resolves is kept, so each
    word is the first asked about in proportion to its weight (every word has the same number
    of expressions in a scene). `weights` as `check_superlatives` accepts them (checked once
    by the caller, `synthetic_records`)."""
    w = np.array([float(weights.get(t.split(" ")[1], 0.0)) for t in texts])
    live = np.flatnonzero(w > 0)
    if live.size == 0:
        return []
    drawn = rng.choice(live.size, size=live.size, replace=False, p=w[live] / w[live].sum())
    return [int(live[k]) for k in drawn]


def retarget(views: Sequence[SceneView], kind: str, rng: np.random.Generator,
             own: tuple[str, Sequence[int]] | None = None) -> tuple[str, list[int], int]:
    """A fresh expression of `kind` for the scene `views`: (text, targets, choices).

    Single-target kinds name a uniformly drawn object among those an expression of the kind can
    name here (`choices` of them), in a uniformly drawn wording; a reader answers the drawn
    object, so it hits a given object of the scene with probability 1 / `choices` (the chance
    rate 1 / objects when every object can be named, as in the bundled task). The other kinds
    draw one of their valid expressions (`choices`: how many there are). `own`, the row's own
    (expression, targets), counts as a candidate, so every object it names can be drawn.
    What the retargeted-expression control asks (`rl.evaluate.retargeted_rows`)."""
    found: dict[tuple[int, ...], list[str]] = {}
    cands = _candidates(kind, views, rng) + ([(own[0], list(own[1]))] if own else [])
    for text, _ in cands:
        try:
            got = resolve(text, views)
        except AmbiguousExpression:
            continue
        if kind in SINGLE_TARGET_KINDS:
            ok = len(got) == 1
        elif kind == "multi":
            ok = len(got) >= 2
        else:
            ok = not got
        texts = found.setdefault(tuple(sorted(got)), []) if ok else None
        if texts is not None and text not in texts:
            texts.append(text)
    if not found:
        raise ValueError(f"no {kind} expression names anything in this scene")
    if kind in SINGLE_TARGET_KINDS:
        keys = sorted(found)
        key = keys[int(rng.integers(len(keys)))]
        texts = found[key]
        return texts[int(rng.integers(len(texts)))], list(key), len(keys)
    every = [(t, list(k)) for k in sorted(found) for t in found[k]]
    text, targets = every[int(rng.integers(len(every)))]
    return text, targets, len(every)


def objects_json(objects: Sequence[SceneObject]) -> str:
    """Every object's visible mask as a compressed COCO RLE, in drawing order, as JSON."""
    from pycocotools import mask as mask_utils

    rles = []
    for o in objects:
        rle = mask_utils.encode(np.asfortranarray(o.mask_hw.astype(np.uint8)))
        rles.append({"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")})
    return json.dumps(rles)


def scene_json(objects: Sequence[SceneObject]) -> str:
    """What `resolve` needs of a scene, as JSON (kept with each synthetic row)."""
    return json.dumps([vars(SceneView.of(o)) for o in objects])


def synthetic_records(n: int, seed: int = 0, image_size: int = 112,
                      objects: tuple[int, int] = (1, 3),
                      kinds: Mapping[str, float] = DEFAULT_KIND_WEIGHTS,
                      textures: tuple[str, ...] = ("flat", "noise", "stripes"),
                      min_radius: float = 0.12, max_radius: float = 0.25,
                      distractors: str = "any", start: int = 0,
                      superlatives: Mapping[str, float] | None = None,
                      twins: Sequence[str] = ()):
    """`n` synthetic records, deterministic by `seed` (record i depends on seed and i only):
    records `start` .. `start + n - 1` of the sequence (rl.data.parallel builds ranges apart).

    distractors: "any" draws each scene's (shape, colour) pairs at random; "share" draws them
    with `confusable_pairs` (every distractor shares the anchor's colour or shape) in a random
    drawing order, and single-target expressions name the anchor (see `make_expression`);
    "colour" likewise with `same_shape_pairs` (one shape, distinct colours: only the colour
    tells the anchor apart); "shape" with `same_colour_pairs` (one colour, distinct shapes).
    superlatives: weights of the superlative words (`make_expression`; None: all alike, in a
    uniformly random order). twins: superlative words whose records are each followed by a
    twin, the same scene asked with the opposite word ("the smallest star" after "the largest
    star"), where that names another object unambiguously (id suffix "-twin"): one image, two
    answers that only the word tells apart. Each record keeps every scene object's mask
    (`extra["objects"]`, COCO RLEs) and which of them the expression names
    (`extra["targets"]`), for referent accuracy."""
    if distractors not in DISTRACTORS:
        raise ValueError(f"unknown distractors {distractors!r}; known: {DISTRACTORS}")

    if superlatives is not None:
        check_superlatives(superlatives)
    if set(twins) - set(SUPERLATIVES):
        raise ValueError(f"unknown superlative words {sorted(set(twins) - set(SUPERLATIVES))} "
                         f"in twins; known: {list(SUPERLATIVES)}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown expression kinds {sorted(unknown)}; known: {KINDS}")
    names = [k for k in KINDS if kinds.get(k, 0) > 0]
    weights = np.array([kinds[k] for k in names], dtype=np.float64)
    if not names:
        raise ValueError("kinds needs at least one positive weight")
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        # Keep the drawn kind (so the mix is what was asked for) and redraw the scene until it
        # admits an expression of that kind.
        for _attempt in range(200):
            n_obj = int(rng.integers(objects[0], objects[1] + 1))
            if kind == "multi":
                n_obj = max(n_obj, 2)
            pairs = focus = None
            if distractors != "any":
                pairs = {"share": confusable_pairs, "colour": same_shape_pairs,
                         "shape": same_colour_pairs}[distractors](rng, n_obj)
                order = [int(k) for k in rng.permutation(n_obj)]
                pairs, focus = [pairs[k] for k in order], order.index(0)
            try:
                image, objs = draw_scene(rng, (image_size, image_size), n_obj, min_radius,
                                         max_radius, textures=textures, pairs=pairs)
            except RuntimeError:  # an unlucky layout; draw another
                continue
            made = make_expression(objs, kind, rng, focus, superlatives)
            if made is not None:
                break
        else:
            raise ValueError(f"no scene with {objects} objects admits a {kind!r} expression")
        text, targets = made
        yield _record(f"synthetic-{seed}-{i}", image, objs, text, targets, kind)
        twin = (_twin(text, targets, objs)
                if kind == "superlative" and text.split(" ")[1] in twins else None)
        if twin is not None:
            yield _record(f"synthetic-{seed}-{i}-twin", image, objs, *twin, kind)


def _record(rid: str, image: np.ndarray, objs: Sequence[SceneObject], text: str,
            targets: Sequence[int], kind: str) -> Record:
    """The record of one expression of a drawn scene: its solution from the named objects'
    masks and boxes, and the scene (views, every object's mask, the targets) kept with it."""
    from rewards.solution import make_solution

    h, w = image.shape[:2]
    sol = make_solution(w, h, [objs[k].mask_hw for k in targets],
                        [objs[k].box_xyxy_px for k in targets])
    return Record(id=rid, source="synthetic", image=image, expression=text, solution=sol,
                  kind=kind, extra={"scene": scene_json(objs), "num_objects": len(objs),
                                    "objects": objects_json(objs), "targets": list(targets)})


def _twin(text: str, targets: Sequence[int], objects: Sequence[SceneObject]
          ) -> tuple[str, list[int]] | None:
    """The superlative `text` (naming `targets`) with its word replaced by the opposite one,
    and its target, when that names another object of the scene unambiguously; else None."""
    words = text.split(" ")
    other = " ".join([words[0], OPPOSITE[words[1]], *words[2:]])
    try:
        got = resolve(other, [SceneView.of(o) for o in objects])
    except AmbiguousExpression:
        return None
    return (other, got) if got != list(targets) else None
