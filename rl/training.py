"""What the SFT and GRPO trainers share: precision, LoRA, and the end of training (merge the
adapter, save model + processor + vocabulary, log history, how the trainer ran)."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from rl.context import RunContext


def use_bf16() -> bool:
    """bf16 on CUDA; fp32 on CPUs, where bf16 is several times slower."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def score_labelled_positions_only(enabled: bool = True) -> None:
    """Let TRL's fused LM head project only the positions that carry a label on CPUs too
    (`enabled`), or restore TRL's own choice (not `enabled`).

    TRL 1.16 computes the SFT loss and GRPO's log-probabilities through a fused LM head
    (`trl.trainer.utils.add_fused_lm_head`). On Triton devices it projects only the labelled
    positions; elsewhere it projects every position and masks the result, so that compiled
    backends (e.g. Neuron) see one tile shape per batch. A CPU compiles nothing, and here the
    prompt (image tokens and request) is most of a sequence: the step spent most of its time
    projecting and back-propagating positions whose loss is masked to 0. The choice is the
    module-level name `_use_triton` in `trl.trainer.utils` (read only there, for that choice;
    the kernels keep their own); it is wrapped to say yes for CPU devices. Same log-
    probabilities, loss and gradients up to float rounding (tests/test_training.py compares
    them with TRL's own path), but not bit-identical: `score_labelled_only: false` in a recipe
    keeps TRL's path, e.g. to reproduce a run made before this existed. A TRL without that
    name is left alone."""
    import trl.trainer.utils as trl_utils

    choose = getattr(trl_utils, "_use_triton", None)
    if choose is None:
        return
    wrapped = getattr(choose, "getok_cpu_compact", None)
    if not enabled:
        if wrapped is not None:
            trl_utils._use_triton = wrapped  # TRL's own choice back
        return
    if wrapped is not None:
        return

    def compact_on_cpu(device) -> bool:
        return device.type == "cpu" or choose(device)

    compact_on_cpu.getok_cpu_compact = choose
    trl_utils._use_triton = compact_on_cpu


@contextmanager
def vision_frozen(model, enabled: bool | str = True):
    """Within the block the model's vision tower (`model.model.visual` or `model.visual`) takes
    no gradient, or with `enabled="merger"` only its patch merger (`visual.merger`); afterwards
    every parameter's `requires_grad` is as it was, so a later stage trained on the same model
    object trains them again."""
    if not enabled:
        yield
        return
    tower = vision_tower(model)
    if enabled == "merger":
        tower = getattr(tower, "merger", None)
        if tower is None:
            raise ValueError(f"{type(model).__name__}: the vision tower has no patch merger "
                             f"(visual.merger) to freeze")
    elif enabled is not True:
        raise ValueError(f"vision_frozen: expected True, False or 'merger', got {enabled!r}")
    before = [(q, q.requires_grad) for q in tower.parameters()]
    for q, _ in before:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q, flag in before:
            q.requires_grad_(flag)


def vision_tower(model):
    """The model's vision tower (`model.model.visual` or `model.visual`)."""
    tower = getattr(getattr(model, "model", None), "visual", None) or getattr(model, "visual",
                                                                              None)
    if tower is None:
        raise ValueError(f"{type(model).__name__}: no vision tower (model.model.visual or "
                         f"model.visual)")
    return tower


def optimizer_with_vision_scale(model, args, scale: float):
    """`(optimizer class, kwargs)` for a trainer's `optimizer_cls_and_kwargs`: the optimizer
    `args` asks for, with the vision tower's parameters at `scale` times the learning rate
    (the scheduler multiplies each group's own rate, so the schedule shape is shared).
    Weight decay as the trainer would apply it: not on biases and norms."""
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    tower = {id(q) for q in vision_tower(model).parameters()}
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups = {}
    for name, q in model.named_parameters():
        if not q.requires_grad:
            continue
        key = (id(q) in tower, name in decay)
        groups.setdefault(key, []).append(q)
    params = [{"params": qs, "lr": args.learning_rate * (scale if in_tower else 1.0),
               "weight_decay": args.weight_decay if decayed else 0.0}
              for (in_tower, decayed), qs in sorted(groups.items())]
    return cls, {**kwargs, "params": params}


