import numpy as np
import pytest

from tokens import parse_refinement, serialize_answer
from tokens.offsets import (
    CATEGORIES,
    _quota_counts,
    grid_targets,
    jittered_box,
    refinement_example,
    sample_points,
)
from tokens.vocab import SpatialVocab

V8 = SpatialVocab(grid_size=8)  # 64 px: cells of 8 px, centres at 4, 12, ..., 60; step 4 px


def rect_mask():
    m = np.zeros((64, 64), bool)
    m[16:40, 16:40] = True  # exactly cells 2..4 on both axes
    return m


def category(t, i, j):
    k = t.cells.index((i, j))
    return CATEGORIES[t.categories[k]], t.targets[k]


def test_categories_by_hand():
    t = grid_targets(rect_mask(), V8)
    # Centres 20, 28, 36 lie inside [16, 40).
    for i in (2, 3, 4):
        for j in (2, 3, 4):
            assert category(t, i, j) == ("inside", (0, 0))
    # Centre 12 + 4 = 16 enters the mask; all three moves land at depth 1, the smallest wins.
    assert category(t, 1, 3) == ("ring", (1, 0))
    assert category(t, 3, 1) == ("ring", (0, 1))
    assert category(t, 1, 1) == ("ring", (1, 1))  # only the diagonal reaches
    # Centre 44 − 4 = 40 is just outside [16, 40): not reachable, but within two steps (8 px).
    assert category(t, 5, 3) == ("hard_delete", None)
    assert category(t, 3, 5) == ("hard_delete", None)
    assert category(t, 1, 5) == ("hard_delete", None)
    # Centres 4 and 52 are more than two steps away.
    assert category(t, 0, 3) == ("far", None)
    assert category(t, 6, 3) == ("far", None)
    counts = np.bincount(t.categories, minlength=4)
    assert counts.tolist() == [9, 7, 9, 64 - 25]


def test_ring_prefers_the_deepest_destination():
    m = np.zeros((64, 64), bool)
    m[16:40, 14:40] = True  # left edge at 14: a move of +1 from centre 12 lands at depth 3
    m[10:16, 14:17] = True  # a thin spur reachable diagonally, at depth ≤ 1.5
    t = grid_targets(m, V8)
    assert category(t, 1, 3) == ("ring", (1, 0))


def test_quota_counts():
    q = {"inside": 0.4, "ring": 0.4, "hard_delete": 0.1, "far": 0.1}
    assert _quota_counts(12, q) == {"inside": 5, "ring": 5, "hard_delete": 1, "far": 1}
    assert _quota_counts(10, q) == {"inside": 4, "ring": 4, "hard_delete": 1, "far": 1}
    with pytest.raises(ValueError, match="unknown quota categories"):
        _quota_counts(3, {"outside": 1.0})


def test_sampling_meets_quotas_and_tops_up():
    t = grid_targets(rect_mask(), V8)
    rng = np.random.default_rng(0)
    idx = sample_points(t, rng, 12)
    cats = [CATEGORIES[t.categories[k]] for k in idx]
    assert [cats.count(c) for c in CATEGORIES] == [5, 5, 1, 1]
    assert len(set(idx)) == 12
    # Ask for more inside points than exist (9): the shortfall comes from the other pools.
    idx = sample_points(t, rng, 20, {"inside": 1.0})
    cats = [CATEGORIES[t.categories[k]] for k in idx]
    assert cats.count("inside") == 9 and len(idx) == 20 and len(set(idx)) == 20


def test_box_corner_targets_bring_corners_closest():
    rng = np.random.default_rng(1)
    box = (16 / 64, 16 / 64, 40 / 64, 40 / 64)
    for _ in range(20):
        jb = jittered_box(box, V8, rng)
        assert all(abs(a - b) <= 1.5 / 8 for a, b in zip(jb, box, strict=True))
    ex = refinement_example(rect_mask(), box, V8, np.random.default_rng(2))
    (ax, ay), (bx, by) = ex.box_ops
    x1, y1 = V8.apply_offset(ex.stage1.box[0], ex.stage1.box[1], ax, ay)
    x2, y2 = V8.apply_offset(ex.stage1.box[2], ex.stage1.box[3], bx, by)
    for got, want, start in ((x1, box[0], ex.stage1.box[0]), (y1, box[1], ex.stage1.box[1]),
                             (x2, box[2], ex.stage1.box[2]), (y2, box[3], ex.stage1.box[3])):
        assert abs(got - want) <= abs(start - want) + 1e-12
        assert abs(got - want) <= 1.5 / 8


def test_example_is_a_valid_dialogue_turn():
    ex = refinement_example(rect_mask(), (0.25, 0.25, 0.625, 0.625), V8,
                            np.random.default_rng(3))
    assert len(ex.stage1.points) == len(ex.seg_ops) == len(ex.categories) == 12
    for cat, op in zip(ex.categories, ex.seg_ops, strict=True):
        assert (op is None) == (cat in ("hard_delete", "far"))
    stage1 = serialize_answer([ex.stage1], vocab=V8)
    ref = parse_refinement(f"<answer>\n{ex.offset_line(V8)}\n</answer>", stage1, V8)
    assert ref.complete and ref.errors == []
