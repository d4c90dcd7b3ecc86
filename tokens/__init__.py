"""The spatial vocabulary of GETok: geometry ↔ grid/offset tokens ↔ text.

Entry points other packages rely on:

>>> from tokens import parse_answer
>>> ans = parse_answer("<think></think><answer><box><grid_0_0><grid_31_31></box></answer>")
>>> ans.instances[0].box
(0.015625, 0.015625, 0.984375, 0.984375)
>>> ans.errors
[]

Importing this package loads no torch or transformers; `tokens.extend` does, when used.
"""

from tokens.answer import Instance, ParsedAnswer, sentences
from tokens.codec import Codec, GridCodec
from tokens.refine import (
    OffsetLine,
    ParsedRefinement,
    apply_refinement,
    format_offset_line,
    parse_refinement,
    refine_instances,
    serialize_refinement,
)
from tokens.registry import CODECS, get_codec
from tokens.vocab import DEFAULT_VOCAB, DELETE_TOKEN, SpatialVocab


def parse_answer(text: str, vocab: SpatialVocab = DEFAULT_VOCAB) -> ParsedAnswer:
    """Parse a stage-1 grid-token completion into instances (normalized coordinates) and errors.

    Never raises on model output. For another representation use `get_codec(name).parse_answer`.
    """
    return GridCodec(vocab).parse_answer(text)


def serialize_answer(instances, think: str = "", vocab: SpatialVocab = DEFAULT_VOCAB) -> str:
    """Write instances (normalized coordinates) as a stage-1 grid-token completion."""
    return GridCodec(vocab).serialize_answer(instances, think)


__all__ = [
    "CODECS",
    "DEFAULT_VOCAB",
    "DELETE_TOKEN",
    "Codec",
    "GridCodec",
    "Instance",
    "OffsetLine",
    "ParsedAnswer",
    "ParsedRefinement",
    "SpatialVocab",
    "apply_refinement",
    "format_offset_line",
    "get_codec",
    "parse_answer",
    "parse_refinement",
    "refine_instances",
    "sentences",
    "serialize_answer",
    "serialize_refinement",
]
