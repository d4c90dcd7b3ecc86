"""Run configuration: one YAML file per recipe, read into dataclasses. Unknown keys fail.

A recipe may start with `base: other.yaml` (relative to itself) and then hold only what differs
from its base: mappings merge key by key (unless they say `replace: true`), anything else
replaces. Ablation files use this.

    base: ../default.yaml
    grpo_stage1:
      rewards: {format: 1.0, non_repeat: 1.0, box: 1.0, mask: 1.0}   # no points
    output_dir: runs/ablations/no-points
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A recipe that does not fit the schema; names the file and the key."""


@dataclass
class ModelConfig:
    """path: a local checkpoint (Qwen2.5-VL / Qwen2-VL), or null to build the tiny offline model
    with the `tiny` settings. The spatial vocabulary is added once, before any training."""

    path: str | None = None
    tiny: dict = field(default_factory=lambda: {"hidden_size": 128, "num_layers": 2,
                                                "num_heads": 4, "vision_hidden_size": 64,
                                                "vision_depth": 2, "image_size": 112})
    grid_size: int = 32
    offset_radius: int = 1
    offset_step_cells: float = 0.5
    init: str = "sincos"
    dtype: str = "float32"
    attn_implementation: str | None = None
    # transformers >= 5.2 swaps layers for Hugging Face Hub kernels (e.g. liger's RMSNorm) on
    # CUDA unless told not to: code downloaded at the first `model.train()` (an offline GPU
    # machine stops there), and other numerics than the run that made a checkpoint. Off: every
    # model this package loads (policy, GRPO's KL reference, evaluation) runs its own layers.
    use_kernels: bool = False


@dataclass
class DataConfig:
    """Where samples come from: `synthetic` (generated here), or a folder written by
    `python -m rl.data --build rows` (`train_dir`, `eval_dir`)."""

    source: str = "synthetic"
    train_dir: str | None = None
    eval_dir: str | None = None
    n_train: int = 2000
    n_eval: int = 200
    image_size: int = 112
    objects: list = field(default_factory=lambda: [1, 3])
    # Objects per training scene when they differ from the held-out ones (null: `objects`);
    # e.g. [1, 4]: lone shapes teach localization while scenes of 2-4 teach reading.
    train_objects: list | None = None
    # Objects per scene in the cold start's curriculum (sft.curriculum_steps), and its
    # expression kinds and distractors (null: `kinds`, `distractors`).
    curriculum_objects: list = field(default_factory=lambda: [1, 1])
    curriculum_kinds: dict | None = None
    curriculum_distractors: str | None = None
    kinds: dict = field(default_factory=lambda: {"attribute": 0.4, "relation": 0.15,
                                                 "superlative": 0.15, "multi": 0.15,
                                                 "none": 0.15})
    # Expression kinds of the training scenes when they differ from the held-out mix (null:
    # `kinds`); the held-out and validation scenes always keep `kinds`, the stated mix.
    train_kinds: dict | None = None
    # Weights of the superlative words ("largest", "smallest", "leftmost", ...) in the
    # training and curriculum scenes (null: all alike); the held-out and validation scenes
    # keep them alike (rl.data.referring.superlative_order).
    train_superlatives: dict | None = None
    # Superlative words whose training and curriculum rows are each followed by a twin: the
    # same scene asked with the opposite word, where it names another object (e.g. [largest,
    # smallest]; rl.data.referring.synthetic_records `twins`). Empty: none.
    train_superlative_twins: list = field(default_factory=list)
    textures: list = field(default_factory=lambda: ["flat", "noise", "stripes"])
    # "share": every distractor shares the named object's colour or shape (reading needed);
    # "colour": one shape in distinct colours; "shape": one colour in distinct shapes; "any":
    # shapes drawn at random
    # (rl.data.referring.synthetic_records).
    distractors: str = "any"
    # The image after the question in the user turn: with causal attention the image tokens
    # can then depend on the question.
    image_after_text: bool = False
    prompts: str = "configs/prompts.yaml"
    decoder: Any = "region"
    min_iou: float | None = None
    seed: int = 0


@dataclass
class LoraConfig:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj",
                                                          "o_proj", "gate_proj", "up_proj",
                                                          "down_proj"])


