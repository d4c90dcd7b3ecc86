import json

import numpy as np
import pytest

from rewards.solution import (
    SolutionCache,
    SolutionError,
    encode_mask,
    make_solution,
    parse_solution,
)


def square(y0, y1, x0, x1, h=8, w=8):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_round_trip_and_tight_box():
    sol = make_solution(8, 8, [square(0, 4, 2, 6)])
    gt = parse_solution(json.dumps(sol))
    assert gt.width == gt.height == 8 and len(gt) == 1
    assert gt.boxes_norm.tolist() == [[0.25, 0.0, 0.75, 0.5]]  # tight box on pixel edges
    assert (gt.masks[0] == square(0, 4, 2, 6)).all() and gt.areas_norm.tolist() == [0.25]
    assert len(parse_solution({"size": [8, 8], "instances": []})) == 0


def test_given_box_and_uncompressed_counts():
    counts = [0, 64]  # all foreground, column-major runs
    sol = {"size": [8, 8], "instances": [{"box": [0, 0, 8, 8],
                                          "mask": {"size": [8, 8], "counts": counts}}]}
    gt = parse_solution(sol)
    assert gt.masks[0].all() and gt.boxes_norm.tolist() == [[0, 0, 1, 1]]


GOOD_MASK = encode_mask(square(0, 4, 0, 4))


@pytest.mark.parametrize("value, message", [
    ("{not json", r"solution row 3: \(json\): not valid JSON"),
    ([], r"\(value\): expected a dict"),
    ({"size": [8], "instances": []}, r"size: expected \[W, H\]"),
    ({"size": [8, 8]}, "instances: expected a list"),
    ({"size": [8, 8], "instances": [{"box": [0, 0, 1, 1]}]},
     r"instances\[0\].mask: missing"),
    ({"size": [8, 8], "instances": [{"mask": {"size": [4, 4], "counts": "a"}}]},
     r"instances\[0\].mask.size: expected \[H, W\] = \[8, 8\]"),
    ({"size": [8, 8], "instances": [{"mask": {"size": [8, 8], "counts": [1, 2]}}]},
     r"instances\[0\].mask.counts: uncompressed counts"),
    ({"size": [8, 8], "instances": [{"mask": GOOD_MASK, "box": [0, 0, 9, 4]}]},
     r"instances\[0\].box: \[0, 0, 9, 4\] is not inside the 8x8 image"),
    ({"size": [8, 8], "instances": [{"mask": GOOD_MASK, "box": "0 0 4 4"}]},
     r"instances\[0\].box: expected \[x1, y1, x2, y2\]"),
    ({"size": [8, 8], "instances": [{"mask": encode_mask(np.zeros((8, 8), bool))}]},
     "empty mask and no box"),
])
def test_bad_ground_truth_names_row_and_field(value, message):
    with pytest.raises(SolutionError, match=message):
        parse_solution(value, row=3)


def test_cache_parses_each_value_once():
    cache = SolutionCache(max_items=2)
    sol = make_solution(8, 8, [square(0, 4, 0, 4)])
    a = cache.get(sol)
    assert cache.get(sol) is a
    text = json.dumps(sol)
    assert cache.get(text) is cache.get(json.dumps(sol))


@pytest.mark.parametrize("counts", ["", "!!!", "zzzzzzzz", 5])
def test_corrupt_rle_strings_are_refused(counts):
    sol = {"size": [8, 8], "instances": [{"mask": {"size": [8, 8], "counts": counts}}]}
    with pytest.raises(SolutionError, match=r"instances\[0\].mask.counts"):
        parse_solution(sol, row=0)
