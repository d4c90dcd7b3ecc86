"""Learning curves: points, plot, and the validation split's own seed."""

import pytest

from rl.config import load_config
from rl.curves import CurveCallback, curve_point, plot_curves
from rl.pipeline import SPLIT_SEEDS, records


def test_curve_point_keeps_the_reading_figures():
    m = {"gIoU": 0.5, "referent_accuracy": 0.4, "chance": 0.3, "samples": 9,
         "referent_by_kind": {"attribute": {"samples": 3, "referent_accuracy": 0.6,
                                            "chance": 0.3}}}
    p = curve_point("sft", 100, m)
    assert p["stage"] == "sft" and p["step"] == 100 and p["referent_accuracy"] == 0.4
    assert p["referent_by_kind"] == {"attribute": 0.6} and p["Acc@0.5"] is None


def test_plot_lays_stages_end_to_end(tmp_path):
    points = [curve_point(s, k, {"gIoU": 0.1 * k, "referent_accuracy": 0.2, "chance": 0.3})
              for s, k in (("sft", 1), ("sft", 2), ("grpo_stage1", 1))]
    path = plot_curves(points, tmp_path / "c.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert plot_curves([], tmp_path / "none.png") is None


def test_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="curve_every"):
        CurveCallback([], None, None, 0, tmp_path / "c.json")


def test_validation_scenes_are_neither_training_nor_held_out():
    cfg = load_config(overrides={"data": {"n_train": 5, "n_eval": 5},
                                 "eval": {"curve_samples": 5}})
    ids = {split: {r.id for r in records(cfg, split)} for split in SPLIT_SEEDS}
    assert all(len(v) == 5 for v in ids.values())
    assert not (ids["train"] & ids["eval"] or ids["train"] & ids["validation"]
                or ids["eval"] & ids["validation"])
    with pytest.raises(ValueError, match="unknown split"):
        records(cfg, "test")


def test_training_scenes_may_have_their_own_object_counts():
    cfg = load_config(overrides={"data": {"n_train": 30, "n_eval": 30, "objects": [2, 4],
                                          "train_objects": [1, 1],
                                          "kinds": {"attribute": 1.0, "none": 0.5}},
                                 "eval": {"curve_samples": 30}})
    assert {r.extra["num_objects"] for r in records(cfg, "train")} == {1}
    assert {r.extra["num_objects"] for r in records(cfg, "eval")} >= {2, 3}
    assert min(r.extra["num_objects"] for r in records(cfg, "validation")) >= 2
