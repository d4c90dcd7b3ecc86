"""One scored view of a reward batch, built once and read by every term of a stage.

TRL calls each reward function on the same completions in turn. The terms of stage 1 all need
the parsed answers, most need the ground truth and the Hungarian matching, and `mask` needs
the decoded masks of the matched predictions; the terms of stage 2 all need the stage-1
instances, their matches and the parsed refinement. A view holds those, built on first use
and kept in a small cache keyed by what they depend on (the texts, the ground-truth objects,
the codec and the matching parameters), so each completion is parsed and matched once per
batch, whichever terms a recipe switches on. Nothing here changes a value: the terms compute
what they computed before, from the shared pieces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rewards.masks import decode_masks
from rewards.matching import Matching, match
from rewards.solution import GroundTruth
from tokens.answer import Instance, ParsedAnswer
from tokens.codec import Codec
from tokens.refine import ParsedRefinement, parse_refinement, refine_instances
from tokens.vocab import SpatialVocab


def codec_key(codec: Codec) -> tuple:
    """What decides how a codec reads text: its class and its settings."""
    return (type(codec).__qualname__, repr(sorted(vars(codec).items())))


class _LRU:
    """The last few views; a GRPO step builds one per stage batch, so a handful suffices."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: OrderedDict = OrderedDict()

    def get(self, key, build: Callable):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = build()
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        self.items.clear()


VIEWS = _LRU()


# ---- stage 1 -----------------------------------------------------------------------------------
@dataclass
class Stage1Batch:
    """Parsed answers of a batch, and (once a term asks) their matchings to the ground truth
    and the decoded masks of the matched predictions."""

    texts: tuple[str, ...]
    answers: list[ParsedAnswer]
    gts: list[GroundTruth] | None = None
    matchings: list[Matching] | None = None
    _masks: dict = field(default_factory=dict, repr=False)

    @property
    def instances(self) -> list[list[Instance]]:
        return [a.instances for a in self.answers]

    def pair_masks(self, decoder, images: Sequence, max_points: int) -> list[list[np.ndarray]]:
        """Per completion, the decoded mask of each matched prediction, in the order of its
        matching's pairs, in the ground truth's frame; decoded once per decoder and cap."""
        key = (id(decoder), max_points, tuple(map(id, images)))
        if key not in self._masks:
            matched = [[a.instances[i] for i, _ in m.pairs]
                       for a, m in zip(self.answers, self.matchings, strict=True)]
            frames = [(g.width, g.height) for g in self.gts]
            # The images are kept with the masks, so their ids in the key stay theirs.
            self._masks[key] = (list(images), decode_masks(decoder, images, matched, frames,
                                                           max_points))
        return self._masks[key][1]


def parsed_batch(texts: Sequence[str], codec: Codec) -> Stage1Batch:
    """The batch's answers parsed once with `codec`."""
    texts = tuple(texts)
    return VIEWS.get(("parsed", codec_key(codec), texts),
                     lambda: Stage1Batch(texts, [codec.parse_answer(t) for t in texts]))


def matched_batch(texts: Sequence[str], gts: Sequence[GroundTruth], codec: Codec,
                  match_weights: tuple, l1_scale: float) -> Stage1Batch:
    """The parsed batch with each answer matched to its ground truth (parsed once, matched
    once per matching setting)."""
    parsed = parsed_batch(texts, codec)
    key = ("matched", codec_key(codec), parsed.texts, tuple(map(id, gts)), match_weights,
           l1_scale)

    def build() -> Stage1Batch:
        return Stage1Batch(parsed.texts, parsed.answers, list(gts),
                           [match(a.instances, g, match_weights, l1_scale)
                            for a, g in zip(parsed.answers, gts, strict=True)])

    return VIEWS.get(key, build)


# ---- stage 2 -----------------------------------------------------------------------------------
@dataclass
class RefinementRow:
    """One stage-2 completion read against the stage-1 answer it refines.

    stage1: the stage-1 instances; owners: the ground-truth index matched to each (None when
    unmatched), computed on the stage-1 geometry; refinement: the parsed offset answer; gt: the
    ground truth; refined: the stage-1 instances after the refinement (None where removed).
    """

    stage1: list[Instance]
    owners: list[int | None]
    refinement: ParsedRefinement
    gt: GroundTruth
    refined: list[Instance | None]


@dataclass
class Stage2Batch:
    rows: list[RefinementRow]
    _masks: dict = field(default_factory=dict, repr=False)

    def masks(self, decoder, images: Sequence, max_points: int) -> list[list[np.ndarray]]:
        """Per row, the decoded masks of its stage-1 instances then of its refined ones (empty
        for removed ones), in the ground truth's frame; decoded once per decoder and cap."""
        key = (id(decoder), max_points, tuple(map(id, images)))
        if key not in self._masks:
            lists = [list(r.stage1) + list(r.refined) for r in self.rows]
            frames = [(r.gt.width, r.gt.height) for r in self.rows]
            self._masks[key] = (list(images), decode_masks(decoder, images, lists, frames,
                                                           max_points))
        return self._masks[key][1]


def refinement_batch(texts: Sequence[str], stage1: Sequence[str], gts: Sequence[GroundTruth],
                     codec: Codec, vocab: SpatialVocab, match_weights: tuple,
                     l1_scale: float) -> Stage2Batch:
    """The stage-2 batch read once: each distinct stage-1 answer parsed and matched once, each
    refinement parsed once against it."""
    texts, stage1 = tuple(texts), tuple(stage1)
    key = ("refined", codec_key(codec), vocab, texts, stage1, tuple(map(id, gts)),
           match_weights, l1_scale)

    def build() -> Stage2Batch:
        memo: dict = {}
        rows = []
        for text, s1, gt in zip(texts, stage1, gts, strict=True):
            if (s1, id(gt)) not in memo:
                insts = codec.parse_answer(s1).instances
                m = match(insts, gt, match_weights, l1_scale)
                memo[s1, id(gt)] = (insts, [m.gt_of(k) for k in range(len(insts))])
            insts, owners = memo[s1, id(gt)]
            ref = parse_refinement(text, insts, vocab)
            rows.append(RefinementRow(insts, owners, ref, gt, refine_instances(insts, ref, vocab)))
        return Stage2Batch(rows)

    return VIEWS.get(key, build)
