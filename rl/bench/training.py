"""How close a training step is to the model's own cost, for a recipe (default: the default run).

    python -m rl.bench.training [--config configs/default.yaml] [--sft-steps 60] [--grpo-steps 12]

Prints, measured in one run on this machine:
- SFT: seconds per step and samples per second of TRL's SFTTrainer on the recipe's cold-start
  data; the part of a step spent building the batch (reading rows, the processor, the chat
  template, TRL's collator); the bare model's step on the same collated batch (the backbone's
  forward, the LM head on the labelled positions only, cross-entropy, backward, AdamW): the
  floor; and their ratio.
- GRPO stage 1: seconds per step of TRL's GRPOTrainer split into generation, reward, the
  reference/old log-probabilities, and loss/backward/optimizer; the bare model's step on the
  same prompt+completion batch (the backbone's forward, the LM head on the completion's
  positions, their log-probabilities, a policy-gradient loss, backward, AdamW); and the ratio of
  the loss/backward part to it.

Ratios, not seconds, are what compare across machines. Nothing here is a test: the figures are
printed, and the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _median_time(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model_inputs(batch: dict) -> dict:
    """What the model's forward takes from a collated batch (no labels or masks of the loss)."""
    drop = {"labels", "completion_mask", "assistant_masks"}
    return {k: v for k, v in batch.items() if k not in drop}


