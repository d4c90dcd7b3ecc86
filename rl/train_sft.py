"""SFT cold start with TRL's SFTTrainer.

    accelerate launch rl/train_sft.py --config configs/default.yaml --model runs/x/model_init \\
        --data runs/data/synthetic-sft --out runs/x/sft

Trains on prompt/completion conversations (stage-1 grid answers and offset-refinement
dialogues from `python -m rl.data --build sft`), supervising only the completions. The new token
rows are trained: full fine-tuning, or with LoRA the embeddings and the head as
`modules_to_save` (PEFT's `trainable_token_indices` crashes in TRL on tied embeddings and is not
synced to vLLM); the adapter is merged before model, tokenizer and processor are saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch rl/train_sft.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl.config import RunConfig, SFTStageConfig, load_config  # noqa: E402


def use_bf16() -> bool:
    """bf16 on CUDA; fp32 on CPUs, where bf16 is several times slower."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def lora_config(lora: dict, train_new_rows: bool):
    from peft import LoraConfig

    from rl.config import LoraConfig as Schema
    from rl.config import _build

    spec = _build(Schema, lora, "lora")
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, task_type="CAUSAL_LM",
                      modules_to_save=["embed_tokens", "lm_head"] if train_new_rows else None)


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
    from tokens.extend import check_vocab_consistency

    out_dir.mkdir(parents=True, exist_ok=True)
    check_vocab_consistency(model, getattr(processor, "tokenizer", processor))
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    vocab.save(out_dir)


def run_sft(stage: SFTStageConfig, model, processor, vocab, train_dataset, out_dir: Path,
            seed: int = 0, logging_steps: int = 10, progress: bool = True):
    """Train `model` on `train_dataset` (image, prompt, completion); save to `out_dir`.
    Returns (the trained model, TRL's log history)."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out_dir / "trainer"), max_steps=stage.max_steps,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.gradient_accumulation_steps,
        learning_rate=stage.learning_rate, weight_decay=stage.weight_decay,
        warmup_steps=stage.warmup_steps, lr_scheduler_type=stage.lr_scheduler_type,
        logging_steps=logging_steps, report_to=[], save_strategy="no", seed=seed,
        bf16=use_bf16(), max_length=None, disable_tqdm=not progress,
        dataloader_num_workers=0, **stage.extra_args)
    peft_config = lora_config(stage.lora, train_new_rows=True) if stage.lora else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset,
                         processing_class=processor, peft_config=peft_config)
    trainer.train()
    model = trainer.model
    if peft_config is not None:
        model = model.merge_and_unload()
    if trainer.accelerator.is_main_process:
        save_model(trainer.accelerator.unwrap_model(model), processor, vocab, out_dir)
        (out_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history))
        write_trainer_info(trainer, out_dir)
    trainer.accelerator.wait_for_everyone()
    return model, trainer.state.log_history


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="a recipe YAML (default: built-in defaults)")
    p.add_argument("--model", required=True, help="model folder with the spatial vocabulary")
    p.add_argument("--data", required=True, help="folder from `python -m rl.data --build sft`")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from datasets import load_from_disk
    from transformers import AutoProcessor

    from rl.models import load_model
    from tokens import SpatialVocab

    cfg: RunConfig = load_config(a.config)
    model = load_model(a.model, cfg.model)
    processor = AutoProcessor.from_pretrained(a.model)
    ds = load_from_disk(a.data).select_columns(["image", "prompt", "completion"])
    run_sft(cfg.sft, model, processor, SpatialVocab.load(a.model), ds, Path(a.out), cfg.seed,
            cfg.logging_steps, cfg.progress_bars)


if __name__ == "__main__":
    main()
