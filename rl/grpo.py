"""One GRPO stage on TRL's GRPOTrainer: rewards by name from the config, then train and save."""

from __future__ import annotations

from pathlib import Path

from rewards import REWARDS, STAGE1_REWARDS, STAGE2_REWARDS, build_reward
from rl.config import GRPOStageConfig
from rl.context import RunContext
from tokens import SpatialVocab

# Parameters every reward takes; `decoder` and `max_points` only the mask-decoding ones.
_COMMON = ("codec", "vocab", "match_weights", "l1_scale")
_DECODING = ("mask", "mask_gain")


def build_reward_funcs(stage: GRPOStageConfig, vocab: SpatialVocab, decoder,
                       stage_name: str, codec=None) -> tuple[list, list[float]]:
    """Reward functions and weights of a stage, from `stage.rewards` ({name: weight}) and
    `stage.reward_params` ({name: {param: value}}, `all` for every reward). `codec` (a
    tokens.Codec) reads the answers unless the params name another."""
    allowed = STAGE1_REWARDS if stage_name == "grpo_stage1" else STAGE2_REWARDS
    if not stage.rewards:
        raise ValueError(f"{stage_name}.rewards: name at least one reward of {allowed}")
    unknown = set(stage.rewards) - set(allowed)
    if unknown:
        raise ValueError(f"{stage_name}.rewards: {sorted(unknown)} are not rewards of this stage; "
                         f"known: {allowed}")
    bad = set(stage.reward_params) - set(stage.rewards) - {"all"}
    if bad:
        raise ValueError(f"{stage_name}.reward_params: {sorted(bad)} name no reward of the stage")
    funcs, weights = [], []
    shared = dict(stage.reward_params.get("all", {}))
    active = {n: w for n, w in stage.rewards.items() if w}
    if not active:
        raise ValueError(f"{stage_name}.rewards: every weight is 0")
    # A weight of 0 drops the term (an ablation): it is neither computed nor logged.
    for name, weight in active.items():
        if not isinstance(REWARDS[name], type):  # a plain function: no parameters
            params = dict(stage.reward_params.get(name, {}))
        else:
            params = {"vocab": {"grid_size": vocab.grid_size,
                                "offset_radius": vocab.offset_radius,
                                "offset_step_cells": vocab.offset_step_cells},
                      **{k: v for k, v in shared.items() if k in _COMMON},
                      **stage.reward_params.get(name, {})}
            if name in _DECODING:
                params.setdefault("decoder", decoder)
            if codec is not None:
                params.setdefault("codec", codec)
        funcs.append(build_reward(name, **params))
        weights.append(float(weight))
    return funcs, weights


def grpo_trainer(stage: GRPOStageConfig, stage_name: str, ctx: RunContext, model,
                 train_dataset, max_steps: int | None = None,
                 reference: str | Path | None = None, rollout_func=None):
    """TRL's GRPOTrainer for one stage on `train_dataset` (image, prompt, solution[, stage1]),
    with the stage's rewards, writing into `ctx.output_dir`; `rollout_func` replaces TRL's
    generation (on-policy stage 2, rl.rollout.RefinementRollout).

    reference: the saved checkpoint of the policy this stage starts from, the KL reference.
    TRL builds its reference model from `model.config._name_or_path`, which for a model trained
    earlier in this process still names the folder it was first loaded from (the untrained
    init, for a policy fresh from the cold start); it is pointed at `reference` here."""
    from trl import GRPOConfig, GRPOTrainer

    from rl.models import hub_kernels
    from rl.tracking import callbacks_for
    from rl.training import common_args, lora_config, score_labelled_positions_only

    score_labelled_positions_only(ctx.score_labelled_only)
    if reference is not None:
        if not (Path(reference) / "config.json").is_file():
            raise ValueError(f"{stage_name}: KL reference {reference} is not a saved checkpoint")
        model.config._name_or_path = str(reference)
    funcs, weights = build_reward_funcs(stage, ctx.vocab, ctx.decoder_spec, stage_name,
                                        ctx.codec)
    own = dict(
        **common_args(stage, ctx, max_steps), num_generations=stage.num_generations,
        max_completion_length=stage.max_completion_length, temperature=stage.temperature,
        min_p=stage.min_p or None, beta=stage.beta, loss_type=stage.loss_type,
        scale_rewards=stage.scale_rewards,
        reward_weights=weights,
        use_vllm=stage.use_vllm, **({"vllm_mode": stage.vllm_mode} if stage.use_vllm else {}),
        log_completions=stage.log_completions,
        # TRL also prints the table to the console when `rich` is installed: a few rows, not
        # every completion of the step.
        **({"num_completions_to_print": 2} if stage.log_completions else {}))
    # extra_args win over the package's own settings (rl.config.TRAINER_ARG_FIELDS: the keys
    # that recipe fields set are refused when the recipe loads).
    args = GRPOConfig(**{**own, **stage.extra_args})
    peft_config = lora_config(stage.lora) if stage.lora else None
    callbacks = list(ctx.callbacks) + callbacks_for(ctx.report_to, stage.log_completions)
    # TRL loads the KL reference itself (from_pretrained): Hub kernels as the recipe says.
    with hub_kernels(ctx.use_kernels):
        return GRPOTrainer(model=model, reward_funcs=funcs, args=args,
                           train_dataset=train_dataset, processing_class=ctx.processor,
                           peft_config=peft_config, callbacks=callbacks or None,
                           rollout_func=rollout_func)


def run_grpo(stage: GRPOStageConfig, stage_name: str, ctx: RunContext, model, train_dataset,
             max_steps: int | None = None, save: bool = True,
             reference: str | Path | None = None, rollout_func=None):
    """Train `model` with GRPO (see `grpo_trainer`); save to `ctx.output_dir` when `save`.
    Returns (the trained model, TRL's log history)."""
    from contextlib import nullcontext

    from rl.training import refinement_rows_only, refinement_token_ids, train_and_save

    rows = nullcontext()
    if stage.trainable == "refinement_tokens":
        tok = getattr(ctx.processor, "tokenizer", ctx.processor)
        rows = refinement_rows_only(model, refinement_token_ids(tok, ctx.vocab))
    with rows:
        trainer = grpo_trainer(stage, stage_name, ctx, model, train_dataset, max_steps,
                               reference, rollout_func)
        return train_and_save(trainer, ctx, merge=bool(stage.lora), save=save)
