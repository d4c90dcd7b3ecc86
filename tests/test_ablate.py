"""The ablation runner: a row per variant under the full model's, shared stages trained once."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from small_recipe import small

from rl.ablate import STAGES, differences, main, stage_key
from rl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ABL = ROOT / "configs" / "ablations"
TASK = small({"logging_steps": 1, "progress_bars": False, "data": {"n_train": 48, "n_eval": 6},
        "sft": {"max_steps": 6, "policy_refinement_steps": 2, "policy_refinement_records": 8},
        "grpo_stage1": {"max_steps": 2, "n_prompts": 8, "logging_steps": 1},
        "grpo_stage2": {"max_steps": 2, "n_prompts": 8, "regenerate_every": None,
                        "logging_steps": 1},
        "eval": {"pictures": 1, "max_new_tokens": 12}})


def test_stage_keys_ignore_output_and_later_stages():
    full = load_config(ROOT / "configs" / "default.yaml")
    s2 = load_config(ABL / "stage2_no_mask_gain.yaml")
    s1 = load_config(ABL / "stage1_no_box.yaml")
    assert stage_key(full, "sft") == stage_key(s1, "sft") == stage_key(s2, "sft")
    assert stage_key(full, "grpo_stage1") == stage_key(s2, "grpo_stage1")
    assert stage_key(full, "grpo_stage1") != stage_key(s1, "grpo_stage1")
    assert stage_key(full, "grpo_stage2") != stage_key(s2, "grpo_stage2")
    assert differences(s1, full) == ["grpo_stage1.rewards.box=0.0"]
    # How often a stage logs, and the rounds curve after stage 2, change no earlier stage.
    quiet = load_config(ROOT / "configs" / "default.yaml",
                        {"grpo_stage1": {"logging_steps": 1}, "eval": {"rounds_curve": 0}})
    assert stage_key(quiet, "grpo_stage1") == stage_key(full, "grpo_stage1")
    assert stage_key(quiet, "grpo_stage2") != stage_key(full, "grpo_stage2")  # rounds_curve
    # The fixed-prompt rewards are measured inside their own GRPO stage: changing stage 2's
    # changes only stage 2's key, stage 1's (and how many samples) neither the cold start's.
    fixed2 = load_config(ROOT / "configs" / "default.yaml",
                         {"eval": {"refinement_reward_prompts": 0}})
    assert stage_key(fixed2, "grpo_stage1") == stage_key(full, "grpo_stage1")
    assert stage_key(fixed2, "grpo_stage2") != stage_key(full, "grpo_stage2")
    fixed1 = load_config(ROOT / "configs" / "default.yaml",
                         {"eval": {"reward_prompts": 8, "reward_samples": 4}})
    assert stage_key(fixed1, "sft") == stage_key(full, "sft")
    assert stage_key(fixed1, "untrained") == stage_key(full, "untrained")
    assert stage_key(fixed1, "grpo_stage1") != stage_key(full, "grpo_stage1")
    # Every other evaluation setting changes every stage's evaluation.
    fewer = load_config(ROOT / "configs" / "default.yaml", {"eval": {"max_new_tokens": 20}})
    assert all(stage_key(fewer, s) != stage_key(full, s) for s in ("untrained", *STAGES))
    # Refinement rounds only change the evaluation after stage 2: grid only and grid with
    # offsets share their cold start and stage 1.
    g32 = load_config(ROOT / "configs" / "grid_study" / "grid_32.yaml")
    g32o = load_config(ROOT / "configs" / "grid_study" / "grid_32_offsets.yaml")
    assert stage_key(g32, "grpo_stage1") == stage_key(g32o, "grpo_stage1")
    g16 = load_config(ROOT / "configs" / "grid_study" / "grid_16.yaml")
    assert stage_key(g32, "sft") == stage_key(full, "sft")  # the default is grid 32
    assert stage_key(g16, "sft") != stage_key(full, "sft")


def test_every_ablation_file_changes_one_thing(capsys):
    main([str(p) for p in sorted(ABL.glob("*.yaml"))] + ["--dry-run"])
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("[ablate]") and "stage trainings" not in ln]
    assert lines[0].split()[1] == "full" and len(lines) == 1 + len(list(ABL.glob("*.yaml")))
    assert all(ln.count("=") == 1 for ln in lines[1:])


def test_runner_trains_each_variant_and_writes_one_table(tmp_path, monkeypatch, capsys):
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump(TASK))
    out = tmp_path / "abl"
    results = main([str(ABL / "stage1_no_box.yaml"), str(ABL / "stage2_no_mask_gain.yaml"),
                    "--task", str(task), "--out", str(out)])
    assert [r["name"] for r in results] == ["full", "stage1_no_box", "stage2_no_mask_gain"]
    assert [r["reused"] for r in results] == [[], ["sft"], ["sft", "grpo_stage1"]]
    # Shared stages are the same files, not retrained.
    a = out / "full" / "sft" / "model.safetensors"
    assert a.stat().st_ino == (out / "stage1_no_box" / "sft" / "model.safetensors").stat().st_ino
    assert (out / "stage1_no_box" / "grpo_stage1" / "model.safetensors").stat().st_ino != \
        (out / "full" / "grpo_stage1" / "model.safetensors").stat().st_ino
    # ... and so is the starting checkpoint (its tower is not pre-trained again).
    init = out / "full" / "model_init" / "model.safetensors"
    assert init.stat().st_ino == \
        (out / "stage2_no_mask_gain" / "model_init" / "model.safetensors").stat().st_ino
    assert not (out / "stage1_no_box" / "base").exists()
    rows = json.loads((out / "table.json").read_text())
    assert [r["variant"] for r in rows] == ["full", "stage1_no_box", "stage2_no_mask_gain"]
    assert rows[0]["changes"] == [] and rows[0]["delta_gIoU"] == 0.0
    assert rows[2]["changes"] == ["grpo_stage2.rewards.mask_gain=0.0"]
    assert all(r["final_stage"] == "grpo_stage2" and r["samples"] == 6 for r in rows)
    # The variants' configs really ran: the dropped term is not among the logged rewards.
    hist = json.loads((out / "stage2_no_mask_gain" / "grpo_stage2" / "stage.json").read_text())
    logged = {k for e in hist["log_history"] for k in e if k.startswith("rewards/")}
    assert logged and not any("mask_gain" in k for k in logged)
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 3 and table[2].startswith("| full | (full model) |")
    # Each row gives its gIoU interval, and each variant its paired interval against the full
    # run over the same held-out samples (stage.json keeps the per-sample IoUs).
    assert all(len(r["gIoU_interval"]) == 2 for r in rows)
    assert all(len(r["delta_gIoU_interval"]) == 2 and r["verdict"] for r in rows[1:])
    assert "gIoU [95 %]" in table[0] and " [" in table[3]
    # What each reward variant changed in the policy its stage trains: that stage's sampled
    # completions on the held-out prompts (6 here), scored by the full model's terms, paired
    # with the full model's own.
    assert set(rows[0]["sampled_reward"]) == {"grpo_stage1", "grpo_stage2"}
    for row, stage in ((rows[1], "grpo_stage1"), (rows[2], "grpo_stage2")):
        scored = row["sampled_reward"][stage]
        assert scored["prompts"] == 6 and scored["full"] == rows[0]["sampled_reward"][stage]["mean"]
        assert scored["difference"] == pytest.approx(scored["mean"] - scored["full"])
        assert len(scored["interval"]) == 2 and scored["verdict"]
    assert "sampled reward, the full model's terms" in table[0]
    assert "stage 1: " in table[3] and "stage 2: " in table[4]
    assert (out / "rewards_grpo_stage1.png").is_file()
    assert yaml.safe_load((out / "full" / "recipe.yaml").read_text())["data"]["n_train"] == 48
    # A dry run counts what a real one would train: with the finished folder to reuse,
    # nothing of these three, and of a new stage-2 variant only its stage 2.
    capsys.readouterr()
    main([str(ABL / "stage1_no_box.yaml"), str(ABL / "stage2_no_mask_gain.yaml"), "--task",
          str(task), "--out", str(tmp_path / "dry"), "--reuse", str(out), "--dry-run"])
    assert ": 0 stage trainings (stages with identical recipes trained once; 6 finished in " \
        "--out or --reuse, reused)" in capsys.readouterr().out
    main([str(ABL / "stage2_no_point_refine.yaml"), "--task", str(task), "--out",
          str(tmp_path / "dry"), "--reuse", str(out), "--dry-run"])
    assert "2 variants x 1 seed(s): 1 stage trainings (stages with identical recipes trained " \
        "once; 3 finished in --out or --reuse, reused)" in capsys.readouterr().out
    assert not (tmp_path / "dry").exists()
    # A later invocation (another output folder) reuses every finished run whole: nothing
    # retrains or re-evaluates, and the earlier run's own files are not written through.
    import rl.ablate

    def no_run(cfg, launcher):
        raise AssertionError(f"{cfg.output_dir} ran again")

    monkeypatch.setattr(rl.ablate, "run_variant", no_run)
    before = (out / "full" / "config.json").read_text()
    again = main([str(ABL / "stage1_no_box.yaml"), str(ABL / "stage2_no_mask_gain.yaml"),
                  "--task", str(task), "--out", str(tmp_path / "again"), "--reuse", str(out)])
    assert [r["reused"] for r in again] == [list(STAGES)] * 3
    def numbers(table):  # what was measured, not how it was got
        return [{k: v for k, v in r.items() if k not in ("reused", "seconds")} for r in table]

    # Each row says what it cost this invocation (wall seconds, all seeds).
    assert all(r["seconds"] > 0 for r in rows)

    assert numbers(json.loads((tmp_path / "again" / "table.json").read_text())) == numbers(rows)
    assert (out / "full" / "config.json").read_text() == before
    mine = json.loads((tmp_path / "again" / "full" / "config.json").read_text())
    assert Path(mine["output_dir"]) == tmp_path / "again" / "full"
    assert (tmp_path / "again" / "full" / "grpo_stage2" / "stage.json").stat().st_ino == \
        (out / "full" / "grpo_stage2" / "stage.json").stat().st_ino


def test_reward_stage_names_the_stage_whose_rewards_a_variant_changes():
    from rl.ablate import reward_stage

    assert reward_stage(["grpo_stage2.rewards.mask_gain=0.0"]) == "grpo_stage2"
    assert reward_stage(["grpo_stage1.reward_params.box.x=1",
                         "grpo_stage1.rewards.box=0.0"]) == "grpo_stage1"
    assert reward_stage([]) is None  # the full model
    assert reward_stage(["model.grid_size=16"]) is None  # another vocabulary: not comparable
    assert reward_stage(["grpo_stage2.learning_rate=0.01"]) is None
    assert reward_stage(["grpo_stage1.rewards.box=0.0",
                         "grpo_stage2.rewards.mask_gain=0.0"]) is None  # two stages


def test_a_variant_without_base_needs_full(tmp_path):
    lone = tmp_path / "lone.yaml"
    lone.write_text("seed: 1\n")
    with pytest.raises(SystemExit, match="name the full model with --full"):
        main([str(lone), "--dry-run"])


def test_seeds_train_each_distinct_stage_once_per_seed(capsys):
    variants = [str(ABL / "stage1_no_box.yaml"), str(ABL / "stage2_no_mask_gain.yaml")]
    main(variants + ["--dry-run"])
    # full, no_box, no_mask_gain: one cold start, two stage-1 runs, three stage-2 runs.
    assert "3 variants x 1 seed(s): 6 stage trainings" in capsys.readouterr().out
    main(variants + ["--dry-run", "--seeds", "2"])
    assert "3 variants x 2 seed(s): 12 stage trainings" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--seeds"):
        main(variants + ["--dry-run", "--seeds", "0"])


def test_seeded_runs_share_stages_within_a_seed_only(tmp_path):
    from rl.ablate import seeded_runs

    runs = seeded_runs([("full", str(ABL.parent / "default.yaml")),
                        ("no_box", str(ABL / "stage1_no_box.yaml"))], {}, tmp_path, 2)
    assert [(n, c.seed, Path(c.output_dir).relative_to(tmp_path).as_posix())
            for n, _, c, _ in runs] == [("full", 0, "full/seed0"), ("full", 1, "full/seed1"),
                                        ("no_box", 0, "no_box/seed0"),
                                        ("no_box", 1, "no_box/seed1")]
    keys = [stage_key(c, "sft") for _, _, c, _ in runs]
    assert keys[0] == keys[2] and keys[1] == keys[3] and keys[0] != keys[1]
    assert all(f.seed == c.seed for _, _, c, f in runs)  # compared with the same seed's full


def _fake_run(root: Path, name: str, seed: int, ious: list[float]) -> dict:
    """A finished variant folder as the runner leaves it: metrics.json and the final stage's
    per-sample IoUs."""
    d = root / name / f"seed{seed}"
    (d / "grpo_stage2").mkdir(parents=True)
    (d / "grpo_stage2" / "stage.json").write_text(json.dumps({"sample_iou": ious}))
    g = sum(ious) / len(ious)
    m = {"gIoU": g, "cIoU": g, "Acc@0.5": 0.5, "Acc@0.8": 0.25, "samples": len(ious),
         "parse_failures": 0, "answer_tokens_per_instance": 7.0}
    return {"name": name, "dir": str(d), "seed": seed, "changes": [] if name == "full" else
            ["x=1"], "reused": [], "metrics": {"evaluation": {"grpo_stage2": m}}}


def test_table_over_seeds_gives_mean_sd_and_intervals(tmp_path):
    from rl.ablate import markdown, table_rows

    ious = {0: [0.2, 0.4, 0.6, 0.8], 1: [0.3, 0.5, 0.7, 0.9]}
    results = [_fake_run(tmp_path, "full", s, ious[s]) for s in (0, 1)] + \
              [_fake_run(tmp_path, "same", s, ious[s]) for s in (0, 1)]
    full, same = table_rows(results)
    assert full["seeds"] == [0, 1] and np.isclose(full["gIoU"], 0.55)
    assert np.isclose(full["gIoU_sd"], np.std([0.5, 0.6], ddof=1))
    assert full["gIoU_interval"][0] <= 0.55 <= full["gIoU_interval"][1]
    assert full["samples"] == 8
    # Identical runs: a difference of 0 whose interval contains 0.
    assert same["delta_gIoU"] == 0.0 and same["delta_gIoU_interval"] == [0.0, 0.0]
    assert same["verdict"] == "not distinguishable"
    assert "55.0 ± 7.1 [" in markdown([full, same])


def test_table_gives_referent_accuracy_where_the_task_has_scene_objects(tmp_path):
    from rl.ablate import markdown, table_rows

    results = [_fake_run(tmp_path, name, s, [0.5, 0.5]) for name in ("full", "g16") for s in (0, 1)]
    assert "referent acc." not in markdown(table_rows(results))  # a task without scene objects
    hits = {("full", 0): 0.6, ("full", 1): 0.8, ("g16", 0): 0.5, ("g16", 1): 0.5}
    for r in results:
        m = r["metrics"]["evaluation"]["grpo_stage2"]
        m["referent_accuracy"], m["chance"] = hits[r["name"], r["seed"]], 0.4
    full, g16 = table_rows(results)
    assert np.isclose(full["referent_accuracy"], 0.7) and full["referent_chance"] == 0.4
    assert np.isclose(full["referent_accuracy_sd"], np.std([0.6, 0.8], ddof=1))
    lines = markdown([full, g16]).splitlines()
    assert "| referent acc. (chance) |" in lines[0] and lines[1].count("---") == 11
    assert "| 70.0 ± 14.1 (40.0) |" in lines[2] and "| 50.0 ± 0.0 (40.0) |" in lines[3]


def test_reward_curves_average_the_seeds(tmp_path):
    # Two seeds of one variant, one of another: the plot drew only the last seed before.
    from rl.ablate import plot_comparison, reward_curves

    results = [_fake_run(tmp_path, "full", s, [0.5]) for s in (0, 1)] + \
              [_fake_run(tmp_path, "g16", 0, [0.5])]
    logs = {("full", 0): [1.0, 2.0, 3.0], ("full", 1): [3.0, 4.0, 5.0], ("g16", 0): [0.5, 0.5]}
    for r in results:
        path = Path(r["dir"]) / "grpo_stage1"
        path.mkdir()
        hist = [{"step": 10 * (i + 1), "reward": v}
                for i, v in enumerate(logs[r["name"], r["seed"]])]
        (path / "stage.json").write_text(json.dumps({"log_history": hist + [{"loss": 0.1}]}))
    curves = reward_curves(results, "grpo_stage1")
    assert curves["full"] == {"steps": [10, 20, 30], "seeds": [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]],
                              "seed_ids": [0, 1], "mean": [2.0, 3.0, 4.0]}
    assert curves["g16"]["mean"] == [0.5, 0.5] and len(curves["g16"]["seeds"]) == 1
    assert plot_comparison(results, tmp_path, "grpo_stage1").is_file()


def test_curve_differences_pair_seeds_at_shared_steps():
    # Hand-computed: the variant has seeds 1 and 0 (in that order) and misses step 30; seed 2
    # of the full model has no partner. Differences full - variant at steps 10, 20:
    # seed 0: (1 - 0, 2 - 3) = (+1, -1); seed 1: (3 - 1, 4 - 2) = (+2, +2).
    from rl.ablate import curve_differences, curve_lines

    curves = {
        "full": {"steps": [10, 20, 30], "seed_ids": [0, 1, 2],
                 "seeds": [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [9.0, 9.0, 9.0]],
                 "mean": [13 / 3, 5.0, 17 / 3]},
        "v": {"steps": [10, 20], "seed_ids": [1, 0], "seeds": [[1.0, 2.0], [0.0, 3.0]],
              "mean": [0.5, 2.5]},
    }
    d = curve_differences(curves, "full")
    assert set(d) == {"v"}
    assert d["v"]["full_above"] == 3 and d["v"]["points"] == 4
    assert d["v"]["stage_mean_difference"] == {1: 2.0, 0: 0.0}
    assert d["v"]["first_last"] == [1.5, 1.5]
    assert d["v"]["full_first_last"] == [pytest.approx(14 / 3), pytest.approx(14 / 3)]
    (line,) = curve_lines(d, "full", "grpo_stage1")
    assert "full higher at 3/4 logged (step, seed) points" in line
    assert "+2.000 (seed 1), +0.000 (seed 0)" in line and "another sum" not in line
    (line,) = curve_lines(d, "full", "grpo_stage1", other_sum={"v"})
    assert line.endswith("v weights the grpo_stage1 rewards otherwise, so its reward is "
                         "another sum")
    # Identical curves: never higher, zero differences.
    same = curve_differences({"full": curves["full"], "copy": curves["full"]}, "full")
    assert same["copy"]["full_above"] == 0
    assert set(same["copy"]["stage_mean_difference"].values()) == {0.0}
    assert curve_differences({"v": curves["v"]}, "full") == {}
