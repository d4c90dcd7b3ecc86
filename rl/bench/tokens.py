"""Benchmark of the spatial vocabulary: tokens per mask, conversion IoU, parse throughput.

    python -m rl.bench.tokens [--masks 300] [--size 224] [--grid-size 32] [--proposer slic]

Draws synthetic scenes, converts every object mask to grid tokens with the greedy conversion
over weight-free proposals, and prints tokens per mask (against the baseline of listing every
cell whose centre lies inside the mask), the IoU the tokens reproduce (mean and 10th
percentile), and how many completions per second the parser reads (clean answers and garbage).
The paper reports 8.7 tokens per mask at G = 32 with SAM proposals on natural images; the
weight-free proposers on synthetic shapes are a different setting, so compare runs of this
command with each other, not with that figure.

    python -m rl.bench.tokens --codecs grid,text_norm,text_bins,anchor_offset_text,rle_text

adds one row per codec: tokens per box and per mask as a tokenizer counts them (plus the
codec's added tokens), characters per mask, and the conversion IoU of the mask decoded back
from the written answer (region decoder from box and points; `rle_text` upsampled). The
tokenizer is the tiny offline BPE by default, or Qwen2.5-VL's real one with
`--tokenizer qwen2.5-vl` (the qwen extra, `rl.qwen_vocab`): it splits every digit into its own
token, as the models this package is for do.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tokens.answer import Instance
from tokens.codec import GridCodec
from tokens.decoders import RegionDecoder, SuperpixelProposer, points_in_mask
from tokens.greedy import greedy_convert
from tokens.vocab import SpatialVocab

PROPOSERS = {"region": RegionDecoder, "slic": SuperpixelProposer}


def _garbage(rng: np.random.Generator, vocab: SpatialVocab, clean: str) -> str:
    """A corrupted completion: truncated, shuffled, or with out-of-range tokens."""
    kind = rng.integers(4)
    if kind == 0:
        return clean[: rng.integers(len(clean) + 1)]
    if kind == 1:
        parts = clean.split("><")
        rng.shuffle(parts)
        return "><".join(parts)
    if kind == 2:
        g = vocab.grid_size
        return clean.replace("<grid_1", f"<grid_{g + 7}")
    return "".join(chr(c) for c in rng.integers(32, 127, size=200))


def run(n_masks: int = 300, size: int = 224, grid_size: int = 32, proposer: str = "slic",
        tau: float = 0.8, seed: int = 0) -> dict:
    from rl.data.scenes import draw_scene

    vocab = SpatialVocab(grid_size)
    prop = PROPOSERS[proposer]()
    rng = np.random.default_rng(seed)
    codec = GridCodec(vocab)
    tokens, inside, ious, fallbacks, answers = [], [], [], 0, []
    centres = np.array([vocab.cell_center(i, j) for i in range(grid_size)
                        for j in range(grid_size)])
    t0 = time.perf_counter()
    while len(ious) < n_masks:
        image, objects = draw_scene(rng, (size, size), n_objects=int(rng.integers(1, 5)))
        proposals = prop.propose(image, vocab)
        insts = []
        for obj in objects[: n_masks - len(ious)]:
            res = greedy_convert(obj.mask_hw, proposals, vocab, tau=tau)
            tokens.append(len(res.cells))
            inside.append(int(points_in_mask(obj.mask_hw, centres).sum()))
            ious.append(res.iou)
            fallbacks += res.fallback
            x1, y1, x2, y2 = obj.box_xyxy_px
            insts.append(Instance((x1 / size, y1 / size, x2 / size, y2 / size),
                                  res.points(vocab)))
        answers.append(codec.serialize_answer(insts, think="the shapes"))
    convert_s = time.perf_counter() - t0

    completions = answers + [_garbage(rng, vocab, a) for a in answers for _ in range(3)]
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < 1.0:
        for c in completions:
            codec.parse_answer(c)
        reps += 1
    parse_s = time.perf_counter() - t0
    ious_a = np.array(ious)
    return {
        "masks": len(ious),
        "grid_size": grid_size,
        "proposer": proposer,
        "tokens_per_mask": float(np.mean(tokens)),
        "inside_cells_per_mask": float(np.mean(inside)),
        "iou_mean": float(ious_a.mean()),
        "iou_p10": float(np.percentile(ious_a, 10)),
        "reached_tau": float((ious_a >= tau).mean()),
        "fallbacks": int(fallbacks),
        "convert_ms_per_mask": 1000 * convert_s / len(ious),
        "parse_completions_per_s": reps * len(completions) / parse_s,
    }


TOKENIZERS = ("tiny", "qwen2.5-vl")


def build_tokenizer(name: str):
    """A fresh tokenizer: the tiny offline BPE, or Qwen2.5-VL's real one."""
    if name == "tiny":
        from rl.models import build_tiny_tokenizer

        return build_tiny_tokenizer()
    if name == "qwen2.5-vl":
        from rl.qwen_vocab import qwen2_5_vl_tokenizer

        return qwen2_5_vl_tokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; known: {TOKENIZERS}")


