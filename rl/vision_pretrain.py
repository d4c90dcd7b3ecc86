"""Eyes for the tiny model: its vision tower pre-trained on the synthetic scenes' objects.

A real vision-language model arrives with a pre-trained vision tower; the tiny offline one is
random, and through the language model's loss it learns no shape in a cold start's budget (asked
"Describe <box>…</box>." after 3,000 steps with captioning rows, it named the shape at the box 0.26
of the time, the colour 0.85; docs/experiments.md, "Binding a word to an object"). This trains the
tower alone, as a model-building step before the spatial vocabulary is added: a linear head reads
the colour and the shape of every object of a scene from the coverage-weighted mean of the visual
tokens the object covers (tokens covered at least a quarter; the most-covered one when none is),
with a cross-entropy for each, by a `transformers.Trainer`. The head is then dropped and the patch
merger's last layer scaled so the visual tokens' mean norm is `output_norm` (the trained tower's
tokens are ~15 against ~0.2 for the word embeddings at initialization).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from rl.data.scenes import COLOURS, SHAPES

MIN_COVER = 0.25


@dataclass
class TowerPretrainConfig:
    """steps: optimizer steps (0: no pre-training); scenes: distinct training scenes (2-4
    objects, every distractor sharing a colour or a shape with another object), read in passes;
    output_norm: the visual tokens' mean norm after scaling (null: left as trained); size: also
    regress each object's log area (standardized over the training objects, squared error
    added to the two cross-entropies), so the tokens an object covers say how large it is
    (what "the largest"/"the smallest" compare); lr_scheduler_type: transformers' schedule of
    the rate over the steps ("constant": none; "cosine": decays to 0 at the last step);
    size_tokens: also regress, from every visual token an object covers most (at least
    `MIN_COVER` of it), that object's log area (standardized as for `size`, by a head of its
    own on each token): every token of an object, not only their mean, says how large the
    object is, so "the smallest star" can be found among single tokens."""

    steps: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 16
    scenes: int = 3000
    output_norm: float | None = 1.0
    size: bool = False
    size_tokens: bool = False
    lr_scheduler_type: str = "constant"
    seed: int = 0


def object_examples(n: int, seed: int, image_size: int, tokens_per_side: int,
                    workers: int = 1, token_sizes: bool = False) -> list[dict]:
    """`n` synthetic scenes as training examples: the image, and per object its colour and
    shape indices and its pooling weights over the scene's visual tokens (raster order); with
    `token_sizes`, per token the log area of the object covering it most (NaN where none
    covers it by `MIN_COVER`).
    Scene i depends on `seed` and i only, so `workers` forked processes build the same list
    (rl.data.parallel)."""
    from rl.data.parallel import in_processes
    from rl.data.referring import synthetic_records

    return in_processes(
        lambda lo, hi: [_object_example(rec, image_size, tokens_per_side, token_sizes)
                        for rec in synthetic_records(hi - lo, seed, image_size, (2, 4),
                                                     {"attribute": 1.0}, distractors="share",
                                                     start=lo)],
        n, workers)


def _object_example(rec, image_size: int, tokens_per_side: int,
                    token_sizes: bool = False) -> dict:
    from pycocotools import mask as mask_utils

    cell = image_size // tokens_per_side
    colours = list(COLOURS)
    views = json.loads(rec.extra["scene"])
    rles = [{"size": r["size"], "counts": r["counts"].encode()}
            for r in json.loads(rec.extra["objects"])]
    masks = mask_utils.decode(rles).transpose(2, 0, 1)[:, :cell * tokens_per_side,
                                                       :cell * tokens_per_side]
    cover = masks.reshape(len(views), tokens_per_side, cell, tokens_per_side, cell)
    cover = cover.mean(axis=(2, 4)).reshape(len(views), -1)
    weights = np.where(cover >= MIN_COVER, cover, 0.0)
    for k in np.flatnonzero(weights.sum(axis=1) == 0):  # a sliver: its best token
        weights[k, cover[k].argmax()] = cover[k].max()
    log_area = [float(np.log(max(m.mean(), 1.0 / m.size))) for m in masks]
    out = {"image": rec.image, "pool": weights / weights.sum(axis=1, keepdims=True),
           "shape": [SHAPES.index(v["shape"]) for v in views],
           "colour": [colours.index(v["colour"]) for v in views], "log_area": log_area}
    if token_sizes:
        top = cover.argmax(axis=0)
        out["token_log_area"] = np.where(cover.max(axis=0) >= MIN_COVER,
                                         np.asarray(log_area)[top], np.nan)
    return out


class ObjectAttributes:
    """Collator: images through the processor, the per-object pooling weights as one block
    matrix over the batch's visual tokens, and the labels."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        inputs = self.image_processor(images=[b["image"] for b in batch], return_tensors="pt")
        sizes = [b["pool"].shape[1] for b in batch]
        pool = torch.zeros(sum(len(b["shape"]) for b in batch), sum(sizes))
        row = col = 0
        for b, size in zip(batch, sizes, strict=True):
            pool[row:row + len(b["shape"]), col:col + size] = torch.from_numpy(b["pool"])
            row, col = row + len(b["shape"]), col + size
        out = {"pixel_values": inputs["pixel_values"],
               "image_grid_thw": inputs["image_grid_thw"], "pool": pool,
               "shape": torch.tensor([s for b in batch for s in b["shape"]]),
               "colour": torch.tensor([c for b in batch for c in b["colour"]]),
               "log_area": torch.tensor([a for b in batch for a in b["log_area"]],
                                        dtype=torch.float32)}
        if "token_log_area" in batch[0]:
            out["token_log_area"] = torch.from_numpy(
                np.concatenate([b["token_log_area"] for b in batch])).float()
        return out


