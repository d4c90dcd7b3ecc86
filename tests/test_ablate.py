"""The ablation runner: a row per variant under the full model's, shared stages trained once."""

import json
from pathlib import Path

import pytest
import yaml

from rl.ablate import STAGES, differences, main, stage_key
from rl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ABL = ROOT / "configs" / "ablations"
TASK = {"logging_steps": 1, "progress_bars": False, "data": {"n_train": 48, "n_eval": 6},
        "sft": {"max_steps": 6, "policy_refinement_steps": 2, "policy_refinement_records": 8},
        "grpo_stage1": {"max_steps": 2, "n_prompts": 8, "logging_steps": 1},
        "grpo_stage2": {"max_steps": 2, "n_prompts": 8, "regenerate_every": None,
                        "logging_steps": 1},
        "eval": {"pictures": 1, "max_new_tokens": 12}}


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
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[ablate]")]
    assert lines[0].split()[1] == "full" and len(lines) == 1 + len(list(ABL.glob("*.yaml")))
    assert all(ln.count("=") == 1 for ln in lines[1:])


def test_runner_trains_each_variant_and_writes_one_table(tmp_path):
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
    assert (out / "rewards_grpo_stage1.png").is_file()
    assert yaml.safe_load((out / "full" / "recipe.yaml").read_text())["data"]["n_train"] == 48
    # A later invocation (another output folder) reuses every finished stage: nothing retrains.
    again = main([str(ABL / "stage1_no_box.yaml"), str(ABL / "stage2_no_mask_gain.yaml"),
                  "--task", str(task), "--out", str(tmp_path / "again"), "--reuse", str(out)])
    assert [r["reused"] for r in again] == [list(STAGES)] * 3
    def numbers(table):
        return [{k: v for k, v in r.items() if k != "reused"} for r in table]

    assert numbers(json.loads((tmp_path / "again" / "table.json").read_text())) == numbers(rows)


def test_a_variant_without_base_needs_full(tmp_path):
    lone = tmp_path / "lone.yaml"
    lone.write_text("seed: 1\n")
    with pytest.raises(SystemExit, match="name the full model with --full"):
        main([str(lone), "--dry-run"])
