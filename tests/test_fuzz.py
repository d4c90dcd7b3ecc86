"""Issue 19: every reward stays in its range on generated completions, and each reproducer
found by the adversarial run has its expected value."""

import sys
from pathlib import Path

import numpy as np
import pytest

import rewards.fuzz as fuzz
from rewards import REWARD_RANGES, REWARDS, build_reward, completion_text, make_solution
from rewards.stage2 import MaskGainReward
from tokens import SpatialVocab, parse_answer
from tokens.refine import parse_refinement

sys.path.insert(0, str(Path(__file__).parent))
from test_rewards_stage2 import SOL_RED, V4, ans, off, red_square_image  # noqa: E402


def test_generated_completions_stay_in_range():
    report = fuzz.run(n=1600, seed=3, huge_every=100)
    assert sum(report.scored.values()) == 800 * 5 + 800 * 4  # every reward of its stage
    assert report.failures == 0, fuzz.format_report(report, 1600, 0.0)


def test_the_fuzzer_catches_a_reward_that_breaks_its_range(monkeypatch):
    original = fuzz.build_reward

    def broken(name, **params):
        reward = original(name, **params)
        if name != "box":
            return reward

        def box(completions, **kwargs):
            return [2.0 if i % 2 else float("nan") for i, _ in enumerate(reward(completions,
                                                                                  **kwargs))]
        return box

    monkeypatch.setattr(fuzz, "build_reward", broken)
    report = fuzz.run(n=64, seed=0, huge_every=0)
    assert report.out_of_range["box"] > 0 and report.non_finite["box"] > 0
    assert report.failures > 0 and fuzz.main(["--n", "16", "--huge-every", "0"]) == 1


def test_every_reward_has_a_documented_range():
    assert set(REWARD_RANGES) == set(REWARDS)
    assert REWARD_RANGES["mask_gain"] == REWARD_RANGES["point_refine"] == (-1.0, 1.0)


# ---- mask_gain: a loss is normalized by u0 -------------------------------------------------------
@pytest.mark.parametrize("u0, u1, gain", [
    (0.9, 0.0, -1.0),           # the paper's (u1 - u0)/(1 - u0): -9
    (0.998, 0.0, -1.0),         # the paper's: -499 (the fuzzer's -517 was such a case)
    (0.8, 0.3, -0.625),         # -0.5/0.8; the paper's: -2.5
    (0.5, 0.75, 0.5),           # gains keep the paper's form
    (0.3, 0.3, 0.0), (1.0, 1.0, 0.0), (0.0, 0.0, 0.0),
])
def test_mask_gain_is_bounded(u0, u1, gain):
    assert MaskGainReward.gain(u0, u1) == pytest.approx(gain)


def test_a_box_refinement_that_loses_the_object_scores_minus_one():
    # Stage-1 box from cells (3, 1) and (0, 0) on the 4-grid of a 16-px image (corners re-sorted
    # to x 2..14, y 2..6 px): the region decoder's mask has IoU u0 = 16/27 with the 9x9 red
    # square. Moving the corners to (4, 4)-(12, 4) px (a zero-height box) leaves an empty mask:
    # u1 = 0. Gain (0 - 16/27) / (16/27) = -1; the paper's form gives -16/11.
    logged = {}
    reward = build_reward("mask_gain", vocab=V4)
    out = reward([ans(off(box=["<off_1_1>", "<off_-1_-1>"]))], solution=[SOL_RED],
                 stage1=[ans("<box><grid_3_1><grid_0_0></box>")], image=[red_square_image()],
                 log_metric=logged.__setitem__)
    assert logged["mask_gain/u0"] == pytest.approx(16 / 27)
    assert logged["mask_gain/u1"] == 0.0
    assert out == [pytest.approx(-1.0)]