def _tower_with_head(visual, size: tuple[float, float] | None = None,
                     token_size: tuple[float, float] | None = None):
    """The tower with its head; `size`: (mean, standard deviation) of the training objects'
    log areas, to regress them standardized (None: colour and shape only); `token_size`: the
    same, to regress them from each token an object covers most (a second, per-token head)."""
    import torch
    from torch import nn

    n_cls = len(SHAPES) + len(COLOURS)

    class TowerWithHead(nn.Module):
        """The vision tower and a linear colour + shape (+ log area) head on pooled object
        tokens."""

        def __init__(self):
            super().__init__()
            self.visual = visual
            dim = visual.merger.mlp[-1].out_features
            self.head = nn.Linear(dim, n_cls + (size is not None))
            self.token_head = nn.Linear(dim, 1) if token_size is not None else None

        def tokens(self, pixel_values, image_grid_thw):
            return self.visual(pixel_values, grid_thw=image_grid_thw).pooler_output

        def forward(self, pixel_values, image_grid_thw, pool, shape, colour, log_area=None,
                    token_log_area=None):
            tokens = self.tokens(pixel_values, image_grid_thw)
            logits = self.head(pool @ tokens)
            ce = nn.functional.cross_entropy
            loss = ce(logits[:, :len(SHAPES)], shape) + ce(logits[:, len(SHAPES):n_cls], colour)
            if size is not None and log_area is not None:
                target = (log_area - size[0]) / size[1]
                loss = loss + nn.functional.mse_loss(logits[:, n_cls], target)
            out = {"loss": loss, "logits": logits}
            if self.token_head is not None and token_log_area is not None:
                covered = ~torch.isnan(token_log_area)
                pred = self.token_head(tokens[covered]).squeeze(-1)
                target = (token_log_area[covered] - token_size[0]) / token_size[1]
                out["loss"] = loss + nn.functional.mse_loss(pred, target)
                out["token_sizes"] = (pred, target)
            return out

        @torch.no_grad()
        def accuracy(self, batch) -> dict:
            res = self(**batch)
            logits = res["logits"]
            out = {"shape": float((logits[:, :len(SHAPES)].argmax(1) == batch["shape"])
                                  .float().mean()),
                   "colour": float((logits[:, len(SHAPES):n_cls].argmax(1) == batch["colour"])
                                   .float().mean())}
            if size is not None:  # how well the head orders the objects by size
                pairs = torch.stack([logits[:, n_cls], batch["log_area"]])
                out["size_correlation"] = float(torch.corrcoef(pairs)[0, 1])
            if self.token_head is not None:  # the same from single tokens
                out["token_size_correlation"] = float(torch.corrcoef(
                    torch.stack(res["token_sizes"]))[0, 1])
            return out

    return TowerWithHead()


def pretrain_tower(model, processor, cfg: TowerPretrainConfig, image_size: int) -> dict:
    """Train `model`'s vision tower in place (see the module docstring); `processor` takes
    images of `image_size`² pixels. Returns the held-out
    colour and shape accuracy of the head before and after (300 scenes of their own seed), the
    tokens' mean norm before scaling, and the training loss and rate at each logged step."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments

    vision = model.config.vision_config
    side = image_size // (vision.patch_size * vision.spatial_merge_size)
    collate = ObjectAttributes(processor.image_processor)
    # The scenes over the run's CPU threads (rl.pipeline.set_cpu_threads set them).
    workers = torch.get_num_threads()
    train = object_examples(cfg.scenes, cfg.seed + 7_000_001, image_size, side, workers,
                            cfg.size_tokens)
    held_out = collate(object_examples(300, cfg.seed + 7_000_002, image_size, side, workers,
                                       cfg.size_tokens))
    areas = np.concatenate([ex["log_area"] for ex in train])
    stats = (float(areas.mean()), float(areas.std()))
    net = _tower_with_head(model.model.visual, stats if cfg.size else None,
                           stats if cfg.size_tokens else None)
    before = net.accuracy(held_out)
    work_dir = tempfile.TemporaryDirectory(prefix="vision_pretrain_")  # the Trainer's scratch
    args = TrainingArguments(output_dir=work_dir.name, max_steps=cfg.steps,
                             per_device_train_batch_size=cfg.batch_size,
                             learning_rate=cfg.learning_rate,
                             lr_scheduler_type=cfg.lr_scheduler_type,
                             weight_decay=0.0, logging_steps=max(1, cfg.steps // 10),
                             save_strategy="no", report_to=[], seed=cfg.seed,
                             remove_unused_columns=False, disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=net, args=args, train_dataset=train, data_collator=collate)
    trainer.train()
    work_dir.cleanup()
    after = net.accuracy(held_out)
    with torch.no_grad():
        norm = float(net.tokens(held_out["pixel_values"], held_out["image_grid_thw"])
                     .norm(dim=-1).mean())
        if cfg.output_norm is not None:
            last = model.model.visual.merger.mlp[-1]
            last.weight.mul_(cfg.output_norm / norm)
            last.bias.mul_(cfg.output_norm / norm)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    return {"held_out_before": before, "held_out_after": after, "token_norm_trained": norm,
            "output_norm": cfg.output_norm, "loss": [e["loss"] for e in logged],
            "learning_rate": [e["learning_rate"] for e in logged]}
