import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokens.vocab import DELETE_TOKEN, SpatialVocab

unit = st.floats(0.0, 1.0, allow_nan=False)
grids = st.sampled_from([4, 8, 16, 32, 64])


def test_default_counts_and_strings():
    v = SpatialVocab()
    toks = v.all_tokens()
    assert len(toks) == v.num_tokens == 1034
    assert len(set(toks)) == 1034
    assert toks[0] == "<grid_0_0>" and toks[1] == "<grid_0_1>"  # i (column) outer
    assert "<grid_31_31>" in toks and "<grid_32_0>" not in toks
    assert v.offset_tokens() == [f"<off_{dx}_{dy}>" for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert toks[-1] == DELETE_TOKEN == "<DELETE>"
    assert v.offset_step == pytest.approx(1 / 64)


def test_column_is_x_row_is_y():
    v = SpatialVocab(grid_size=4)
    # A point at the right edge, top: column 3 (x), row 0 (y).
    assert v.point_to_token(0.95, 0.05) == "<grid_3_0>"
    assert v.token_to_point("<grid_3_0>") == (0.875, 0.125)


def test_parse_single_tokens_checks_range():
    v = SpatialVocab(grid_size=8, offset_radius=2)
    assert v.parse_grid_token("<grid_7_0>") == (7, 0)
    assert v.parse_grid_token("<grid_8_0>") is None
    assert v.parse_grid_token("<grid_1_2> ") is None
    assert v.parse_offset_token("<off_-2_2>") == (-2, 2)
    assert v.parse_offset_token("<off_3_0>") is None
    with pytest.raises(ValueError, match="not a grid token"):
        v.token_to_point("<grid_9_9>")


@pytest.mark.parametrize("kwargs", [{"grid_size": 0}, {"offset_radius": -1},
                                    {"offset_step_cells": 0}, {"grid_size": 3.5}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        SpatialVocab(**kwargs)


@given(unit, unit, grids)
def test_grid_decode_within_half_a_cell(x, y, g):
    v = SpatialVocab(grid_size=g)
    cx, cy = v.token_to_point(v.point_to_token(x, y))
    assert abs(cx - x) <= 0.5 / g + 1e-12
    assert abs(cy - y) <= 0.5 / g + 1e-12


@given(unit, unit, grids)
def test_best_single_offset_within_a_quarter_cell(x, y, g):
    v = SpatialVocab(grid_size=g)
    cx, cy = v.token_to_point(v.point_to_token(x, y))
    dx, dy = v.best_offset(cx, cy, x, y)
    px, py = v.apply_offset(cx, cy, dx, dy)
    assert abs(px - x) <= 1 / (4 * g) + 1e-12
    assert abs(py - y) <= 1 / (4 * g) + 1e-12


def test_apply_offset_clips_to_the_image():
    v = SpatialVocab(grid_size=2)  # step 1/4
    assert v.apply_offset(0.1, 0.9, -1, 1) == (0.0, 1.0)
    assert v.apply_offset(0.5, 0.5, 1, -1) == (0.75, 0.25)


def test_best_offset_prefers_smallest_move_on_ties():
    v = SpatialVocab(grid_size=4)  # step 1/8
    assert v.best_offset(0.5, 0.5, 0.5, 0.5) == (0, 0)


def test_save_and_load(tmp_path):
    v = SpatialVocab(16, 2, 0.25)
    v.save(tmp_path)
    assert SpatialVocab.load(tmp_path) == v
    (tmp_path / "spatial_vocab.json").write_text(json.dumps({"grid_size": 8, "radius": 1}))
    with pytest.raises(ValueError, match=r"spatial_vocab.json: unknown fields \['radius'\]"):
        SpatialVocab.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokens.extend"):
        SpatialVocab.load(tmp_path / "nowhere")


def test_tokens_in_reads_the_exact_grammar_in_range():
    v = SpatialVocab(grid_size=8, offset_radius=1)
    text = "<grid_1_2>x<grid_03_1><grid_9_0><off_-1_0><off_-0_1><DELETE><off_2_0><grid_٣_1>"
    assert v.tokens_in(text) == ["<grid_1_2>", "<off_-1_0>", "<DELETE>"]
