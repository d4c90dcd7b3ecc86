"""SFT cold start with TRL's SFTTrainer.

    accelerate launch rl/train_sft.py --config configs/default.yaml --model runs/x/model_init \\
        --data runs/data/synthetic-sft --out runs/x/sft

Trains on prompt/completion conversations (stage-1 grid answers and offset-refinement
dialogues from `python -m rl.data --build sft`), supervising only the completions. The new token
rows are trained: full fine-tuning, or with LoRA (`sft.new_rows`) only the new rows of an untied
model's input embeddings and head (PEFT's TrainableTokens for the embeddings, a parametrization
for the head: `rl.training.train_head_rows`), or the whole embeddings and head of a tied one as
`modules_to_save`; the adapter is merged before model, tokenizer and processor are saved.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch rl/train_sft.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl.config import RunConfig, SFTStageConfig, load_config  # noqa: E402


def render_conversations(dataset, processor):
    """Conversational prompt/completion rows rendered to text once, with TRL's own
    `prepare_multimodal_messages` and `apply_chat_template`, as TRL's vision collator would
    render them at every step. The collator then takes its plain-text path, which gives the
    same batches (tested tensor for tensor) without a chat template per sample per step."""
    import copy

    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    if len(dataset) == 0 or not is_conversational(dataset[0]):
        return dataset

    def render(row):
        prompt = prepare_multimodal_messages(copy.deepcopy(row["prompt"]), images=[row["image"]])
        completion = prepare_multimodal_messages(copy.deepcopy(row["completion"]))
        text = apply_chat_template({"prompt": prompt, "completion": completion}, processor)
        return {"prompt": text["prompt"], "completion": text["completion"]}

    return dataset.map(render, desc="rendering chat templates")


class PerSampleCollator:
    """TRL's vision collator, run on each sample once and remembered (`max_items` samples,
    least recently used first out): a batch is the per-sample results right-padded and
    stacked, which is what TRL's collator builds (prompts left-padded, completions
    right-padded, then flushed left); `tests/test_train_sft.py` checks it tensor for tensor.
    A sample is known by its prompt, completion and image; images may come undecoded (the
    `datasets` Image feature with `decode=False`: a dict with the encoded `bytes`), and are
    then decoded only when a sample is first seen. Saves the decoding and the processor's image
    and text work that every epoch would redo."""

    PAD = {"input_ids": None, "attention_mask": 0, "labels": -100, "completion_mask": 0,
           "mm_token_type_ids": 0, "token_type_ids": 0}
    STACKED = ("pixel_values", "image_grid_thw")

    def __init__(self, inner, pad_token_id: int, max_items: int, image_processor=None):
        from collections import OrderedDict

        self.inner, self.pad_token_id, self.max_items = inner, pad_token_id, max_items
        self.items: OrderedDict = OrderedDict()
        # With the image processor, remembered pixel values are kept as one byte per value
        # where that is exact (`PixelCodes`): a quarter of the memory, so four times the
        # samples fit in the same cache.
        self.image_processor = image_processor
        self.codes: PixelCodes | None = None

    def _key(self, ex) -> tuple:
        import hashlib

        import numpy as np

        image = ex.get("image")
        if image is None:
            data = b""
        elif isinstance(image, dict):  # undecoded: the file's bytes, or its path
            data = image.get("bytes") or str(image.get("path")).encode()
        else:
            data = np.asarray(image).tobytes()
        return (str(ex["prompt"]), str(ex["completion"]),
                hashlib.blake2b(data, digest_size=16).hexdigest())

    @staticmethod
    def _decoded(ex) -> dict:
        """The sample with its image decoded as `datasets` decodes it (PIL, mode kept)."""
        import io

        from PIL import Image

        ex = dict(ex)
        image = ex.get("image")
        if isinstance(image, dict):
            im = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
            im.load()
            ex["image"] = im
        return ex

    def _rows(self, examples) -> list[dict]:
        """Each sample's results, from the cache or, for the samples not in it, made together
        (`_fresh`) and remembered."""
        keys = [self._key(ex) for ex in examples]
        found: dict = {}
        missing: dict = {}
        for key, ex in zip(keys, examples, strict=True):
            if key in found or key in missing:
                continue
            if key in self.items:
                self.items.move_to_end(key)
                found[key] = self.items[key]
            else:
                missing[key] = ex
        if missing:
            for key, out in zip(missing, self._fresh(list(missing.values())), strict=True):
                found[key] = out
                self.items[key] = self._pack(out)
            while len(self.items) > self.max_items:
                self.items.popitem(last=False)
        return [found[key] if key in missing else self._unpack(found[key]) for key in keys]

    def _pack(self, out: dict) -> dict:
        """What the cache keeps of a sample's results: its pixel values as one-byte codes
        where they decode exactly (`PixelCodes.encode`), else as they are."""
        pixels = out.get("pixel_values")
        if self.image_processor is None or pixels is None:
            return out
        if self.codes is None:
            self.codes = PixelCodes.calibrate(self.image_processor)
        codes = self.codes.encode(pixels)
        return out if codes is None else {**out, "pixel_values": codes}

    def _unpack(self, kept: dict) -> dict:
        codes = kept.get("pixel_values")
        if isinstance(codes, PackedPixels):
            return {**kept, "pixel_values": self.codes.decode(codes)}
        return kept

    def _split(self, batch: dict, n: int) -> list[dict] | None:
        """The per-sample results inside `batch`, TRL's collation of `n` samples at once, or
        None where the layout is not the one that can be cut apart exactly (one image per
        sample; each row its tokens first, then right padding: TRL flushes left)."""
        import torch

        grid = batch.get("image_grid_thw")
        if grid is None or grid.shape[0] != n or "pixel_values" not in batch:
            return None
        mask = batch["attention_mask"]
        lengths = mask.sum(dim=1)
        width = mask.shape[1]
        if not bool((mask == (torch.arange(width) < lengths[:, None])).all()):
            return None
        patches = grid.prod(dim=1).tolist()
        outs, start = [], 0
        for i, (n_tokens, n_patches) in enumerate(zip(lengths.tolist(), patches, strict=True)):
            out = {}
            for name, value in batch.items():
                if name == "pixel_values":
                    out[name] = value[start:start + n_patches].clone()
                elif name == "image_grid_thw":
                    out[name] = value[i:i + 1].clone()
                elif name in self.PAD:
                    out[name] = value[i:i + 1, :n_tokens].clone()
                else:
                    return None
            outs.append(out)
            start += n_patches
        return outs

    def _fresh(self, examples: list) -> list[dict]:
        """Per-sample results of samples not seen yet: one call of TRL's collator for all of
        them (its processor's fixed cost per call is most of a lone sample's), cut apart
        (`_split`), or one call per sample where the layout does not allow the cut."""
        if len(examples) > 1:
            outs = self._split(dict(self.inner([self._decoded(ex) for ex in examples])),
                               len(examples))
            if outs is not None:
                return outs
        return [dict(self.inner([self._decoded(ex)])) for ex in examples]

    def __call__(self, examples) -> dict:
        import torch

        rows = self._rows(examples)
        width = max(r["input_ids"].shape[1] for r in rows)
        batch = {}
        for name in rows[0]:
            parts = [r[name] for r in rows]
            if name in self.STACKED:
                batch[name] = torch.cat(parts, dim=0)
                continue
            if name not in self.PAD:
                raise KeyError(f"PerSampleCollator: unexpected collator output {name!r}")
            pad = self.pad_token_id if self.PAD[name] is None else self.PAD[name]
            batch[name] = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]),
                                                             value=pad) for p in parts])
        return batch


class PackedPixels:
    """A sample's pixel values as one byte per value (`codes`, uint8, the values' shape)."""

    __slots__ = ("codes",)

    def __init__(self, codes):
        self.codes = codes


class PixelCodes:
    """Exact one-byte codes for an image processor's pixel values.

    The processor maps a pixel's byte to a float with elementwise arithmetic (rescale,
    normalize), the same for every pixel of a channel. `calibrate` runs the processor itself
    on the 256 constant images and keeps, per pixel-value column, the float each byte becomes
    (a (256, columns) table). A sample's values are then encoded by inverting the column's
    affine map and rounding, and kept only if the table gives every value back bit for bit
    (`encode` returns None otherwise: a resized image's interpolated values, another
    processor); `decode` is one lookup.
    """

    def __init__(self, table):
        import torch

        self.table = table
        self.columns = torch.arange(table.shape[1])
        self.low = table[0]
        self.step = (table[255] - table[0]) / 255

    @classmethod
    def calibrate(cls, image_processor) -> PixelCodes:
        """The table from `image_processor` on the 256 constant images (a constant image
        stays constant whatever the processor resizes it to, so one size serves all)."""
        import numpy as np
        import torch
        from PIL import Image

        rows = [image_processor(images=[Image.fromarray(np.full((112, 112, 3), v, np.uint8))],
                                return_tensors="pt")["pixel_values"][0] for v in range(256)]
        return cls(torch.stack(rows))

    def encode(self, pixels) -> PackedPixels | None:
        import torch

        if (pixels.dtype != self.table.dtype or pixels.dim() != 2
                or pixels.shape[1] != self.table.shape[1]):
            return None
        codes = ((pixels - self.low) / self.step).round_().clamp_(0, 255).to(torch.uint8)
        if not torch.equal(self.table[codes.long(), self.columns], pixels):
            return None
        return PackedPixels(codes)

    def decode(self, packed: PackedPixels):
        return self.table[packed.codes.long(), self.columns]


def sft_trainer(stage: SFTStageConfig, ctx, model, train_dataset, max_steps: int | None = None):
    """TRL's SFTTrainer for `model` on `train_dataset` (image, prompt, completion), writing into
    `ctx.output_dir` (a `rl.context.RunContext`). Conversations are rendered to text once
    (`render_conversations`)."""
    from trl import SFTConfig, SFTTrainer

    from rl.training import (
        common_args,
        lora_config,
        new_rows_mode,
        optimizer_with_vision_scale,
        score_labelled_positions_only,
        train_head_rows,
    )

    score_labelled_positions_only(ctx.score_labelled_only)
    train_dataset = render_conversations(train_dataset, ctx.processor)
    if stage.collate_cache and "image" in train_dataset.column_names:
        from datasets import Image

        # Images stay encoded until the collator first sees their sample (then cached).
        train_dataset = train_dataset.cast_column("image", Image(decode=False))

    # extra_args win over the package's own settings (rl.config.TRAINER_ARG_FIELDS: the keys
    # that recipe fields set are refused when the recipe loads).
    args = SFTConfig(**{**common_args(stage, ctx, max_steps), "warmup_steps": stage.warmup_steps,
                        "lr_scheduler_type": stage.lr_scheduler_type, "max_length": None,
                        "dataloader_num_workers": 0, **stage.extra_args})
    peft_config, new_ids = None, ()
    if stage.lora:
        rows = new_rows_mode(stage.new_rows, model)
        tok = getattr(ctx.processor, "tokenizer", ctx.processor)
        new_ids = sorted(ctx.vocab.token_ids(tok).values()) if rows == "trainable_tokens" else ()
        peft_config = lora_config(stage.lora, rows, new_ids)
    optimizer = None
    if stage.vision_lr_scale != 1.0:
        if stage.lora:
            raise ValueError("sft.vision_lr_scale with sft.lora: the LoRA weights do not exist "
                             "yet when the optimizer's groups are made; use one of them")
        optimizer = optimizer_with_vision_scale(model, args, stage.vision_lr_scale)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset,
                         processing_class=ctx.processor, peft_config=peft_config,
                         callbacks=list(ctx.callbacks) or None,
                         optimizer_cls_and_kwargs=optimizer)
    if new_ids:
        train_head_rows(trainer.model, new_ids)
    if stage.collate_cache:
        tok = getattr(ctx.processor, "tokenizer", ctx.processor)
        trainer.data_collator = PerSampleCollator(
            trainer.data_collator, tok.pad_token_id, stage.collate_cache,
            image_processor=getattr(ctx.processor, "image_processor", None))
    return trainer


def run_sft(stage: SFTStageConfig, ctx, model, train_dataset):
    """Train `model` on `train_dataset` (image, prompt, completion); save to `ctx.output_dir`.
    Returns (the trained model, TRL's log history)."""
    from rl.training import train_and_save, vision_frozen

    with vision_frozen(model, stage.freeze_vision):
        trainer = sft_trainer(stage, ctx, model, train_dataset)
        return train_and_save(trainer, ctx, merge=bool(stage.lora))


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

    from rl.context import RunContext
    from rl.models import load_model
    from tokens import SpatialVocab

    cfg: RunConfig = load_config(a.config)
    model = load_model(a.model, cfg.model)
    processor = AutoProcessor.from_pretrained(a.model)
    ctx = RunContext.from_config(cfg, processor).with_output(a.out,
                                                             vocab=SpatialVocab.load(a.model))
    ds = load_from_disk(a.data).select_columns(["image", "prompt", "completion"])
    run_sft(cfg.sft, ctx, model, ds)


if __name__ == "__main__":
    main()
