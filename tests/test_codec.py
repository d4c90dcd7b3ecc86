import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens import GridCodec, Instance, SpatialVocab, get_codec, parse_answer, serialize_answer

V = SpatialVocab()
EXAMPLE = """<think>free text</think>
<answer>
<box><grid_3_4><grid_10_12></box><seg><grid_5_6><grid_7_8><grid_6_9></seg>
<box><grid_20_2><grid_25_9></box><seg><grid_22_5></seg>
</answer>"""


def c(i, j, g=32):
    return ((i + 0.5) / g, (j + 0.5) / g)


def test_spec_example():
    ans = parse_answer(EXAMPLE)
    assert ans.errors == [] and ans.well_formed and ans.num_lines == 2
    a, b = ans.instances
    assert a.box == (*c(3, 4), *c(10, 12))
    assert a.points == [c(5, 6), c(7, 8), c(6, 9)]
    assert b.box == (*c(20, 2), *c(25, 9)) and b.points == [c(22, 5)]


def test_empty_answer_is_well_formed_no_target():
    ans = parse_answer("<think>nothing here</think><answer></answer>")
    assert ans.instances == [] and ans.well_formed and ans.errors == []


def test_box_only_and_seg_only_lines():
    ans = parse_answer("<think></think><answer>\n<box><grid_0_0><grid_1_1></box>\n"
                       "<seg><grid_2_2></seg>\n</answer>")
    assert ans.well_formed
    assert ans.instances[0].points == [] and ans.instances[1].box is None


@pytest.mark.parametrize("line, n_inst, error", [
    ("<box><grid_0_0></box>", 0, "exactly two"),
    ("<box><grid_0_0><grid_1_1><grid_2_2></box>", 0, "exactly two"),
    ("<box><grid_0_0><grid_40_1></box>", 0, "out of range"),
    ("<seg><grid_40_1><grid_2_2></seg>", 1, "out of range"),  # bad point dropped, rest kept
    ("<seg><grid_2_2>", 1, "not closed"),
    ("<grid_2_2>", 0, "outside <box>/<seg>"),
    ("<seg></seg>", 0, "no valid grid token"),
    ("hello", 0, "unexpected 'hello'"),
    ("<box><grid_5_5><grid_1_1></box>", 1, "top-left then bottom-right"),
    ("<seg><grid_1_1></seg><seg><grid_2_2></seg>", 1, "more than one <seg>"),
    ("</box><seg><grid_1_1></seg>", 1, "without its opening tag"),
])
def test_malformed_lines(line, n_inst, error):
    ans = parse_answer(f"<think></think><answer>\n{line}\n</answer>")
    assert ans.structure_ok and not ans.lines_ok and not ans.well_formed
    assert len(ans.instances) == n_inst
    assert any(error in e for e in ans.errors), ans.errors
    assert all(e.startswith("line 1: ") for e in ans.errors)


def test_swapped_box_corners_are_sorted():
    ans = parse_answer("<think></think><answer><box><grid_5_5><grid_1_1></box></answer>")
    assert ans.instances[0].box == (*c(1, 1), *c(5, 5))


def test_structure_errors_still_read_the_answer():
    ans = parse_answer("<answer><seg><grid_1_1></seg></answer>")
    assert not ans.structure_ok and ans.lines_ok and len(ans.instances) == 1
    truncated = parse_answer("<think></think><answer>\n<seg><grid_1_1></seg>\n<box><grid_2")
    assert truncated.has_answer and len(truncated.instances) == 1
    assert any("not closed" in e for e in truncated.errors)
    none = parse_answer("<think><seg><grid_1_1></seg></think>")
    assert not none.has_answer and none.instances == [] and "no <answer> tag" in none.errors


def test_non_string_completion():
    ans = parse_answer(None)
    assert ans.instances == [] and not ans.well_formed and ans.errors


cells = st.tuples(st.integers(0, 31), st.integers(0, 31))


