"""Refinement dialogues from the policy's own proposals (rl.data.policy_refinement): the
targets of a 4x4 case worked out by hand."""

import numpy as np

from rewards.solution import make_solution, parse_solution
from rl.data.policy_refinement import policy_refinement_rows, refinement_lines
from tokens import GridCodec, Instance, SpatialVocab

V4 = SpatialVocab(4)  # cells of 0.25, offset step 0.125 (half a cell), radius 1


def object_solution():
    # One object on a 40x40 image: pixel columns 10-24, rows 10-19, i.e. normalized
    # x in [0.25, 0.625), y in [0.25, 0.5); its box (0.25, 0.25, 0.625, 0.5).
    m = np.zeros((40, 40), bool)
    m[10:20, 10:25] = True
    return make_solution(40, 40, [m], [[10, 10, 25, 20]])


def test_targets_by_hand():
    gt = parse_solution(object_solution())
    matched = Instance((0.125, 0.125, 0.625, 0.625),
                       [(0.375, 0.375),    # cell (1, 1), inside: stays
                        (0.625, 0.375),    # cell (2, 1), pixel column 25: just outside; one
                                           # step left lands at column 20, 5 px deep: (-1, 0)
                        (0.875, 0.875)])   # cell (3, 3), out of reach: deleted
    extra = Instance((0.625, 0.625, 0.875, 0.875), [(0.875, 0.125)])  # no object left for it
    lines = refinement_lines([matched, extra], gt, V4)
    assert lines[0] == ([(1, 1), (0, -1)], [(0, 0), (-1, 0), None])
    # Box corners: (0.125, 0.125) + (1, 1)*0.125 = (0.25, 0.25) and (0.625, 0.625) +
    # (0, -1)*0.125 = (0.625, 0.5), the true corners.
    assert lines[1] == ([(0, 0), (0, 0)], [None])


def test_dialogues_follow_the_proposals_and_skip_empty_ones():
    codec = GridCodec(V4)
    row = {"id": "r0", "prompt": [{"role": "user", "content": [{"type": "text",
                                                               "text": "Find it."}]}],
           "solution": object_solution()}
    proposal = ("<answer>\n<box><grid_0_0><grid_2_2></box><seg><grid_1_1><grid_2_1></seg>\n"
                "</answer>")
    skipped = {}
    prompts = {"stage2": "Refine with offsets.", "think_refine": ""}
    out = policy_refinement_rows([row, {**row, "id": "r1"}], [proposal, "<answer></answer>"],
                                 codec, V4, prompts, skipped)
    assert len(out) == 1 and skipped == {"no instance proposed": 1}
    d = out[0]
    assert d["stage1"] == proposal and d["task"] == "refine_policy"
    assert [m["role"] for m in d["prompt"]] == ["user", "assistant", "user"]
    assert d["prompt"][1]["content"][0]["text"] == proposal
    assert d["prompt"][2]["content"][0]["text"] == "Refine with offsets."
    assert d["completion"][0]["content"][0]["text"] == (
        "<think></think>\n<answer>\n<offset><box><off_1_1><off_0_-1></box>"
        "<seg><off_0_0><off_-1_0></seg></offset>\n</answer>")


def object_image():
    # The object of `object_solution` painted on a black 40x40 image (the region decoder's
    # one colour region).
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 10:25] = (200, 40, 40)
    return img


