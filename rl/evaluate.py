"""Evaluation: greedy, batched propose-then-refine generation, masks from the decoder, metrics.

    python -m rl.evaluate --model runs/default/stage2 --data runs/data/eval [--rounds 1]

Evaluation walks the path training walks: the same prompts, parser and mask decoder, so a
number here and a reward there mean the same thing. Completions that do not parse are empty
predictions (scored, never skipped).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewards.solution import parse_solution
from rl.data.samples import assistant_turn, user_turn
from rl.metrics import SampleScore, score_sample, summarize
from tokens import Instance, SpatialVocab, apply_refinement, parse_answer
from tokens.decoders import MaskDecoder, Prompt, as_image_array, resize_mask


@dataclass
class Prediction:
    """What the model answered for one sample: the stage-1 text, each refinement round's text,
    and the final instances (normalized)."""

    stage1: str
    refinements: list[str] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    parsed: bool = True


def generate(model, processor, conversations: Sequence[list], images: Sequence,
             max_new_tokens: int = 64, batch_size: int = 32) -> list[str]:
    """Greedy completions for conversations (each with one image), decoded like TRL does."""
    import torch

    tok = getattr(processor, "tokenizer", processor)
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            convs = conversations[start:start + batch_size]
            imgs = [img if hasattr(img, "convert") else _pil(img)
                    for img in images[start:start + batch_size]]
            texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in convs]
            inputs = processor(text=texts, images=imgs, padding=True, return_tensors="pt")
            inputs = inputs.to(model.device)
            with torch.no_grad():
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(ids[:, inputs["input_ids"].shape[1]:],
                                    skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


def _pil(image):
    from PIL import Image

    return Image.fromarray(as_image_array(image))


def predict(model, processor, prompts: Sequence[list], images: Sequence, vocab: SpatialVocab,
            refine_prompt: str, rounds: int = 0, max_new_tokens: int = 64,
            batch_size: int = 32) -> list[Prediction]:
    """Propose, then refine `rounds` times: each round the conversation gains the last answer
    and the refinement request, and the offsets move the current points."""
    first = generate(model, processor, list(prompts), images, max_new_tokens, batch_size)
    preds = []
    for text in first:
        ans = parse_answer(text, vocab)
        preds.append(Prediction(text, [], ans.instances, ans.well_formed))
    convs = [list(p) + [assistant_turn(t)] for p, t in zip(prompts, first, strict=True)]
    for _ in range(rounds):
        active = [k for k, p in enumerate(preds) if p.instances]
        if not active:
            break
        asks = [convs[k] + [user_turn(refine_prompt)] for k in active]
        texts = generate(model, processor, asks, [images[k] for k in active], max_new_tokens,
                         batch_size)
        for k, text in zip(active, texts, strict=True):
            preds[k].refinements.append(text)
            preds[k].instances = apply_refinement(preds[k].instances, text, vocab)
            convs[k] = asks[active.index(k)] + [assistant_turn(text)]
    return preds


def masks_for(decoder: MaskDecoder, image, instances: Sequence[Instance],
              frame: tuple[int, int]) -> np.ndarray:
    """Union of the decoded instance masks, in the (W, H) `frame` of the ground truth."""
    img = as_image_array(image)
    h, w = img.shape[:2]
    fw, fh = frame
    union = np.zeros((fh, fw), dtype=bool)
    # The same prompts the mask rewards give the decoder (at most 64 distinct points).
    prompts = [Prompt.from_instance(i, w, h, max_points=64) for i in instances]
    for m in decoder.decode(img, prompts):
        union |= resize_mask(m, fh, fw)
    return union


def score(preds: Sequence[Prediction], images: Sequence, solutions: Sequence,
          decoder: MaskDecoder, kinds: Sequence[str] | None = None) -> list[SampleScore]:
    from pycocotools import mask as mask_utils

    out = []
    for k, (pred, image, sol) in enumerate(zip(preds, images, solutions, strict=True)):
        gt = parse_solution(sol, row=k)
        ignore = (mask_utils.decode(gt.ignore_rle).astype(bool) if gt.ignore_rle is not None
                  else None)
        pred_mask = masks_for(decoder, image, pred.instances, (gt.width, gt.height))
        out.append(score_sample(pred_mask, gt.union_mask(), ignore,
                                [i.box for i in pred.instances], list(gt.boxes_norm),
                                pred.parsed, kinds[k] if kinds else ""))
    return out


def evaluate_rows(model, processor, rows, decoder: MaskDecoder, vocab: SpatialVocab,
                  refine_prompt: str, rounds: int = 0, max_new_tokens: int = 64,
                  batch_size: int = 32) -> tuple[dict, list[Prediction]]:
    """Metrics of a model on GRPO-style rows (`prompt`, `image`, `solution`, `kind`)."""
    prompts = [r["prompt"] for r in rows]
    images = [r["image"] for r in rows]
    preds = predict(model, processor, prompts, images, vocab, refine_prompt, rounds,
                    max_new_tokens, batch_size)
    scores = score(preds, images, [r["solution"] for r in rows], decoder,
                   [r.get("kind", "") for r in rows])
    return summarize(scores), preds


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m rl.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a saved model folder (with spatial_vocab.json)")
    p.add_argument("--data", required=True,
                   help="a folder written by `python -m rl.data --build grpo`")
    p.add_argument("--rounds", type=int, default=0, help="refinement rounds (0: grid only)")
    p.add_argument("--decoder", default="region")
    p.add_argument("--prompts", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    a = p.parse_args(argv)
    from datasets import load_from_disk
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.data.__main__ import _decoder
    from rl.data.samples import load_prompts

    model = AutoModelForImageTextToText.from_pretrained(a.model).eval()
    processor = AutoProcessor.from_pretrained(a.model)
    vocab = SpatialVocab.load(a.model)
    ds = load_from_disk(a.data)
    rows = [ds[i] for i in range(len(ds) if a.limit is None else min(a.limit, len(ds)))]
    metrics, _ = evaluate_rows(model, processor, rows, _decoder(a.decoder), vocab,
                               load_prompts(a.prompts)["stage2"], a.rounds, a.max_new_tokens,
                               a.batch_size)
    print(json.dumps(metrics, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    main()
