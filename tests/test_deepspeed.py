"""DeepSpeed ZeRO-2 through `accelerate launch` on the CPU: a few steps of SFT and GRPO."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from small_recipe import small

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")
def test_zero2_on_cpu(tmp_path):
    pytest.importorskip("deepspeed")
    recipe = tmp_path / "zero2.yaml"
    recipe.write_text(yaml.safe_dump(small({
        "base": str(ROOT / "configs" / "default.yaml"), "output_dir": str(tmp_path / "run"),
        "logging_steps": 1, "progress_bars": False,
        "data": {"n_train": 32, "n_eval": 8,
                 "prompts": str(ROOT / "configs" / "default_prompts.yaml")},
        "sft": {"max_steps": 3, "batch_size": 4, "policy_refinement_steps": 0},
        "grpo_stage1": {"max_steps": 2, "batch_size": 8, "num_generations": 4,
                        "n_prompts": 8, "max_completion_length": 16},
        "grpo_stage2": {"enabled": False}, "eval": {"enabled": False}})))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    cmd = ["accelerate", "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "zero2_cpu.yaml"),
           str(ROOT / "rl" / "train_grpo.py"), "--config", str(recipe)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for stage in ("sft", "grpo_stage1"):
        info = json.loads((tmp_path / "run" / stage / "stage.json").read_text())
        assert info["log_history"], stage
        ran = json.loads((tmp_path / "run" / stage / "trainer_info.json").read_text())
        assert ran["deepspeed"] and ran["zero_stage"] == 2, ran
        assert ran["distributed_type"].endswith("DEEPSPEED"), ran
