"""The whole recipe: cold start → GRPO stage 1 → GRPO stage 2 → evaluation after each.

Each stage writes its checkpoint and `stage.json` (its metrics and log) under the output folder
and is skipped when that file exists, so a crash in stage 2 loses nothing of stage 1: run the
same command again to resume.

Stage 2 trains on the policy's own stage-1 answers. They are regenerated with the current policy
(greedy) at the start of stage 2 and then every `regenerate_every` steps (default: once per pass
over the stage-2 prompts); each regeneration starts a new GRPOTrainer on the new prompts (the
optimizer state restarts with it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from rl.config import STAGES, RunConfig, differences, load_config, stage_key, to_dict
from rl.context import RunContext
from rl.data.splits import (  # noqa: F401 (re-exported: the pipeline's names)
    SPLIT_SEEDS,
    build_config,
    curriculum_samples,
    curriculum_scenes,
    data_workers,
    local_cores,
    recipe_rows,
    records,
)
from rl.files import write_json


def _ci(d: dict) -> str:
    """ " [lo, hi]" of a difference's interval, or "" without one."""
    return " [{:+.3f}, {:+.3f}]".format(*d["interval"]) if d.get("interval") else ""


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


class RecipeMismatch(ValueError):
    """An output folder holds finished stages of another recipe."""


def log(msg: str) -> None:
    print(f"[getok] {msg}", flush=True)


def finished_parts(out: Path) -> list[str]:
    """What an earlier run left finished in `out`: "untrained" (the extended starting model or
    its evaluation) and each stage whose `stage.json` exists."""
    done = []
    metrics = out / "metrics.json"
    if (out / "model_init" / "spatial_vocab.json").is_file() or metrics.is_file():
        done.append("untrained")
    return done + [s for s in STAGES if (out / s / "stage.json").is_file()]


def check_launch(cfg: RunConfig, out: Path | None = None) -> None:
    """Refuse, before anything trains, what a GRPO stage would refuse only when it starts (after
    the cold start, hours on the paper recipe): vLLM rollouts without vLLM installed (TRL's
    GRPOTrainer raises then), and `trainable: refinement_tokens` under DeepSpeed ZeRO-3
    (`rl.training.refinement_rows_only`; the launch's ZeRO stage: `rl.training.zero3_launch`).
    A stage already finished in `out` (a resumed run) is taken back, not trained, and is not
    checked."""
    import importlib.util

    from rl.training import ROWS_UNDER_ZERO3, zero3_launch

    for name in STAGES[1:]:
        stage = getattr(cfg, name)
        if not stage.enabled or (out is not None and (out / name / "stage.json").is_file()):
            continue
        if stage.use_vllm and importlib.util.find_spec("vllm") is None:
            raise ValueError(f"{name}.use_vllm: vLLM is not installed in this environment; "
                             f"install the extra (pip install -e \".[vllm]\", GPU only) or set "
                             f"use_vllm: false")
        if stage.trainable == "refinement_tokens" and zero3_launch():
            raise ValueError(f"{name}.{ROWS_UNDER_ZERO3} (or trainable: all)")


