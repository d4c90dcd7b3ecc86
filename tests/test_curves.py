"""Learning curves: points, plot, and the validation split's own seed."""

import json
from pathlib import Path

import pytest
from small_recipe import small

from rl.config import load_config
from rl.curves import CurveCallback, curve_point, plot_curves
from rl.pipeline import SPLIT_SEEDS, records

ROOT = Path(__file__).resolve().parents[1]


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
    ids = {split: {r.id for r in records(cfg, split)} for split in ("train", "eval",
                                                                        "validation")}
    assert set(SPLIT_SEEDS) == {"train", "eval", "validation", "curriculum"}
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


def test_curriculum_dataset_puts_the_lone_shapes_first_then_passes_over_the_rest():
    from PIL import Image

    from rl.config import SFTStageConfig
    from rl.pipeline import curriculum_dataset, curriculum_samples

    def row(tag):
        return {"image": Image.new("RGB", (4, 4)), "prompt": [{"role": "user", "content": tag}],
                "completion": [{"role": "assistant", "content": tag}], "extra": 1}

    sft = SFTStageConfig(max_steps=5, curriculum_steps=2, batch_size=2)
    assert curriculum_samples(sft) == 4
    first = [row(f"c{k}") for k in range(5)]
    rest = [row(f"r{k}") for k in range(4)]
    ds, extra = curriculum_dataset(first, rest, sft, seed=0)
    tags = [r["prompt"][0]["content"] for r in ds]
    assert extra == {"train_sampling_strategy": "sequential"}
    assert tags[:4] == ["c0", "c1", "c2", "c3"] and len(tags) == 4 + 3 * 2
    assert sorted(tags[4:8]) == ["r0", "r1", "r2", "r3"]  # one whole pass, then the next
    assert ds.column_names == ["image", "prompt", "completion"]
    with pytest.raises(ValueError, match="curriculum has 3 samples for 4"):
        curriculum_dataset(first[:3], rest, sft, seed=0)
    # With curriculum_scenes, fewer scenes fill the curriculum's steps in whole passes.
    sft = SFTStageConfig(max_steps=5, curriculum_steps=3, batch_size=2, curriculum_scenes=2)
    ds, _ = curriculum_dataset(first, rest, sft, seed=0)
    tags = [r["prompt"][0]["content"] for r in ds]
    assert [sorted(tags[k:k + 2]) for k in (0, 2, 4)] == [["c0", "c1"]] * 3
    assert sorted(tags[6:10]) == ["r0", "r1", "r2", "r3"] and len(tags) == 6 + 2 * 2



def test_curriculum_dataset_renders_each_distinct_row_once_as_the_trainer_would(tiny_model_dirs):
    """Rendered before the rows are repeated into the training order: the same samples as
    rendering the ordered dataset (what the trainer did before), row for row."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    from rl.config import SFTStageConfig
    from rl.pipeline import curriculum_dataset
    from rl.train_sft import render_conversations

    proc = AutoProcessor.from_pretrained(tiny_model_dirs["tied"])

    def row(tag, shade):
        return {"image": Image.new("RGB", (28, 28), (shade, 0, 0)),
                "prompt": [{"role": "user", "content": f"find the {tag}"}],
                "completion": [{"role": "assistant", "content": f"<grid_0_{shade % 32}>"}]}

    first = [row(f"c{k}", k) for k in range(4)]
    rest = [row(f"r{k}", 10 + k) for k in range(3)]
    sft = SFTStageConfig(max_steps=6, curriculum_steps=2, batch_size=2, curriculum_scenes=2)
    before, _ = curriculum_dataset(first, rest, sft, seed=3)
    before = render_conversations(before, proc)
    after, _ = curriculum_dataset(first, rest, sft, seed=3, processor=proc)
    assert len(after) == len(before) == 12
    assert isinstance(after[0]["prompt"], str) and "find the c" in after[0]["prompt"]
    for a, b in zip(after, before):
        assert (a["prompt"], a["completion"]) == (b["prompt"], b["completion"])
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    assert render_conversations(after, proc)[:] == after[:]  # the trainer renders nothing more

def test_curriculum_scenes_have_their_own_seed_and_object_count():
    cfg = load_config(overrides={"data": {"n_train": 8}, "sft": {"curriculum_steps": 2,
                                                                  "batch_size": 3}})
    recs = records(cfg, "curriculum")
    assert len(recs) == 6 and {r.extra["num_objects"] for r in recs} == {1}
    assert not {r.id for r in recs} & {r.id for r in records(cfg, "train")}
    assert {r.kind for r in recs} <= {"attribute", "superlative", "none"}


def test_curriculum_restart_is_a_pass_of_its_own_then_a_new_schedule(tmp_path):
    # sft.curriculum_restart: the curriculum's steps under their own schedule, then the
    # training scenes under a new one; the cold start's history and curves count on across.
    from rl.pipeline import Pipeline

    cfg = load_config(ROOT / "configs" / "default.yaml", small({
        "output_dir": str(tmp_path), "logging_steps": 1, "progress_bars": False,
        "report_to": [], "model": {"grid_size": 8},
        "data": {"n_train": 8, "n_eval": 4, "curriculum_objects": [2, 2],
                 "curriculum_kinds": {"attribute": 1.0}, "curriculum_distractors": "colour"},
        "sft": {"max_steps": 5, "curriculum_steps": 3, "curriculum_scenes": 6,
                "curriculum_restart": True, "batch_size": 2, "warmup_steps": 1,
                "policy_refinement_steps": 0, "collate_cache": 0},
        "grpo_stage1": {"enabled": False}, "grpo_stage2": {"enabled": False},
        "eval": {"enabled": False, "curve_every": 2, "curve_samples": 2}}))
    Pipeline(cfg).run()
    hist = json.loads((tmp_path / "sft" / "stage.json").read_text())["log_history"]
    rates = {e["step"]: e["learning_rate"] for e in hist if "learning_rate" in e}
    assert sorted(rates) == [1, 2, 3, 4, 5]
    # The training scenes' steps 4, 5 repeat the schedule's start (warm-up, then the peak).
    assert [rates[4], rates[5]] == [rates[1], rates[2]] and rates[5] > rates[3]
    assert sum("train_runtime" in e for e in hist) == 2
    steps = [p["step"] for p in json.loads((tmp_path / "curves.json").read_text())]
    # Every 2 steps and at each pass's end: the curriculum's 2 and 3, the training scenes' 2 = 5.
    assert steps == [2, 3, 5]
    with pytest.raises(ValueError, match="leaves no step"):
        bad = load_config(ROOT / "configs" / "default.yaml", small({
            "output_dir": str(tmp_path / "bad"), "report_to": [],
            "data": {"n_train": 4, "n_eval": 2}, "eval": {"enabled": False, "curve_every": 0},
            "sft": {"max_steps": 3, "curriculum_steps": 3, "curriculum_restart": True}}))
        Pipeline(bad).run()
