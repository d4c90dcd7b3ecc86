"""A killed run resumes where it stopped; a folder of another recipe is refused, not mixed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from small_recipe import small

from rl.config import load_config, to_dict
from rl.pipeline import RecipeMismatch, check_resumable, finished_parts

ROOT = Path(__file__).resolve().parents[1]


def recipe(out: Path, **sections) -> dict:
    r = {"base": str(ROOT / "configs" / "default.yaml"), "output_dir": str(out),
         "logging_steps": 1, "progress_bars": False,
         "data": {"n_train": 96, "n_eval": 8,
                  "prompts": str(ROOT / "configs" / "default_prompts.yaml")},
         "sft": {"max_steps": 60, "policy_refinement_steps": 4, "policy_refinement_records": 16},
         "grpo_stage1": {"max_steps": 60, "n_prompts": 16},
         "grpo_stage2": {"max_steps": 2, "n_prompts": 8},
         "eval": {"pictures": 0, "curve_every": 0}}
    for k, v in sections.items():
        r[k] = {**r.get(k, {}), **v}
    return small(r)


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def command(path: Path) -> list[str]:
    return [sys.executable, str(ROOT / "rl" / "train_grpo.py"), "--config", str(path)]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1"}


def test_killed_during_stage1_resumes_and_keeps_earlier_outputs(tmp_path):
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(out)))

    # First run: SIGKILL once GRPO stage 1 has started training.
    proc = subprocess.Popen(command(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env(), cwd=tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[getok] grpo_stage1:") and "prompts" in line:
            break
    else:
        pytest.fail("the run ended before GRPO stage 1:\n" + "".join(lines[-30:]))
    time.sleep(2.0)  # inside the trainer: its steps take ~0.1-0.3 s each, 60 of them
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert finished_parts(out) == ["untrained", "sft"], "".join(lines[-30:])
    sft_before = fingerprint(out / "sft")
    metrics_before = json.loads((out / "metrics.json").read_text())
    assert set(metrics_before["evaluation"]) == {"untrained", "sft"}

    # The same command again: the cold start is taken back, the rest runs to the end.
    again = subprocess.run(command(path), capture_output=True, text=True, env=env(),
                           cwd=tmp_path, timeout=800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "sft: done already" in again.stdout
    assert finished_parts(out) == ["untrained", "sft", "grpo_stage1", "grpo_stage2"]
    assert fingerprint(out / "sft") == sft_before  # not one byte of the cold start changed
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("untrained", "sft"):
        assert metrics["evaluation"][name] == metrics_before["evaluation"][name]
    assert set(metrics["evaluation"]) == {"untrained", "sft", "grpo_stage1", "grpo_stage2"}
    # The taken-back cold start is compared with the stage after it, as in a run not killed.
    assert set(metrics["comparisons"]) == {"grpo_stage1 - sft", "grpo_stage2 - grpo_stage1"}
    assert not list(out.rglob("*.tmp"))

    # Once more, every stage finished: each is taken back with its comparison to the stage
    # before it and its reward on fixed prompts, as the run that trained them wrote them.
    finished = subprocess.run(command(path), capture_output=True, text=True, env=env(),
                              cwd=tmp_path, timeout=800)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "grpo_stage2: done already" in finished.stdout
    taken_back = json.loads((out / "metrics.json").read_text())
    assert set(taken_back["comparisons"]) == set(metrics["comparisons"])
    for key, c in metrics["comparisons"].items():
        assert taken_back["comparisons"][key]["difference"] == pytest.approx(
            c["difference"], abs=1e-5)
        assert taken_back["comparisons"][key]["verdict"] == c["verdict"]
    for stage in ("grpo_stage1", "grpo_stage2"):
        assert metrics["rewards"][stage]["fixed_prompts"]["prompts"] > 0
        assert taken_back["rewards"][stage]["fixed_prompts"] == (
            metrics["rewards"][stage]["fixed_prompts"])

    # Another recipe over the same folder is refused, naming what differs.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(recipe(out, sft={"max_steps": 61})))
    refused = subprocess.run(command(other), capture_output=True, text=True, env=env(),
                             cwd=tmp_path, timeout=300)
    assert refused.returncode != 0
    assert "sft.max_steps=61" in refused.stderr and "another recipe" in refused.stderr
    assert fingerprint(out / "sft") == sft_before


def _folder(tmp_path, done, **sections):
    out = tmp_path / "run"
    out.mkdir(parents=True)
    for stage in done:
        (out / stage).mkdir(parents=True, exist_ok=True)
        (out / stage / "stage.json").write_text("{}")
    (out / "metrics.json").write_text("{}")
    cfg = load_config(ROOT / "configs" / "default.yaml", {"output_dir": str(out)})
    (out / "config.json").write_text(json.dumps(to_dict(cfg)))
    return out, load_config(ROOT / "configs" / "default.yaml",
                            {"output_dir": str(out), **sections})


def test_a_later_unfinished_stage_may_change(tmp_path):
    out, cfg = _folder(tmp_path, ["sft", "grpo_stage1"], grpo_stage2={"max_steps": 7},
                       logging_steps=3, progress_bars=True)
    check_resumable(cfg, out)  # nothing finished depends on what changed


def test_a_finished_stage_of_another_recipe_is_refused(tmp_path):
    out, cfg = _folder(tmp_path, ["sft", "grpo_stage1"], grpo_stage1={"max_steps": 7})
    with pytest.raises(RecipeMismatch, match=r"grpo_stage1 came from another recipe.*"
                                             r"grpo_stage1\.max_steps=7"):
        check_resumable(cfg, out)
    out2, cfg2 = _folder(tmp_path / "b", [], model={"grid_size": 16})
    with pytest.raises(RecipeMismatch, match="untrained came from another recipe"):
        check_resumable(cfg2, out2)  # the extended starting model is not reused either


def test_finished_stages_without_a_recipe_are_refused(tmp_path):
    out, cfg = _folder(tmp_path, ["sft"])
    (out / "config.json").unlink()
    with pytest.raises(RecipeMismatch, match="no config.json"):
        check_resumable(cfg, out)
    check_resumable(cfg, tmp_path / "empty")  # a new folder is fine


def test_what_a_grpo_stage_would_refuse_is_refused_before_anything_trains(tmp_path, monkeypatch):
    import importlib.util

    from rl.pipeline import Pipeline, check_launch

    default = ROOT / "configs" / "default.yaml"
    cfg = load_config(default, {"output_dir": str(tmp_path / "zero3")})
    assert cfg.grpo_stage2.trainable == "refinement_tokens"
    check_launch(cfg)  # no DeepSpeed: fine
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    check_launch(cfg)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ValueError, match=r"grpo_stage2.trainable: refinement_tokens .* ZeRO-3"):
        Pipeline(cfg).run()
    assert not (tmp_path / "zero3" / "model_init").exists()  # refused before the model is built
    check_launch(load_config(default, {"grpo_stage2": {"trainable": "all"}}))
    check_launch(load_config(default, {"grpo_stage2": {"enabled": False}}))
    (tmp_path / "zero3" / "grpo_stage2").mkdir()  # resumed with stage 2 finished: taken back
    (tmp_path / "zero3" / "grpo_stage2" / "stage.json").write_text("{}")
    check_launch(cfg, tmp_path / "zero3")
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    # vLLM rollouts where vLLM is missing: TRL's trainer would refuse them after the cold start.
    vllm = load_config(default, {"output_dir": str(tmp_path / "vllm"),
                                 "grpo_stage1": {"use_vllm": True}})
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match=r"grpo_stage1.use_vllm: vLLM is not installed"):
            Pipeline(vllm).run()
        assert not (tmp_path / "vllm" / "model_init").exists()
    else:
        check_launch(vllm)
