"""The ablation runner: train every variant, evaluate it, and write one table.

    python -m rl.ablate configs/ablations/*.yaml               # the reward ablation (Table 11)
    python -m rl.ablate configs/grid_study/*.yaml              # grid resolution (Table 3)
    python -m rl.ablate configs/ablations/*.yaml --task my_task.yaml --out runs/my-ablation

Each variant is a recipe (usually `base: ../default.yaml` plus what it changes). The full model
is the first variant's `base` unless `--full` names another recipe; its row is at the top.
`--task` is a YAML mapping merged over every recipe, the full one included (e.g. a `data:`
section pointing at another dataset), so the same ablation runs on any task.

Stages are shared where they are the same: when an earlier variant already trained a stage from
an identical recipe prefix (everything up to and including that stage; output folders aside,
and evaluation settings that only change later stages: `rl.config.EVAL_KEYS_FROM`),
its checkpoint and metrics are copied (hard links), with the starting checkpoint (`model_init`),
and the pipeline resumes after it. The reward
ablations of stage 1 therefore share one cold start, those of stage 2 also share stage 1. Stages
finished by an earlier invocation count too: the variant folders already in `--out`, and in
each `--reuse` folder, are scanned first. A variant whose whole recipe already ran to the end
there (every stage and evaluation: its `metrics.json` names the final checkpoint) is not run
again: that run's folder is hard-linked in and its metrics read.

`--seeds N` trains every variant with N seeds (the recipe's seed, +1, ...; folders
`<variant>/seed<k>`), stages shared within a seed; each row is then the mean (and standard
deviation) over seeds, with intervals over held-out scenes and seeds (`rl.metrics.
seeded_paired_difference`: seed k of a variant paired with seed k of the full model).

`--sampled-rewards N` (256; 0: off) adds what a reward variant changed in the policy its stage
trains, beyond the greedy answers the held-out figures score (`score_sampled_rewards`): that
stage's sampled completions on the first N held-out prompts, scored by the full model's terms,
paired with the full model's own.

Output (`--out`, default runs/ablations): one folder per variant, `table.md`, `table.json` (with
each row's wall seconds in this invocation, all seeds), and `rewards_<stage>.png` with each
variant's mean total reward over steps; `rewards_<stage>.json` holds those curves and, printed
too, each variant's curve against the full model's (at how many logged (step, seed) points the
full model is higher, the difference of stage means per seed, where each curve starts and ends).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rl.config import (
    STAGES,
    RunConfig,
    differences,
    load_config,
    load_yaml_chain,
    stage_key,
    to_dict,
)
from rl.metrics import seeded_interval, seeded_paired_difference


def _link_tree_file(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=_link_tree_file, dirs_exist_ok=True)


def reuse_stages(cfg: RunConfig, done: dict[str, Path]) -> list[str]:
    """Copy into `cfg.output_dir` the stages an earlier variant trained from the same recipe
    prefix (`done` maps stage keys to that variant's folder); returns the stages reused."""
    out = Path(cfg.output_dir)
    reused = []
    for stage in STAGES:
        if not getattr(cfg, stage).enabled:
            continue
        src = done.get(stage_key(cfg, stage))
        if src is None or not (src / stage / "stage.json").is_file():
            break
        if src.resolve() != out.resolve() and not (out / stage / "stage.json").is_file():
            _link_tree(src / stage, out / stage)
        reused.append(stage)
    if reused:  # the evaluations before the first stage too (the untrained model)
        src = done[stage_key(cfg, reused[0])]
        # The starting checkpoint too: a shared stage key means the same model section and
        # seed, so the same `model_init` (building it pre-trains the tower: ~2 min a run).
        init = src / "model_init"
        if ((init / "spatial_vocab.json").is_file() and src.resolve() != out.resolve()
                and not (out / "model_init").exists()):
            _link_tree(init, out / "model_init")
        prev = json.loads((src / "metrics.json").read_text())
        keep = {k: v for k, v in prev.get("evaluation", {}).items()
                if k == "untrained" or k in reused}
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"evaluation": keep}, indent=2))
        # The recipe beside them, so the pipeline sees whose stages these are (it refuses to
        # resume over another recipe's finished stages).
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str))
    return reused