def common_args(stage, ctx: RunContext, max_steps: int | None = None) -> dict:
    """The TRL config arguments every stage sets the same way."""
    return dict(
        output_dir=str(ctx.output_dir / "trainer"), max_steps=max_steps or stage.max_steps,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps,
        learning_rate=stage.learning_rate, weight_decay=stage.weight_decay,
        gradient_checkpointing=stage.gradient_checkpointing,
        logging_steps=getattr(stage, "logging_steps", None) or ctx.logging_steps,
        report_to=list(ctx.report_to), save_strategy="no", seed=ctx.seed,
        bf16=use_bf16(), disable_tqdm=not ctx.progress_bars)


NEW_ROWS = ("auto", "trainable_tokens", "modules_to_save")


def new_rows_mode(requested: str, model) -> str:
    """How LoRA trains the new token rows of `model`: `requested` ("auto", "trainable_tokens" or
    "modules_to_save", see `SFTStageConfig.new_rows`) resolved for its head: "auto" means
    trainable_tokens when the head is untied and modules_to_save when it is tied."""
    if requested not in NEW_ROWS:
        raise ValueError(f"sft.new_rows: expected one of {', '.join(NEW_ROWS)}, got {requested!r}")
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    if requested == "auto":
        return "modules_to_save" if tied else "trainable_tokens"
    if requested == "trainable_tokens" and tied:
        raise ValueError("sft.new_rows: trainable_tokens needs an untied LM head; this model ties "
                         "it to the input embeddings (PEFT would wrap the head, whose weight TRL's "
                         "fused LM head reads directly); use modules_to_save or auto")
    return requested


def lora_config(lora: dict, new_rows: str | None = None, new_ids=()):
    """PEFT's LoraConfig for `lora` (the recipe's dict). `new_rows`: None (only the adapter
    trains: the GRPO stages), "modules_to_save" (full trainable copies of the input embeddings
    and the head) or "trainable_tokens" (PEFT's TrainableTokens on the input embeddings' rows
    `new_ids`; the head's rows go through `train_head_rows`, once the trainer has wrapped the
    model)."""
    from peft import LoraConfig

    from rl.config import LoraConfig as Schema
    from rl.config import _build

    spec = _build(Schema, lora, "lora")
    rows = {}
    if new_rows == "modules_to_save":
        rows["modules_to_save"] = ["embed_tokens", "lm_head"]
    elif new_rows == "trainable_tokens":
        rows["trainable_token_indices"] = {"embed_tokens": sorted(int(i) for i in new_ids)}
    elif new_rows is not None:
        raise ValueError(f"new_rows: expected modules_to_save or trainable_tokens, "
                         f"got {new_rows!r}")
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, task_type="CAUSAL_LM", **rows)


def _rows_replaced_class():
    import torch

    class RowsReplaced(torch.nn.Module):
        """A parametrization of a weight: rows `ids` come from a trainable tensor, the rest
        from the (frozen) original."""

        def __init__(self, weight, ids):
            super().__init__()
            self.register_buffer("ids", torch.as_tensor(sorted(int(i) for i in ids)),
                                 persistent=False)
            self.rows = torch.nn.Parameter(weight.detach()[self.ids].clone())

        def forward(self, original):
            return original.index_copy(0, self.ids, self.rows.to(original.dtype))

    return RowsReplaced


def train_head_rows(model, ids) -> None:
    """Train only the rows `ids` of `model`'s untied LM head (the head itself stays frozen).

    PEFT's TrainableTokens would wrap the head in a module whose `weight` is the frozen base
    weight and which has no `bias`; TRL's fused LM head reads `lm_head.weight` and
    `lm_head.bias` directly (AttributeError, and without it the trained rows would be skipped).
    A torch parametrization keeps the head an `nn.Linear` whose `weight` is the frozen matrix
    with the trained rows in place: what TRL reads is what the model computes.
    `fold_head_rows` writes the rows into the weight before saving."""
    from torch.nn.utils import parametrize

    head = model.get_output_embeddings()
    head.weight.requires_grad_(False)
    parametrize.register_parametrization(head, "weight",
                                         _rows_replaced_class()(head.weight, ids))


