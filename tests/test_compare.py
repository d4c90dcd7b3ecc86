"""rl.compare: two evaluations' predictions paired row by row (and seed by seed)."""

import json

import pytest

from rl.compare import compare, main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(ious, referents, kinds):
    return [{"id": f"r{k}", "iou": iou, "referent": ref, "kind": kind}
            for k, (iou, ref, kind) in enumerate(zip(ious, referents, kinds, strict=True))]


KINDS = ["attribute", "attribute", "superlative", "none"]


def test_differences_by_hand(tmp_path, capsys):
    before = _write(tmp_path / "a.jsonl", _rows([0.5, 0.0, 1.0, 1.0], [True, False, True, None],
                                                KINDS))
    # after, rows in another order: the rows are matched by id, not by line
    after_rows = _rows([0.7, 0.4, 0.6, 0.0], [True, True, False, None], KINDS)
    after = _write(tmp_path / "b.jsonl", after_rows[::-1])
    res = {r["figure"]: r for r in main(["--before", before, "--after", after])}
    assert res["gIoU, all rows"]["difference"] == pytest.approx((0.2 + 0.4 - 0.4 - 1.0) / 4)
    assert res["gIoU, attribute"]["difference"] == pytest.approx(0.3)
    assert res["N-acc (no-target rows)"]["difference"] == pytest.approx(-1.0)
    ref = res["referent accuracy, single-target"]
    assert ref["rows"] == 3 and ref["before"] == pytest.approx(2 / 3)
    assert ref["difference"] == pytest.approx(0.0)  # +1 on r1, -1 on r2
    assert res["referent accuracy, superlative"]["difference"] == -1.0
    assert "| gIoU, attribute | 2 | 0.250 | 0.550 | +0.300" in capsys.readouterr().out


def test_identical_runs_are_not_distinguishable_and_seeds_pair(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows([0.5, 0.0, 1.0, 1.0], [True, False, True, None], KINDS))
    (same,) = [r for r in compare([a], [a]) if r["figure"] == "gIoU, all rows"]
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0]
    assert same["verdict"] == "not distinguishable"
    # two seeds: seed 0 after - before = (+0.1, +0.1, 0, 0), seed 1 = +0.3 on every row
    b0 = _write(tmp_path / "b0.jsonl", _rows([0.6, 0.1, 1.0, 1.0], [True] * 3 + [None], KINDS))
    a1 = _write(tmp_path / "a1.jsonl", _rows([0.0, 0.2, 0.4, 0.0], [True] * 3 + [None], KINDS))
    b1 = _write(tmp_path / "b1.jsonl", _rows([0.3, 0.5, 0.7, 0.3], [True] * 3 + [None], KINDS))
    (two,) = [r for r in compare([a, a1], [b0, b1]) if r["figure"] == "gIoU, all rows"]
    assert two["seeds"] == 2 and two["difference"] == pytest.approx((0.05 + 0.3) / 2)


def test_other_rows_or_counts_are_errors_that_name_the_file(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows([0.5, 0.0], [True, False], KINDS[:2]))
    other = _write(tmp_path / "other.jsonl", [{"id": "x", "iou": 0.1, "kind": "attribute"},
                                              {"id": "r1", "iou": 0.1, "kind": "attribute"}])
    with pytest.raises(ValueError, match="other.jsonl: not the rows of"):
        compare([a], [other])
    with pytest.raises(ValueError, match="one per seed"):
        compare([a, a], [a])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "r0", "iou": 0.5}\n{"id": "r1"}\n')
    with pytest.raises(SystemExit, match="bad.jsonl, line 2: expected"):
        main(["--before", str(bad), "--after", a])
    twice = _write(tmp_path / "twice.jsonl", [{"id": "r0", "iou": 0.1}, {"id": "r0", "iou": 0.2}])
    with pytest.raises(ValueError, match="twice.jsonl, line 2: id 'r0' appears twice"):
        compare([twice], [twice])
