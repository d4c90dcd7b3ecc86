"""The paper recipe's code path at Qwen2.5-VL's real widths, on a CPU, a few steps per stage.

    python -m rl.bench.paper_widths [--sizes 3b,7b] [--out runs/paper_widths]

For each size: a Qwen2.5-VL with that checkpoint's widths, vocabulary rows, head tying and real
tokenizer, depth cut to one language and one vision block, random weights
(`rl.models.build_qwen2_5_vl_at_width`); then the user's commands on it: `tokens.extend`
(through the pipeline's first step), and `accelerate launch --config_file
configs/accelerate/zero2_cpu.yaml rl/train_grpo.py` with `configs/paper_qwen2_5_vl_7b.yaml`
cut to a smoke run (`SMOKE`): LoRA r = 64 with the new rows trained in the cold start, merge,
GRPO stage 1 and stage 2 with LoRA, the mask reward through SAM ViT-B's real architecture with
random weights, DeepSpeed ZeRO-2, synthetic scenes (float32 weights: see `SMOKE`). Prints per
size the peak resident memory of the run and the seconds per step of each stage; writes
`figures.json`.
Nothing here is learned; what it shows is that the path runs at these sizes and what it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "paper_qwen2_5_vl_7b.yaml"
ACCELERATE = ROOT / "configs" / "accelerate" / "zero2_cpu.yaml"
GRPO_SMOKE = {"max_steps": 2, "batch_size": 4, "num_generations": 4, "n_prompts": 2,
              "max_completion_length": 24, "use_vllm": False,
              "lora": {"r": 64, "alpha": 128, "dropout": 0.05}}
# What the smoke run changes in the paper recipe (the rest stays: LoRA r = 64, bf16, sdpa,
# gradient checkpointing, the paper's rewards and betas).
SMOKE = {
    "logging_steps": 1, "progress_bars": False, "cpu_threads": 2,
    # float32: on a CPU transformers refuses bf16 training under DeepSpeed ("doesn't support
    # bf16/gpu"), and bf16 weights with an fp32 trainer clash (DeepSpeed's trainable copies in
    # fp32 beside frozen bf16 layers); the paper recipe's bf16 is for its GPUs.
    "model": {"dtype": "float32"},
    # Two training scenes: the cold start's data building asks SAM for 1,024 lattice masks per
    # scene (G = 32), ~1-3 minutes of a CPU each at ViT-B.
    "data": {"source": "synthetic", "n_train": 2, "n_eval": 4, "image_size": 112,
             "objects": [1, 2], "prompts": str(ROOT / "configs" / "default_prompts.yaml"),
             "decoder": {"name": "sam", "variant": "vit_b", "replace": True},
             "min_iou": 0.0},  # SAM with random weights reproduces nothing: keep every sample
    "sft": {"max_steps": 2, "batch_size": 2, "policy_refinement_steps": 0},
    "grpo_stage1": GRPO_SMOKE,
    "grpo_stage2": GRPO_SMOKE,
    "eval": {"batch_size": 4, "max_new_tokens": 24, "pictures": 0, "rounds": 1,
             "rounds_curve": 0, "shuffle_control": False, "curve_every": 0},
}


def smoke_recipe(model_dir: Path, out: Path, dtype: str = "float32",
                 sam: str = "vit_b") -> Path:
    """The paper recipe with `SMOKE` over it, for `model_dir`, as a complete YAML file
    (`dtype`: the model's weights, `sam`: the SAM variant of the mask reward and data build)."""
    import yaml

    from rl.config import load_config, to_dict

    data = {**SMOKE["data"], "decoder": {**SMOKE["data"]["decoder"], "variant": sam}}
    cfg = load_config(PAPER, {**SMOKE, "output_dir": str(out / "run"), "data": data,
                              "model": {**SMOKE["model"], "dtype": dtype,
                                        "path": str(model_dir)}})
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def stage_figures(run_dir: Path) -> dict:
    """Seconds per optimizer step of each stage (TRL's train_runtime over its steps)."""
    out = {}
    for stage in ("sft", "grpo_stage1", "grpo_stage2"):
        path = run_dir / stage / "stage.json"
        if not path.is_file():
            continue
        hist = json.loads(path.read_text())["log_history"]
        ends = [e for e in hist if "train_runtime" in e]
        steps = max((e.get("step", 0) for e in hist), default=0)
        runtime = sum(e["train_runtime"] for e in ends)
        out[stage] = {"steps": steps, "s_per_step": runtime / max(1, steps),
                      "stage_s": json.loads(path.read_text())["seconds"]}
    return out


def run_size(size: str, out: Path, accelerate_config: Path = ACCELERATE,
             dtype: str = "float32", sam: str = "vit_b") -> dict:
    from rl.models import build_qwen2_5_vl_at_width

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = build_qwen2_5_vl_at_width(out / "base", size)
    built = time.perf_counter() - t0
    recipe = smoke_recipe(model_dir, out, dtype=dtype, sam=sam)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # One process: the paper's accelerate files say 8 (its GPUs); a smoke run uses one.
    cmd = ["accelerate", "launch", "--config_file", str(accelerate_config), "--num_processes", "1",
           str(ROOT / "rl" / "train_grpo.py"), "--config", str(recipe)]
    t0 = time.perf_counter()
    with open(out / "run.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t0
    # The largest resident set of any process this one has waited for (the launched run).
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    return {"size": size, "rc": rc, "build_s": built, "run_s": seconds, "peak_rss_gb": peak_gb,
            "stages": stage_figures(out / "run"), "log": str(out / "run.log")}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m rl.bench.paper_widths",
                                description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="3b,7b")
    p.add_argument("--out", default="runs/paper_widths")
    p.add_argument("--accelerate-config", type=Path, default=ACCELERATE,
                   help="on a GPU: configs/accelerate/zero2.yaml (DeepSpeed ZeRO-2 on CUDA)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the weights; the paper's bf16 needs a GPU (see SMOKE)")
    p.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h"],
                   help="SAM's architecture (random weights); the paper's is vit_h")
    a = p.parse_args(argv)
    results = []
    for size in a.sizes.split(","):
        r = run_size(size, Path(a.out) / size, a.accelerate_config, a.dtype, a.sam)
        results.append(r)
        stages = ", ".join(f"{k} {v['s_per_step']:.1f} s/step ({v['steps']} steps)"
                           for k, v in r["stages"].items())
        print(f"{size}: rc {r['rc']}, peak RSS {r['peak_rss_gb']:.1f} GB (largest process so "
              f"far), build {r['build_s']:.0f} s, run {r['run_s']:.0f} s; {stages}", flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "figures.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r["rc"] == 0 for r in main()) else 1)
