import numpy as np
import pytest

from rl.metrics import (
    SampleScore,
    markdown_table,
    report,
    score_sample,
    summarize,
    summarize_per_instance,
)


def rect(y0, y1, x0, x1, size=8):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


GT = rect(0, 4, 0, 4)  # 16 px, box (0, 0, .5, .5)
BOX = [(0.0, 0.0, 0.5, 0.5)]


def test_perfect_half_empty_and_no_target():
    perfect = score_sample(GT, GT, None, BOX, BOX, True)
    half = score_sample(rect(0, 4, 2, 6), GT, None, [(0.25, 0, 0.75, 0.5)], BOX, True)
    empty = score_sample(np.zeros((8, 8), bool), GT, None, [], BOX, True)
    no_target = score_sample(np.zeros((8, 8), bool), np.zeros((8, 8), bool), None, [], [], True)
    assert perfect.iou == 1.0 and perfect.box_iou == 1.0
    assert half.iou == pytest.approx(8 / 24) and half.box_iou == pytest.approx(8 / 24)
    assert empty.iou == 0.0 and empty.box_iou == 0.0
    assert no_target.iou == 1.0 and no_target.box_iou is None
    s = summarize([perfect, half, empty, no_target])
    assert s["gIoU"] == pytest.approx((1 + 8 / 24 + 0 + 1) / 4)
    assert s["cIoU"] == pytest.approx((16 + 8) / (16 + 24 + 16))
    assert s["Acc@0.5"] == pytest.approx(1 / 3) and s["Acc@0.8"] == pytest.approx(1 / 3)
    assert s["no_target_accuracy"] == 1.0 and s["target_accuracy"] == pytest.approx(2 / 3)


def test_parse_failure_is_an_empty_prediction_and_counted():
    failed = score_sample(np.zeros((8, 8), bool), GT, None, [], BOX, parsed=False)
    s = summarize([failed])
    assert s["gIoU"] == 0.0 and s["parse_failures"] == 1 and s["samples"] == 1


def test_several_instances_use_unions_and_ignore_pixels():
    gt = rect(0, 4, 0, 4) | rect(4, 8, 4, 8)
    pred = rect(0, 4, 0, 4)
    s = score_sample(pred, gt, None, [(0, 0, .5, .5)], [(0, 0, .5, .5), (.5, .5, 1, 1)], True)
    assert s.iou == 0.5 and s.box_iou is None  # REC is for single-target samples
    ignore = rect(4, 8, 4, 8)
    assert score_sample(pred, gt, ignore, [], [(0, 0, 1, 1), (0, 0, 1, 1)], True).iou == 1.0


def test_box_from_the_mask_when_the_answer_has_none():
    s = score_sample(GT, GT, None, [None], BOX, True)
    assert s.box_iou == 1.0


def _s(inter, union, box, instance, num_gt=1, num_pred=1):
    return SampleScore(inter, union, num_gt, num_pred, box, True, "", instance)


