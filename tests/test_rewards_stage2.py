"""Stage-2 rewards, with values computed by hand on small images and a 4×4 grid (step 1/8)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import STAGE2_REWARDS, build_reward, make_solution
from rewards.stage2 import MaskGainReward

V4 = {"grid_size": 4}


def ans(*lines, think=True):
    head = "<think>ok</think>" if think else ""
    return head + "<answer>\n" + "".join(line + "\n" for line in lines) + "</answer>"


def off(*seg, box=None):
    parts = ["<offset>"]
    if box is not None:
        parts.append("<box>" + "".join(box) + "</box>")
    if seg:
        parts.append("<seg>" + "".join(seg) + "</seg>")
    return "".join(parts) + "</offset>"


def rect(y0, y1, x0, x1, size=8):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def call(name, completions, stage1, solution, image=None, **params):
    n = len(completions)
    kw = {"solution": [solution] * n, "stage1": [stage1] * n}
    if image is not None:
        kw["image"] = [image] * n
    return build_reward(name, vocab=V4, **params)(completions, **kw)


# ---- refine_format -------------------------------------------------------------------------------
S1_TWO = ans("<seg><grid_0_0></seg>", "<box><grid_0_0><grid_1_1></box>")
GOOD = [off("<off_0_0>"), off(box=["<off_0_0>", "<off_1_1>"])]


def test_refine_format_partial_credit_orders_malformed_lines():
    s1 = ans("<box><grid_0_0><grid_1_1></box><seg><grid_0_0></seg>")
    sol = make_solution(8, 8, [rect(0, 4, 0, 4)])
    lines = [
        off("<off_0_0>", box=["<off_0_0>", "<off_1_1>"]),  # well formed: 1
        off("<off_0_0><off_0_0>", box=["<off_0_0>", "<off_1_1>"]),  # seg count wrong: 3/4
        "<box><off_0_0><off_1_1></box><seg><off_0_0></seg>",  # no wrapper, so misplaced: 2/4
        "<offset><box><off_1_0><off_0_0><off_1_1></box><seg><off_0_0></box></offset>",  # 1/4
        "nothing useful",  # 0
    ]
    scores = call("refine_format", [ans(line) for line in lines], s1, sol)
    assert scores == pytest.approx([1.0, 0.375, 0.25, 0.125, 0.0])
    strict = call("refine_format", [ans(line) for line in lines], s1, sol, partial=False)
    assert strict == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("text, stage1, expected", [
    (ans(*GOOD, think=False), S1_TWO, 1.0),
    (ans(*GOOD), S1_TWO, 1.0),
    # Line 2 answers a box-only instance with a seg part: wrapper and nesting right, box part
    # missing, seg part extra: conformity 2/4, credit 0.5 * 0.5 → (1 + 0.25) / 2.
    (ans(GOOD[0], off("<off_0_0>")), S1_TWO, 0.625),
    (ans(*GOOD, off("<off_0_0>"), think=False), S1_TWO, 2 / 3),
    (ans(GOOD[0], think=False), S1_TWO, 0.5),
    ("<offset><seg><off_0_0></seg></offset>", S1_TWO, 0.0),  # no <answer>
    (ans(*GOOD) + " trailing", S1_TWO, 0.5),
    # No stage-1 instance: nothing to refine, every answer scores 0 (no advantage to learn).
    ("<answer></answer>", ans(), 0.0),
    (ans(off("<off_0_0>")), ans(), 0.0),
])
def test_refine_format(text, stage1, expected):
    assert call("refine_format", [text], stage1, make_solution(8, 8, [rect(0, 4, 0, 4)])) == \
        [pytest.approx(expected)]


# ---- point_refine --------------------------------------------------------------------------------
# Target: columns [0, 5), rows [0, 4). A = cell (0,0), inside. B = cell (2,0) at x = .625
# (column 5, outside); one step left lands on x = .5 (column 4, inside). C = cell (3,3), far.
SOL_PR = make_solution(8, 8, [rect(0, 4, 0, 5)])
S1_PR = ans("<seg><grid_0_0><grid_2_0><grid_3_3></seg>")


@pytest.mark.parametrize("ops, expected", [
    (("<off_0_0>", "<off_-1_0>", "<DELETE>"), 1.0),  # stay, enter, valid deletion
    (("<DELETE>", "<off_0_0>", "<off_0_0>"), -1 / 3),  # deleted an inside point
    (("<off_1_1>", "<DELETE>", "<off_-1_-1>"), 1 / 3),  # B could have entered: 0
    (("<DELETE>", "<DELETE>", "<DELETE>"), 0.0),  # −1 + 0 + 1
    (("<off_0_0>", "<off_0_0>", "<off_0_0>"), 1 / 3),  # moves nothing
    (("<off_0_0>", "<off_-1_0>"), 0.0),  # malformed: every point scores 0
])
def test_point_refine_by_hand(ops, expected):
    text = ans(off(*ops), think=False)
    assert call("point_refine", [text], S1_PR, SOL_PR) == [pytest.approx(expected)]


def test_point_refine_unmatched_instance_and_no_points():
    stage1 = ans("<seg><grid_0_0></seg>", "<seg><grid_3_3></seg>")  # the second has no match
    keep = ans(off("<off_0_0>"), off("<off_0_0>"))
    drop = ans(off("<off_0_0>"), off("<DELETE>"))
    assert call("point_refine", [keep, drop], stage1, SOL_PR) == [0.5, 1.0]
    box_only = ans("<box><grid_0_0><grid_1_1></box>")
    assert call("point_refine", [ans(off(box=["<off_0_0>"] * 2))], box_only, SOL_PR) == [None]


# ---- box_refine ----------------------------------------------------------------------------------
SOL_BOX = make_solution(8, 8, [rect(0, 4, 0, 4)])  # box (0, 0, .5, .5)
S1_BOX = ans("<box><grid_0_0><grid_2_2></box>")  # (.125, .125, .625, .625)


@pytest.mark.parametrize("box_ops, expected", [
    (("<off_-1_-1>", "<off_-1_-1>"), 1.0),  # exact now
    (("<off_-1_-1>", "<off_0_0>"), 1.0),  # better
    (("<off_0_0>", "<off_0_0>"), 0.0),  # moves nothing when moves were needed
    (("<off_1_1>", "<off_1_1>"), -1.0),  # worse
])
def test_box_refine_by_hand(box_ops, expected):
    text = ans(off(box=list(box_ops)))
    assert call("box_refine", [text], S1_BOX, SOL_BOX) == [expected]


def test_box_refine_blind_moves_do_not_pay():
    # The paper's form (worse_value=0) scores a worse box as a box left alone, so a policy
    # that moves every corner one way gains on the boxes it happens to improve and loses
    # nothing on the others; with worse boxes at -1 a blind shift scores below keeping.
    keep = ans(off(box=["<off_0_0>", "<off_0_0>"]))
    shifts = [ans(off(box=[f"<off_{dx}_{dy}>"] * 2)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
              if (dx, dy) != (0, 0)]
    boxes = ["<box><grid_0_0><grid_2_2></box>", "<box><grid_1_1><grid_3_3></box>",
             "<box><grid_0_1><grid_2_3></box>", "<box><grid_1_0><grid_3_2></box>"]
    sol = make_solution(8, 8, [rect(2, 6, 2, 6)])  # (.25, .25, .75, .75)
    for worse, pays in ((-1.0, False), (0.0, True)):
        kept = [call("box_refine", [keep], ans(b), sol, worse_value=worse)[0] for b in boxes]
        moved = [v for b in boxes for v in call("box_refine", shifts, ans(b), sol,
                                                 worse_value=worse)]
        assert bool(np.mean(moved) > np.mean(kept)) is pays, (worse, moved, kept)
    with pytest.raises(ValueError, match="worse_value must lie in"):
        build_reward("box_refine", worse_value=0.5)


def test_box_refine_exact_box_and_none():
    sol = make_solution(8, 8, [rect(1, 3, 1, 3)])  # (.125, .125, .375, .375): cell centres
    stage1 = ans("<box><grid_0_0><grid_1_1></box>")
    keep = ans(off(box=["<off_0_0>", "<off_0_0>"]))
    move = ans(off(box=["<off_1_0>", "<off_0_0>"]))
    assert call("box_refine", [keep, move], stage1, sol) == [1.0, -1.0]  # exact, then worse
    assert call("box_refine", [keep], stage1, sol, exact_value=0.5) == [0.5]
    assert call("box_refine", ["x"], ans("<seg><grid_0_0></seg>"), sol) == [None]


# ---- mask_gain -----------------------------------------------------------------------------------
@pytest.mark.parametrize("u0, u1, gain", [(0.5, 1.0, 1.0), (0.5, 0.25, -0.5), (0.0, 0.3, 0.3),
                                          (1.0, 1.0, 0.0), (1.0, 0.6, -0.4), (0.2, 0.2, 0.0)])
def test_mask_gain_formula(u0, u1, gain):
    assert MaskGainReward.gain(u0, u1) == pytest.approx(gain)


def red_square_image():
    img = np.full((16, 16, 3), 90, np.uint8)
    img[0:9, 0:9] = (220, 40, 40)
    return img


SOL_RED = make_solution(16, 16, [rect(0, 9, 0, 9, size=16)])


@pytest.mark.parametrize("stage1, op, expected", [
    # A point on the background just right of the square (x = .625, pixel 10): u0 = 0.
    ("<seg><grid_2_0></seg>", "<off_-1_0>", 1.0),  # moved onto the square: u1 = 1
    ("<seg><grid_2_0></seg>", "<off_0_0>", 0.0),  # moves nothing
    ("<seg><grid_2_0></seg>", "<off_1_0>", 0.0),  # still background
    ("<seg><grid_2_0></seg>", "<DELETE>", 0.0),  # removed: IoU(∅, M) = 0
    # A point on the square: u0 = 1.
    ("<seg><grid_0_0></seg>", "<off_0_0>", 0.0),
    ("<seg><grid_0_0></seg>", "<DELETE>", -1.0),
])
def test_mask_gain_by_hand(stage1, op, expected):
    out = call("mask_gain", [ans(off(op))], ans(stage1), SOL_RED, image=red_square_image())
    assert out == [pytest.approx(expected)]


def test_mask_gain_removing_a_false_positive_gains():
    stage1 = ans("<seg><grid_0_0></seg>", "<seg><grid_3_3></seg>")
    text = ans(off("<off_0_0>"), off("<DELETE>"))
    assert call("mask_gain", [text], stage1, SOL_RED, image=red_square_image()) == [0.5]
    assert call("mask_gain", ["x"], ans(), SOL_RED, image=red_square_image()) == [None]


def test_mask_gain_exact_value_pays_an_exact_mask_kept_exact():
    on, near = ans("<seg><grid_0_0></seg>"), ans("<seg><grid_2_0></seg>")  # u0 = 1, u0 = 0
    img = red_square_image()
    keep, lose = ans(off("<off_0_0>")), ans(off("<DELETE>"))
    assert call("mask_gain", [keep, lose], on, SOL_RED, image=img, exact_value=1.0) == [1.0, -1.0]
    # Only u0 = u1 = 1 is "exact": a background point left where it is (u0 = u1 = 0) still 0.
    assert call("mask_gain", [keep], near, SOL_RED, image=img, exact_value=1.0) == [0.0]
    # A kept exact mask and a removed false positive (u0 = 0 -> u1 = 1): (1 + 1) / 2.
    stage1 = ans("<seg><grid_0_0></seg>", "<seg><grid_3_3></seg>")
    text = ans(off("<off_0_0>"), off("<DELETE>"))
    assert call("mask_gain", [text], stage1, SOL_RED, image=img, exact_value=1.0) == [1.0]
    with pytest.raises(ValueError, match="exact_value must lie in"):
        build_reward("mask_gain", vocab=V4, exact_value=2.0)


# ---- hacks, ranges, fuzz -------------------------------------------------------------------------
def test_moving_nothing_or_deleting_everything_does_not_pay():
    stage1 = ans("<box><grid_0_0><grid_2_2></box><seg><grid_0_0><grid_2_0><grid_3_3></seg>")
    right = ans(off("<off_0_0>", "<off_-1_0>", "<DELETE>", box=["<off_-1_-1>", "<off_-1_-1>"]))
    still = ans(off("<off_0_0>", "<off_0_0>", "<off_0_0>", box=["<off_0_0>", "<off_0_0>"]))
    delete = ans(off("<DELETE>", "<DELETE>", "<DELETE>", box=["<off_0_0>", "<off_0_0>"]))
    for name in ("point_refine", "box_refine"):
        r, s, d = call(name, [right, still, delete], stage1, SOL_PR)
        assert r > s and r > d, name
    assert call("point_refine", [delete], stage1, SOL_PR) == [0.0]


PIECES = ["<answer>", "</answer>", "<offset>", "</offset>", "<box>", "</box>", "<seg>", "</seg>",
          "<off_0_0>", "<off_-1_1>", "<off_3_0>", "<DELETE>", "\n", " ", "x", "<think>",
          "</think>", "<grid_1_1>"]
STAGE1S = [S1_PR, S1_TWO, ans(), "garbage", ans("<box><grid_0_0><grid_2_2></box><seg>"
                                                "<grid_0_0><grid_3_3></seg>")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), min_size=1,
                max_size=3), st.sampled_from(STAGE1S))
def test_fuzz_never_raises_and_stays_in_range(texts, stage1):
    sol = make_solution(16, 16, [rect(0, 9, 0, 9, size=16)])
    for name in STAGE2_REWARDS:
        out = call(name, texts, stage1, sol, image=red_square_image())
        assert len(out) == len(texts)
        lo = 0.0 if name == "refine_format" else -1.0
        for v in out:
            assert v is None and name != "refine_format" or lo <= v <= 1.0, (name, v)


def test_stage1_column_is_required_and_typed():
    with pytest.raises(KeyError, match="needs the dataset column 'stage1'"):
        build_reward("point_refine")(["x"], solution=[SOL_PR])
    with pytest.raises(ValueError, match="row 0: column 'stage1' must hold"):
        build_reward("point_refine")(["x"], solution=[SOL_PR], stage1=[None])


def test_signal_shares_leave_out_samples_with_nothing_to_refine():
    # Two samples refine a one-point proposal (one well-formed line, one malformed), two refine
    # an empty proposal (a declined row): the shares count the first two only, and the empty
    # ones are logged as `refine_format/no_proposal`.
    sol = make_solution(8, 8, [rect(0, 4, 0, 4)])
    s1 = ans("<seg><grid_0_0></seg>")
    completions = [ans(off("<off_0_0>")), "nothing useful", ans(), ans(off("<off_0_0>"))]
    kw = {"solution": [sol] * 4, "stage1": [s1, s1, ans(), ans()]}
    logged = {}
    fmt = build_reward("refine_format", vocab=V4)(completions, **kw,
                                                 log_metric=logged.__setitem__)
    assert fmt == [1.0, 0.0, 0.0, 0.0]
    assert logged["refine_format/complete"] == 0.5
    assert logged["refine_format/no_proposal"] == 0.5
    points = build_reward("point_refine", vocab=V4)(completions, **kw,
                                                   log_metric=logged.__setitem__)
    assert points == [1.0, 0.0, None, None]
    assert logged["point_refine/nonzero"] == 0.5  # over two samples, not four