def _labelled_logits(model, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """The model's logits at the positions whose next token has a label (the backbone, then the
    LM head on those positions only), with those labels."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(**inputs, use_cache=False).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    return model.get_output_embeddings()(hidden[keep]), target[keep]


def bare_sft_step(model, batch: dict, lr: float):
    """One plain step on a collated SFT batch: logits at the labelled positions, cross-entropy,
    backward, AdamW."""
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=lr)
    inputs, labels = _model_inputs(batch), batch["labels"]

    def step():
        logits, target = _labelled_logits(model, inputs, labels)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bare_grpo_step(model, inputs: dict, lr: float):
    """One plain policy-gradient step on GRPO's prompt+completion batch: log-probabilities of
    the completion tokens (logits at those positions only), backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    cm = inputs["completion_mask"]
    labels = torch.cat([torch.full_like(inputs["prompt_ids"], -100),
                        inputs["completion_ids"].masked_fill(cm == 0, -100)], dim=1)
    extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
    # One advantage per completion, repeated over its scored tokens (row-major, as `keep` is).
    adv = inputs["advantages"].unsqueeze(1).expand_as(cm)[cm.bool()]

    def step():
        logits, target = _labelled_logits(model, {"input_ids": ids, "attention_mask": mask,
                                                  **extra}, labels)
        token = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        loss = -(token * adv).sum() / cm.sum().clamp(min=1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class _Timer:
    """Wraps methods of an object and adds up the seconds spent in each."""

    def __init__(self, obj, names):
        self.seconds = dict.fromkeys(names, 0.0)
        self.each = {name: [] for name in names}  # seconds of every call
        self.calls = dict.fromkeys(names, 0)
        self.last = {}
        for name in names:
            original = getattr(obj, name)

            def timed(*a, _name=name, _f=original, **k):
                t0 = time.perf_counter()
                out = _f(*a, **k)
                took = time.perf_counter() - t0
                self.seconds[_name] += took
                self.each[_name].append(took)
                self.calls[_name] += 1
                self.last[_name] = out
                return out

            setattr(obj, name, timed)


def setup(config: str | None, out: Path, n_train: int):
    """The recipe's starting model, processor, run context and training rows (`n_train`)."""
    from transformers import AutoProcessor

    from rl.config import load_config
    from rl.context import RunContext
    from rl.data.samples import build_grpo_stage1, build_sft
    from rl.models import prepare_model
    from rl.pipeline import Pipeline, records, set_cpu_threads

    cfg = load_config(config, {"output_dir": str(out), "progress_bars": False,
                               "logging_steps": 1000, "data": {"n_train": n_train}})
    set_cpu_threads(cfg.cpu_threads)
    init = prepare_model(cfg.model, out, cfg.seed)
    processor = AutoProcessor.from_pretrained(init)
    ctx = RunContext.from_config(cfg, processor)
    train = records(cfg, "train")
    # The rows the run itself trains on (refinement share, image order, captions as the
    # recipe says), not a BuildConfig of this module's own.
    build = Pipeline(cfg).build_config()
    sft_rows = list(build_sft(train, ctx.decoder(), ctx.prompts, build))
    grpo_rows = list(build_grpo_stage1(train, ctx.prompts, build))
    return cfg, init, ctx, sft_rows, grpo_rows


def bench_sft(cfg, init, ctx, rows, steps: int) -> dict:
    from datasets import Dataset

    from rl.models import load_model
    from rl.train_sft import sft_trainer
    from rl.training import vision_frozen

    ds = Dataset.from_list(rows).select_columns(["image", "prompt", "completion"])
    model = load_model(init, cfg.model)
    # The vision tower takes no gradient where the recipe freezes it (as run_sft does).
    with vision_frozen(model, cfg.sft.freeze_vision):
        trainer = sft_trainer(cfg.sft, ctx.with_output(ctx.output_dir / "bench_sft"), model,
                              ds, max_steps=steps)
        # A run of many epochs (the default: 16) builds each sample's tensors once and then
        # reads them back; fill the cache first so the timed steps show that steady state
        # (first sight: batches of unseen samples, as the default meets nearly all of them).
        train_ds, batch_n = trainer.train_dataset, cfg.sft.batch_size
        t0 = time.perf_counter()
        if cfg.sft.collate_cache:
            for start in range(0, len(train_ds), batch_n):
                trainer.data_collator([train_ds[i] for i in range(start, min(start + batch_n,
                                                                              len(train_ds)))])
        first_sight = (time.perf_counter() - t0) / max(1, len(train_ds))
        loader_timer = _Timer(trainer, ["get_batch_samples", "training_step"])
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    per_step = total / steps

    # The floor: the bare model on one batch the trainer's own collator builds, the tower
    # frozen as in the trainer.
    batch = trainer.data_collator([train_ds[i] for i in range(batch_n)])
    floor_model = load_model(init, cfg.model).train()
    with vision_frozen(floor_model, cfg.sft.freeze_vision):
        floor = _median_time(bare_sft_step(floor_model, batch, cfg.sft.learning_rate),
                             repeats=40)
    collate = _median_time(lambda: trainer.data_collator([train_ds[i] for i in range(batch_n)]),
                           repeats=10)
    return {"s_per_step": per_step, "samples_per_s": batch_n / per_step,
            "batch_s_per_step": loader_timer.seconds["get_batch_samples"] / steps,
            "train_step_s": loader_timer.seconds["training_step"] / steps,
            "collate_s": collate, "first_sight_s_per_sample": first_sight,
            "floor_s": floor, "ratio": per_step / floor,
            # the steady state, without the first step's one-off costs
            "median_train_step_s": statistics.median(loader_timer.each["training_step"]),
            "first_train_step_s": loader_timer.each["training_step"][0],
            "tokens_per_batch": list(batch["input_ids"].shape)}


def bench_grpo(cfg, init, ctx, rows, steps: int) -> dict:
    from datasets import Dataset

    from rl.grpo import grpo_trainer
    from rl.models import load_model

    stage = cfg.grpo_stage1
    ds = Dataset.from_list(rows[: stage.n_prompts or len(rows)]).select_columns(
        ["image", "prompt", "solution"])
    model = load_model(init, cfg.model)
    trainer = grpo_trainer(stage, "grpo_stage1", ctx.with_output(ctx.output_dir / "bench_grpo"),
                           model, ds, max_steps=steps, reference=init)
    names = ["training_step", "_generate_and_score_completions", "_generate",
             "_calculate_rewards"]
    timer = _Timer(trainer, names)
    trainer.train()
    s = {k: v / steps for k, v in timer.seconds.items()}
    gen, reward = s["_generate"], s["_calculate_rewards"]
    scoring = s["_generate_and_score_completions"] - gen - reward
    loss = s["training_step"] - s["_generate_and_score_completions"]
    inputs = timer.last["_generate_and_score_completions"]
    floor_model = load_model(init, cfg.model).train()
    floor = _median_time(bare_grpo_step(floor_model, inputs, stage.learning_rate), repeats=40)
    return {"s_per_step": s["training_step"], "steps_per_s": 1 / s["training_step"],
            "generation_s": gen, "reward_s": reward, "logps_s": scoring,
            "loss_backward_s": loss, "floor_s": floor, "loss_ratio": loss / floor,
            "completions_per_step": stage.batch_size}


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(prog="python -m rl.bench.training",
                                description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="recipe YAML (default: configs/default.yaml)")
    p.add_argument("--sft-steps", type=int, default=60)
    p.add_argument("--grpo-steps", type=int, default=12)
    p.add_argument("--n-train", type=int, default=400, help="training records to build")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.config is None:
        a.config = str(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        cfg, init, ctx, sft_rows, grpo_rows = setup(a.config, Path(tmp), a.n_train)
        sft = bench_sft(cfg, init, ctx, sft_rows, a.sft_steps)
        grpo = bench_grpo(cfg, init, ctx, grpo_rows, a.grpo_steps)
    threads = torch.get_num_threads()
    print(f"recipe {a.config}, {threads} torch threads")
    print(f"SFT ({a.sft_steps} steps, batch {cfg.sft.batch_size}, {sft['tokens_per_batch']} "
          f"tokens): {sft['s_per_step'] * 1000:.0f} ms/step, {sft['samples_per_s']:.1f} samples/s")
    print(f"  building the batch {sft['batch_s_per_step'] * 1000:.0f} ms (collator alone "
          f"{sft['collate_s'] * 1000:.0f} ms), trainer step {sft['train_step_s'] * 1000:.0f} ms;"
          f" a sample's first collation {sft['first_sight_s_per_sample'] * 1000:.1f} ms (once "
          f"per run)")
    print(f"  bare model step on the same batch: {sft['floor_s'] * 1000:.0f} ms; "
          f"SFT step / bare step = {sft['ratio']:.2f}")
    print(f"  trainer step: median {sft['median_train_step_s'] * 1000:.0f} ms, the first "
          f"{sft['first_train_step_s'] * 1000:.0f} ms")
    print(f"GRPO stage 1 ({a.grpo_steps} steps, {grpo['completions_per_step']} completions): "
          f"{grpo['s_per_step'] * 1000:.0f} ms/step, {grpo['steps_per_s']:.2f} steps/s")
    print(f"  generation {grpo['generation_s'] * 1000:.0f} ms, reward "
          f"{grpo['reward_s'] * 1000:.0f} ms, reference/old log-probs "
          f"{grpo['logps_s'] * 1000:.0f} ms, loss/backward/optimizer "
          f"{grpo['loss_backward_s'] * 1000:.0f} ms")
    print(f"  bare model step on the same batch: {grpo['floor_s'] * 1000:.0f} ms; "
          f"loss/backward / bare step = {grpo['loss_ratio']:.2f}")
    result = {"config": a.config, "threads": threads, "sft": sft, "grpo_stage1": grpo}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