def test_per_instance_averages_each_object_first():
    # Object a: two expressions (IoU 0.5 and 1.0, box IoU 0.6 and 0.9); object b: one (IoU 0).
    scores = [_s(50, 100, 0.6, "a"), _s(100, 100, 0.9, "a"), _s(0, 50, 0.3, "b")]
    per_expr = summarize(scores)
    assert per_expr["gIoU"] == pytest.approx(0.5) and per_expr["cIoU"] == pytest.approx(0.6)
    assert per_expr["Acc@0.5"] == pytest.approx(2 / 3)
    assert per_expr["Acc@0.8"] == pytest.approx(1 / 3)
    per_inst = summarize_per_instance(scores)
    assert per_inst["instances"] == 2
    assert per_inst["gIoU"] == pytest.approx(0.375)  # (0.75 + 0) / 2
    assert per_inst["cIoU"] == pytest.approx(0.5)  # (75 + 0) / (100 + 50)
    assert per_inst["Acc@0.5"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert per_inst["Acc@0.8"] == pytest.approx(0.25)  # (0.5 + 0) / 2


def test_report_per_dataset_and_split_and_its_table():
    scores = [_s(50, 100, 0.6, "a"), _s(100, 100, 0.9, "a"), _s(0, 50, 0.3, "b"),
              _s(0, 0, None, "c", num_gt=0, num_pred=0),  # a correct empty answer
              SampleScore(0, 40, 2, 0, None, False, "", "d")]  # parse failure on 2 targets
    names = ["refcoco/testA"] * 3 + ["grefcoco/val"] * 2
    res = report(scores, names)
    assert list(res) == ["refcoco/testA", "grefcoco/val"]
    assert "per_instance" in res["refcoco/testA"] and "per_instance" not in res["grefcoco/val"]
    g = res["grefcoco/val"]["per_expression"]
    assert g["samples"] == 2 and g["gIoU"] == pytest.approx(0.5) and g["cIoU"] == 0.0
    assert g["no_target_samples"] == 1 and g["no_target_accuracy"] == 1.0
    assert g["target_accuracy"] == 0.0 and g["parse_failures"] == 1 and g["Acc@0.5"] is None
    table = markdown_table(res, "runs/x")
    assert table.startswith("Model: `runs/x`")
    # Per expression, gIoU, cIoU and Acc@0.5 carry their 95 % bootstrap intervals.
    iv = res["refcoco/testA"]["per_expression"]["intervals"]
    assert iv["gIoU"][0] <= 0.5 <= iv["gIoU"][1] and iv["cIoU"][0] <= 0.6 <= iv["cIoU"][1]

    def cell(v, key):
        return f"{v} [{100 * iv[key][0]:.1f}, {100 * iv[key][1]:.1f}]"

    assert (f"| refcoco/testA (per expression) | 3 | {cell('50.0', 'gIoU')} | "
            f"{cell('60.0', 'cIoU')} | {cell('66.7', 'Acc@0.5')} | 33.3 |") in table
    assert "| refcoco/testA (per instance: 2 objects) | 2 | 37.5 | 50.0 | 50.0 | 25.0 |" in table
    iv = res["grefcoco/val"]["per_expression"]["intervals"]
    assert (f"| grefcoco/val (per expression) | 2 | {cell('50.0', 'gIoU')} | "
            f"{cell('0.0', 'cIoU')} | – | – | 100.0 | 0.0 | 1 | 1 |") in table
    with pytest.raises(ValueError, match="3 dataset names for 5 scores"):
        report(scores, names[:3])


# ---- reading: referent accuracy, intervals ------------------------------------------------

def _three_objects():
    """Three 10x10 objects side by side in a 10x40 frame: columns 0-9, 15-24, 30-39."""
    objs = np.zeros((3, 10, 40), dtype=bool)
    objs[0, :, 0:10] = objs[1, :, 15:25] = objs[2, :, 30:40] = True
    return objs


def _referent(pred, targets, objs=None):
    from rl.metrics import score_referents

    objs = _three_objects() if objs is None else objs
    gt = np.any(objs[targets], axis=0)
    s = score_sample(pred, gt, None, [], [(0, 0, 1, 1)] * len(targets), True)
    return score_referents(s, pred, [pred], objs, targets)


def test_a_prediction_on_a_distractor_scores_zero_referent():
    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 30:40] = True  # exactly the third object
    s = _referent(pred, [0])
    assert s.referent is False and s.num_objects == 3
    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 0:10] = True
    assert _referent(pred, [0]).referent is True


def test_a_prediction_over_two_objects_counts_for_the_larger_overlap():
    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 5:25] = True  # 50 pixels of object 0, 100 of object 1
    assert _referent(pred, [1]).referent is True
    assert _referent(pred, [0]).referent is False
    tie = np.zeros((10, 40), dtype=bool)
    tie[:, 5:20] = True  # 50 and 50: picks neither
    assert _referent(tie, [0]).referent is False and _referent(tie, [1]).referent is False
    assert _referent(np.zeros((10, 40), bool), [0]).referent is False  # nothing predicted


def test_multi_target_recall_and_precision_by_hand():
    from rl.metrics import reading, score_referents

    objs = _three_objects()
    on0, on2 = np.zeros((10, 40), bool), np.zeros((10, 40), bool)
    on0[:, 0:10], on2[:, 30:40] = True, True
    union = on0 | on2
    s = score_sample(union, objs[0] | objs[1], None, [(0, 0, 1, 1)] * 2,
                     [(0, 0, 1, 1)] * 2, True, kind="multi")
    score_referents(s, union, [on0, on2], objs, [0, 1])
    assert s.targets_found == 1 and s.instances_on_target == 1
    r = reading([s])
    assert r["multi_instance_recall"] == 0.5 and r["multi_instance_precision"] == 0.5