def fold_head_rows(model) -> None:
    """Write the rows trained by `train_head_rows` or `refinement_rows_only` into the weights
    of the head and of the input embeddings and remove the parametrizations (nothing to do
    where there is none). Tied weights stay tied: the parametrization is removed in place."""
    from torch.nn.utils import parametrize

    for module in (model.get_output_embeddings(), model.get_input_embeddings()):
        if module is not None and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def refinement_token_ids(tokenizer, vocab) -> list[int]:
    """The ids of the tokens only a refinement writes: the offset tokens and `<DELETE>`
    (`SpatialVocab.token_ids`, which raises when the tokenizer lacks a spatial token)."""
    from tokens.vocab import DELETE_TOKEN

    ids = vocab.token_ids(tokenizer)
    return [int(ids[t]) for t in vocab.offset_tokens() + [DELETE_TOKEN]]


ROWS_UNDER_ZERO3 = ("trainable: refinement_tokens replaces rows of the embedding weight, which "
                    "DeepSpeed ZeRO-3 partitions across processes; use ZeRO-2 or no DeepSpeed "
                    "for this stage")


def zero3_launch() -> bool:
    """Whether this process was launched under DeepSpeed ZeRO-3 (accelerate names the launch's
    ZeRO stage in `ACCELERATE_DEEPSPEED_ZERO_STAGE`)."""
    return os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"


@contextmanager
def refinement_rows_only(model, ids):
    """Within the block the model trains only rows `ids` of its input embeddings and LM head
    (`GRPOStageConfig.trainable: refinement_tokens`): every parameter is frozen and each of
    the two weights is parametrized (`RowsReplaced`) so that rows `ids` come from one trainable
    tensor, shared by both when the head is tied to the embeddings. A token that is not among
    `ids` is embedded and scored as before, so the proposal turn changes only where one of
    `ids` comes to outscore the token the starting policy wrote. `fold_head_rows` writes the
    rows into the weights (`train_and_save` calls it before saving; done again here on
    leaving, where the training failed); afterwards every parameter's `requires_grad` is as it
    was. Refused under DeepSpeed ZeRO-3, which partitions the embedding weight."""
    from torch.nn.utils import parametrize

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if hasattr(embed.weight, "ds_id") or zero3_launch():
        raise ValueError(ROWS_UNDER_ZERO3)
    before = [(q, q.requires_grad) for q in model.parameters()]
    for q, _ in before:
        q.requires_grad_(False)
    rows = _rows_replaced_class()(embed.weight, ids)
    tied = head is not None and head.weight is embed.weight
    if head is not None and not tied:  # an untied head: its own rows
        parametrize.register_parametrization(head, "weight",
                                             _rows_replaced_class()(head.weight, ids))
    parametrize.register_parametrization(embed, "weight", rows)
    if tied:  # the same original weight and the same rows: tied after folding too
        parametrize.register_parametrization(head, "weight", rows)
    try:
        yield
    finally:
        fold_head_rows(model)
        for q, flag in before:
            q.requires_grad_(flag)


def write_trainer_info(trainer, out_dir: Path) -> None:
    """Record how the trainer ran (distributed type, DeepSpeed stage, processes)."""
    acc = trainer.accelerator
    ds = getattr(acc.state, "deepspeed_plugin", None)
    info = {"distributed_type": str(acc.distributed_type), "num_processes": acc.num_processes,
            "deepspeed": bool(trainer.is_deepspeed_enabled),
            "zero_stage": ds.zero_stage if ds is not None else None,
            "device": str(acc.device)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trainer_info.json").write_text(json.dumps(info, indent=2))


def save_model(model, processor, vocab, out_dir: Path) -> None:
    """Model, processor and `spatial_vocab.json` together, after checking that the embedding
    rows, the head and the config agree."""
    from tokens.extend import check_vocab_consistency

    out_dir.mkdir(parents=True, exist_ok=True)
    check_vocab_consistency(model, getattr(processor, "tokenizer", processor))
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    vocab.save(out_dir)


def train_and_save(trainer, ctx: RunContext, merge: bool, save: bool = True):
    """Train, merge a LoRA adapter (`merge`), and (main process, `save`) write the model, its
    log history and trainer info into `ctx.output_dir`. Returns (model, log history)."""
    trainer.train()
    if ctx.trackers is not None:
        ctx.trackers.attach(trainer)
    model = trainer.model
    if merge:
        model = model.merge_and_unload()
    fold_head_rows(model)
    if save and trainer.accelerator.is_main_process:
        out = ctx.output_dir
        save_model(trainer.accelerator.unwrap_model(model), ctx.processor, ctx.vocab, out)
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))
        write_trainer_info(trainer, out)
    trainer.accelerator.wait_for_everyone()
    return model, trainer.state.log_history
