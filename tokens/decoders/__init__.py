"""Mask decoders and proposers: the bridge from tokens to masks and back."""

from tokens.decoders.base import (
    MaskProposals,
    MaskProposer,
    grid_points_px,
    point_in_mask,
    points_in_mask,
)
from tokens.decoders.region import (
    ColorRegionProposer,
    SuperpixelProposer,
    proposals_from_labels,
)

__all__ = [
    "ColorRegionProposer",
    "MaskProposals",
    "MaskProposer",
    "SuperpixelProposer",
    "grid_points_px",
    "point_in_mask",
    "points_in_mask",
    "proposals_from_labels",
]