def test_reading_summary_per_kind_count_and_chance():
    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 0:10] = True
    hit = _referent(pred, [0])
    hit.kind = "attribute"
    miss = _referent(pred, [2])
    miss.kind = "relation"
    two = _referent(pred, [0], _three_objects()[:2])
    two.kind = "attribute"
    m = summarize([hit, miss, two])
    assert m["referent_accuracy"] == 2 / 3 and m["referent_samples"] == 3
    assert np.isclose(m["chance"], (1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert m["referent_by_kind"]["attribute"]["referent_accuracy"] == 1.0
    assert m["referent_by_kind"]["relation"]["referent_accuracy"] == 0.0
    assert m["referent_by_objects"]["2"] == {"samples": 1, "referent_accuracy": 1.0,
                                             "chance": 0.5, "picked_share": 1.0,
                                             "referent_accuracy_picked": 1.0,
                                             "chance_picked": 0.5}
    lo, hi = m["referent_interval"]
    assert 0 <= lo <= 2 / 3 <= hi <= 1
    assert "referent_by_superlative" not in m  # no superlative row, no word table


def test_referent_accuracy_per_superlative_word():
    from rl.evaluate import superlative_word
    from rl.metrics import reading_table

    assert superlative_word("the smallest star") == "smallest"
    assert superlative_word("the leftmost red shape") == "leftmost"
    assert superlative_word("the red star") == "" and superlative_word("smallest") == ""
    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 0:10] = True  # on object 0
    rows = []
    for word, target in (("smallest", 0), ("smallest", 2), ("largest", 0)):
        s = _referent(pred, [target])
        s.kind, s.superlative = "superlative", word
        rows.append(s)
    m = summarize(rows)
    assert list(m["referent_by_superlative"]) == ["largest", "smallest"]
    assert m["referent_by_superlative"]["smallest"]["referent_accuracy"] == 0.5
    assert m["referent_by_superlative"]["smallest"]["samples"] == 2
    assert m["referent_by_superlative"]["largest"]["referent_accuracy"] == 1.0
    assert "| superlative smallest | 2 | 50.0 |" in reading_table({"eval": {"per_expression": m}})


def test_bootstrap_interval_covers_the_mean_and_narrows_with_samples():
    from rl.metrics import bootstrap_interval

    rng = np.random.default_rng(0)
    small = rng.random(50)
    big = rng.random(5000)
    lo, hi = bootstrap_interval(small)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_interval(big)
    assert bhi - blo < (hi - lo) / 5
    assert bootstrap_interval([0.5, 0.5, 0.5]) == [0.5, 0.5]
    assert bootstrap_interval([]) is None
    # ratio of sums (cIoU): resampled as pairs
    lo, hi = bootstrap_interval([1, 1, 1, 1], [2, 2, 2, 2])
    assert lo == hi == 0.5


def test_reading_table_lists_kinds_and_counts():
    from rl.metrics import reading_table, report

    pred = np.zeros((10, 40), dtype=bool)
    pred[:, 0:10] = True
    a = _referent(pred, [0])
    a.kind = "attribute"
    table = reading_table(report([a], ["synthetic/val"]))
    assert "kind attribute" in table and "objects 3" in table and "33.3" in table
    # picked an object, accuracy and chance where picked
    assert "| synthetic/val | kind attribute | 1 | 100.0 | 33.3 | | 100.0 | 100.0 | 33.3 |" \
        in table
    assert reading_table(report([score_sample(pred, pred, None, [], [], True)], ["x"])) == ""


def test_paired_difference_verdicts():
    from rl.metrics import paired_difference

    before = np.linspace(0.0, 1.0, 200)
    up = paired_difference(before + 0.1, before)
    assert np.isclose(up["difference"], 0.1) and up["verdict"] == "better"
    assert up["interval"][0] > 0 and up["samples"] == 200
    noise = np.random.default_rng(0).normal(0, 0.2, 200)
    same = paired_difference(before + noise - noise.mean(), before)
    assert same["verdict"] == "not distinguishable"
    assert paired_difference(before - 0.05, before)["verdict"] == "worse"
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1.0], [1.0, 2.0])


