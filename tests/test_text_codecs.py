"""The text codecs of related work: round trips within each codec's bound, parsers that never
raise, and rewards that do not depend on how the same geometry is written."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import build_reward, make_solution
from tokens import CODECS, Instance, SpatialVocab, get_codec
from tokens.answer import Errors
from tokens.text_codecs import AnchorOffsetCodec, RleTextCodec, TextBinsCodec, TextNormCodec

V8 = SpatialVocab(8)
COORDINATE_CODECS = {
    "grid": get_codec("grid", vocab=V8),
    "text_norm": TextNormCodec(decimals=3),
    "text_bins": TextBinsCodec(bins=1000),
    "anchor_offset_text": AnchorOffsetCodec(anchors=16, frame=224),
}


def test_registry_and_parameters():
    assert {"grid", "text_norm", "text_bins", "anchor_offset_text", "rle_text"} <= set(CODECS)
    assert get_codec("text_bins", bins=224).bins == 224
    assert get_codec("grid", vocab=V8).vocab == V8
    with pytest.raises(ValueError, match="unknown codec 'polygon'"):
        get_codec("polygon")
    with pytest.raises(ValueError, match="bad parameters"):
        get_codec("text_norm", bins=3)
    with pytest.raises(ValueError, match="decimals must be 1..8"):
        get_codec("text_norm", decimals=0)
    assert all(get_codec(n).new_tokens() == [] for n in CODECS if n != "grid")


def test_written_forms():
    inst = Instance((0.1, 0.2, 0.55, 0.9), [(0.3, 0.4)])
    assert TextNormCodec(2).format_instance(inst) == "[0.10, 0.20, 0.55, 0.90] (0.30, 0.40)"
    assert TextBinsCodec(1000).format_instance(inst) == "[100, 200, 550, 900] (300, 400)"
    assert TextNormCodec(2, box_only=True).format_instance(inst) == "[0.10, 0.20, 0.55, 0.90]"
    # LocVLM's worked example, with the signs it loses: box (10, 120, 30, 145) in a 512-pixel
    # image, 224-pixel frame, 16x16 anchors of 14 pixels: the centre (20, 132.5) lies in
    # anchor (0, 4) whose centre is (7, 63).
    box = (10 / 512, 120 / 512, 30 / 512, 145 / 512)
    assert AnchorOffsetCodec().format_instance(Instance(box)) == "anchor (0, 4) [-3, -10, +6, +0]"


def test_rle_written_form_and_reading():
    codec = RleTextCodec(size=4)
    coarse = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    line = codec.format_instance(Instance(coarse=coarse))
    assert line == ("others *4 | others *1, target *2, others *1 | others *1, target *3 | "
                    "others *4")
    inst, ok = codec.parse_line(line, Errors())
    assert ok and np.array_equal(inst.coarse, coarse)
    assert inst.box == (0.25, 0.25, 1.0, 0.75)
    assert inst.points[0] == (0.375, 0.375) and len(inst.points) == 5
    refine = RleTextCodec(size=4, refine=True).parse_answer(f"<think></think><answer>{line}"
                                                            "</answer>").instances[0]
    assert refine.coarse is None and refine.box == inst.box  # the decoder draws the mask


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(COORDINATE_CODECS)),
       st.lists(st.floats(0, 1), min_size=4, max_size=4),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=6))
def test_coordinate_round_trip_within_the_bound(name, corners, points):
    codec = COORDINATE_CODECS[name]
    x1, x2 = sorted(corners[::2])
    y1, y2 = sorted(corners[1::2])
    inst = Instance((x1, y1, x2, y2), points)
    ans = codec.parse_answer(codec.serialize_answer([inst], think="t"))
    assert ans.well_formed and ans.errors == [] and len(ans.instances) == 1
    back = ans.instances[0]
    eps = codec.bound + 1e-9
    assert all(abs(a - b) <= eps for a, b in zip(back.box, inst.box, strict=True))
    assert len(back.points) == len(points)
    for (a, b), (c, d) in zip(back.points, points, strict=True):
        assert abs(a - c) <= eps and abs(b - d) <= eps


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.lists(st.booleans(), min_size=n * n,
                                                     max_size=n * n).map(lambda b: (n, b))))
def test_rle_round_trip_is_exact(case):
    n, bits = case
    coarse = np.array(bits, bool).reshape(n, n)
    codec = RleTextCodec(size=n)
    if not coarse.any():
        with pytest.raises(ValueError):
            codec.target_instance(None, [], coarse)
        return
    inst = codec.target_instance(None, [], np.kron(coarse, np.ones((3, 3), bool)))
    assert np.array_equal(inst.coarse, coarse)  # the map of its own upsampled mask
    back = codec.parse_answer(codec.serialize_answer([inst])).instances
    assert len(back) == 1 and np.array_equal(back[0].coarse, coarse)


def test_rle_keeps_a_small_object():
    mask = np.zeros((64, 64), bool)
    mask[30:33, 30:33] = True  # 9 pixels: no 8-pixel cell is half covered
    inst = RleTextCodec(size=8).target_instance(None, [], mask)
    assert inst.coarse.sum() == 1 and inst.coarse[3, 3]


PIECES = ["<think>", "</think>", "<answer>", "</answer>", "\n", " ", "[", "]", "(", ")", ",",
          "0.5", "1.5", "-3", "+4", "999", "12", "anchor", "(3, 4)", "others", "target", "*",
          "*3", "|", "nan", "1e5", "<box>", "<grid_1_1>", "é", "\x00"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CODECS)), st.lists(st.sampled_from(PIECES), max_size=80),
       st.text(max_size=40))
def test_parsers_never_raise(name, pieces, noise):
    codec = get_codec(name, vocab=V8) if name == "grid" else get_codec(name, **(
        {"size": 4} if name == "rle_text" else {}))
    for text in ("".join(pieces), "".join(pieces) + noise, noise):
        ans = codec.parse_answer(text)
        assert isinstance(ans.errors, list)
        for inst in ans.instances:
            if inst.box is not None:
                x1, y1, x2, y2 = inst.box
                assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
            assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in inst.points)
    assert codec.parse_answer(None).errors  # not text at all


# ---- rewards see geometry, not its spelling ----------------------------------------------------
def scene():
    img = np.full((64, 64, 3), 90, np.uint8)
    img[8:40, 8:40] = (220, 40, 40)
    img[40:64, 40:64] = (40, 80, 220)
    return img


def square(y0, y1, x0, x1):
    m = np.zeros((64, 64), bool)
    m[y0:y1, x0:x1] = True
    return m


SOLUTION = make_solution(64, 64, [square(8, 40, 8, 40), square(40, 64, 40, 64)])
STAGE1 = ("format", "box", "mask", "points")


def rewards_of(codec, texts):
    out = {}
    for name in STAGE1:
        r = build_reward(name, codec=codec, vocab={"grid_size": 8})
        out[name] = r(texts, solution=[SOLUTION] * len(texts), image=[scene()] * len(texts))
    return out


def c16(k):  # odd multiples of 1/16: centres of an 8-grid, exact in every codec below
    return (2 * k + 1) / 16


ANSWERS = [
    [Instance((c16(1), c16(1), c16(4), c16(4)), [(c16(2), c16(2)), (c16(3), c16(2))]),
     Instance((c16(5), c16(5), c16(7), c16(7)), [(c16(6), c16(6))])],
    [Instance((c16(0), c16(0), c16(2), c16(3)), [(c16(1), c16(1))])],
    [Instance(None, [(c16(6), c16(5))])],
    [],
]


def test_same_geometry_same_rewards_in_every_coordinate_codec():
    codecs = [get_codec("grid", vocab=V8), TextNormCodec(4), TextBinsCodec(160),
              AnchorOffsetCodec(16, 224)]
    values = []
    for codec in codecs:
        texts = [codec.serialize_answer(a, think="x") for a in ANSWERS]
        for text, a in zip(texts, ANSWERS, strict=True):  # the geometry really is the same
            assert codec.parse_answer(text).instances == a
        values.append(rewards_of(codec, texts))
    assert all(v == values[0] for v in values[1:]), values
    assert values[0]["box"][0] > 0.2 and values[0]["format"] == [1.0] * 4  # not trivially 0


def test_rle_read_as_prompts_scores_like_its_box_and_points_in_text():
    coarse = np.zeros((8, 8), bool)
    coarse[1:5, 1:5] = True  # the red square, cell for cell
    rle = RleTextCodec(size=8, refine=True)
    text_rle = rle.serialize_answer([rle.target_instance(None, [], np.kron(coarse, np.ones(
        (8, 8), bool)))])
    inst = rle.parse_answer(text_rle).instances[0]
    norm = TextNormCodec(4)
    text_norm = norm.serialize_answer([Instance(inst.box, inst.points)])
    assert rewards_of(rle, [text_rle]) == rewards_of(norm, [text_norm])


def test_rle_upsampled_mask_is_scored_by_hand():
    coarse = np.zeros((8, 8), bool)
    coarse[1:5, 1:3] = True  # the left half of the red square: IoU 0.5 with it
    rle = RleTextCodec(size=8)
    text = rle.serialize_answer([rle.target_instance(None, [], np.kron(coarse, np.ones(
        (8, 8), bool)))])
    mask = build_reward("mask", codec=rle, linear=True)
    # One of two targets matched with IoU 0.5: (0.5 + 0) / max(1, 2).
    assert mask([text], solution=[SOLUTION], image=[scene()]) == [pytest.approx(0.25)]
