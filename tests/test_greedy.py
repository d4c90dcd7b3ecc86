import numpy as np
import pytest

from rl.data.scenes import draw_scene
from tokens.decoders import MaskProposals, SuperpixelProposer, points_in_mask
from tokens.greedy import fallback_cells, greedy_convert, mask_to_tokens
from tokens.vocab import SpatialVocab

V4 = SpatialVocab(grid_size=4)  # 32 px image: cells of 8 px, centres at 4, 12, 20, 28


def square(y0, y1, x0, x1, size=32):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def quadrant_proposals():
    """The ground truth [8, 24)² split into four 8×8 quadrants, plus a distractor."""
    masks = [square(8, 16, 8, 16), square(8, 16, 16, 24), square(16, 24, 8, 16),
             square(16, 24, 16, 24), square(0, 8, 24, 32)]
    return MaskProposals(np.stack(masks), [(1, 1), (2, 1), (1, 2), (2, 2), (3, 0)])


def test_union_of_parts_reaches_tau():
    gt = square(8, 24, 8, 24)
    res = greedy_convert(gt, quadrant_proposals(), V4, tau=0.8)
    # Each quadrant has IoU 0.25 with the square: 0.25, 0.5, 0.75, then 1.0 ≥ 0.8.
    assert res.cells == [(1, 1), (2, 1), (1, 2), (2, 2)] and res.iou == 1.0
    assert res.tokens(V4) == ["<grid_1_1>", "<grid_2_1>", "<grid_1_2>", "<grid_2_2>"]
    assert not res.fallback


def test_stops_at_tau_and_at_the_budget():
    gt = square(8, 24, 8, 24)
    assert greedy_convert(gt, quadrant_proposals(), V4, tau=0.7).iou == 0.75
    res = greedy_convert(gt, quadrant_proposals(), V4, tau=0.8, max_tokens=2)
    assert len(res.cells) == 2 and res.iou == 0.5


def test_proposal_that_lowers_iou_is_skipped():
    gt = square(8, 24, 8, 24)
    big = square(0, 32, 0, 32)  # IoU 0.25 with gt, adding it after the parts would hurt
    p = quadrant_proposals()
    p = MaskProposals(np.concatenate([p.masks[:3], big[None]]), p.cells[:3] + [(0, 0)])
    res = greedy_convert(gt, p, V4, tau=0.99)
    assert (0, 0) not in res.cells and res.iou == 0.75


def test_whole_object_needs_one_token_and_order_does_not_matter():
    gt = square(8, 24, 8, 24)
    whole = MaskProposals(np.stack([square(0, 8, 0, 8), gt]), [(0, 0), (2, 2)])
    res = greedy_convert(gt, whole, V4)
    assert res.cells == [(2, 2)] and res.iou == 1.0


def test_fallback_for_masks_no_proposal_covers():
    gt = square(8, 24, 8, 24)
    none = MaskProposals(np.zeros((0, 32, 32), bool), [])
    res = greedy_convert(gt, none, V4, fallback_points=3)
    assert res.fallback and res.iou == 0.0
    # Centres inside [8, 24): (12, 20) → cells 1 and 2 on both axes: 4 candidates, 3 kept.
    assert len(res.cells) == 3 and set(res.cells) <= {(1, 1), (1, 2), (2, 1), (2, 2)}
    # A speck between lattice points: the distance-transform peak's cell.
    speck = square(14, 18, 14, 18)
    assert fallback_cells(speck, V4) == [(2, 2)]
    assert greedy_convert(speck, none, V4).cells == [(2, 2)]


def test_empty_mask():
    res = greedy_convert(np.zeros((32, 32), bool), quadrant_proposals(), V4)
    assert res.cells == [] and res.iou == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="proposal masks are"):
        greedy_convert(np.ones((16, 16), bool), quadrant_proposals(), V4)


def test_synthetic_scenes_reach_tau_with_fewer_tokens_than_inside_cells():
    v = SpatialVocab(grid_size=32)
    rng = np.random.default_rng(3)
    centres = np.array([v.cell_center(i, j) for i in range(32) for j in range(32)])
    proposer = SuperpixelProposer()
    n_tokens, n_inside, reached, possible = 0, 0, 0, 0
    for _ in range(6):
        image, objects = draw_scene(rng, (160, 160), n_objects=3)
        proposals = proposer.propose(image, v)
        for obj, res in zip(objects, mask_to_tokens(image, [o.mask_hw for o in objects],
                                                    proposer, v), strict=True):
            # What the proposals allow: the union of every proposal mostly inside the mask.
            inter = (proposals.masks & obj.mask_hw).sum((1, 2))
            parts = proposals.masks[inter > 0.5 * proposals.masks.sum((1, 2))].any(0)
            best = (parts & obj.mask_hw).sum() / (parts | obj.mask_hw).sum()
            if best >= 0.8:
                possible += 1
                reached += res.iou >= 0.8
            n_tokens += len(res.cells)
            n_inside += int(points_in_mask(obj.mask_hw, centres).sum())
    assert possible >= 12 and reached == possible
    assert n_tokens < 0.5 * n_inside