def test_seeded_bootstrap_by_hand():
    """Two seeds x two scenes, three draws with a fixed resampling seed, worked out here: the
    scenes are resampled once per draw for both seeds, then the seeds."""
    from rl.metrics import seeded_interval

    v = np.array([[1.0, 0.0],     # seed 0: scene means 1 / 0
                  [0.0, 0.0]])    # seed 1: always 0
    rng = np.random.default_rng(7)
    scenes = rng.integers(0, 2, (3, 2))
    seeds = rng.integers(0, 2, (3, 2))
    stats = []
    for r in range(3):
        per_seed = [sum(v[s, i] for i in scenes[r]) / 2 for s in (0, 1)]
        stats.append(sum(per_seed[k] for k in seeds[r]) / 2)
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert seeded_interval(v, n_resamples=3, seed=7) == [lo, hi]
    assert seeded_interval([[0.3, 0.3], [0.3, 0.3]]) == [0.3, 0.3]


def test_seeded_difference_reduces_to_the_paired_one_and_contains_zero_for_equal_runs():
    from rl.metrics import (
        bootstrap_interval,
        paired_difference,
        seeded_interval,
        seeded_paired_difference,
    )

    rng = np.random.default_rng(3)
    a, b = rng.random(80), rng.random(80)
    one = seeded_paired_difference([a], [b])
    assert one["interval"] == paired_difference(a, b)["interval"] and one["seeds"] == 1
    assert seeded_interval([a]) == bootstrap_interval(a)
    runs = rng.random((3, 80))
    same = seeded_paired_difference(runs, runs.copy())
    assert same["interval"] == [0.0, 0.0] and same["verdict"] == "not distinguishable"
    # A seed that differs widely widens the interval beyond what the scenes alone give.
    shifted = runs + np.array([[0.0], [0.3], [-0.3]])
    wide = seeded_paired_difference(shifted, runs)
    assert wide["interval"][0] < -0.05 < 0.05 < wide["interval"][1]
    assert wide["verdict"] == "not distinguishable" and wide["seeds"] == 3
    with pytest.raises(ValueError, match="seeds x samples"):
        seeded_paired_difference(runs, runs[:2])


def test_referent_accuracy_where_an_object_was_picked_by_hand():
    # Three rows of a 3-object scene and one of a 2-object scene: a hit, a distractor, a
    # declined answer (nothing predicted), a tie (picks neither). Accuracy over all rows 1/4;
    # over the two rows that picked an object 1/2, with those rows' chance (1/3 + 1/3) / 2.
    from rl.metrics import reading

    on0, on2, none = (np.zeros((10, 40), dtype=bool) for _ in range(3))
    on0[:, 0:10], on2[:, 30:40] = True, True
    tie = np.zeros((10, 40), dtype=bool)
    tie[:, 5:20] = True
    rows = [_referent(on0, [0]), _referent(on2, [0]), _referent(none, [1]),
            _referent(tie, [1], _three_objects()[:2])]
    assert [s.picked for s in rows] == [True, True, False, False]
    m = reading(rows)
    assert m["referent_accuracy"] == 0.25 and m["picked_share"] == 0.5
    assert m["referent_accuracy_picked"] == 0.5
    assert np.isclose(m["chance_picked"], 1 / 3)
    assert np.isclose(m["chance"], (1 / 3 * 3 + 1 / 2) / 4)
    # accuracy minus chance row by row over the picked rows: (1 - 1/3, 0 - 1/3), mean 1/6
    over = m["picked_minus_chance"]
    assert np.isclose(over["difference"], 1 / 6) and over["samples"] == 2
    lo, hi = over["interval"]
    assert np.isclose(lo, -1 / 3) and np.isclose(hi, 2 / 3)  # all-miss .. all-hit resamples
    nothing = reading([rows[2]])
    assert nothing["picked_share"] == 0.0 and nothing["referent_accuracy_picked"] is None
    assert "picked_minus_chance" not in nothing


def test_minus_rate_by_hand():
    from rl.metrics import minus_rate

    d = minus_rate([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.25])
    assert d["rate"] == 0.375 and d["difference"] == 0.125 and d["samples"] == 4
    lo, hi = d["interval"]
    assert lo <= 0.125 <= hi
    assert minus_rate([], [])["difference"] is None
    with pytest.raises(ValueError, match="3 hits against 2 rates"):
        minus_rate([1, 0, 1], [0.5, 0.5])