def codec_rows(codec_names, n_masks: int = 100, size: int = 224, grid_size: int = 32,
               proposer: str = "slic", tau: float = 0.8, seed: int = 0,
               codec_params: dict | None = None, tokenizer: str = "tiny") -> list[dict]:
    """Per codec: tokens per box, tokens per mask, characters per mask, decoded IoU, over the
    same masks (each written from its box and greedy-conversion points, or its mask), counted
    by `tokenizer` (`TOKENIZERS`) with the codec's tokens added."""
    from rewards.matching import box_iou
    from rl.data.scenes import draw_scene
    from tokens.decoders import instance_masks
    from tokens.registry import get_codec

    vocab = SpatialVocab(grid_size)
    prop, decoder = PROPOSERS[proposer](), RegionDecoder()
    rng = np.random.default_rng(seed)
    targets = []  # (image, mask, box, points)
    while len(targets) < n_masks:
        image, objects = draw_scene(rng, (size, size), n_objects=int(rng.integers(1, 5)))
        proposals = prop.propose(image, vocab)
        for obj in objects[: n_masks - len(targets)]:
            res = greedy_convert(obj.mask_hw, proposals, vocab, tau=tau)
            x1, y1, x2, y2 = obj.box_xyxy_px
            targets.append((image, obj.mask_hw, (x1 / size, y1 / size, x2 / size, y2 / size),
                            res.points(vocab)))
    rows = []
    for name in codec_names:
        codec = get_codec(name, vocab=vocab, **(codec_params or {}).get(name, {}))
        tok = build_tokenizer(tokenizer)
        tok.add_tokens(codec.new_tokens())

        def count(text, tok=tok):
            return len(tok(text, add_special_tokens=False)["input_ids"])

        box_tokens, mask_tokens, chars, ious, box_ious = [], [], [], [], []
        for image, mask, box, points in targets:
            inst = codec.target_instance(box, points, mask)
            line = codec.format_instance(inst)
            if name == "rle_text":  # a box is written as the map of its rectangle
                rect = np.zeros_like(mask)
                h, w = mask.shape
                rect[round(box[1] * h):round(box[3] * h), round(box[0] * w):round(box[2] * w)] = 1
                box_line = codec.format_instance(codec.target_instance(box, [], rect))
            else:
                box_line = codec.format_instance(Instance(box))
            box_tokens.append(count(box_line))
            mask_tokens.append(count(line))
            chars.append(len(line))
            back = codec.parse_answer(f"<think></think><answer>{line}</answer>").instances
            decoded = instance_masks(decoder, image, back)[0] if back else np.zeros_like(mask)
            ious.append((decoded & mask).sum() / max(1, (decoded | mask).sum()))
            box_ious.append(float(box_iou([back[0].box], [box])[0, 0]) if back else 0.0)
        rows.append({"codec": name, "tokens_per_box": float(np.mean(box_tokens)),
                     "tokens_per_mask": float(np.mean(mask_tokens)),
                     "chars_per_mask": float(np.mean(chars)),
                     "iou_mean": float(np.mean(ious)), "iou_p10": float(np.percentile(ious, 10)),
                     "box_iou_mean": float(np.mean(box_ious))})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m rl.bench.tokens",
                                description=__doc__.split("\n")[0])
    p.add_argument("--masks", type=int, default=300)
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--grid-size", type=int, default=32)
    p.add_argument("--proposer", choices=sorted(PROPOSERS), default="slic")
    p.add_argument("--tau", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codecs", default=None,
                   help="comma-separated codecs to compare (e.g. grid,text_norm,text_bins,"
                        "anchor_offset_text,rle_text)")
    p.add_argument("--codec-masks", type=int, default=100, help="masks for the codec table")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="tiny",
                   help="what counts the codec table's tokens")
    a = p.parse_args(argv)
    r = run(a.masks, a.size, a.grid_size, a.proposer, a.tau, a.seed)
    print(f"masks: {r['masks']}  grid: {r['grid_size']}  proposer: {r['proposer']}")
    print(f"tokens per mask: {r['tokens_per_mask']:.2f} "
          f"(listing inside cells: {r['inside_cells_per_mask']:.2f})")
    print(f"conversion IoU: mean {r['iou_mean']:.3f}, 10th percentile {r['iou_p10']:.3f}, "
          f"reached tau: {100 * r['reached_tau']:.1f}%, fallbacks: {r['fallbacks']}")
    print(f"conversion: {r['convert_ms_per_mask']:.1f} ms per mask (proposals included)")
    print(f"parse throughput: {r['parse_completions_per_s']:.0f} completions/s")
    if a.codecs:
        rows = codec_rows(a.codecs.split(","), a.codec_masks, a.size, a.grid_size, a.proposer,
                          a.tau, a.seed, tokenizer=a.tokenizer)
        print(f"\nper codec ({a.codec_masks} masks; {a.tokenizer} tokenizer + each codec's "
              "added tokens):")
        print("| codec | tokens / box | tokens / mask | characters / mask | decoded IoU mean | "
              "p10 | box IoU |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['codec']} | {row['tokens_per_box']:.1f} | "
                  f"{row['tokens_per_mask']:.1f} | {row['chars_per_mask']:.1f} | "
                  f"{row['iou_mean']:.3f} | {row['iou_p10']:.3f} | {row['box_iou_mean']:.3f} |")
        r["codecs"] = rows
    return r


if __name__ == "__main__":
    main()