@st.composite
def lattice_instances(draw):
    """Instances whose coordinates are cell centres: what a grid answer can express exactly."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        box = None
        if draw(st.booleans()):
            (i1, j1), (i2, j2) = draw(cells), draw(cells)
            box = (*c(min(i1, i2), min(j1, j2)), *c(max(i1, i2), max(j1, j2)))
        pts = [c(*p) for p in draw(st.lists(cells, min_size=0 if box else 1, max_size=6))]
        out.append(Instance(box, pts))
    return out


@given(lattice_instances())
def test_serialize_then_parse_is_identity(instances):
    text = serialize_answer(instances, think="reasoning")
    ans = parse_answer(text)
    assert ans.errors == [] and ans.well_formed
    assert ans.instances == instances


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5))
def test_serialize_arbitrary_points_within_half_a_cell(points):
    ans = parse_answer(serialize_answer([Instance(None, points)]))
    for (x, y), (px, py) in zip(points, ans.instances[0].points, strict=True):
        assert abs(px - x) <= 1 / 64 + 1e-12 and abs(py - y) <= 1 / 64 + 1e-12


def test_other_grid_sizes():
    v = SpatialVocab(grid_size=8)
    ans = GridCodec(v).parse_answer("<think></think><answer><seg><grid_7_7><grid_8_0>"
                                    "</seg></answer>")
    assert ans.instances[0].points == [(15 / 16, 15 / 16)]
    assert get_codec("grid", vocab=v).vocab is v
    with pytest.raises(ValueError, match="unknown codec 'bins'"):
        get_codec("bins")


def test_serializing_an_empty_instance_is_refused():
    with pytest.raises(ValueError, match="needs a box or at least one point"):
        serialize_answer([Instance()])


# ---- fuzz: model output never makes the parser raise ------------------------------------------
PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<box>", "</box>", "<seg>", "</seg>",
          "<grid_1_2>", "<grid_31_31>", "<grid_32_0>", "<grid_-1_3>", "<grid_1>", "<off_0_1>",
          "<DELETE>", "<offset>", "<", ">", "\n", " ", "x", ".", "<grid_999999999_1>", "é", "\x00"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_fuzz_token_soup(pieces):
    ans = parse_answer("".join(pieces))
    _check_invariants(ans)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_fuzz_random_text(text):
    _check_invariants(parse_answer(text))


@given(st.integers(0, len(EXAMPLE)))
def test_fuzz_truncated(n):
    ans = parse_answer(EXAMPLE[:n])
    _check_invariants(ans)
    assert ans.well_formed == (n == len(EXAMPLE))


def _check_invariants(ans):
    assert isinstance(ans.errors, list)
    assert ans.well_formed or ans.errors
    for inst in ans.instances:
        assert not inst.is_empty
        if inst.box is not None:
            x1, y1, x2, y2 = inst.box
            assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
        assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in inst.points)


def _parse_time(n_tokens: int) -> float:
    text = "<think></think><answer><seg>" + "<grid_3_4>" * n_tokens + "</seg></answer>"
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        ans = parse_answer(text)
        best = min(best, time.perf_counter() - t0)
    assert len(ans.instances[0].points) == n_tokens
    return best


def test_ten_thousand_tokens_parse_in_linear_time():
    # A ratio measured in one run, not a wall-clock target: 10× the tokens may cost at most
    # 30× the time (linear is 10×; quadratic would be 100×).
    small, large = _parse_time(1_000), _parse_time(10_000)
    assert large < 30 * small + 0.05


def test_ten_thousand_out_of_range_tokens_keep_errors_bounded():
    text = "<think></think><answer><seg>" + "<grid_99_99>" * 10_000 + "</seg></answer>"
    ans = parse_answer(text)
    assert ans.instances == [] and len(ans.errors) <= 70
    assert any("more errors" in e for e in ans.errors)


def test_the_fast_path_for_clean_lines_reads_what_the_walk_reads():
    import random

    from tokens.answer import Errors

    rng = random.Random(0)
    codec = GridCodec(SpatialVocab(grid_size=8))
    fast = 0
    for _ in range(3000):
        tok = [f"<grid_{rng.randrange(10)}_{rng.choice(['0', '3', '7', '9', '03'])}>"
               for _ in range(rng.randint(1, 5))]
        line = rng.choice([f"<box>{tok[0]}{tok[-1]}</box>", ""]) + (
            "<seg>" + "".join(tok[1:]) + "</seg>" if len(tok) > 1 or rng.random() < 0.5 else "")
        if rng.random() < 0.2:
            line = line.replace("><", "> <", 1)
        if not line:
            continue
        e1, e2 = Errors(), Errors()
        clean = codec._parse_clean_line(line, e1)
        walked = codec._walk_line(line, e2)
        if clean is not None:
            fast += 1
            assert clean == walked and list(e1) == list(e2), line
    assert fast > 300  # the fast path was taken, with ordered and reversed boxes