def test_box_targets_by_the_decoded_mask():
    from tokens.decoders import RegionDecoder

    gt, img, dec = parse_solution(object_solution()), object_image(), RegionDecoder()
    inside = [(0.375, 0.375)]  # pixel (15, 15), on the object

    # A loose box, pixels (5, 5)-(25, 25): grown by a quarter of its side it holds the whole
    # object, and so does every box one move away. The nearest corners are (1, 1) and (0, -1)
    # (as in test_targets_by_hand); their masks are among the best, so "mask" keeps them;
    # "gain" moves nothing, since no move decodes to a better mask.
    loose = Instance((0.125, 0.125, 0.625, 0.625), inside)
    for target, box in (("corner", [(1, 1), (0, -1)]), ("mask", [(1, 1), (0, -1)]),
                        ("gain", [(0, 0), (0, 0)])):
        assert refinement_lines([loose], gt, V4, target, dec, img)[0][0] == box, target

    # A box that clips its object: pixels (10, 10)-(15, 20), 5 wide, so grown by 1.25 px it
    # keeps columns 10-16 of 10-24. The nearest corners are (0, 0) (the first is exact) and
    # (1, 0). By the mask, the first corner opens to the left too: (-1, 0) puts x1 at pixel 5,
    # the box 10 wide and grown by 2.5 px, so the mask reaches column 17 (x1 at 5 with y1 at 5,
    # (-1, -1), decodes the same but lies farther from the true corner); the second corner's
    # (1, 0) is already the best.
    clipped = Instance((0.25, 0.25, 0.375, 0.5), inside)
    assert refinement_lines([clipped], gt, V4)[0][0] == [(0, 0), (1, 0)]
    for target in ("mask", "gain"):
        assert refinement_lines([clipped], gt, V4, target, dec, img)[0][0] == [(-1, 0), (1, 0)]


def test_open_box_targets_take_the_largest_box_among_the_best_masks():
    from tokens.decoders import RegionDecoder

    gt, img, dec = parse_solution(object_solution()), object_image(), RegionDecoder()
    inside = [(0.375, 0.375)]
    # Every move of the loose box decodes to the whole object (previous test): the largest
    # box is both corners moved out, (-1, -1) and (1, 1).
    loose = Instance((0.125, 0.125, 0.625, 0.625), inside)
    assert refinement_lines([loose], gt, V4, "open", dec, img)[0][0] == [(-1, -1), (1, 1)]
    # The clipping box: (-1, 0) and (-1, -1) decode the same for the first corner, (1, 0) and
    # (1, 1) for the second (the object ends at row 19; the box grown by 2.5 px of its
    # 10-px shorter side holds it either way): the larger of each pair.
    clipped = Instance((0.25, 0.25, 0.375, 0.5), inside)
    assert refinement_lines([clipped], gt, V4, "open", dec, img)[0][0] == [(-1, -1), (1, 1)]
    # The true box is kept where opening it costs the mask: a second region (pixel columns
    # 27-30, rows 12-17) under the instance's second point lies mostly outside the true box
    # grown by 2.5 px (to column 27.5), so the decoder drops it; a taller box (grown by
    # 3.75 px, to column 28.75) or a wider one takes it in (IoU 0.926 or 0.862 against 1).
    # Only moving the first corner left keeps both the height and the mask.
    img[12:18, 27:31] = (40, 200, 40)
    exact = Instance((0.25, 0.25, 0.625, 0.5), inside + [(0.7, 0.35)])
    assert refinement_lines([exact], gt, V4, "open", dec, img)[0][0] == [(-1, 0), (0, 0)]
    assert refinement_lines([exact], gt, V4, "gain", dec, img)[0][0] == [(0, 0), (0, 0)]


def test_box_targets_by_the_mask_need_the_image():
    import pytest

    gt = parse_solution(object_solution())
    inst = Instance((0.125, 0.125, 0.625, 0.625), [(0.375, 0.375)])
    with pytest.raises(ValueError, match="box_target"):
        refinement_lines([inst], gt, V4, "nearest")
    with pytest.raises(ValueError, match="decoder"):
        refinement_lines([inst], gt, V4, "gain")
    row = {"id": "r7", "prompt": [], "solution": object_solution()}
    proposal = "<answer>\n<box><grid_0_0><grid_2_2></box><seg><grid_1_1></seg>\n</answer>"
    with pytest.raises(ValueError, match="row r7: field image"):
        policy_refinement_rows([row], [proposal], GridCodec(V4), V4,
                               {"stage2": "Refine.", "think_refine": ""}, box_target="mask",
                               decoder="region")