def _runs(folder: Path):
    """(recipe, folder) of the run folders under `folder` (variant folders of an earlier
    invocation, or any `rl/train_grpo.py` output: its `config.json` is the recipe)."""
    recipes = [*Path(folder).glob("*/config.json"), *Path(folder).glob("*/seed*/config.json")]
    for recipe in sorted(recipes):
        try:
            yield load_config(recipe), recipe.parent
        except ValueError:
            continue  # a recipe of an older schema: not comparable, not reused


def scan_finished(folder: Path) -> dict[str, Path]:
    """Stage keys of the stages finished in the run folders under `folder`."""
    done: dict[str, Path] = {}
    for cfg, run in _runs(folder):
        for stage in STAGES:
            if (run / stage / "stage.json").is_file() and (run / "metrics.json").is_file():
                done.setdefault(stage_key(cfg, stage), run)
    return done


def run_key(cfg: RunConfig) -> str:
    """A digest of everything that decides a whole run's checkpoints and metrics (the last
    stage's key: the recipe without its output folder and what only changes logging)."""
    return stage_key(cfg, STAGES[-1])


def scan_complete(folder: Path) -> dict[str, Path]:
    """Run keys of the runs under `folder` that finished every stage and evaluation (their
    `metrics.json` names the final checkpoint, written last by the pipeline)."""
    complete: dict[str, Path] = {}
    for cfg, run in _runs(folder):
        try:
            finished = "final_checkpoint" in json.loads((run / "metrics.json").read_text())
        except (ValueError, OSError):
            continue  # a run that never wrote its metrics
        if finished:
            complete.setdefault(run_key(cfg), run)
    return complete


