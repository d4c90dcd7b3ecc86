"""Propose-then-refine inference: answers read into instances, masks and a picture that shows
the proposal, the offsets and the deletions (read back from the PNG)."""

import json

import numpy as np
import pytest
from PIL import Image

from rl.infer import Grounder, InferenceResult, main
from rl.visualize import (
    ARROW_COLOUR,
    BOX_COLOUR,
    DELETED_COLOUR,
    GRID_COLOUR,
    PANEL_GAP,
    POINT_COLOUR,
)
from tokens import Instance, SpatialVocab, serialize_answer, serialize_refinement

V = SpatialVocab(8)
SIZE = 256


def scene() -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 200, np.uint8)
    img[32:160, 32:160] = (30, 60, 90)  # the object: cells 1..4 of the 8-grid
    return img


def answers() -> list[str]:
    # Proposal: a box over the object and three points, one of them (cell 6, 6) outside it.
    stage1 = serialize_answer([Instance((1.5 / 8, 1.5 / 8, 4.5 / 8, 4.5 / 8),
                                        [(2.5 / 8, 2.5 / 8), (3.5 / 8, 3.5 / 8),
                                         (6.5 / 8, 6.5 / 8)])], think="the square", vocab=V)
    # Refinement: the box stays, the first point moves right, the second stays, the third goes.
    refine = serialize_refinement([([(0, 0), (0, 0)], [(1, 0), (0, 0), None])], vocab=V)
    return [stage1, refine]


@pytest.fixture(scope="module")
def grounder(grid8_model):
    return Grounder(grid8_model)


def test_answers_become_instances_moves_deletions_and_masks(grounder):
    r = grounder.result(scene(), "the square", answers())
    assert isinstance(r, InferenceResult) and len(r.answers) == 2
    assert r.tokens[0] == ["<grid_1_1>", "<grid_4_4>", "<grid_2_2>", "<grid_3_3>", "<grid_6_6>"]
    assert r.tokens[1] == ["<off_0_0>", "<off_0_0>", "<off_1_0>", "<off_0_0>", "<DELETE>"]
    step = V.offset_step
    assert r.moves == [[((2.5 / 8, 2.5 / 8), (2.5 / 8 + step, 2.5 / 8))]]
    assert r.deleted == [[(6.5 / 8, 6.5 / 8)]]
    assert r.points == [[((2.5 / 8 + step) * SIZE, 2.5 / 8 * SIZE), (3.5 / 8 * SIZE,
                                                                      3.5 / 8 * SIZE)]]
    assert r.boxes == [(48.0, 48.0, 144.0, 144.0)]
    assert len(r.masks) == 1 and r.masks[0].shape == (SIZE, SIZE)
    gt = np.zeros((SIZE, SIZE), bool)
    gt[32:160, 32:160] = True
    assert (r.mask & gt).sum() / (r.mask | gt).sum() > 0.9
    info = r.to_json()
    assert info["deleted_per_round"] == [1] and info["moved_per_round"] == [1]
    json.dumps(info)


def test_the_picture_shows_each_mark_where_it_belongs(grounder, tmp_path):
    r = grounder.result(scene(), "the square", answers())
    path = grounder.draw(r, tmp_path / "p.png", scale=1)
    with Image.open(path) as pic:
        # The query above; the proposal (left) beside the refined result (right).
        band = pic.size[1] - SIZE
        assert pic.size == (2 * SIZE + PANEL_GAP, band + SIZE) and band >= 14
        rgb = pic.convert("RGB")
        px = rgb.load()
        assert (np.asarray(rgb)[:band].min(axis=-1) > 128).sum() > 20  # the query is written

    def at(x, y, panel=1):
        return px[panel * (SIZE + PANEL_GAP) + int(x * SIZE), band + int(y * SIZE)]

    for x, y in r.instances[0].points:  # the final points
        assert at(x, y) == POINT_COLOUR
    for x, y in r.proposed[0].points:  # the proposal's points, on the left
        assert at(x, y, panel=0) == POINT_COLOUR
    assert at(6.5 / 8, 6.5 / 8) == DELETED_COLOUR  # the deleted point is crossed out
    (x0, y0), (x1, y1) = r.moves[0][0]
    assert at((x0 + x1) / 2, y0) == ARROW_COLOUR  # the offset, drawn as an arrow
    assert at(1.5 / 8, 3 / 8) == BOX_COLOUR  # the box's left edge
    assert at(7 / 8, 10 / SIZE) == GRID_COLOUR  # the lattice
    inside = at(100 / SIZE, 120 / SIZE)  # inside the object, away from the marks: tinted
    assert inside != (30, 60, 90) and inside[2] > 90
    assert at(220 / SIZE, 100 / SIZE) == (200, 200, 200)  # background stays as it was


def test_the_command_line_runs_the_model_and_writes_picture_and_json(grid8_model, tmp_path):
    img = tmp_path / "scene.png"
    Image.fromarray(scene()).save(img)
    r = main(["--model", str(grid8_model), "--image", str(img), "--query", "the square",
              "--rounds", "1", "--max-new-tokens", "8", "--out", str(tmp_path / "pred.png"),
              "--json", str(tmp_path / "pred.json")])
    # An untrained model: whatever it wrote is read, never raised on.
    assert len(r.answers) >= 1 and isinstance(r.answers[0], str)
    with Image.open(tmp_path / "pred.png") as pic:
        assert pic.size[0] >= SIZE
    assert json.loads((tmp_path / "pred.json").read_text())["query"] == "the square"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        main(["--model", str(grid8_model), "--image", str(tmp_path / "missing.png"),
              "--query", "x"])