@dataclass
class SFTStageConfig:
    """The cold start (TRL SFTTrainer). The new token rows are trained: full fine-tuning, or
    with LoRA as `new_rows` says, merged before saving."""

    enabled: bool = True
    checkpoint: str | None = None  # an SFT checkpoint to start from instead of training one
    max_steps: int = 1000
    learning_rate: float = 1e-3
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "constant_with_warmup"
    # TRL turns activation checkpointing on by default; it saves memory on large models and
    # costs time on small ones (measured on the default model: 12 % of an SFT step, identical
    # weights). The paper recipe turns it on.
    gradient_checkpointing: bool = False
    # Samples whose collated tensors are kept (0: none): the processor's image and text work is
    # then done once per sample, not once per epoch. Memory: about the tensors of that many
    # samples (the default run: ~80 KB each).
    collate_cache: int = 0
    refinement: bool = True
    refinement_points: int = 12  # points per simulated stage-1 answer (spec §5: K = 12)
    refinement_share: float = 1.0  # share of records with targets that get a dialogue
    # Share of single-target records that also get a captioning row: the target's box in the
    # question, its name as the answer (rl.data.samples.caption_row); 0: none.
    caption_share: float = 0.0
    # A staged curriculum: the first `curriculum_steps` steps train on scenes of
    # `data.curriculum_objects` objects (each sample once), then on the training scenes, read in
    # a fixed random order (0: no curriculum, the trainer's own shuffling).
    curriculum_steps: int = 0
    # Distinct curriculum scenes, read in passes of fresh random order (null: one per sample,
    # each seen once). Fewer scenes build faster (each costs a mask-to-token conversion).
    curriculum_scenes: int | None = None
    # The curriculum as a pass of its own: its own warm-up and schedule over its steps, then
    # the training scenes with a new schedule and optimizer state (false: one schedule).
    curriculum_restart: bool = False
    # A second cold-start pass on refinement dialogues built from the model's own proposals
    # (rl.data.policy_refinement): after `max_steps`, the model proposes on
    # `policy_refinement_records` training scenes and trains `policy_refinement_steps` more
    # steps on those dialogues mixed one to one with stage-1 samples (0: no second pass).
    policy_refinement_steps: int = 0
    policy_refinement_records: int = 2000
    # The second pass's peak learning rate (null: `learning_rate`); it follows the cold start's
    # schedule type over its own steps.
    policy_refinement_learning_rate: float | None = None
    # Box-corner targets of those dialogues: "corner", the offset nearest the true corner
    # (method §5); "mask", nearest among the offsets whose moved box decodes to the best mask;
    # "gain", (0, 0) unless a move decodes to a better mask, then as "mask"; "open", the move
    # among the best-decoding ones that leaves the largest box (rl.data.policy_refinement).
    policy_refinement_box: str = "corner"
    # The vision tower takes no gradient in the cold start (its weights stay as loaded); "merger":
    # only its patch merger (the last RMSNorm and MLP, which map the tower to the language
    # model's embeddings) is frozen, so the blocks learn while the tower's output stays on the
    # scale the fixed MLP gives a normalized input.
    freeze_vision: bool | str = False
    # The vision tower's learning rate as a multiple of the stage's (1: as every other weight).
    vision_lr_scale: float = 1.0
    lora: dict | None = None
    # With LoRA, how the new token rows train: "trainable_tokens" (only the spatial tokens' rows
    # of the input embeddings and the head; an untied head only), "modules_to_save" (full
    # trainable copies of both matrices: every row trains, and the copies, their gradients and
    # Adam moments cost 4x the two matrices: 17 GB in float32 at 7B's 152,064 x 3,584),
    # "auto" (trainable_tokens when the head is untied, modules_to_save when tied).
    new_rows: str = "auto"
    extra_args: dict = field(default_factory=dict)


