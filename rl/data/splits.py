"""The synthetic splits of a recipe and how their records become rows: training, held-out
(reported), validation (free to tune on) and curriculum scenes, each from its own seed.
Used by the pipeline (rl.pipeline) and by evaluation on a recipe's own scenes
(`python -m rl.evaluate --recipe`)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from rl.config import RunConfig
from rl.context import RunContext


def data_workers(cfg: RunConfig) -> int:
    """Processes that build synthetic scenes and SFT rows (rl.data.parallel): the run's CPU
    threads, or the cores this process may use divided among the local processes."""
    return int(cfg.cpu_threads) if cfg.cpu_threads else local_cores()


def local_cores() -> int:
    """The cores this process may use, divided among the local processes of the launch."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, len(os.sched_getaffinity(0)) // max(local, 1))


def curriculum_samples(sft) -> int:
    """Samples the curriculum's first `sft.curriculum_steps` steps take."""
    return sft.curriculum_steps * sft.batch_size * sft.gradient_accumulation_steps


def curriculum_scenes(sft) -> int:
    """Distinct scenes the curriculum is built from: `sft.curriculum_scenes`, or one per
    sample."""
    return sft.curriculum_scenes or curriculum_samples(sft)


# Synthetic scenes of each split come from their own seed (data.seed + this): training,
# held-out (reported), validation (learning curves, free to tune on).
SPLIT_SEEDS = {"train": 0, "eval": 1_000_003, "validation": 2_000_003,
               "curriculum": 3_000_003}


def records(cfg: RunConfig, split: str):
    """Training, held-out or validation records: synthetic (each split from its own seed) or
    rows from `python -m rl.data --build rows` (no validation split)."""
    from rl.data.common import Record
    from rl.data.parallel import in_processes
    from rl.data.referring import synthetic_records

    d = cfg.data
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; known: {sorted(SPLIT_SEEDS)}")
    if d.source == "synthetic":
        seed = d.seed + SPLIT_SEEDS[split]
        objects = d.train_objects if split == "train" and d.train_objects else d.objects
        kinds = d.train_kinds if split == "train" and d.train_kinds else d.kinds
        distractors = d.distractors
        training = split in ("train", "curriculum")
        superlatives = d.train_superlatives if training else None
        twins = tuple(d.train_superlative_twins) if training else ()
        if split == "curriculum":
            objects = d.curriculum_objects
            kinds = d.curriculum_kinds or kinds
            distractors = d.curriculum_distractors or distractors
            if max(objects) < 2:  # a lone shape admits no relation and no multi-target
                kinds = {k: w for k, w in kinds.items() if k not in ("relation", "multi")}
        n = {"train": d.n_train, "eval": d.n_eval, "validation": cfg.eval.curve_samples,
             "curriculum": curriculum_scenes(cfg.sft)}[split]
        return in_processes(
            lambda lo, hi: list(synthetic_records(hi - lo, seed, d.image_size, tuple(objects),
                                                  kinds, tuple(d.textures),
                                                  distractors=distractors, start=lo,
                                                  superlatives=superlatives, twins=twins)),
            n, data_workers(cfg))
    from datasets import load_from_disk

    if split in ("validation", "curriculum"):
        raise ValueError(f"{split} scenes (eval.curve_every, sft.curriculum_steps) are "
                         "synthetic: only data.source synthetic has them")
    folder = d.train_dir if split == "train" else d.eval_dir
    if folder is None:
        raise ValueError(f"data.{split}_dir is needed for data.source {d.source!r}")
    ds = load_from_disk(folder)
    n = d.n_train if split == "train" else d.n_eval
    return [Record(r["id"], r["source"], np.asarray(r["image"].convert("RGB")), r["expression"],
                   json.loads(r["solution"]), r.get("kind", ""))
            for r in ds.select(range(min(n, len(ds))))]


def build_config(cfg: RunConfig, vocab, codec):
    """How a recipe's records become samples (rl.data.samples.BuildConfig)."""
    from rl.data.samples import BuildConfig

    return BuildConfig(vocab=vocab, codec=codec, min_iou=cfg.data.min_iou,
                       refinement=cfg.sft.refinement, n_points=cfg.sft.refinement_points,
                       refinement_share=cfg.sft.refinement_share,
                       caption_share=cfg.sft.caption_share,
                       image_after_text=cfg.data.image_after_text, seed=cfg.seed)


def _sized(cfg: RunConfig, split: str, n: int | None) -> RunConfig:
    """`cfg` with `n` rows on evaluation split `split` (None: as the run uses)."""
    if split not in ("eval", "validation"):
        raise ValueError(f"split {split!r}: evaluation rows come from 'eval' or 'validation'")
    if n is not None and split == "eval":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_eval=n))
    elif n is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, curve_samples=n))
    return cfg


def recipe_rows(cfg: RunConfig, split: str, n: int | None = None) -> list[dict]:
    """The GRPO-style rows (prompt, image, solution, kind, ...) a run of recipe `cfg` evaluates
    on `split` ("eval": the held-out records, synthetic or `data.eval_dir`; "validation": the
    synthetic scenes free to tune on), the first `n` (default: as many as the run uses): the
    pipeline's own held-out and learning-curve rows."""
    from rl.data.samples import build_grpo_stage1

    cfg = _sized(cfg, split, n)
    ctx = RunContext.from_config(cfg, processor=None)
    return list(build_grpo_stage1(records(cfg, split), ctx.prompts,
                                  build_config(cfg, ctx.vocab, ctx.codec)))


def recipe_targets(cfg: RunConfig, split: str, n: int | None = None
                   ) -> tuple[list[dict], list[str]]:
    """The rows `recipe_rows` gives and, for each, the stage-1 answer the recipe's cold start
    teaches for that record (its codec over the greedy conversion of the masks, as
    `rl.data.samples.build_sft` writes it; no refinement dialogue, no caption, no row left out
    by `data.min_iou`): what a model that wrote its targets exactly would answer. Scored like a
    model's answers, they give the ceiling that the codec, the mask conversion and the decoder
    leave."""
    from rl.data.samples import build_grpo_stage1, build_sft

    cfg = _sized(cfg, split, n)
    ctx = RunContext.from_config(cfg, processor=None)
    recs = list(records(cfg, split))
    build = build_config(cfg, ctx.vocab, ctx.codec)
    rows = list(build_grpo_stage1(recs, ctx.prompts, build))
    build = dataclasses.replace(build, refinement=False, caption_share=0.0, min_iou=None)
    sft = list(build_sft(recs, ctx.decoder(), ctx.prompts, build))
    if [r["id"] for r in sft] != [r["id"] for r in rows]:  # one stage-1 row per record each
        raise RuntimeError("the SFT targets and the evaluation rows are not the same records")
    return rows, [r["completion"][0]["content"][0]["text"] for r in sft]