def check_resumable(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume in `out` when its finished parts were made by another recipe (their
    stage keys differ): mixing them would report one recipe's metrics for another. Values that
    do not change results (output folder, logging, threads) and sections of stages not yet
    finished may differ."""
    done = finished_parts(out)
    if not done:
        return
    recipe = out / "config.json"
    where = f"{out}: holds finished {', '.join(done)} of an earlier run"
    if not recipe.is_file():
        raise RecipeMismatch(f"{where} but no config.json saying which recipe made it; use "
                             "another output_dir or empty this one")
    try:
        prev = load_config(recipe)
    except ValueError as e:
        raise RecipeMismatch(f"{where} whose recipe cannot be read ({e}); use another "
                             "output_dir or empty this one") from None
    clash = [part for part in done if stage_key(prev, part) != stage_key(cfg, part)]
    if clash:
        diff = ", ".join(differences(cfg, prev)) or "(values inside lists)"
        raise RecipeMismatch(
            f"{where}; {', '.join(clash)} came from another recipe (this recipe differs in: "
            f"{diff[:600]}). Use another output_dir, or remove {out} to start over.")


def set_cpu_threads(threads: int | None) -> None:
    """On a CPU run, use `threads` torch threads (None: the cores this process may use,
    divided among the local processes)."""

    import torch

    if torch.cuda.is_available():
        return
    torch.set_num_threads(local_cores() if threads is None else threads)


def reading_summary(m: dict) -> str:
    """One line of an evaluation: gIoU with its interval, referent accuracy beside chance and
    per kind, the same over the rows whose prediction picked an object, N-acc."""
    parts = [f"gIoU {m['gIoU']:.3f}"]
    iv = m.get("intervals", {}).get("gIoU")
    if iv:
        parts[0] += f" [{iv[0]:.3f}, {iv[1]:.3f}]"
    if m.get("referent_accuracy") is not None:
        lo, hi = m["referent_interval"]
        kinds = ", ".join(f"{k} {v['referent_accuracy']:.2f}/{v['chance']:.2f}"
                          for k, v in m.get("referent_by_kind", {}).items())
        parts.append(f"referent accuracy {m['referent_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"(chance {m['chance']:.3f}; per kind accuracy/chance: {kinds})")
        words = ", ".join(f"{w} {v['referent_accuracy']:.2f}"
                          for w, v in m.get("referent_by_superlative", {}).items())
        if words:
            parts.append(f"superlatives by word: {words}")
        if m.get("referent_accuracy_picked") is not None:  # rows that picked an object
            kinds = ", ".join(f"{k} {v['referent_accuracy_picked']:.2f}/{v['chance_picked']:.2f}"
                              for k, v in m.get("referent_by_kind", {}).items()
                              if v.get("referent_accuracy_picked") is not None)
            parts.append(f"where an object was picked ({100 * m['picked_share']:.0f} % of "
                         f"rows): {m['referent_accuracy_picked']:.3f} (chance "
                         f"{m['chance_picked']:.3f}; per kind: {kinds})")
    if m.get("no_target_accuracy") is not None:
        parts.append(f"N-acc {m['no_target_accuracy']:.3f}")
    return "; ".join(parts)


def picture_caption(row: dict, pred) -> str:
    """What a picture says: the expression, its kind and objects, the IoU, and for a
    single-target row whether the prediction picked the named object."""
    sc = pred.score
    head = f'"{row.get("expression", "")}"  [{row.get("kind") or "?"}'
    head += f", {sc.num_objects} objects]" if sc is not None and sc.num_objects else "]"
    if sc is None:
        return head
    tail = f"IoU {sc.iou:.2f}"
    if sc.referent is not None:
        tail += " - picked the named object" if sc.referent else " - missed the named object"
    if not sc.parsed:
        tail += " - answer did not parse"
    return f"{head}\n{tail}"


def _passes(n_items: int, n_out: int, rng, start: int = 0) -> list[int]:
    """`n_out` indices start..start+n_items-1, in passes of fresh random order."""
    order: list[int] = []
    while len(order) < n_out:
        order += [start + int(i) for i in rng.permutation(n_items)]
    return order[:n_out]


def curriculum_dataset(first: list[dict], rows: list[dict], sft, seed: int, processor=None):
    """The cold start's samples in the order they are trained on: the curriculum's `first`
    rows (each once, in order; or with `sft.curriculum_scenes`, that many of them in passes of
    fresh random order) for `sft.curriculum_steps`, then `rows` in passes of fresh random order
    until `sft.max_steps` are filled. Returns (dataset, extra trainer arguments): the trainer
    must read it in order (`train_sampling_strategy="sequential"`).
    With `processor`, each distinct row's conversation is rendered to text once, before the
    rows are repeated into that order (`rl.train_sft.render_conversations`; the trainer then
    renders nothing): the default's 96,000 trained samples are 32,000 distinct rows."""
    from datasets import Dataset

    from rl.train_sft import render_conversations

    n_first, n_scenes = curriculum_samples(sft), curriculum_scenes(sft)
    if len(first) < n_scenes:
        raise ValueError(f"the curriculum has {len(first)} samples for {n_scenes}")
    n_rest = max(0, sft.max_steps - sft.curriculum_steps) * (
        sft.batch_size * sft.gradient_accumulation_steps)
    rng = np.random.default_rng(seed)
    head = (list(range(n_first)) if sft.curriculum_scenes is None
            else _passes(n_scenes, n_first, rng))
    ds = Dataset.from_list(first[:n_scenes] + rows).select_columns(["image", "prompt",
                                                                    "completion"])
    if processor is not None:
        ds = render_conversations(ds, processor)
    ds = ds.select(head + _passes(len(rows), n_rest, rng, start=n_scenes))
    return ds, {"train_sampling_strategy": "sequential"}


class Pipeline:
    """Runs the stages of a RunConfig; `run()` returns the metrics written to metrics.json."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        # The processor joins the context once the starting model exists (`run`).
        self.ctx = RunContext.from_config(cfg, processor=None)
        self.vocab, self.codec, self.prompts = self.ctx.vocab, self.ctx.codec, self.ctx.prompts
        self.metrics: dict = {"evaluation": {}, "rewards": {}, "seconds": {}}
        self.curves = None
        self.fixed_prompts: dict = {}  # per GRPO stage, its reward on fixed prompts (eval)
        # The latest evaluation's predictions and the stage they came from (pictures, the
        # shuffled control's paired difference).
        self.last_predictions: list | None = None
        self.last_evaluated: str | None = None
        self._evaluated: list = []  # (stage, per-sample IoUs, rounds), evaluated or taken back
        # SFT rows built in `run` while the model was made in a second process.
        self._prebuilt_sft: list | None = None
        self._prebuilt_curriculum: list | None = None

    # ---- pieces ---------------------------------------------------------------------------
    def decoder(self):
        return self.ctx.decoder()

    def build_config(self):
        """How this run's records become samples (rl.data.samples.BuildConfig)."""
        return build_config(self.cfg, self.vocab, self.codec)

    def stage_context(self, name: str) -> RunContext:
        """The run context of stage `name`: it writes into `output_dir/name`."""
        return self.ctx.with_output(self.out / name)

    def evaluate(self, name: str, model, rounds: int = 0) -> dict:
        from rl.evaluate import EvalSettings, evaluate_rows

        t0 = time.perf_counter()
        model.eval()
        settings = EvalSettings(rounds, self.cfg.eval.max_new_tokens, self.cfg.eval.batch_size)
        m, preds = evaluate_rows(model, self.eval_rows, self.ctx, settings)
        m["refinement_rounds"] = rounds
        self.metrics["evaluation"][name] = m
        self.last_predictions, self.last_evaluated = preds, name
        self._compare(name, [p.score.iou for p in preds], rounds)
        if self.cfg.eval.pictures:
            self._contact_sheet(name, preds)
        if self.ctx.trackers:
            self.ctx.trackers.log_evaluation(name, m)
        acc = m["Acc@0.5"]
        log(f"held-out after {name}: gIoU {m['gIoU']:.3f}, cIoU {m['cIoU']:.3f}, Acc@0.5 "
            f"{'n/a' if acc is None else f'{acc:.3f}'}, parse failures {m['parse_failures']}/"
            f"{m['samples']} ({time.perf_counter() - t0:.0f} s)")
        return m

    def _compare(self, name: str, ious: list[float], rounds: int) -> None:
        """Paired bootstrap of this stage's held-out IoUs against the stage evaluated before
        it, in this process or taken back from an earlier one (its `stage.json` keeps the
        IoU of each held-out sample; metrics.json `comparisons`)."""
        from rl.metrics import paired_difference

        prev = self._evaluated[-1] if self._evaluated else None
        self._evaluated.append((name, ious, rounds))
        if prev is None or prev[0] == "untrained":
            return
        d = paired_difference(ious, prev[1])
        self.metrics.setdefault("comparisons", {})[f"{name} - {prev[0]}"] = {
            "metric": "gIoU", "rounds": {name: rounds, prev[0]: prev[2]}, **d}

    def resume(self, name: str) -> bool:
        """True when stage `name` finished in an earlier run: its metrics are taken back."""
        path = self.out / name / "stage.json"
        if not path.is_file():
            return False
        done = json.loads(path.read_text())
        log(f"{name}: done already, resuming after it")
        self.metrics["evaluation"][name] = done["evaluation"]
        if done.get("sample_iou") is not None:
            # Compared with the stage before it as in a run not stopped (its stage.json keeps
            # the IoU of each held-out sample), and the next stage with it.
            rounds = (done["evaluation"] or {}).get("refinement_rounds", 0)
            self._compare(name, done["sample_iou"], rounds)
        if name.startswith("grpo"):
            if done.get("fixed_prompts"):  # its reward on fixed prompts, before and after
                self.fixed_prompts[name] = done["fixed_prompts"]
            self._reward_metrics(name, done["log_history"])
        return True

    def _reward_metrics(self, name: str, log_history: list) -> None:
        """A GRPO stage's `metrics.json` `rewards` entry: the logged curve's summary and, when
        measured, its reward on fixed prompts before and after it."""
        self.reward_summary(name, log_history)
        if name in self.fixed_prompts:
            self.metrics["rewards"].setdefault(name, {})["fixed_prompts"] = (
                self.fixed_prompts[name])

    def finish_stage(self, name: str, log_history: list, seconds: float, extra=None) -> None:
        ious = next((e[1] for e in self._evaluated if e[0] == name), None)
        info = {"seconds": seconds, "evaluation": self.metrics["evaluation"].get(name),
                "log_history": log_history,
                # per held-out sample, for paired comparisons between runs (rl.ablate)
                "sample_iou": None if ious is None else [round(float(x), 6) for x in ious],
                **({"fixed_prompts": self.fixed_prompts[name]} if name in self.fixed_prompts
                   else {}),
                **(extra or {})}
        write_json(self.out / name / "stage.json", info)
        if (self.out / name / "config.json").is_file():  # a checkpoint: its model card
            from rl.card import write_card

            write_card(self.out / name, to_dict(self.cfg), name, info["evaluation"])

    def reward_summary(self, name: str, log_history: list) -> dict:
        """Mean reward (weighted total and each term) over the first and last fifth of steps;
        the share of groups whose rewards are all equal (TRL's `frac_reward_zero_std`: no
        advantage, so no policy-gradient signal from them); also the stage-2 signal shares
        (`<term>/nonzero`, `refine_format/complete`, over the samples with a proposal to refine)
        and `refine_format/no_proposal`."""
        entries = [e for e in log_history if "reward" in e]
        if not entries:
            return {}
        k = max(1, len(entries) // 5)
        keys = ["reward"] + sorted({key for e in entries for key in e
                                    if (key.startswith("rewards/") and key.endswith("/mean"))
                                    or key.endswith("/nonzero")
                                    or key in ("refine_format/complete",
                                               "refine_format/no_proposal",
                                               "frac_reward_zero_std")})
        out = {}
        for key in keys:
            vals = [e[key] for e in entries if key in e and e[key] is not None
                    and not (isinstance(e[key], float) and math.isnan(e[key]))]
            if vals:
                out[key] = {"first_fifth": float(np.mean(vals[:k])),
                            "last_fifth": float(np.mean(vals[-k:]))}
        with_proposal = [(e["reward"], 1.0 - e["refine_format/no_proposal"]) for e in entries
                         if e.get("refine_format/no_proposal") is not None]
        if len(with_proposal) == len(entries):
            # Stage 2: a sample whose proposal is empty scores 0 on every term (nothing to
            # refine), so the logged mean falls when a fifth's prompts draw more empty
            # proposals. Over the samples with a proposal (every logging step has as many
            # samples): the fifth's summed reward over its summed share with a proposal.
            def per_proposal(part):
                share = sum(w for _, w in part)
                return float(sum(r for r, _ in part) / share) if share > 0 else math.nan
            out["reward/with_proposal"] = {"first_fifth": per_proposal(with_proposal[:k]),
                                           "last_fifth": per_proposal(with_proposal[-k:])}
        self.metrics["rewards"][name] = out
        return out

    def _fixed_prompt_rewards(self, model, rows: list[dict], stage_name: str
                              ) -> list[float] | None:
        """A GRPO stage's reward per fixed training prompt (`eval.reward_prompts`; stage 2:
        `eval.refinement_reward_prompts`), or None when off."""
        from rl.evaluate import sampled_rewards

        e = self.cfg.eval
        n = e.reward_prompts if stage_name == "grpo_stage1" else e.refinement_reward_prompts
        if not n:
            return None
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1:  # each process holds a shard of the model (ZeRO-3) or a copy
            log(f"{stage_name}'s reward on fixed prompts is measured in single-process runs "
                f"only: off for this run of {processes} processes")
            return None
        stage = getattr(self.cfg, stage_name)
        return sampled_rewards(model, rows[:n], self.ctx, stage, stage_name, e.reward_samples,
                               seed=self.cfg.seed, max_new_tokens=stage.max_completion_length,
                               batch_size=e.batch_size,
                               proposal_tokens=self.cfg.grpo_stage1.max_completion_length)

    def _fixed_prompt_change(self, before: list[float], after: list[float],
                             stage_name: str) -> None:
        """Record (metrics.json `rewards.<stage>.fixed_prompts`) and log a stage's reward on
        the fixed prompts before and after it, with the paired interval of the change."""
        from rl.metrics import paired_difference

        d = paired_difference(after, before)
        self.fixed_prompts[stage_name] = {
            **d, "prompts": len(before), "per_prompt": self.cfg.eval.reward_samples,
            "before": float(np.mean(before)), "after": float(np.mean(after))}
        ci = "" if d["interval"] is None else " [{:+.3f}, {:+.3f}]".format(*d["interval"])
        log(f"{stage_name} reward on {len(before)} fixed training prompts "
            f"({self.cfg.eval.reward_samples} samples each): {np.mean(before):.3f} -> "
            f"{np.mean(after):.3f}, {d['difference']:+.3f}{ci}")

    def _stage(self, name: str, train, model, current: Path, rounds: int = 0):
        """Run stage `name` unless an earlier run finished it: `train(model)` returns the
        trained model and its log; then reward plots (GRPO), evaluation, `stage.json` and
        metrics. Returns the model in memory, or None when the stage was taken back."""
        from rl.models import load_model
        from rl.visualize import plot_rewards

        if self.resume(name):
            return None
        if self.curves is not None:
            self.curves.stage, self.curves.offset = name, 0
        t0 = time.perf_counter()
        model = load_model(current, self.cfg.model) if model is None else model
        model, hist = train(model)
        if name.startswith("grpo"):
            self._reward_metrics(name, hist)
            plot_rewards(hist, self.out / "plots", name)
        if self.cfg.eval.enabled:
            self.evaluate(name, model, rounds=rounds)
        self.finish_stage(name, hist, time.perf_counter() - t0)
        self._save_metrics()
        return model

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        import torch
        from datasets import Dataset
        from transformers import AutoProcessor

        from rl.data.samples import build_grpo_stage1
        from rl.grpo import run_grpo
        from rl.models import load_model, prepare_model
        from rl.train_sft import run_sft

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        set_cpu_threads(cfg.cpu_threads)
        t_start = time.perf_counter()
        check_launch(cfg, self.out)
        check_resumable(cfg, self.out)
        write_json(self.out / "config.json", to_dict(cfg), indent=2, default=str)
        build = self.build_config()
        background = self._model_in_background()
        if background is not None:
            # The tower's pre-training keeps one core busy; the data is built on the others
            # meanwhile (the same records and rows with fewer processes, tested).
            data_cfg = dataclasses.replace(cfg, cpu_threads=data_workers(cfg) - 1)
            try:
                train = records(data_cfg, "train")
                self.eval_rows = recipe_rows(data_cfg, "eval")
                self._prebuilt_sft = self._build_sft(train, build, data_workers(data_cfg))
                if cfg.sft.curriculum_steps:
                    self._prebuilt_curriculum = self._build_sft(
                        records(data_cfg, "curriculum"), build, data_workers(data_cfg))
            except BaseException:
                background.stop()
                raise
            init_dir = background.join()
        else:
            init_dir = prepare_model(cfg.model, self.out, cfg.seed)
            train = records(cfg, "train")
            self.eval_rows = recipe_rows(cfg, "eval")
        log(f"model with the spatial vocabulary: {init_dir}")
        log(f"data: {len(train)} training records, {len(self.eval_rows)} held-out "
            f"({cfg.data.source})")
        self.ctx.processor = AutoProcessor.from_pretrained(init_dir)
        if cfg.eval.curve_every:
            self.curves = self._curve_callback()
        model, current = None, init_dir

        if cfg.eval.enabled and "untrained" not in self._done_evals():
            model = load_model(init_dir, cfg.model)
            self.evaluate("untrained", model)
            self._save_metrics()

        # -- cold start
        sft = cfg.sft
        if sft.checkpoint:
            current, model = Path(sft.checkpoint), None
        elif sft.enabled:
            def train_sft(model):
                rows, self._prebuilt_sft = self._prebuilt_sft, None  # held by this stage only
                if rows is None:
                    rows = self._build_sft(train, build)
                stage, hist = sft, []
                if sft.curriculum_steps and sft.curriculum_restart:
                    if sft.curriculum_steps >= sft.max_steps:
                        raise ValueError(f"sft.curriculum_steps {sft.curriculum_steps} leaves "
                                         f"no step of sft.max_steps {sft.max_steps} for the "
                                         f"training scenes")
                    model, hist = self._curriculum_pass(model, build)
                    stage = dataclasses.replace(sft, max_steps=sft.max_steps
                                                - sft.curriculum_steps)
                    ds = Dataset.from_list(rows).select_columns(["image", "prompt",
                                                                 "completion"])
                    log(f"sft: {len(ds)} samples, {stage.max_steps} steps (a new schedule "
                        f"after the curriculum)")
                elif sft.curriculum_steps:
                    ds, extra = curriculum_dataset(self._curriculum_rows(build), rows, sft,
                                                   cfg.seed, processor=self.ctx.processor)
                    stage = dataclasses.replace(sft, extra_args={**sft.extra_args, **extra})
                    log(f"sft: {sft.curriculum_steps} curriculum steps on "
                        f"{self._curriculum_scenes_label()}, then {len(rows)} samples")
                else:
                    ds = Dataset.from_list(rows).select_columns(["image", "prompt",
                                                                 "completion"])
                    log(f"sft: {len(ds)} samples, {sft.max_steps} steps")
                model, main = run_sft(stage, self.stage_context("sft"), model, ds)
                hist = hist + [{**e, "step": e.get("step", 0) + sft.max_steps - stage.max_steps}
                               for e in main]
                if sft.policy_refinement_steps:
                    model, more = self._policy_refinement_pass(model, train, rows, build)
                    hist = hist + [{**e, "step": e.get("step", 0) + sft.max_steps}
                                   for e in more]
                return model, hist

            model = self._stage("sft", train_sft, model, current)
            current = self.out / "sft"

        # -- GRPO stage 1
        s1 = cfg.grpo_stage1
        grpo_rows = list(build_grpo_stage1(train[: s1.n_prompts or len(train)], self.prompts,
                                           build))
        if s1.enabled:
            def train_stage1(model, reference=current):
                ds = Dataset.from_list(grpo_rows).select_columns(["image", "prompt", "solution"])
                log(f"grpo_stage1: {len(ds)} prompts, {s1.max_steps} steps, "
                    f"{s1.num_generations} generations, rewards {s1.rewards}")
                before = self._fixed_prompt_rewards(model, grpo_rows, "grpo_stage1")
                model, hist = run_grpo(s1, "grpo_stage1", self.stage_context("grpo_stage1"),
                                       model, ds, reference=reference)
                if before is not None:
                    self._fixed_prompt_change(
                        before, self._fixed_prompt_rewards(model, grpo_rows, "grpo_stage1"),
                        "grpo_stage1")
                return model, hist

            model = self._stage("grpo_stage1", train_stage1, model, current)
            current = self.out / "grpo_stage1"

        # -- GRPO stage 2
        s2 = cfg.grpo_stage2
        if s2.enabled:
            def train_stage2(model, reference=current):
                rows = grpo_rows[: s2.n_prompts or len(grpo_rows)]
                if s2.prompts == "proposed":
                    rows = self._proposed_rows(model, rows)
                before = self._fixed_prompt_rewards(model, rows, "grpo_stage2")
                model, hist = self._stage2(model, rows, reference=reference)
                if before is not None:
                    self._fixed_prompt_change(
                        before, self._fixed_prompt_rewards(model, rows, "grpo_stage2"),
                        "grpo_stage2")
                return model, hist

            model = self._stage("grpo_stage2", train_stage2, model, current,
                                rounds=cfg.eval.rounds)
            current = self.out / "grpo_stage2"

        if cfg.eval.enabled and cfg.eval.rounds_curve and s2.enabled and self.codec.name == "grid":
            self._rounds_curve(model, current)
        if cfg.eval.enabled and cfg.eval.shuffle_control and any(
                r.get("objects") for r in self.eval_rows):
            self._shuffle_control(model, current)
        if self.curves is not None:
            from rl.curves import plot_curves

            plot_curves(self.curves.points, self.out / "plots" / "curves.png")
            self.metrics["seconds"]["curves"] = self.curves.seconds
        if cfg.eval.enabled and cfg.eval.pictures:
            self._pictures()
        self.metrics["seconds"]["total"] = time.perf_counter() - t_start
        self.metrics["final_checkpoint"] = str(current)
        self._save_metrics()
        self._report()
        return self.metrics

    def _rounds_curve(self, model, current: Path) -> list:
        """The final model on the held-out scenes after 0, 1, ..., `eval.rounds_curve`
        refinement rounds (one prediction pass; rl.evaluate.rounds_curve). The final stage's
        evaluation in this process already holds its first `eval.rounds` rounds: they are
        continued, not generated again (the same predictions, tested)."""
        from rl.evaluate import EvalSettings, curve_line, predict, rounds_curve
        from rl.models import load_model

        t0 = time.perf_counter()
        model = load_model(current, self.cfg.model) if model is None else model
        model.eval()
        e = self.cfg.eval
        settings = EvalSettings(e.rounds_curve, e.max_new_tokens, e.batch_size)
        rows = self.eval_rows
        start = None
        if (self.last_evaluated == current.name
                and self.metrics["evaluation"][current.name]["refinement_rounds"]
                <= e.rounds_curve):
            start = self.last_predictions
        preds = predict(model, [r["prompt"] for r in rows], [r["image"] for r in rows],
                        self.ctx, settings, start=start)
        curve, _ = rounds_curve(preds, rows, self.ctx, e.rounds_curve)
        self.metrics["rounds_curve"] = {"model": current.name, "curve": curve}
        self.metrics["seconds"]["rounds_curve"] = time.perf_counter() - t0
        log(f"refinement rounds ({current.name}, held-out): {curve_line(curve)}")
        return curve

    def _shuffle_control(self, model, current: Path) -> dict:
        """The final model on the held-out scenes with their expressions shuffled among rows
        of the same kind (rl.evaluate.shuffled_rows): a model that ignores the text scores as
        on the real expressions; one that reads falls below chance: an attribute expression
        from another scene mostly names an object this scene lacks, which the task's
        no-target rows teach it to decline (no object picked), and where it does pick one,
        the pick is the original target at chance rate (`referent_accuracy_picked` against
        `chance_picked`; their row-by-row difference with its interval in
        `picked_minus_chance`). Where the rows carry their synthetic scenes, also the
        retargeted control (rl.evaluate.retargeted_rows: a fresh expression of the row's kind
        naming a uniformly drawn object of its scene), where a model that reads every
        expression right scores the chance rate (`reader_rate`; the row-by-row difference in
        `minus_reader_rate`) and one that ignores the text scores as on the real expressions.
        With the real expressions' predictions of this process, also the paired difference of
        referent accuracy, real - control, over the single-target rows
        (`controls.real_minus_shuffled_referent`, `controls.real_minus_retargeted_referent`)."""
        from rl.evaluate import EvalSettings, retargeted_rows, shuffled_rows
        from rl.models import load_model

        t0 = time.perf_counter()
        final = current.name
        rounds = self.cfg.eval.rounds if final == "grpo_stage2" else 0
        model = load_model(current, self.cfg.model) if model is None else model
        model.eval()
        settings = EvalSettings(rounds, self.cfg.eval.max_new_tokens, self.cfg.eval.batch_size)
        self.metrics["controls"] = {}
        m = self._control(model, final, settings, "shuffled", "shuffled-expression",
                          shuffled_rows(self.eval_rows, self.prompts, seed=self.cfg.seed))
        if all(r.get("scene") for r in self.eval_rows):
            self._control(model, final, settings, "retargeted", "retargeted-expression",
                          retargeted_rows(self.eval_rows, self.prompts, seed=self.cfg.seed))
        self.metrics["seconds"]["controls"] = time.perf_counter() - t0
        return m

    def _control(self, model, final: str, settings, name: str, title: str,
                 rows: list[dict]) -> dict:
        """Score the final model on a control's rows (`<name>_expression` in `controls`), with
        the paired real - control referent accuracy and, where the rows give a reader's rate,
        accuracy - that rate row by row (`minus_reader_rate`); log one line."""
        from rl.evaluate import evaluate_rows, reader_gap
        from rl.metrics import paired_difference

        m, preds = evaluate_rows(model, rows, self.ctx, settings)
        m["model"], m["refinement_rounds"] = final, settings.rounds
        self.metrics["controls"][f"{name}_expression"] = m
        real = self.metrics["evaluation"].get(final, {})
        gap = ""
        if self.last_evaluated == final:
            pairs = [(a.score.referent, b.score.referent)
                     for a, b in zip(self.last_predictions, preds, strict=True)
                     if a.score.referent is not None and b.score.referent is not None]
            if pairs:
                d = paired_difference([float(a) for a, _ in pairs], [float(b) for _, b in pairs])
                self.metrics["controls"][f"real_minus_{name}_referent"] = d
                gap = f"; real - {name} {d['difference']:+.3f}{_ci(d)}"
        reader = ""
        d = reader_gap([p.score for p in preds], rows)
        if d is not None:
            m["reader_rate"], m["minus_reader_rate"] = d.pop("rate"), d
            reader = (f"; a reader of every expression {_fmt(m['reader_rate'])}, difference "
                      f"{d['difference']:+.3f}{_ci(d)}")
        picked = ""
        if m.get("referent_accuracy_picked") is not None:
            over = m.get("picked_minus_chance") or {}
            picked = (f"; where an object was picked ({100 * m['picked_share']:.0f} % of rows) "
                      f"{_fmt(m['referent_accuracy_picked'])}, chance "
                      f"{_fmt(m['chance_picked'])}"
                      + (f", difference {over['difference']:+.3f}{_ci(over)}" if over else ""))
        log(f"{title} control ({final}): referent accuracy "
            f"{_fmt(m.get('referent_accuracy'))} (real expressions "
            f"{_fmt(real.get('referent_accuracy'))}, chance {_fmt(m.get('chance'))}{gap}"
            f"{reader}{picked}), gIoU {m['gIoU']:.3f}")
        return m

    def _curve_callback(self):
        """Learning curves on validation scenes (rl.curves), added to every trainer."""
        from rl.curves import CurveCallback
        from rl.evaluate import EvalSettings

        e = self.cfg.eval
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1:
            log(f"learning curves (eval.curve_every) are measured in single-process runs only: "
                f"off for this run of {processes} processes")
            return None
        rows = recipe_rows(self.cfg, "validation")
        settings = EvalSettings(0, e.max_new_tokens, e.batch_size)
        callback = CurveCallback(rows, self.ctx, settings, e.curve_every,
                                 self.out / "curves.json")
        self.ctx.callbacks.append(callback)
        log(f"learning curves: {len(rows)} validation scenes every {e.curve_every} steps")
        return callback

    def _curriculum_rows(self, build) -> list[dict]:
        """The curriculum's SFT rows (`records(cfg, "curriculum")`, built as the training
        scenes are; kept from `run` where they were built beside the model)."""
        if self._prebuilt_curriculum is not None:
            rows, self._prebuilt_curriculum = self._prebuilt_curriculum, None
            return rows
        return self._build_sft(records(self.cfg, "curriculum"), build)

    def _model_in_background(self):
        """The starting checkpoint made in a second process (`rl.models.ModelInBackground`)
        while this one builds the data, where that pays: the tiny model with its tower
        pre-trained (minutes on one core) is still to be made, the run has at least two
        cores and is one process. Else None: `prepare_model` here, then the data."""
        from rl.models import ModelInBackground

        cfg = self.cfg
        tower = (cfg.model.tiny or {}).get("vision_pretrain") or {}
        if (cfg.model.path is not None or not tower.get("steps")
                or (self.out / "model_init" / "spatial_vocab.json").is_file()
                or data_workers(cfg) < 2 or int(os.environ.get("WORLD_SIZE", "1")) > 1
                or not (cfg.sft.enabled and not cfg.sft.checkpoint)):
            return None
        log("the starting checkpoint (tiny model, tower pre-training) in a second process "
            "on one thread, the data built here meanwhile")
        return ModelInBackground(cfg.model, self.out, cfg.seed, threads=1)

    def _build_sft(self, recs: list, build, workers: int | None = None) -> list[dict]:
        """The SFT rows of `recs` (rl.data.samples.build_sft), built over `workers` processes
        (default `data_workers`): the rows one process would build, in the same order."""
        from rl.data.parallel import in_processes
        from rl.data.samples import build_sft

        decoder = self.decoder()
        return in_processes(lambda lo, hi: list(build_sft(recs[lo:hi], decoder, self.prompts,
                                                          build, start=lo)),
                            len(recs), workers or data_workers(self.cfg))

    def _curriculum_scenes_label(self) -> str:
        d = self.cfg.data
        return (f"{d.curriculum_objects} objects "
                f"({d.curriculum_distractors or d.distractors} distractors)")

    def _curriculum_pass(self, model, build) -> tuple:
        """The curriculum as a pass of its own (`sft.curriculum_restart`): its scenes for
        `sft.curriculum_steps` steps with the stage's warm-up and schedule over those steps;
        the training scenes then start a new schedule and a new optimizer state."""
        from datasets import Dataset

        from rl.train_sft import run_sft

        sft = self.cfg.sft
        ds = Dataset.from_list(self._curriculum_rows(build)).select_columns(
            ["image", "prompt", "completion"])
        log(f"sft curriculum: {len(ds)} samples of {self._curriculum_scenes_label()}, "
            f"{sft.curriculum_steps} steps")
        stage = dataclasses.replace(sft, max_steps=sft.curriculum_steps,
                                    collate_cache=min(sft.collate_cache, len(ds)))
        model, hist = run_sft(stage, self.stage_context("sft"), model, ds)
        if self.curves is not None:
            self.curves.offset = sft.curriculum_steps
        model.train()
        return model, hist

    def _policy_refinement_pass(self, model, train, sft_rows, build) -> tuple:
        """The cold start's second pass: refinement dialogues from the model's own greedy
        proposals on training scenes (rl.data.policy_refinement), mixed one to one with
        stage-1 samples, for `sft.policy_refinement_steps` steps; saved over `sft/`."""
        from datasets import Dataset

        from rl.data.policy_refinement import policy_refinement_rows
        from rl.data.samples import build_grpo_stage1
        from rl.evaluate import generate
        from rl.train_sft import run_sft

        sft, cfg = self.cfg.sft, self.cfg
        scenes = train[: sft.policy_refinement_records]
        rows = list(build_grpo_stage1(scenes, self.prompts, build))
        model.eval()
        proposals = generate(model, self.ctx.processor, [r["prompt"] for r in rows],
                             [r["image"] for r in rows], cfg.grpo_stage1.max_completion_length,
                             cfg.eval.batch_size)
        skipped: dict = {}
        dialogues = policy_refinement_rows(
            rows, proposals, self.codec, self.vocab, self.prompts, skipped,
            box_target=sft.policy_refinement_box,
            decoder=self.ctx.decoder() if sft.policy_refinement_box != "corner" else None)
        self.metrics["sft_second_pass"] = {"scenes": len(rows), "dialogues": len(dialogues),
                                           "left_out": skipped}
        if not dialogues:
            log(f"sft second pass: none of the {len(rows)} proposals on training scenes has an "
                f"instance ({skipped}); no refinement dialogue to train on, pass not run")
            return model, []
        stage1 = [r for r in sft_rows if r["task"] == "stage1"][: len(dialogues)]
        mix = [{k: r[k] for k in ("image", "prompt", "completion")} for r in dialogues + stage1]
        ds = Dataset.from_list(mix)
        log(f"sft second pass: {len(dialogues)} refinement dialogues from the model's own "
            f"proposals on {len(rows)} training scenes ({skipped or 'none left out'}) and "
            f"{len(stage1)} stage-1 samples, {sft.policy_refinement_steps} steps")
        stage = dataclasses.replace(sft, max_steps=sft.policy_refinement_steps,
                                    learning_rate=(sft.learning_rate
                                                   if sft.policy_refinement_learning_rate is None
                                                   else sft.policy_refinement_learning_rate),
                                    warmup_steps=0, collate_cache=min(sft.collate_cache,
                                                                      len(mix)))
        if self.curves is not None:
            self.curves.offset = sft.max_steps
        model.train()
        return run_sft(stage, self.stage_context("sft"), model, ds)

    def _proposed_rows(self, model, rows: list[dict]) -> list[dict]:
        """Stage 2's prompts on which `model` (the policy starting the stage) proposes at least
        one instance, greedily as evaluation does (`grpo_stage2.prompts: proposed`). Counted
        in `metrics["stage2_prompts"]`; when it proposes for none, every prompt is kept (and
        said), since the stage has nothing else to train on."""
        from rl.evaluate import generate

        cfg = self.cfg
        training = model.training
        model.eval()
        proposals = generate(model, self.ctx.processor, [r["prompt"] for r in rows],
                             [r["image"] for r in rows], cfg.grpo_stage1.max_completion_length,
                             cfg.eval.batch_size)
        model.train(training)
        kept = [r for r, text in zip(rows, proposals, strict=True)
                if self.codec.parse_answer(text).instances]
        left = len(rows) - len(kept)
        self.metrics["stage2_prompts"] = {"candidates": len(rows), "kept": len(kept),
                                          "left_out": {"no instance proposed": left}}
        if not kept:
            log(f"grpo_stage2: the policy proposes no instance on any of its {len(rows)} "
                f"prompts; all of them kept (every refinement will score 0)")
            return rows
        log(f"grpo_stage2: {len(kept)} of {len(rows)} prompts have a proposal to refine "
            f"({left} left out: the policy proposes no instance on them)")
        return kept

    def _stage2(self, model, rows, reference) -> tuple:
        """Stage 2: on-policy in one trainer (`grpo_stage2.on_policy`, rl.rollout), or in
        rounds. The KL reference is `reference`, the policy stage 2 started from."""
        if self.cfg.grpo_stage2.on_policy:
            return self._stage2_on_policy(model, rows, reference)
        return self._stage2_rounds(model, rows, reference)

    def _stage2_on_policy(self, model, rows, reference) -> tuple:
        """Each step the current policy proposes (`grpo_stage2.proposal`: greedy, or sampled
        as stage 1 samples) and refines its own proposal (`num_generations` sampled
        refinements per proposal): one GRPOTrainer, one optimizer state for the whole stage."""
        from datasets import Dataset

        from rl.grpo import run_grpo
        from rl.rollout import RefinementRollout

        s1, s2 = self.cfg.grpo_stage1, self.cfg.grpo_stage2
        sampled = None
        if s2.proposal == "sampled":
            sampled = {"temperature": s1.temperature, "min_p": s1.min_p, "seed": self.cfg.seed}
        rollout = RefinementRollout(self.prompts["stage2"],
                                    proposal_tokens=s1.max_completion_length,
                                    refinement_tokens=s2.max_completion_length,
                                    anchor_proposal=s2.anchor_proposal,
                                    sample_proposals=sampled)
        ds = Dataset.from_list(rows).select_columns(["image", "prompt", "solution"])
        how = ("a greedy proposal" if sampled is None else
               f"a proposal sampled at temperature {s1.temperature}, min_p {s1.min_p}")
        log(f"grpo_stage2 (on-policy): {len(ds)} prompts, {s2.max_steps} steps, {how} and "
            f"{s2.num_generations} sampled refinements per prompt, rewards {s2.rewards}")
        if self.curves is not None:
            self.curves.offset = 0
        ctx = self.stage_context("grpo_stage2")
        return run_grpo(s2, "grpo_stage2", ctx, model, ds, reference=reference,
                        rollout_func=rollout)

    def _stage2_rounds(self, model, rows, reference) -> tuple:
        """Stage 2 in rounds: regenerate the stage-1 answers with the current policy, train a
        new trainer on them for `regenerate_every` steps."""
        from datasets import Dataset

        from rl.data.samples import build_grpo_stage2
        from rl.evaluate import generate
        from rl.grpo import run_grpo

        s2, cfg = self.cfg.grpo_stage2, self.cfg
        per_epoch = max(1, math.ceil(len(rows) * s2.num_generations / s2.batch_size))
        every = s2.regenerate_every or per_epoch
        history, done_steps, round_no = [], 0, 0
        while done_steps < s2.max_steps:
            steps = min(every, s2.max_steps - done_steps)
            model.eval()
            answers = generate(model, self.ctx.processor, [r["prompt"] for r in rows],
                               [r["image"] for r in rows], s2.max_completion_length,
                               cfg.eval.batch_size)
            with_instances = sum(bool(self._instances(a)) for a in answers)
            log(f"grpo_stage2 round {round_no}: regenerated {len(answers)} stage-1 answers "
                f"({with_instances} with instances), {steps} steps")
            ds = Dataset.from_list(list(build_grpo_stage2(rows, answers, self.prompts)))
            ds = ds.select_columns(["image", "prompt", "solution", "stage1"])
            last = done_steps + steps >= s2.max_steps
            if self.curves is not None:
                self.curves.offset = done_steps
            ctx = self.stage_context("grpo_stage2").with_output(self.out / "grpo_stage2",
                                                                seed=cfg.seed + round_no)
            model, hist = run_grpo(s2, "grpo_stage2", ctx, model, ds, max_steps=steps,
                                   save=last, reference=reference)
            history += [{**e, "step": e.get("step", 0) + done_steps} for e in hist]
            done_steps += steps
            round_no += 1
        return model, history

    def _instances(self, text):
        return self.codec.parse_answer(text).instances

    def _done_evals(self) -> set:
        path = self.out / "metrics.json"
        if path.is_file():
            prev = json.loads(path.read_text())
            self.metrics["evaluation"].update(prev.get("evaluation", {}))
        return set(self.metrics["evaluation"])

    def _pictures(self) -> None:
        """Pictures of held-out predictions, taken in turn from each expression kind: the
        expression and IoU written above, the named objects outlined, the prediction drawn
        (beside its proposal after a refinement)."""
        preds = self.last_predictions
        if preds is None:
            return
        by_kind: dict[str, list[int]] = {}
        for k, row in enumerate(self.eval_rows):
            by_kind.setdefault(row.get("kind", ""), []).append(k)
        picked = [k for group in zip(*[iter(v) for v in by_kind.values()], strict=False)
                  for k in group] if len(by_kind) > 1 else list(range(len(self.eval_rows)))
        for k in picked[: self.cfg.eval.pictures]:
            path = self.out / "pictures" / f"{k:04d}_{self.eval_rows[k]['id']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._picture(k, preds[k]).save(path)

    def _picture(self, k: int, pred, scale: int | None = None):
        """The captioned picture (a PIL image) of held-out row `k`'s prediction."""
        from rewards.masks import iou_or_one as mask_iou
        from rewards.solution import parse_solution
        from rl.evaluate import masks_for
        from rl.visualize import prediction_picture, refinement_marks

        row = self.eval_rows[k]
        image = np.asarray(row["image"].convert("RGB"))
        h, w = image.shape[:2]
        mask = masks_for(self.decoder(), image, pred.instances, (w, h))
        target = parse_solution(row["solution"], row=row.get("id")).union_mask()
        caption = picture_caption(row, pred)
        if not pred.refinements:
            return prediction_picture(image, pred.instances, self.vocab, mask, scale=scale,
                                      target_hw=target, caption=caption)
        moves, deleted = refinement_marks(self._instances(pred.stage1), pred.refinements[0],
                                          self.vocab)
        before = masks_for(self.decoder(), image, pred.before_rounds[0], (w, h))
        caption += (f"\nproposal IoU {mask_iou(before, target):.2f}, after "
                    f"{len(pred.refinements)} refinement round(s) {mask_iou(mask, target):.2f}")
        return prediction_picture(image, pred.instances, self.vocab, mask, moves, deleted, scale,
                                  target, caption, proposal=(pred.before_rounds[0], before))

    def _contact_sheet(self, name: str, preds, n: int = 8) -> None:
        """`pictures/sheet_<stage>.png`: the stage's `n` best held-out samples by IoU (top
        rows) and its `n` worst (bottom rows), four to a row."""
        from rl.visualize import contact_sheet

        order = sorted(range(len(preds)), key=lambda k: (-preds[k].score.iou, k))
        best = order[: min(n, len(order) // 2)]
        worst = [k for k in order[::-1] if k not in best][: len(best)][::-1]
        if not best:
            return
        tiles = [self._picture(k, preds[k], scale=2) for k in best + worst]
        iou = [preds[k].score.iou for k in best + worst]
        title = (f"{name}: the {len(best)} best held-out samples by IoU (top, "
                 f"{iou[0]:.2f}-{iou[len(best) - 1]:.2f}) and the {len(worst)} worst (bottom, "
                 f"{iou[len(best)]:.2f}-{iou[-1]:.2f}) of {len(preds)}")
        contact_sheet(tiles, self.out / "pictures" / f"sheet_{name}.png", title)

    def _save_metrics(self) -> None:
        write_json(self.out / "metrics.json", self.metrics, indent=2)

    def _report(self) -> None:
        ev = self.metrics["evaluation"]
        order = [s for s in ("untrained",) + STAGES if s in ev]
        log("held-out gIoU: " + " -> ".join(f"{s} {ev[s]['gIoU']:.3f}" for s in order))
        for s in order[1:]:
            log(f"  {s}: {reading_summary(ev[s])}")
        for name in ("shuffled", "retargeted"):
            control = self.metrics.get("controls", {}).get(f"{name}_expression")
            if control is not None:
                log(f"  {name} expressions ({control['model']}): {reading_summary(control)}")
        for name, c in self.metrics.get("comparisons", {}).items():
            lo, hi = c["interval"]
            log(f"  {name} (gIoU, rounds {c['rounds']}): {c['difference']:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}], {c['verdict']}")
        curve = self.metrics.get("rounds_curve")
        if curve:
            from rl.evaluate import curve_line

            log(f"  refinement rounds ({curve['model']}): {curve_line(curve['curve'])}")
        for stage in ("grpo_stage1", "grpo_stage2"):
            terms = self.metrics["rewards"].get(stage, {})
            if terms.get("reward"):
                log(f"{stage} mean reward, first fifth -> last fifth: " + ", ".join(
                    f"{k.removeprefix('rewards/').removesuffix('/mean')} "
                    f"{v['first_fifth']:.3f} -> "
                    f"{v['last_fifth']:.3f}" for k, v in terms.items() if "first_fifth" in v))
            fixed = terms.get("fixed_prompts")
            if fixed:
                lo, hi = fixed["interval"] or (math.nan, math.nan)
                log(f"{stage} reward on {fixed['prompts']} fixed training prompts, before -> "
                    f"after: {fixed['before']:.3f} -> {fixed['after']:.3f}, "
                    f"{fixed['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}], {fixed['verdict']}")
        log(f"metrics: {self.out / 'metrics.json'}; plots: {self.out / 'plots'}; pictures: "
            f"{self.out / 'pictures'}; total {self.metrics['seconds']['total']:.0f} s")
