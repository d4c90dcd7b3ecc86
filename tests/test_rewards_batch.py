"""The scored view of a batch: every stage-1 term reads one parse and one matching per
completion; stage-2 terms read one parse of each refinement; values are those of the terms
computed alone."""

import numpy as np
import pytest

from rewards import STAGE1_REWARDS, STAGE2_REWARDS, build_reward, make_solution
from rewards.batch import VIEWS
from tokens.codec import GridCodec
from tokens.refine import parse_refinement as real_parse_refinement

V4 = {"grid_size": 4}


def rect(y0, y1, x0, x1, size=16):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def image():
    img = np.full((16, 16, 3), 90, np.uint8)
    img[0:9, 0:9] = (220, 40, 40)
    return img


SOL = make_solution(16, 16, [rect(0, 9, 0, 9)])
COMPLETIONS = ["<think>a</think><answer>\n<box><grid_0_0><grid_1_1></box><seg><grid_0_0></seg>\n"
               "</answer>", "<think></think><answer><seg><grid_3_3></seg></answer>", "x",
               "<think>b</think><answer>\n<seg><grid_1_1><grid_0_1></seg>\n<seg><grid_2_2>"
               "</seg>\n</answer>"]


def test_one_parse_per_completion_for_every_stage1_term(monkeypatch):
    calls = []
    original = GridCodec.parse_answer

    def counting(self, text):
        calls.append(text)
        return original(self, text)

    VIEWS.clear()
    monkeypatch.setattr(GridCodec, "parse_answer", counting)
    n = len(COMPLETIONS)
    cols = {"solution": [SOL] * n, "image": [image()] * n}
    values = {name: build_reward(name, **({} if name == "non_repeat" else {"vocab": V4}))(
        COMPLETIONS, **cols) for name in STAGE1_REWARDS}
    assert sorted(calls) == sorted(COMPLETIONS)  # one parse per completion, all terms together
    # The same values as each term computed on a batch of its own (a fresh view each time).
    monkeypatch.setattr(GridCodec, "parse_answer", original)
    for name, got in values.items():
        VIEWS.clear()
        alone = build_reward(name, **({} if name == "non_repeat" else {"vocab": V4}))(
            COMPLETIONS, **cols)
        assert got == alone, name


def test_one_refinement_parse_per_completion_for_every_stage2_term(monkeypatch):
    import rewards.batch

    calls = []

    def counting(text, stage1, vocab):
        calls.append(text)
        return real_parse_refinement(text, stage1, vocab)

    VIEWS.clear()
    monkeypatch.setattr(rewards.batch, "parse_refinement", counting)
    stage1 = "<think></think><answer>\n<seg><grid_2_0></seg>\n</answer>"
    texts = ["<answer>\n<offset><seg><off_-1_0></seg></offset>\n</answer>",
             "<answer>\n<offset><seg><DELETE></seg></offset>\n</answer>", "junk"]
    n = len(texts)
    cols = {"solution": [SOL] * n, "image": [image()] * n, "stage1": [stage1] * n}
    out = {name: build_reward(name, vocab=V4)(texts, **cols) for name in STAGE2_REWARDS}
    assert sorted(calls) == sorted(texts)
    assert out["mask_gain"] == [pytest.approx(1.0), 0.0, 0.0]  # moved onto the square


def test_a_changed_ground_truth_is_a_new_view():
    VIEWS.clear()
    box = build_reward("box", vocab=V4)
    other = make_solution(16, 16, [rect(8, 16, 8, 16)])
    a = box(COMPLETIONS[:1], solution=[SOL])
    b = box(COMPLETIONS[:1], solution=[other])
    assert a != b
