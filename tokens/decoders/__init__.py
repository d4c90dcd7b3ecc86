"""Mask decoders and proposers: the bridge from tokens to masks and back.

Decoders by config name (`build_decoder({"name": "sam", "variant": "vit_h", "checkpoint": ...})`):

| name     | what                                   | needs                              |
|----------|----------------------------------------|------------------------------------|
| `region` | weight-free colour-region growing      | nothing (synthetic scenes, CPU)    |
| `sam`    | Segment Anything (`vit_b/l/h`, `tiny`) | `segment-anything`, a checkpoint   |
| `sam2`   | SAM 2                                  | the `sam2` extra, a checkpoint     |
"""

from __future__ import annotations

from collections.abc import Mapping

from tokens.decoders.base import (
    MAX_PROMPT_POINTS,
    EmbeddingCache,
    MaskDecoder,
    MaskProposals,
    MaskProposer,
    Prompt,
    as_image_array,
    grid_points_px,
    image_key,
    instance_masks,
    point_in_mask,
    points_in_mask,
    resize_mask,
)
from tokens.decoders.region import RegionDecoder, SuperpixelProposer, proposals_from_labels
from tokens.decoders.sam import Sam2Decoder, SamDecoder, build_sam, load_state_dict

DECODERS: dict[str, type[MaskDecoder]] = {
    "region": RegionDecoder,
    "sam": SamDecoder,
    "sam2": Sam2Decoder,
}


def build_decoder(spec: str | Mapping | MaskDecoder) -> MaskDecoder:
    """A decoder from its config: a name, or a mapping with `name` and the class's arguments
    (e.g. `{"name": "sam", "variant": "vit_h", "checkpoint": "sam_vit_h.pth"}`)."""
    if isinstance(spec, MaskDecoder):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in DECODERS:
        raise ValueError(f"unknown mask decoder {name!r}; known: {sorted(DECODERS)}")
    try:
        return DECODERS[name](**spec)
    except TypeError as e:
        raise ValueError(f"mask decoder {name!r}: bad arguments {sorted(spec)} ({e})") from None


__all__ = [
    "DECODERS",
    "MAX_PROMPT_POINTS",
    "EmbeddingCache",
    "MaskDecoder",
    "MaskProposals",
    "MaskProposer",
    "Prompt",
    "RegionDecoder",
    "Sam2Decoder",
    "SamDecoder",
    "SuperpixelProposer",
    "as_image_array",
    "build_decoder",
    "build_sam",
    "grid_points_px",
    "image_key",
    "instance_masks",
    "load_state_dict",
    "point_in_mask",
    "points_in_mask",
    "proposals_from_labels",
    "resize_mask",
]