@dataclass
class GRPOStageConfig:
    """One GRPO stage (TRL GRPOTrainer). `rewards` maps reward names (rewards.REWARDS) to
    weights; `reward_params` maps names to their parameters (shared params under `all`)."""

    enabled: bool = True
    max_steps: int = 100
    learning_rate: float = 1e-4
    batch_size: int = 16
    num_generations: int = 8
    max_completion_length: int = 64
    temperature: float = 1.0
    # Sampling leaves out every token whose probability is below `min_p` times the most likely
    # one's (TRL's `min_p`; 0: off). It cuts the tail a small model samples from at 1.0 (a stray
    # token in 18 % of stage 2's refinements) and keeps every choice near the top.
    min_p: float = 0.0
    beta: float = 0.04
    loss_type: str = "grpo"
    # How TRL scales each completion's advantage (reward minus its group's mean): "group"
    # (divide by the group's standard deviation, GRPO's rule), "batch", or "none" (Dr. GRPO:
    # advantages stay in reward units, so a group whose members differ by a few hundredths
    # of box IoU gets a gradient that small, not one as large as a group that differs in
    # which object it names).
    scale_rewards: str = "group"
    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False  # as in the SFT stage
    n_prompts: int | None = None
    rewards: dict = field(default_factory=dict)
    reward_params: dict = field(default_factory=dict)
    # Stage 2: on-policy (rl.rollout: each step the policy proposes, then refines its own
    # proposal, one trainer for the whole stage), or false for the rounds design (stage-1
    # answers regenerated every `regenerate_every` steps, a new trainer per round).
    on_policy: bool = True
    # On-policy stage 2: the proposal tokens carry the loss too (rl.rollout.RefinementRollout
    # anchor_proposal), so the KL term holds the proposals while the refinement is trained.
    anchor_proposal: bool = False
    # On-policy stage 2: how each step's proposal is made. "greedy": as evaluation and
    # inference make it. "sampled": drawn at grpo_stage1's temperature and min_p (the
    # distribution stage 1 trained), from a random stream of its own per prompt and step, so
    # every process holding a member of a group draws the same one (rl.rollout.SeededSampler).
    # Sampled proposals hold more errors to refine; on the default task they gave the
    # refinement terms more signal and the same final model (docs/experiments.md, "Sampled
    # proposals").
    proposal: str = "greedy"
    # Stage 2: which of its `n_prompts` prompts it trains on. "all", or "proposed": the ones on
    # which the policy starting the stage proposes an instance (greedy, as evaluation does).
    # A prompt with an empty proposal has nothing to refine: every refinement scores 0, so its
    # group carries no advantage and the stage's logged mean moves with how many of them a
    # step draws (docs/experiments.md, "Stage 2 trains on prompts with a proposal").
    prompts: str = "all"
    # What the stage trains: "all" (every parameter the model trains), or "refinement_tokens"
    # (stage 2 only: the embedding and LM-head rows of the offset tokens and `<DELETE>`, the
    # tokens only a refinement writes; rl.training.refinement_rows_only). With the rest frozen
    # every other token is scored as before: a proposal changes only where one of those tokens
    # comes to outscore what the starting policy wrote.
    trainable: str = "all"
    regenerate_every: int | None = None  # stage 2 rounds: steps between re-generating answers
    lora: dict | None = None
    logging_steps: int | None = None  # this stage's logging interval (null: the run's)
    # TRL's completion tables (prompt, completion, rewards, advantage) each logging step:
    # parquet files in the trainer folder, and the trackers' tables (rl.tracking).
    log_completions: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    extra_args: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    enabled: bool = True
    batch_size: int = 32
    max_new_tokens: int = 64
    rounds: int = 1  # refinement rounds after stage 2
    pictures: int = 6
    # Learning curves (rl.curves): evaluate on `curve_samples` validation scenes (their own
    # seed, not the held-out ones) every `curve_every` steps of each stage; 0: off.
    curve_every: int = 0
    curve_samples: int = 200
    # Held-out figures of the final model after 0, 1, ..., rounds_curve refinement rounds
    # (rl.evaluate.rounds_curve), when stage 2 ran; 0: off.
    rounds_curve: int = 3
    # The shuffled-expression control on the final model (rl.evaluate.shuffled_rows).
    shuffle_control: bool = True
    # Each GRPO stage 1's reward on fixed prompts, before and after the stage: the first
    # `reward_prompts` of its training prompts, `reward_samples` completions each sampled as
    # the stage samples (rl.evaluate.sampled_rewards), the same seed for both policies, with a
    # paired interval. The training log's first and last fifth score different prompts; on
    # this one the difference is the policy's. 0: off.
    reward_prompts: int = 0
    reward_samples: int = 8
    # The same for stage 2 (its first `refinement_reward_prompts` training prompts): each policy
    # proposes greedily and `reward_samples` refinements of its proposal are sampled and scored
    # by stage 2's rewards, as its rollouts are. The logged fifths also move with the share of
    # prompts whose proposal is empty (rewards `reward/with_proposal`). 0: off.
    refinement_reward_prompts: int = 0


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    # How answers write geometry (tokens.registry.CODECS): grid tokens, or a text representation
    # of related work for ablations (text_norm, text_bins, anchor_offset_text, rle_text).
    # Refinement (stage 2) is specific to grid/offset tokens.
    codec: str = "grid"
    codec_params: dict = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    grpo_stage1: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    grpo_stage2: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging_steps: int = 10
    progress_bars: bool = True
    # Experiment trackers every trainer reports to, as transformers' `report_to`, e.g.
    # [tensorboard] or [wandb]; the held-out evaluation of each stage too (rl.tracking).
    report_to: list = field(default_factory=list)
    # TRL's fused LM head projects only the labelled positions on CPUs too (2.6x faster SFT
    # steps here; the same loss up to float rounding, not bit-identical): false keeps TRL's
    # own path (rl.training.score_labelled_positions_only).
    score_labelled_only: bool = True
    # Torch threads of a CPU run; null: every core this process may use, shared by the local
    # processes (`accelerate launch` alone sets OMP_NUM_THREADS=1, measured 1.5x slower here).
    cpu_threads: int | None = None