def reuse_run(cfg: RunConfig, src: Path) -> dict:
    """A finished run of the same recipe stands for this variant: its stages, pictures and
    plots hard-linked into `cfg.output_dir`, its metrics copied (this run's own recipe files
    written beside them, never through a link into `src`). Returns the metrics."""
    out = Path(cfg.output_dir)
    own = {"config.json", "recipe.yaml", "metrics.json"}
    if src.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            if item.name in own:
                continue
            if item.is_dir():
                _link_tree(item, out / item.name)
            elif not (out / item.name).exists():
                _link_tree_file(item, out / item.name)
        metrics = json.loads((src / "metrics.json").read_text())
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str))
        (out / "recipe.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return metrics
    return json.loads((out / "metrics.json").read_text())


def final_stage(metrics: dict) -> str | None:
    ev = metrics.get("evaluation", {})
    return next((s for s in reversed(("untrained",) + STAGES) if s in ev), None)


ROW_METRICS = (("gIoU", "gIoU"), ("cIoU", "cIoU"), ("Acc@0.5", "Acc@0.5"),
               ("Acc@0.8", "Acc@0.8"))


def sample_ious(result: dict, stage: str | None) -> list[float] | None:
    """The per-sample held-out IoUs of a variant's stage (its `stage.json`), or None."""
    path = Path(result["dir"]) / (stage or "") / "stage.json"
    if stage is None or not path.is_file():
        return None
    return json.loads(path.read_text()).get("sample_iou")


def _interval(iv, scale: float = 100.0, sign: bool = False) -> str:
    if not iv:
        return ""
    f = "+.1f" if sign else ".1f"
    return f" [{scale * iv[0]:{f}}, {scale * iv[1]:{f}}]"


def _by_variant(results: list[dict]) -> dict[str, list[dict]]:
    """The results grouped by variant, in order; within a variant, one per seed."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    return groups


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _ious(runs: list[dict]):
    """Per-sample held-out IoUs of each seed's final stage (seeds x samples), or None when a
    seed lacks them or the seeds scored different sample counts."""
    rows = [sample_ious(r, final_stage(r["metrics"])) for r in runs]
    if any(x is None for x in rows) or len({len(x) for x in rows}) != 1:
        return None
    return rows


REWARD_KEYS = ("rewards", "reward_params")


def reward_stage(changes: list[str]) -> str | None:
    """The GRPO stage whose rewards a variant's changes are all about (`<stage>.rewards.*`,
    `<stage>.reward_params.*`), or None (the full model, or a variant that changes anything
    else: its policy may not even share the full model's vocabulary)."""
    stages = set()
    for change in changes:
        parts = change.split("=", 1)[0].split(".")
        if len(parts) < 3 or parts[0] not in STAGES[1:] or parts[1] not in REWARD_KEYS:
            return None
        stages.add(parts[0])
    return stages.pop() if len(stages) == 1 else None


def score_sampled_rewards(results: list[dict], full_name: str, n: int) -> None:
    """What a reward term changes in the policy that its stage trains, beyond the greedy
    answers the held-out figures score: each variant that changes one GRPO stage's rewards
    (`reward_stage`), and the full model of its seed, sample that stage's completions on the
    first `n` held-out prompts (`rl.evaluate.sampled_rewards`: the full model's sampling
    settings, 8 completions each, the same random seed; stage 2 refines each policy's own
    greedy proposal), scored by the full model's rewards of that stage. Adds
    `sampled_rewards` {stage: per-prompt mean rewards} to each scored result."""
    import dataclasses

    import numpy as np
    from transformers import AutoProcessor

    from rl.context import RunContext
    from rl.data.samples import build_grpo_stage1
    from rl.data.splits import build_config, records
    from rl.evaluate import sampled_rewards
    from rl.models import load_model

    fulls = {r["seed"]: r for r in results if r["name"] == full_name}
    wanted = {(r["seed"], reward_stage(r["changes"])) for r in results
              if r["name"] != full_name and reward_stage(r["changes"])}
    rows = None
    for seed, stage in sorted(wanted):
        full = fulls.get(seed)
        if full is None or not (Path(full["dir"]) / stage / "config.json").is_file():
            continue
        cfg = load_config(Path(full["dir"]) / "config.json")
        st = getattr(cfg, stage)
        # The full model's processor and rewards for every checkpoint scored against it (a
        # reward variant shares its vocabulary: `reward_stage`).
        ctx = RunContext.from_config(cfg, AutoProcessor.from_pretrained(Path(full["dir"]) / stage))
        for r in [full] + [r for r in results if r["seed"] == seed and r["name"] != full_name
                           and reward_stage(r["changes"]) == stage]:
            checkpoint = Path(r["dir"]) / stage
            if not (checkpoint / "config.json").is_file():
                continue
            if rows is None:  # the held-out prompts, the same for every seed (data.seed)
                few = dataclasses.replace(cfg, data=dataclasses.replace(
                    cfg.data, n_eval=min(n, cfg.data.n_eval)))
                rows = list(build_grpo_stage1(records(few, "eval"), ctx.prompts,
                                              build_config(cfg, ctx.vocab, ctx.codec)))[:n]
            t0 = time.perf_counter()
            model = load_model(checkpoint, cfg.model)
            r.setdefault("sampled_rewards", {})[stage] = sampled_rewards(
                model, rows, ctx, st, stage, cfg.eval.reward_samples, seed=cfg.seed,
                max_new_tokens=st.max_completion_length, batch_size=cfg.eval.batch_size,
                proposal_tokens=cfg.grpo_stage1.max_completion_length)
            print(f"[ablate] {r['name']} (seed {seed}): {stage} reward of sampled completions "
                  f"on {len(rows)} held-out prompts, the full model's terms: "
                  f"{np.mean(r['sampled_rewards'][stage]):.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def table_rows(results: list[dict]) -> list[dict]:
    """One row per variant: the final stage's held-out metrics (the mean over seeds, with
    their standard deviation `<metric>_sd` when there are several), gIoU after each stage, the
    stage-1 reward terms' last-fifth means and answer tokens per instance; the gIoU interval
    and the paired interval of its difference to the full row, with held-out samples resampled
    and, over several seeds, seeds too (seed k of a variant paired with seed k of the full)."""
    import numpy as np

    groups = _by_variant(results)
    full = next(iter(groups.values()))
    full_ious = _ious(full)
    rows = []
    for name, runs in groups.items():
        finals = [r["metrics"].get("evaluation", {}).get(final_stage(r["metrics"]) or "", {})
                  for r in runs]
        evs = [r["metrics"].get("evaluation", {}) for r in runs]
        row = {"variant": name, "changes": runs[0]["changes"],
               "final_stage": final_stage(runs[0]["metrics"]),
               **{k: _mean(m.get(k) for m in finals) for k, _ in ROW_METRICS},
               "parse_failures": _sum(m.get("parse_failures") for m in finals),
               "samples": _sum(m.get("samples") for m in finals),
               "answer_tokens_per_instance": _mean(m.get("answer_tokens_per_instance")
                                                   for m in finals),
               "gIoU_by_stage": {s: _mean(ev[s]["gIoU"] for ev in evs if s in ev)
                                 for s in STAGES if any(s in ev for ev in evs)},
               "reused": runs[0]["reused"] if len(runs) == 1 else [r["reused"] for r in runs],
               # this invocation's wall time for the variant, all seeds: what it cost to train
               # and evaluate what was not reused (a row reused whole costs seconds)
               "seconds": _sum(r.get("seconds") for r in runs)}
        # The reading figures, on tasks whose scene objects are known (the synthetic task).
        ref = [m.get("referent_accuracy") for m in finals]
        if all(v is not None for v in ref):
            row["referent_accuracy"] = _mean(ref)
            row["referent_chance"] = _mean(m.get("chance") for m in finals)
            if len(ref) > 1:
                row["referent_accuracy_sd"] = float(np.std(ref, ddof=1))
        mine = _ious(runs)
        if len(runs) == 1:
            row["gIoU_interval"] = (finals[0].get("intervals") or {}).get("gIoU")
        else:
            row["seeds"] = [r.get("seed") for r in runs]
            for k, _ in ROW_METRICS:
                vals = [m.get(k) for m in finals]
                if all(v is not None for v in vals):
                    row[f"{k}_sd"] = float(np.std(vals, ddof=1))
            row["gIoU_interval"] = seeded_interval(mine) if mine is not None else None
        full_gIoU = _mean(m.get("gIoU") for m in
                          (r["metrics"].get("evaluation", {}).get(
                              final_stage(r["metrics"]) or "", {}) for r in full))
        if row["gIoU"] is not None and full_gIoU is not None:
            row["delta_gIoU"] = row["gIoU"] - full_gIoU
            if runs is not full and mine is not None and full_ious is not None \
                    and np.shape(mine) == np.shape(full_ious):
                d = seeded_paired_difference(mine, full_ious)
                row["delta_gIoU_interval"], row["verdict"] = d["interval"], d["verdict"]
        scored = _sampled_rewards_row(runs, full)
        if scored:
            row["sampled_reward"] = scored
        rows.append(row)
    return rows


def _sampled_rewards_row(runs: list[dict], full: list[dict]) -> dict | None:
    """A row's `score_sampled_rewards` figures: for the full model the mean per stage scored;
    for a variant its stage's mean, the full model's, and the paired difference (prompts and,
    over several seeds, seeds resampled; seed k with seed k)."""
    import numpy as np

    if runs is full:
        stages = sorted({s for r in runs for s in r.get("sampled_rewards", {})})
        return {s: {"mean": float(np.mean([r["sampled_rewards"][s] for r in runs
                                            if s in r.get("sampled_rewards", {})]))}
                for s in stages} or None
    stage = reward_stage(runs[0]["changes"])
    by_seed = {r["seed"]: r for r in full}
    pairs = [(r["sampled_rewards"][stage], by_seed[r["seed"]]["sampled_rewards"][stage])
             for r in runs if stage in r.get("sampled_rewards", {})
             and stage in by_seed.get(r["seed"], {}).get("sampled_rewards", {})]
    if not stage or len(pairs) != len(runs):
        return None
    mine, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    d = seeded_paired_difference(mine, theirs)
    return {stage: {"mean": float(np.mean(mine)), "full": float(np.mean(theirs)),
                    "prompts": len(mine[0]), **d}}


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _with_sd(row: dict, key: str) -> str:
    """A percentage cell, with its standard deviation over seeds when the row has one."""
    sd = row.get(key + "_sd")
    return _pct(row[key]) + ("" if sd is None else f" ± {100 * sd:.1f}")


def markdown(rows: list[dict]) -> str:
    """The table; a referent accuracy column (with its chance rate) when every row has one."""
    reading = bool(rows) and all(r.get("referent_accuracy") is not None for r in rows)
    sampled = any(r.get("sampled_reward") for r in rows)
    head = ("| variant | changes | gIoU [95 %] | cIoU | Acc@0.5 | Acc@0.8 | "
            + ("referent acc. (chance) | " if reading else "") + "Δ gIoU [paired 95 %] "
            "| gIoU after SFT / stage 1 / stage 2 | parse failures | answer tokens / instance |"
            + (" sampled reward, the full model's terms: Δ [paired 95 %] |" if sampled else ""))
    lines = [head, "|" + "---|" * (10 + reading + sampled)]
    for r in rows:
        by = r["gIoU_by_stage"]
        stages = " / ".join(_pct(by.get(s)) for s in STAGES)
        changes = ", ".join(f"`{c}`" for c in r["changes"]) or "(full model)"
        tokens = r["answer_tokens_per_instance"]
        delta = r.get("delta_gIoU")
        cells = [_with_sd(r, k) for k, _ in ROW_METRICS]
        cells[0] += _interval(r.get("gIoU_interval"))
        if reading:
            cells.append(_with_sd(r, "referent_accuracy") + f" ({_pct(r['referent_chance'])})")
        delta_cell = "–" if delta is None else (
            f"{100 * delta:+.1f}" + _interval(r.get("delta_gIoU_interval"), sign=True)
            + (f" ({r['verdict']})" if r.get("verdict") else ""))
        lines.append(
            f"| {r['variant']} | {changes} | " + " | ".join(cells)
            + f" | {delta_cell} | {stages} | "
            f"{r['parse_failures']}/{r['samples']} | "
            f"{'–' if tokens is None else f'{tokens:.2f}'} |"
            + (f" {_sampled_cell(r.get('sampled_reward'))} |" if sampled else ""))
    return "\n".join(lines) + "\n"


def _sampled_cell(scored: dict | None) -> str:
    if not scored:
        return "–"
    cells = []
    for stage, v in scored.items():
        name = stage.replace("grpo_", "").replace("stage", "stage ")
        if "difference" not in v:
            cells.append(f"{name}: {v['mean']:.3f}")
            continue
        iv = v.get("interval")
        cells.append(f"{name}: {v['difference']:+.3f}"
                     + ("" if iv is None else f" [{iv[0]:+.3f}, {iv[1]:+.3f}]")
                     + f" ({v['verdict']})")
    return "; ".join(cells)


def reward_curves(results: list[dict], stage: str, key: str = "reward") -> dict:
    """Each variant's logged `key` over the steps of `stage`: {name: {"steps": [...],
    "seeds": [values per seed, ...], "mean": [...]}}; the mean over seeds at each step that
    every seed logged (the steps are the same when the seeds share a recipe)."""
    import numpy as np

    per_seed: dict[str, list[tuple]] = {}
    for r in results:
        path = Path(r["dir"]) / stage / "stage.json"
        if path.is_file():
            hist = json.loads(path.read_text()).get("log_history", [])
            pts = {e["step"]: e[key] for e in hist if key in e and "step" in e}
            if pts:
                per_seed.setdefault(r["name"], []).append((r.get("seed"), pts))
    curves = {}
    for name, seeds in per_seed.items():
        steps = sorted(set.intersection(*(set(p) for _, p in seeds)))
        vals = [[p[s] for s in steps] for _, p in seeds]
        curves[name] = {"steps": steps, "seeds": vals, "seed_ids": [k for k, _ in seeds],
                        "mean": [float(v) for v in np.mean(vals, axis=0)] if steps else []}
    return curves


def curve_differences(curves: dict, full: str) -> dict:
    """Each variant's logged curve against the full model's (`reward_curves` output), seed
    with seed at the steps both logged: at how many (step, seed) points the full model's value
    is above the variant's, each seed's difference of stage means (full - variant over those
    steps), and both mean curves' first two and last two logged points averaged (where a
    curve starts and ends). TRL logs means over `logging_steps`, so none of this has an
    interval over samples: it says which way the curves lie, not by how much for sure."""
    import numpy as np

    ref = curves.get(full)
    out: dict[str, dict] = {}
    if not ref or not ref["steps"]:
        return out
    ref_seeds = dict(zip(ref["seed_ids"], ref["seeds"]))

    def ends(curve, steps):
        vals = [v for s, v in zip(curve["steps"], curve["mean"]) if s in steps]
        return [float(np.mean(vals[:2])), float(np.mean(vals[-2:]))]

    for name, c in curves.items():
        steps = sorted(set(ref["steps"]) & set(c["steps"]))
        if name == full or not steps:
            continue
        above = points = 0
        stage_means = {}
        for seed, vals in zip(c["seed_ids"], c["seeds"]):
            if seed not in ref_seeds:
                continue
            mine = dict(zip(c["steps"], vals))
            theirs = dict(zip(ref["steps"], ref_seeds[seed]))
            diff = [theirs[s] - mine[s] for s in steps]
            above += sum(d > 0 for d in diff)
            points += len(diff)
            stage_means[seed] = float(np.mean(diff))
        if points:
            out[name] = {"steps": steps, "full_above": above, "points": points,
                         "stage_mean_difference": stage_means,
                         "full_first_last": ends(ref, set(steps)),
                         "first_last": ends(c, set(steps))}
    return out


def curve_lines(diffs: dict, full: str, stage: str, key: str = "reward",
                other_sum: set[str] | frozenset = frozenset()) -> list[str]:
    """The printed form of `curve_differences`; variants in `other_sum` weight this stage's
    rewards differently, so their total is another sum (said on their line)."""
    lines = []
    for name, d in diffs.items():
        means = ", ".join(f"{v:+.3f} (seed {s})" for s, v in d["stage_mean_difference"].items())
        (f0, f1), (v0, v1) = d["full_first_last"], d["first_last"]
        lines.append(
            f"[ablate] {stage} {key}, {full} - {name}: {full} higher at {d['full_above']}/"
            f"{d['points']} logged (step, seed) points; stage means {means}; first two -> last "
            f"two logged points (mean over seeds): {full} {f0:.3f} -> {f1:.3f}, "
            f"{name} {v0:.3f} -> {v1:.3f} (no interval: TRL logs means of logging_steps)"
            + (f"; {name} weights the {stage} rewards otherwise, so its {key} is another sum"
               if name in other_sum else ""))
    return lines


def plot_comparison(results: list[dict], out: Path, stage: str, key: str = "reward",
                    curves: dict | None = None) -> Path | None:
    """One PNG: each variant's `key` (TRL's mean total reward by default) over the steps of
    `stage`; over several seeds, their mean (each seed's curve faint, in the same colour).
    `curves`: `reward_curves(results, stage, key)` when the caller has them already."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = reward_curves(results, stage, key) if curves is None else curves
    if not curves:
        return None
    n_seeds = max(len(c["seeds"]) for c in curves.values())
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, c in curves.items():
        line, = ax.plot(c["steps"], c["mean"], lw=1.4, label=name)
        if len(c["seeds"]) > 1:
            for vals in c["seeds"]:
                ax.plot(c["steps"], vals, lw=0.6, alpha=0.35, color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel(f"mean {key}")
    ax.set_title(f"{stage}: {key} per variant"
                 + (f" (mean of {n_seeds} seeds; each seed faint)" if n_seeds > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"rewards_{stage}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def seeded_runs(named: list[tuple[str, str]], task: dict, out: Path, seeds: int) -> list[tuple]:
    """(name, recipe path, config, the full model's config of the same seed) for every variant
    and seed, variant by variant: one seed keeps the folder `out/<name>`; several take the
    recipe's seed, +1, ... in `out/<name>/seed<k>`."""
    runs, fulls = [], {}
    for name, path in named:
        base = load_config(path, {**task, "output_dir": str(out / name)})
        for k in range(seeds):
            cfg = base if seeds == 1 else load_config(path, {
                **task, "seed": base.seed + k,
                "output_dir": str(out / name / f"seed{base.seed + k}")})
            fulls.setdefault(k, cfg)
            runs.append((name, path, cfg, fulls[k]))
    return runs


def count_trainings(cfgs: list[RunConfig], done=(), complete=()) -> int:
    """How many stage trainings `cfgs` need: stages with the same recipe prefix (`stage_key`)
    are trained once and shared. As the runner reuses them, a run whose whole recipe ran to
    the end (`complete`: run keys, `scan_complete`) trains nothing, and a run's leading stages
    already finished (`done`: stage keys, `scan_finished`) are not trained again."""
    train = set()
    for cfg in cfgs:
        if run_key(cfg) in complete:
            continue
        stages = [s for s in STAGES if getattr(cfg, s).enabled]
        keys = [stage_key(cfg, s) for s in stages]
        first = next((i for i, k in enumerate(keys) if k not in done), len(keys))
        train.update(keys[first:])
    return len(train)


def run_variant(cfg: RunConfig, launcher: str | None) -> dict:
    """Train and evaluate one variant: in this process, or through `launcher` (e.g.
    `accelerate launch --config_file configs/accelerate/ddp.yaml`) on its recipe.yaml."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if launcher is None:
        from rl.pipeline import Pipeline

        return Pipeline(cfg).run()
    script = Path(__file__).resolve().parent / "train_grpo.py"
    cmd = [*shlex.split(launcher), str(script), "--config", str(recipe)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> list[dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(prog="python -m rl.ablate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("variants", nargs="+", help="variant recipes (YAML)")
    p.add_argument("--full", default=None,
                   help="the full model's recipe (default: the first variant's base)")
    p.add_argument("--full-name", default="full", help="the full model's row and folder name")
    p.add_argument("--task", default=None, help="YAML merged over every recipe (another task)")
    p.add_argument("--out", default="runs/ablations", help="output folder")
    p.add_argument("--reuse", nargs="*", default=[],
                   help="output folders of earlier invocations whose finished stages may be reused")
    p.add_argument("--launcher", default=None,
                   help='run each variant as a subprocess, e.g. "accelerate launch"')
    p.add_argument("--seeds", type=int, default=1,
                   help="train every variant with this many seeds (the recipe's seed, +1, ...; "
                        "folders <variant>/seed<k>); tables give the mean and standard deviation "
                        "over seeds, intervals over seeds and held-out scenes")
    p.add_argument("--sampled-rewards", type=int, default=256, metavar="N",
                   help="score each variant that changes one GRPO stage's rewards, and the "
                        "full model, on the sampled completions of that stage for the first N "
                        "held-out prompts, by the full model's terms (0: off)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the variants, what they change and how many stage trainings "
                        "they need; train nothing")
    a = p.parse_args(argv)
    if a.seeds < 1:
        raise SystemExit(f"--seeds: expected 1 or more, got {a.seeds}")

    task = load_yaml_chain(a.task) if a.task else {}
    full_path = a.full
    if full_path is None:
        first = Path(a.variants[0])
        base = (yaml.safe_load(first.read_text()) or {}).get("base")
        if base is None:
            raise SystemExit(f"{first}: has no `base:`; name the full model with --full")
        full_path = str(first.parent / base)
    out = Path(a.out)
    named = [(a.full_name, full_path)] + [(Path(v).stem, v) for v in a.variants]
    if len({n for n, _ in named}) != len(named):
        raise SystemExit(f"variant names (file stems) must be distinct: {[n for n, _ in named]}")
    runs = seeded_runs(named, task, out, a.seeds)     # (name, path, cfg, full cfg of its seed)
    for name, path, cfg, full_cfg in runs[::a.seeds]:
        print(f"[ablate] {name:28s} {path}: {', '.join(differences(cfg, full_cfg)) or 'full'}")
    done: dict[str, Path] = {}
    complete: dict[str, Path] = {}
    for folder in [out, *a.reuse]:
        done.update({k: v for k, v in scan_finished(Path(folder)).items() if k not in done})
        complete.update({k: v for k, v in scan_complete(Path(folder)).items()
                         if k not in complete})
    cfgs = [cfg for _, _, cfg, _ in runs]
    trainings = count_trainings(cfgs, done, complete)
    finished = count_trainings(cfgs) - trainings
    print(f"[ablate] {len(named)} variants x {a.seeds} seed(s): {trainings} stage trainings "
          "(stages with identical recipes trained once"
          + (f"; {finished} finished in --out or --reuse, reused)" if finished else ")"))
    if a.dry_run:
        return []
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t_start = time.perf_counter()
    for name, path, cfg, full_cfg in runs:
        t0 = time.perf_counter()
        src = complete.get(run_key(cfg))
        if src is not None:  # the same recipe ran to the end already: nothing to redo
            print(f"[ablate] {name}: finished in {src}, reused whole", flush=True)
            metrics = reuse_run(cfg, src)
            reused = [s for s in STAGES if getattr(cfg, s).enabled]
        else:
            reused = reuse_stages(cfg, done)
            print(f"[ablate] {name}: training" + (f" (reusing {', '.join(reused)})" if reused
                                                   else ""), flush=True)
            metrics = run_variant(cfg, a.launcher)
            if "final_checkpoint" in metrics:
                complete.setdefault(run_key(cfg), Path(cfg.output_dir))
        for stage in STAGES:
            if getattr(cfg, stage).enabled and (Path(cfg.output_dir) / stage / "stage.json"
                                                ).is_file():
                done.setdefault(stage_key(cfg, stage), Path(cfg.output_dir))
        seconds = time.perf_counter() - t0
        print(f"[ablate] {name} (seed {cfg.seed}): {seconds:.0f} s", flush=True)
        results.append({"name": name, "recipe": path, "dir": cfg.output_dir, "seed": cfg.seed,
                        "changes": differences(cfg, full_cfg), "reused": reused,
                        "metrics": metrics, "seconds": seconds})
        rows = table_rows(results)
        (out / "table.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
        (out / "table.md").write_text(markdown(rows))
    if a.sampled_rewards > 0:
        score_sampled_rewards(results, a.full_name, a.sampled_rewards)
        rows = table_rows(results)
        (out / "table.json").write_text(json.dumps(rows, indent=2, default=float) + "\n")
        (out / "table.md").write_text(markdown(rows))
    for stage in STAGES[1:]:
        curves = reward_curves(results, stage)
        plot_comparison(results, out, stage, curves=curves)
        if not curves:
            continue
        diffs = curve_differences(curves, a.full_name)
        other_sum = {r["name"] for r in results
                     if any(c.startswith(f"{stage}.rewards") for c in r["changes"])}
        for line in curve_lines(diffs, a.full_name, stage, other_sum=other_sum):
            print(line)
        (out / f"rewards_{stage}.json").write_text(json.dumps(
            {"curves": curves, "against_full": diffs}, indent=2) + "\n")
    print(markdown(table_rows(results)))
    print(f"[ablate] table: {out / 'table.md'}; curves: {out}/rewards_*.png, rewards_*.json")
    print(f"[ablate] wall time: {time.perf_counter() - t_start:.0f} s (training and evaluating "
          f"what was not reused; per variant: table.json `seconds`)")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