def test_a_look_alike_offset_on_a_second_line_moves_nothing():
    # The issue's -517 reproducer had `<off_٣_1>` (an Arabic-Indic 3) on its second line: it
    # read as `<off_3_1>`. Now the line is malformed and its instance keeps its geometry.
    stage1 = ans("<seg><grid_0_0></seg>", "<seg><grid_3_3></seg>")
    text = ans(off("<off_0_0>"), off("<off_٣_1>"))
    ref = parse_refinement(text, stage1, SpatialVocab(grid_size=4))
    assert [line.well_formed for line in ref.lines] == [True, False]
    assert any("unexpected '<off_٣_1>'" in e for e in ref.errors)
    out = build_reward("mask_gain", vocab=V4)([text], solution=[SOL_RED], stage1=[stage1],
                                              image=[red_square_image()])
    assert out == [0.0]  # nothing moved: u1 = u0 for both instances


# ---- one exact token grammar ---------------------------------------------------------------------
@pytest.mark.parametrize("token", ["<grid_٣_1>", "<grid_03_1>", "<grid_３_1>", "<grid_3_01>"])
def test_look_alike_grid_tokens_are_not_tokens(token):
    v = SpatialVocab(grid_size=8)
    assert v.parse_grid_token(token) is None
    text = f"<think></think><answer><seg>{token}</seg></answer>"
    parsed = parse_answer(text, vocab=v)
    assert parsed.instances == [] and not parsed.lines_ok
    sol = make_solution(64, 64, [np.pad(np.ones((8, 8), bool), ((8, 48), (24, 32)))])
    real = "<think></think><answer><seg><grid_3_1></seg></answer>"
    fmt = build_reward("format", vocab=v)
    assert fmt([real, text]) == [1.0, 0.5]
    points = build_reward("points", vocab=v)([real, text], solution=[sol, sol])
    assert points[0] > 0 and points[1] == 0.0


@pytest.mark.parametrize("token, value", [("<off_-0_1>", None), ("<off_01_0>", None),
                                          ("<off_٣_1>", None), ("<off_0_-1>", (0, -1)),
                                          ("<off_-1_0>", (-1, 0))])
def test_offset_tokens_have_one_spelling(token, value):
    assert SpatialVocab(offset_radius=3).parse_offset_token(token) == value


def test_text_codecs_read_ascii_digits_only():
    from tokens.registry import get_codec

    codec = get_codec("text_bins")
    good = codec.parse_answer("<think></think><answer>[100, 200, 300, 400]</answer>")
    bad = codec.parse_answer("<think></think><answer>[١٠٠, 200, 300, 400]</answer>")
    assert good.lines_ok and good.instances[0].box == (0.1, 0.2, 0.3, 0.4)
    assert not bad.lines_ok and bad.instances == []


# ---- completion text never raises ----------------------------------------------------------
@pytest.mark.parametrize("completion, text", [
    ([{"role": "assistant", "content": [{"type": "text", "text": 5}]}], ""),
    ([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                        {"type": "text", "text": None},
                                        {"type": "image"}, {"type": "text", "text": "b"}]}], "ab"),
    ([{"role": "assistant", "content": "<answer></answer>"}], "<answer></answer>"),
    ([{"role": "assistant", "content": 7}], ""), ([5], ""), ([], ""), (None, ""), (3.5, ""),
    (b"<answer>", ""), ("plain", "plain"),
])
def test_completion_text(completion, text):
    assert completion_text(completion) == text


def test_every_reward_scores_a_non_string_text_part():
    odd = [{"role": "assistant", "content": [{"type": "text", "text": 5}]}]
    sol = make_solution(16, 16, [np.pad(np.ones((9, 9), bool), ((0, 7), (0, 7)))])
    cols = {"solution": [sol], "image": [red_square_image()], "stage1": [ans("<seg><grid_0_0>"
                                                                              "</seg>")]}
    for name in REWARDS:
        params = {} if name == "non_repeat" else {"vocab": V4}
        out = build_reward(name, **params)([odd], **cols)
        # No <answer>: 0 everywhere, but non_repeat (no sentence repeats) and box_refine (the
        # stage-1 instance has no box: nothing to score).
        expected = {"non_repeat": 1.0, "box_refine": None}.get(name, 0.0)
        assert out == [expected], name


def test_a_huge_nested_completion_is_scored():
    text = "<answer>" * 35_000 + "<think></think><answer><seg><grid_0_0></seg></answer>"
    assert len(text) > 280_000
    out = build_reward("box", vocab=V4)([text], solution=[SOL_RED])
    assert out == [0.0]  # the first <answer> block holds only tags: no instance