def _merge(base: dict, override: dict) -> dict:
    """`override` over `base`, mapping by mapping; a mapping with `replace: true` (the key is
    dropped) replaces its base mapping instead, e.g. another decoder's whole spec."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and v.get("replace") is True:
            out[k] = {key: val for key, val in v.items() if key != "replace"}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml_chain(path: str | Path) -> dict:
    """The recipe's mapping with its `base:` chain merged in."""
    path = Path(path)
    try:
        text = path.read_text()
        # A run's config.json is a recipe too (JSON numbers like 5e-05 are not YAML floats).
        data = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(load_yaml_chain(path.parent / base), data)
    return data


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
            continue
        origin, args = get_origin(hint), get_args(hint)
        allowed = tuple(a for a in args if isinstance(a, type)) if args else (hint,)
        if origin is None and isinstance(hint, type):
            allowed = (hint,)
        if hint is Any or value is None and type(None) in allowed:
            kwargs[key] = value
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        check = tuple(get_origin(a) or a for a in allowed)
        if check and not isinstance(value, check):
            raise ConfigError(f"{where}.{key}: expected {hint}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """A RunConfig from a recipe file (None: the defaults) and optional overrides."""
    data = load_yaml_chain(path) if path is not None else {}
    if overrides:
        data = _merge(data, overrides)
    cfg = _build(RunConfig, data, str(path or "config"))
    check(cfg, str(path or "config"))
    return cfg


# TRL arguments a recipe sets through its own fields, by the field that sets them: a stage's
# `extra_args` may not name them (two places would say one thing, and TRL's config would get
# the keyword twice). Any other key of TRL's SFTConfig / GRPOConfig goes through, and wins over
# what the package sets itself (e.g. `save_strategy: "no"`, `num_completions_to_print: 2`).
TRAINER_ARG_FIELDS = {
    "max_steps": "max_steps", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay",
    "gradient_checkpointing": "gradient_checkpointing", "logging_steps": "logging_steps",
    "report_to": "report_to", "seed": "seed"}
SFT_TRAINER_ARG_FIELDS = {"warmup_steps": "warmup_steps",
                          "lr_scheduler_type": "lr_scheduler_type"}
GRPO_TRAINER_ARG_FIELDS = {
    "num_generations": "num_generations", "max_completion_length": "max_completion_length",
    "temperature": "temperature", "min_p": "min_p", "beta": "beta", "loss_type": "loss_type",
    "scale_rewards": "scale_rewards", "reward_weights": "rewards", "use_vllm": "use_vllm",
    "vllm_mode": "vllm_mode", "log_completions": "log_completions"}


def _check_extra_args(cfg: RunConfig, where: str) -> None:
    for name, own in (("sft", SFT_TRAINER_ARG_FIELDS), ("grpo_stage1", GRPO_TRAINER_ARG_FIELDS),
                      ("grpo_stage2", GRPO_TRAINER_ARG_FIELDS)):
        stage = getattr(cfg, name)
        for key in stage.extra_args:
            field_name = {**TRAINER_ARG_FIELDS, **own}.get(key)
            if field_name is not None:  # a stage's field, else the run's (seed, report_to)
                at = (f"{name}.{field_name}" if field_name in stage.__dataclass_fields__
                      else field_name)
                raise ConfigError(f"{where}.{name}.extra_args.{key}: the recipe sets this TRL "
                                  f"argument through `{at}`; set it there")


TRAINABLE = ("all", "refinement_tokens")


def check(cfg: RunConfig, where: str) -> None:
    """What the schema cannot say: the codec exists, takes its parameters, and is grid tokens
    wherever offset refinement is asked for; `sft.new_rows` and `sft.freeze_vision` are among
    their values."""
    from tokens.registry import get_codec

    if cfg.sft.freeze_vision not in (True, False, "merger"):
        raise ConfigError(f"{where}.sft.freeze_vision: expected true, false or merger, got "
                          f"{cfg.sft.freeze_vision!r}")
    for key in ("refinement_share", "caption_share"):
        share = getattr(cfg.sft, key)
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{where}.sft.{key}: expected a share in [0, 1], got {share!r}")
    _check_extra_args(cfg, where)
    from rl.data.referring import SUPERLATIVES, check_superlatives

    if cfg.data.train_superlatives is not None:
        try:
            check_superlatives(cfg.data.train_superlatives)
        except ValueError as e:
            raise ConfigError(f"{where}.data.train_superlatives: {e}") from None
    if set(cfg.data.train_superlative_twins) - set(SUPERLATIVES):
        raise ConfigError(f"{where}.data.train_superlative_twins: expected superlative words "
                          f"({', '.join(SUPERLATIVES)}), got "
                          f"{cfg.data.train_superlative_twins!r}")
    if cfg.sft.new_rows not in ("auto", "trainable_tokens", "modules_to_save"):
        raise ConfigError(f"{where}.sft.new_rows: expected auto, trainable_tokens or "
                          f"modules_to_save, got {cfg.sft.new_rows!r}")

    for name in ("grpo_stage1", "grpo_stage2"):
        stage = getattr(cfg, name)
        if stage.trainable not in TRAINABLE:
            raise ConfigError(f"{where}.{name}.trainable: expected one of {', '.join(TRAINABLE)}, "
                              f"got {stage.trainable!r}")
        if stage.trainable == "refinement_tokens" and name != "grpo_stage2":
            raise ConfigError(f"{where}.{name}.trainable: refinement_tokens trains the rows of "
                              f"the offset tokens and <DELETE>, which only stage 2 writes; "
                              f"expected all")
        if stage.proposal not in ("greedy", "sampled"):
            raise ConfigError(f"{where}.{name}.proposal: expected greedy or sampled, got "
                              f"{stage.proposal!r}")
        if stage.proposal == "sampled" and not (name == "grpo_stage2" and stage.on_policy):
            raise ConfigError(f"{where}.{name}.proposal: sampled proposals are made by "
                              f"on-policy stage 2's rollout only; expected greedy")
        if stage.prompts not in ("all", "proposed"):
            raise ConfigError(f"{where}.{name}.prompts: expected all or proposed, got "
                              f"{stage.prompts!r}")
        if stage.prompts == "proposed" and name != "grpo_stage2":
            raise ConfigError(f"{where}.{name}.prompts: proposed keeps the prompts the policy "
                              f"proposes for, which only stage 2 refines; expected all")
        if not 0.0 <= stage.min_p < 1.0:
            raise ConfigError(f"{where}.{name}.min_p: expected a share in [0, 1) of the most "
                              f"likely token's probability (0: off), got {stage.min_p!r}")
        if name == "grpo_stage2" and stage.enabled and stage.on_policy and stage.use_vllm:
            raise ConfigError(f"{where}.{name}: on_policy with use_vllm: the on-policy rollout "
                              f"(rl.rollout) generates with transformers, vLLM is not wired for "
                              f"it; set use_vllm: false, or on_policy: false (the rounds design, "
                              f"which TRL generates with vLLM)")
        if stage.trainable == "refinement_tokens" and stage.lora:
            raise ConfigError(f"{where}.{name}: trainable refinement_tokens with lora: the "
                              f"rows are trained on the model itself; drop one of them")
    try:
        get_codec(cfg.codec, **cfg.codec_params)
    except ValueError as e:
        raise ConfigError(f"{where}.codec: {e}") from None
    if cfg.sft.enabled and not cfg.sft.refinement and cfg.sft.policy_refinement_steps:
        raise ConfigError(f"{where}.sft.policy_refinement_steps: {cfg.sft.policy_refinement_steps} "
                          f"steps of refinement dialogues, but sft.refinement is false (no "
                          f"refinement in the cold start); set it to 0")
    from rl.data.policy_refinement import BOX_TARGETS

    if cfg.sft.policy_refinement_box not in BOX_TARGETS:
        raise ConfigError(f"{where}.sft.policy_refinement_box: expected "
                          f"{', '.join(BOX_TARGETS[:-1])} or {BOX_TARGETS[-1]}, not "
                          f"{cfg.sft.policy_refinement_box!r}")
    if cfg.codec != "grid":
        asks = [k for k, on in (("sft.refinement", cfg.sft.enabled and cfg.sft.refinement),
                                ("sft.policy_refinement_steps",
                                 cfg.sft.enabled and cfg.sft.policy_refinement_steps > 0),
                                ("grpo_stage2.enabled", cfg.grpo_stage2.enabled),
                                ("eval.rounds", cfg.eval.rounds > 0)) if on]
        if asks:
            raise ConfigError(f"{where}: codec {cfg.codec!r} has no offset refinement (stage 2 is "
                              f"specific to grid tokens); turn off {', '.join(asks)}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# The trained stages in order; "untrained" (the extended starting model and its evaluation)
# comes before them.
STAGES = ("sft", "grpo_stage1", "grpo_stage2")
# Recipe values that change where and how a run reports, not what it computes.
UNSHARED_KEYS = ("output_dir", "progress_bars", "logging_steps", "cpu_threads", "report_to")
# Evaluation settings that only change what a later stage measures: each with the first stage
# whose metrics it changes. The fixed-prompt rewards are measured inside their GRPO stage
# (torch's random state forked, so training is unchanged), the refinement rounds after stage 2.
# Every other `eval` key changes every stage's evaluation.
EVAL_KEYS_FROM = {"reward_prompts": "grpo_stage1", "reward_samples": "grpo_stage1",
                  "refinement_reward_prompts": "grpo_stage2", "rounds": "grpo_stage2",
                  "rounds_curve": "grpo_stage2"}


def stage_key(cfg: RunConfig, stage: str) -> str:
    """A digest of everything that decides a stage's checkpoint and metrics: the recipe without
    its output folder and without the sections of later stages. `"untrained"` is the starting
    model (every stage section dropped)."""
    d = to_dict(cfg)
    for k in UNSHARED_KEYS:
        d.pop(k, None)
    later = STAGES if stage == "untrained" else STAGES[STAGES.index(stage) + 1:]
    for name in later:
        d.pop(name, None)
    for name in STAGES:  # how often and what a stage logs changes nothing it trains
        if isinstance(d.get(name), dict):
            d[name].pop("logging_steps", None)
            d[name].pop("log_completions", None)
    if stage in STAGES:  # an evaluation setting counts from the first stage it changes
        d["eval"] = {k: v for k, v in d["eval"].items()
                     if STAGES.index(EVAL_KEYS_FROM.get(k, STAGES[0])) <= STAGES.index(stage)}
    else:  # "untrained": only the settings every evaluation reads
        d["eval"] = {k: v for k, v in d["eval"].items() if k not in EVAL_KEYS_FROM}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))  # an empty mapping adds no key
        else:
            out[key] = v
    return out


def differences(cfg: RunConfig, other: RunConfig) -> list[str]:
    """`key=value` (cfg's value) for each recipe value that differs from `other`'s."""
    a, b = _flatten(to_dict(cfg)), _flatten(to_dict(other))
    return [f"{k}={a.get(k)}" for k in sorted(set(a) | set(b))
            if k not in UNSHARED_KEYS and a.get(k) != b.get(k)]


def checkpoint_settings(model_dir: str | Path) -> dict:
    """What a checkpoint saved by the pipeline was trained with: `prompts` (the template file),
    `codec` ({"name": ..., **params}) and `image_after_text` (where the question puts the image)
    from the run's `config.json` (the checkpoint's parent folder); defaults (grid tokens, the
    default templates, the image first) for any other checkpoint."""
    import json

    path = Path(model_dir).parent / "config.json"
    run = json.loads(path.read_text()) if path.is_file() else {}
    return {"prompts": run.get("data", {}).get("prompts"),
            "codec": {"name": run.get("codec", "grid"), **run.get("codec_params", {})},
            "image_after_text": bool(run.get("data", {}).get("image_after_text", False))}
