"""Stage-1 rewards, with values computed by hand on 8×8 images and a 4×4 grid."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import REWARDS, STAGE1_REWARDS, build_reward, make_solution, non_repeat_reward
from tokens.vocab import SpatialVocab

V4 = {"grid_size": 4}
T = "<think>ok</think>"


def ans(*lines):
    return T + "<answer>\n" + "".join(line + "\n" for line in lines) + "</answer>"


def square(y0, y1, x0, x1, size=8):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


SOL1 = make_solution(8, 8, [square(0, 4, 0, 4)])  # one target, normalized box (0, 0, .5, .5)
SOL2 = make_solution(8, 8, [square(0, 4, 0, 4), square(4, 8, 4, 8)])
SOL0 = {"size": [8, 8], "instances": []}


def scene_image():
    """Red square top-left, blue square bottom-right, gray background."""
    img = np.full((8, 8, 3), 90, np.uint8)
    img[0:4, 0:4] = (220, 40, 40)
    img[4:8, 4:8] = (40, 80, 220)
    return img


def call(name, completions, solution, **params):
    reward = build_reward(name, vocab=V4, **params) if name != "non_repeat" \
        else build_reward(name)
    n = len(completions)
    return reward(completions, solution=[solution] * n, image=[scene_image()] * n)


# ---- format and non_repeat -------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    (ans("<box><grid_0_0><grid_1_1></box><seg><grid_0_0></seg>"), 1.0),
    (T + "<answer></answer>", 1.0),  # no target is well-formed
    (ans("<box><grid_0_0></box>"), 0.5),  # structure right, line wrong
    (ans("<seg><grid_4_0></seg>"), 0.5),  # out of range for a 4-grid
    ("<answer><seg><grid_0_0></seg></answer>", 0.0),  # no think
    (ans("<seg><grid_0_0></seg>") + " extra", 0.0),
    ("", 0.0),
])
def test_format(text, expected):
    assert call("format", [text], SOL1) == [expected]


@pytest.mark.parametrize("text, expected", [
    ("<think>The red square. It is left.</think><answer></answer>", 1.0),
    ("<think>The red square. The red square.</think><answer></answer>", 0.0),
    ("<think>Red\nRed</think>", 0.0),
    ("<think>red. Red.</think>", 1.0),  # case matters
    ("<answer><seg><grid_0_0><grid_0_0></seg></answer>", 1.0),  # tokens are not sentences
])
def test_non_repeat(text, expected):
    assert non_repeat_reward([text]) == [expected]


# ---- box ----------------------------------------------------------------------------------------
def test_box_by_hand():
    # <grid_0_0><grid_1_1> on a 4-grid: (.125, .125, .375, .375) vs (0, 0, .5, .5).
    # iou = .0625/.25 = .25; l1 = .125 → nbox = max(0, 1 − .125/.05) = 0; with scale .25 → .5.
    text = ans("<box><grid_0_0><grid_1_1></box>")
    assert call("box", [text], SOL1) == [pytest.approx(0.125)]
    assert call("box", [text], SOL1, l1_scale=0.25) == [pytest.approx(0.5 * 0.25 + 0.5 * 0.5)]


def test_box_multi_instance_order_and_normalization():
    a = "<box><grid_0_0><grid_1_1></box>"
    b = "<box><grid_2_2><grid_3_3></box>"
    both = call("box", [ans(a, b), ans(b, a)], SOL2, l1_scale=0.25)
    assert both == [pytest.approx(0.375), pytest.approx(0.375)]  # (.375 + .375) / 2
    assert call("box", [ans(a)], SOL2, l1_scale=0.25) == [pytest.approx(0.375 / 2)]
    # An extra instance costs as much as a missing one.
    assert call("box", [ans(a, a)], SOL1, l1_scale=0.25) == [pytest.approx(0.375 / 2)]


@pytest.mark.parametrize("name", ["box", "mask", "points"])
def test_no_target_rows(name):
    empty = T + "<answer></answer>"
    some = ans("<box><grid_0_0><grid_1_1></box><seg><grid_0_0></seg>")
    assert call(name, [empty, some], SOL0) == [1.0, 0.0]
    assert call(name, [empty], SOL1) == [0.0]


# ---- mask ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("u, tier", [(1.0, 1.0), (0.8, 1.0), (0.79, 0.75), (0.7, 0.75),
                                     (0.69, 0.5), (0.5, 0.5), (0.49, 0.0), (0.0, 0.0)])
def test_mask_tiers(u, tier):
    assert build_reward("mask").tier(u) == tier
    assert build_reward("mask", linear=True).tier(u) == u


def test_mask_by_hand_with_the_region_decoder():
    # The decoder returns the red square (16 px) for a point on it. Against ground truths of
    # 16, 12 and 8 of its pixels: u = 1, .75, .5 → tiers 1, .75, .5.
    text = ans("<seg><grid_0_0></seg>")
    for rows, expected in ((4, 1.0), (3, 0.75), (2, 0.5)):
        sol = make_solution(8, 8, [square(0, rows, 0, 4)])
        assert call("mask", [text], sol) == [expected]
        assert call("mask", [text], sol, linear=True) == [pytest.approx(rows / 4)]
    # Two targets, two answers in either order; one answer for two targets scores half.
    a, b = "<seg><grid_0_0></seg>", "<seg><grid_3_3></seg>"
    assert call("mask", [ans(a, b), ans(b, a), ans(a)], SOL2) == [1.0, 1.0, 0.5]


def test_mask_needs_the_image_column():
    with pytest.raises(KeyError, match="needs the dataset column 'image'"):
        build_reward("mask")(["x"], solution=[SOL1])


# ---- points -------------------------------------------------------------------------------------
def test_points_by_hand():
    # Two points inside the 4×4 target (area .25): h = 1, n = 2, mean NN distance .3536,
    # γ·sqrt(A/n) = .1768 → ŝ = 1; q = (1 − e^-1) − .02.
    q2 = 1 - math.exp(-1) - 0.02
    assert call("points", [ans("<seg><grid_0_0><grid_1_1></seg>")], SOL1) == [pytest.approx(q2)]
    # One point: ŝ = 1, q = 1 − e^-0.5 − .01.
    q1 = 1 - math.exp(-0.5) - 0.01
    assert call("points", [ans("<seg><grid_0_0></seg>")], SOL1) == [pytest.approx(q1)]
    # Half the points inside: q = .5·(1 − e^-1) − .02.
    half = 0.5 * (1 - math.exp(-1)) - 0.02
    assert call("points", [ans("<seg><grid_0_0><grid_3_3></seg>")], SOL1) == \
        [pytest.approx(half)]
    # A box-only answer has no points: nothing to score against a target.
    assert call("points", [ans("<box><grid_0_0><grid_1_1></box>")], SOL1) == [0.0]


def test_points_weighting_over_pairs():
    # Instance 1: 2 points, q2; instance 2: 1 point, q1. Σ n q / Σ n, times 2 pairs / 2.
    q2 = 1 - math.exp(-1) - 0.02
    q1 = 1 - math.exp(-0.5) - 0.01
    text = ans("<seg><grid_0_0><grid_1_1></seg>", "<seg><grid_3_3></seg>")
    assert call("points", [text], SOL2) == [pytest.approx((2 * q2 + q1) / 3)]


# ---- known hacks do not pay ---------------------------------------------------------------------
def total(texts, solution):
    return [sum(vals) for vals in zip(*(call(n, texts, solution) for n in STAGE1_REWARDS),
                                      strict=True)]


def test_hacks_do_not_pay():
    honest = ans("<box><grid_0_0><grid_1_1></box><seg><grid_0_0><grid_1_1></seg>")
    same_500 = ans("<box><grid_0_0><grid_1_1></box><seg>" + "<grid_0_0>" * 500 + "</seg>")
    many = ans("<seg>" + "<grid_0_0><grid_1_0><grid_0_1><grid_1_1>" * 250 + "</seg>")
    outside = ans("<box><grid_40_40><grid_90_90></box><seg><grid_-1_0></seg>")
    duplicated = ans(*["<box><grid_0_0><grid_1_1></box><seg><grid_0_0><grid_1_1></seg>"] * 2)
    repeated = "<think>Red. Red. Red.</think>" + honest[len(T):]
    empty = T + "<answer></answer>"
    texts = [honest, same_500, many, outside, duplicated, repeated, empty]
    scores = total(texts, SOL1)
    assert all(s < scores[0] for s in scores[1:]), scores
    pts = call("points", texts, SOL1)
    assert pts[1] == 0.0 and pts[2] == 0.0  # 500 copies: spacing 0; 1000 points: λ·n ≥ 1
    assert call("box", [outside], SOL1) == [0.0] and call("format", [outside], SOL1) == [0.5]
    assert call("box", [duplicated], SOL1)[0] == pytest.approx(call("box", [honest], SOL1)[0] / 2)
    assert call("non_repeat", [repeated], SOL1) == [0.0]


def test_rewards_differ_across_a_group():
    group = [ans("<box><grid_0_0><grid_1_1></box><seg><grid_0_0><grid_1_1></seg>"),
             ans("<seg><grid_1_1><grid_3_3></seg>"),
             ans("<box><grid_0_0><grid_2_2></box><seg><grid_0_0></seg>"),
             ans("<box><grid_2_2><grid_3_3></box><seg><grid_3_3></seg>"),
             T + "<answer></answer>"]
    for name in ("box", "mask", "points"):
        assert len(set(call(name, group, SOL1))) >= 3, name


# ---- fuzz -------------------------------------------------------------------------------------
PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<box>", "</box>", "<seg>", "</seg>",
          "<grid_0_0>", "<grid_3_3>", "<grid_1_2>", "<grid_9_9>", "<off_0_1>", "<DELETE>", "\n",
          " ", ".", "a.", "<", "<grid_"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=40).map("".join), min_size=1,
                max_size=4))
def test_fuzz_never_raises_and_stays_in_range(texts):
    for name in STAGE1_REWARDS:
        for sol in (SOL0, SOL2):
            out = call(name, texts, sol)
            assert len(out) == len(texts)
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out), (name, out)


def test_conversational_completions_and_registry():
    msg = [{"role": "assistant", "content": ans("<seg><grid_0_0></seg>")}]
    parts = [{"role": "assistant", "content": [{"type": "text",
                                               "text": ans("<seg><grid_0_0></seg>")}]}]
    assert call("format", [msg, parts], SOL1) == [1.0, 1.0]
    for name in STAGE1_REWARDS:
        r = build_reward(name)
        assert r.__name__ == name and name in REWARDS
    with pytest.raises(ValueError, match="unknown reward 'iou'"):
        build_reward("iou")
    with pytest.raises(ValueError, match="bad parameters"):
        build_reward("box", kappa=2)
    with pytest.raises(ValueError, match="takes no parameters"):
        build_reward("non_repeat", vocab=V4)
    assert build_reward("points", vocab=V4).vocab == SpatialVocab(4)
