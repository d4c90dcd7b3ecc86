"""Every answer representation by its config name, and `get_codec` to build one.

The codecs are listed here, above the modules that define them, so no module imports another
only to register itself.
"""

from __future__ import annotations

from tokens.codec import Codec, GridCodec
from tokens.text_codecs import AnchorOffsetCodec, RleTextCodec, TextBinsCodec, TextNormCodec
from tokens.vocab import DEFAULT_VOCAB, SpatialVocab

CODECS: dict[str, type[Codec]] = {
    c.name: c for c in (GridCodec, TextNormCodec, TextBinsCodec, AnchorOffsetCodec, RleTextCodec)}


def get_codec(name: str = "grid", vocab: SpatialVocab | None = None, **params) -> Codec:
    """Build a registered codec by its config name. `vocab` goes to the codecs that use the
    spatial vocabulary (grid); `params` are the codec's own (e.g. `decimals`, `bins`)."""
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {sorted(CODECS)}") from None
    if cls.uses_vocab:
        params = {"vocab": vocab or DEFAULT_VOCAB, **params}
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"codec {name!r}: bad parameters {sorted(params)} ({e})") from None
