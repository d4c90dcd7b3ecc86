import numpy as np
import pytest

from rl.synthetic import draw_scene
from tokens.decoders import (
    ColorRegionProposer,
    MaskProposals,
    MaskProposer,
    SuperpixelProposer,
    grid_points_px,
    point_in_mask,
    points_in_mask,
)
from tokens.vocab import SpatialVocab


def test_point_in_mask_convention():
    m = np.zeros((4, 8), bool)  # H = 4, W = 8
    m[1, 6] = True
    assert point_in_mask(m, 6 / 8, 1 / 4) and point_in_mask(m, 6.99 / 8, 1.99 / 4)
    assert not point_in_mask(m, 7 / 8, 1 / 4)
    m[3, 7] = True
    assert point_in_mask(m, 1.0, 1.0)  # the far edge belongs to the last pixel
    pts = np.array([[6 / 8, 1 / 4], [0.0, 0.0], [1.0, 1.0]])
    assert points_in_mask(m, pts).tolist() == [True, False, True]


def test_grid_points_follow_token_order():
    v = SpatialVocab(grid_size=2)
    pts, cells = grid_points_px(v, 100, 50)
    assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert pts.tolist() == [[25, 12.5], [25, 37.5], [75, 12.5], [75, 37.5]]


def test_proposals_validate_shapes():
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        MaskProposals(np.zeros((4, 4), bool), [])
    with pytest.raises(ValueError, match="1 cells for 2 masks"):
        MaskProposals(np.zeros((2, 4, 4), bool), [(0, 0)])


@pytest.mark.parametrize("cls", [ColorRegionProposer, SuperpixelProposer])
def test_proposers_on_a_synthetic_scene(cls):
    v = SpatialVocab(grid_size=16)
    image, objects = draw_scene(np.random.default_rng(0), (128, 128), n_objects=2)
    proposer = cls()
    assert isinstance(proposer, MaskProposer)
    p = proposer.propose(image, v)
    assert p.masks.shape[1:] == (128, 128) and len(p) == len(p.cells) >= 2
    # Every proposal is tagged with a lattice point that lies inside it.
    for mask, cell in zip(p.masks, p.cells, strict=True):
        assert point_in_mask(mask, *v.cell_center(*cell))
    if cls is ColorRegionProposer:
        # Flat shapes: each object's visible mask is one proposal (or the union of its pieces).
        for obj in objects:
            inter = (p.masks & obj.mask_hw).sum((1, 2))
            assert (p.masks[inter > 0].any(0) == obj.mask_hw).all()


def test_proposers_refuse_grayscale():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ColorRegionProposer().propose(np.zeros((8, 8)), SpatialVocab(4))
