import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens import (
    Instance,
    SpatialVocab,
    apply_refinement,
    parse_answer,
    parse_refinement,
    refine_instances,
    serialize_answer,
    serialize_refinement,
)

V = SpatialVocab()  # step s = 1/64
S = 1 / 64
STAGE1 = """<think>free text</think>
<answer>
<box><grid_3_4><grid_10_12></box><seg><grid_5_6><grid_7_8><grid_6_9></seg>
<box><grid_20_2><grid_25_9></box><seg><grid_22_5></seg>
</answer>"""
REFINE = """<answer>
<offset><box><off_0_1><off_-1_0></box><seg><off_0_0><DELETE><off_1_0></seg></offset>
<offset><box><off_0_0><off_0_0></box><seg><off_0_0></seg></offset>
</answer>"""


def c(i, j):
    return ((i + 0.5) / 32, (j + 0.5) / 32)


def test_spec_example_applies():
    ref = parse_refinement(REFINE, STAGE1)
    assert ref.errors == [] and ref.complete and ref.structure_ok
    assert ref.lines[0].seg == [(0, 0), None, (1, 0)]
    a, b = apply_refinement(STAGE1, ref)
    x1, y1 = c(3, 4)
    x2, y2 = c(10, 12)
    assert a.box == (x1, y1 + S, x2 - S, y2)
    assert a.points == [c(5, 6), (c(6, 9)[0] + S, c(6, 9)[1])]
    assert b == parse_answer(STAGE1).instances[1]


def test_stage1_may_be_text_parsed_or_instances():
    parsed = parse_answer(STAGE1)
    for stage1 in (STAGE1, parsed, parsed.instances):
        assert apply_refinement(stage1, REFINE) == apply_refinement(STAGE1, REFINE)


@pytest.mark.parametrize("line, error", [
    ("<offset><box><off_0_0></box><seg><off_0_0><off_0_0><off_0_0></seg></offset>",
     "two offset tokens"),
    ("<offset><box><off_0_0><DELETE></box><seg><off_0_0><off_0_0><off_0_0></seg></offset>",
     "two offset tokens"),
    ("<offset><box><off_0_0><off_0_0></box><seg><off_0_0></seg></offset>", "needs 3 tokens"),
    ("<offset><seg><off_0_0><off_0_0><off_0_0></seg></offset>", "exactly when the instance has"),
    ("<box><off_0_0><off_0_0></box><seg><off_0_0><off_0_0><off_0_0></seg>", "wrapped"),
    ("<offset><box><off_0_0><off_2_0></box><seg><off_0_0><off_0_0><off_0_0></seg></offset>",
     "out of range"),
    ("<offset><box><off_0_0><off_0_0></box><seg><off_0_0><off_0_0><off_0_0></seg>", "wrapped"),
])
def test_malformed_line_keeps_stage1_geometry(line, error):
    text = f"<answer>\n{line}\n<offset><box><off_1_1><off_1_1></box><seg><DELETE></seg>" \
           "</offset>\n</answer>"
    ref = parse_refinement(text, STAGE1)
    assert not ref.lines[0].well_formed and ref.lines[1].well_formed
    assert any(error in e for e in ref.errors), ref.errors
    assert ref.num_well_formed == 1 and not ref.complete
    out = refine_instances(STAGE1, ref)
    assert out[0] == parse_answer(STAGE1).instances[0]
    assert out[1].points == []  # the only point was deleted, the box remains


def test_instance_with_everything_deleted_is_removed():
    stage1 = "<think></think><answer>\n<seg><grid_1_1><grid_2_2></seg>\n<seg><grid_3_3></seg>\n" \
             "</answer>"
    ref = parse_refinement("<answer>\n<offset><seg><DELETE><DELETE></seg></offset>\n"
                           "<offset><seg><off_1_1></seg></offset>\n</answer>", stage1)
    assert refine_instances(stage1, ref)[0] is None
    (only,) = apply_refinement(stage1, ref)
    assert only.points == [(c(3, 3)[0] + S, c(3, 3)[1] + S)]


def test_missing_and_extra_lines():
    ref = parse_refinement("<answer>\n<offset><box><off_0_0><off_0_0></box><seg><off_0_0>"
                           "<off_0_0><off_0_0></seg></offset>\n</answer>", STAGE1)
    assert len(ref.lines) == 1 and ref.num_well_formed == 1 and not ref.complete
    assert any("1 <offset> lines for 2" in e for e in ref.errors)
    extra = parse_refinement("<answer>\n<offset><seg><off_0_0></seg></offset>\n</answer>",
                             "<think></think><answer></answer>")
    assert extra.num_instances == 0 and not extra.lines[0].well_formed


def test_no_stage1_instance_and_empty_answer():
    ref = parse_refinement("<answer></answer>", "<think></think><answer></answer>")
    assert ref.complete and ref.errors == []


def test_corners_that_cross_are_resorted_and_moves_clip():
    stage1 = [Instance((0.5, 0.5, 0.5 + S, 0.5 + S), [(0.999, 0.001)])]
    ref = parse_refinement("<answer><offset><box><off_1_1><off_-1_-1></box><seg><off_1_-1>"
                           "</seg></offset></answer>", stage1)
    (inst,) = apply_refinement(stage1, ref)
    assert inst.box == (0.5, 0.5, 0.5 + S, 0.5 + S)
    assert inst.points == [(1.0, 0.0)]


def test_serialize_refinement_round_trip():
    text = serialize_refinement([([(0, 1), (-1, 0)], [(0, 0), None, (1, 0)]),
                                 ([(0, 0), (0, 0)], [(0, 0)])], think="moving")
    ref = parse_refinement(text, STAGE1)
    assert ref.complete and ref.lines[0].box == [(0, 1), (-1, 0)]
    assert ref.lines[0].seg == [(0, 0), None, (1, 0)]
    with pytest.raises(ValueError, match="outside the radius"):
        serialize_refinement([(None, [(2, 0)])])


def test_rounds_compose():
    # Two rounds of +1 move a point by two steps: each round offsets the current position.
    stage1 = [Instance(None, [c(4, 4)])]
    once = apply_refinement(stage1, "<answer><offset><seg><off_1_0></seg></offset></answer>")
    twice = apply_refinement(once, "<answer><offset><seg><off_1_0></seg></offset></answer>")
    assert twice[0].points == [(c(4, 4)[0] + 2 * S, c(4, 4)[1])]
    assert twice[0].points[0][0] == pytest.approx(c(5, 4)[0])


PIECES = ["<answer>", "</answer>", "<offset>", "</offset>", "<box>", "</box>", "<seg>", "</seg>",
          "<off_0_0>", "<off_1_-1>", "<off_2_0>", "<off_-9_x>", "<DELETE>", "<grid_1_1>", "\n",
          " ", "junk", "<", "<think>", "</think>"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(PIECES), max_size=60), st.sampled_from([STAGE1, "", "garbage"]))
def test_fuzz_never_raises(pieces, stage1):
    ref = parse_refinement("".join(pieces), stage1)
    out = refine_instances(stage1, ref)
    assert len(out) == len(parse_answer(stage1).instances)
    for inst in apply_refinement(stage1, ref):
        assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in inst.points)


@given(st.text(max_size=200))
def test_fuzz_random_text(text):
    parse_refinement(text, STAGE1)
    parse_refinement(text, text)


def test_serialize_answer_still_parses_after_refinement_rounds():
    refined = apply_refinement(STAGE1, REFINE)
    assert parse_answer(serialize_answer(refined)).well_formed
