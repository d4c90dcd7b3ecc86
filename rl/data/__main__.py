"""Build a dataset from any source in one command.

    python -m rl.data --source synthetic --n 1000 --build sft --out runs/data/sft
    python -m rl.data --source refcoco --root refer/data/refcoco --images coco/train2014 \\
        --split-by unc --split train --build grpo --out runs/data/refcoco-grpo
    python -m rl.data --source grefcoco --root grefcoco --images coco/train2014 --split val ...
    python -m rl.data --source reasonseg --root ReasonSeg/train --build sft --min-iou 0.6 ...
    python -m rl.data --source segzero --root refCOCOg_2k_840 --decoder '{"name": "sam", ...}'

--build rows writes the contract rows (image, expression, solution); sft writes SFT cold-start
samples (stage-1 answers and refinement dialogues); grpo writes GRPO stage-1 prompts. The folder
is a `datasets` dataset (`load_from_disk`) plus `summary.json`. Bad input stops the run with an
error naming file, record and field; with --no-strict it is skipped and counted by reason.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from rl.data.referring import DISTRACTORS

SOURCES = ("synthetic", "refcoco", "grefcoco", "reasonseg", "segzero")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rl.data", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--source", choices=SOURCES, required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--build", choices=("rows", "sft", "grpo"), default="rows")
    p.add_argument("--root", help="dataset folder (refs/instances, ReasonSeg split, saved dataset)")
    p.add_argument("--images", help="image folder (RefCOCO family: COCO train2014)")
    p.add_argument("--dataset", default="refcoco", choices=("refcoco", "refcoco+", "refcocog"))
    p.add_argument("--split-by", default="unc", help="refs(SPLIT_BY).p: unc, umd or google")
    p.add_argument("--split", help="keep one split (train, val, testA, ...)")
    p.add_argument("--reasonseg-masks", default="reference",
                   choices=("reference", "subtract_ignore"),
                   help="ReasonSeg polygons: as LISA's loader draws them (default), or "
                        "pycocotools fill minus every ignore polygon")
    p.add_argument("--grefcoco-crowd", default="skip", choices=("skip", "keep"),
                   help="gRefCOCO crowd annotations: left out as the gRefCOCO API does "
                        "(default), or kept in the target")
    p.add_argument("--n", type=int, default=1000, help="synthetic: number of records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this square size (synthetic: the drawing size, "
                        "default 112)")
    p.add_argument("--objects", default="1,3", help="synthetic: min,max objects per scene")
    p.add_argument("--kinds", default=None,
                   help='synthetic: JSON weights of expression kinds, e.g. {"attribute": 1}')
    p.add_argument("--distractors", default="any", choices=DISTRACTORS,
                   help="synthetic: shapes drawn at random (default), every distractor "
                        "sharing the named object's colour or shape (share: reading needed), "
                        "one shape in distinct colours (colour), or one colour in distinct "
                        "shapes (shape)")
    p.add_argument("--grid-size", type=int, default=32)
    p.add_argument("--decoder", default="region",
                   help='mask decoder: "region", or JSON like {"name": "sam", "variant": "vit_h", '
                        '"checkpoint": "sam_vit_h.pth"}')
    p.add_argument("--prompts", default=None, help="prompt templates YAML (default "
                                                   "configs/prompts.yaml)")
    p.add_argument("--min-iou", type=float, default=None,
                   help="sft: drop samples whose tokens reproduce a mask below this IoU")
    p.add_argument("--no-refinement", action="store_true", help="sft: stage-1 samples only")
    p.add_argument("--limit", type=int, default=None, help="stop after this many records")
    p.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                   help="stop at the first bad record (default) or skip and count it")
    return p


def _decoder(spec: str):
    from rl.context import read_spec
    from tokens.decoders import build_decoder

    spec = spec.strip()
    return build_decoder(read_spec(spec))


def records_for(args, skips):
    """The record iterator of `args.source`."""
    from rl.data.reasonseg import reasonseg_records, segzero_records
    from rl.data.refcoco import refer_records
    from rl.data.referring import DEFAULT_KIND_WEIGHTS, synthetic_records

    if args.source == "synthetic":
        lo, hi = (int(x) for x in args.objects.split(","))
        kinds = json.loads(args.kinds) if args.kinds else DEFAULT_KIND_WEIGHTS
        return synthetic_records(args.n, args.seed, args.image_size or 112, (lo, hi), kinds,
                                 distractors=args.distractors)
    if not args.root:
        raise SystemExit(f"--source {args.source} needs --root")
    if args.source in ("refcoco", "grefcoco"):
        if not args.images:
            raise SystemExit(f"--source {args.source} needs --images (the COCO train2014 folder)")
        return refer_records(args.root, args.images, args.split, args.split_by, args.dataset,
                             grefs=args.source == "grefcoco", skips=skips,
                             crowd=args.grefcoco_crowd)
    if args.source == "reasonseg":
        return reasonseg_records(args.root, skips=skips, masks=args.reasonseg_masks)
    return segzero_records(args.root, _decoder(args.decoder), skips=skips)


def _histogram(values, bins=(0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)) -> list[str]:
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins)
    total = max(1, int(counts.sum()))
    return [f"  [{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'} {c:6d} "
            f"{'#' * round(40 * c / total)}"
            for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import Dataset
    from tqdm import tqdm

    from rl.data.common import Skips
    from rl.data.samples import (
        BuildConfig,
        BuildStats,
        base_columns,
        build_grpo_stage1,
        build_sft,
        load_prompts,
        resize_image,
    )
    from tokens import SpatialVocab

    args = _parser().parse_args(argv)
    skips = Skips(strict=args.strict)
    prompts = load_prompts(args.prompts)
    cfg = BuildConfig(vocab=SpatialVocab(args.grid_size),
                      image_size=args.image_size if args.source != "synthetic" else None,
                      min_iou=args.min_iou, refinement=not args.no_refinement, seed=args.seed)
    stats = BuildStats()
    t0 = time.perf_counter()
    records = records_for(args, skips)
    if args.limit is not None:
        records = (r for k, r in zip(range(args.limit), records, strict=False))
    total = args.n if args.source == "synthetic" else args.limit
    records = tqdm(records, total=total, desc=f"{args.source} → {args.build}", unit="record",
                   disable=None)
    if args.build == "sft":
        rows = build_sft(records, _decoder(args.decoder), prompts, cfg, skips, stats)
    elif args.build == "grpo":
        rows = build_grpo_stage1(records, prompts, cfg)
    else:
        rows = (base_columns(r, resize_image(np.asarray(r.image), cfg.image_size))
                for r in records)
    rows = list(rows)
    build_s = time.perf_counter() - t0
    if not rows:
        raise SystemExit("no records were written" + (f"; skipped: {dict(skips.counts)}"
                                                      if skips else ""))
    out = Path(args.out)
    Dataset.from_list(rows).save_to_disk(str(out))
    summary = {
        "source": args.source, "build": args.build, "records_written": len(rows),
        "tasks": stats.tasks, "skipped": dict(skips.counts), "skip_examples": skips.examples,
        "build_seconds": round(build_s, 2),
        "tokens_per_mask": float(np.mean(stats.tokens_per_mask)) if stats.tokens_per_mask
        else None,
        "conversion_iou_mean": float(np.mean(stats.conversion_iou)) if stats.conversion_iou
        else None,
        "conversion_iou": stats.conversion_iou,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"records written: {len(rows)} to {out}" + (f" ({stats.tasks})" if stats.tasks else ""))
    print(f"built in {build_s:.1f} s ({len(rows) / build_s:.0f} samples/s)")
    if skips:
        print("records skipped:")
        for reason, c in skips.counts.most_common():
            print(f"  {c:6d}  {reason}  (e.g. {skips.examples[reason]})")
    else:
        print("records skipped: none")
    if stats.tokens_per_mask:
        print(f"tokens per mask: {summary['tokens_per_mask']:.2f}")
        print(f"conversion IoU: mean {summary['conversion_iou_mean']:.3f}")
        print("\n".join(_histogram(stats.conversion_iou)))
    return summary


if __name__ == "__main__":
    main()
