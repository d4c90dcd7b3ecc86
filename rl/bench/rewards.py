"""Benchmark of the stage-1 rewards on a GRPO-sized batch, naive versus as shipped.

    python -m rl.bench.rewards [--prompts 8] [--rollouts 8] [--size 512] [--variant tiny]

A batch of `prompts` × `rollouts` completions (1–3 instances each, masks of size × size px) is
scored by the `mask` reward with SAM (real architecture, random weights; the `tiny` encoder runs
on a CPU):

(a) naively: every completion scored on its own, one `set_image` per rollout and one decode
    per instance;
(b) as shipped: one call for the batch, one embedding per image (cached), all instances of all
    rollouts of an image decoded together, identical prompts once.

It prints both times, their ratio, whether both gave the same scores, and the time per
completion of the reward math that is not SAM (parsing, matching, box/point terms, mask IoU).

The saving is in image embeddings (8 per batch instead of 64); prompt decoding runs the same
SAM mask decoder in both paths. A tiny encoder makes embeddings cheap next to decoding, so the
measured ratio understates what a real encoder gains: the command also times one `set_image`
of a real-size encoder (ViT-B by default, random weights) and projects the ratio to it from the
measured parts. `--variant vit_b --prompts 1` measures the real-size path end to end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rewards import build_reward, make_solution
from tokens import Instance, SpatialVocab, serialize_answer
from tokens.decoders import MaskDecoder, SamDecoder, build_sam


class _DecodeOnly(MaskDecoder):
    """A decoder that overrides `decode` itself: the cached embed/decode steps are unused."""

    def _embed(self, image_hw3):
        raise AssertionError("not used")

    def _decode_batch(self, embedding, image_hw3, prompts):
        raise AssertionError("not used")


class NaiveSamDecoder(_DecodeOnly):
    """SAM used without any of the shipped savings: `set_image` on every `decode` call, one
    `predict` per prompt."""

    name = "sam_naive"

    def __init__(self, model):
        from segment_anything import SamPredictor

        super().__init__(cache_size=1)
        self.predictor = SamPredictor(model)
        self.embed_seconds = self.decode_seconds = 0.0

    def decode(self, image, prompts):
        t0 = time.perf_counter()
        self.predictor.set_image(np.asarray(image))
        t1 = time.perf_counter()
        self.embed_seconds += t1 - t0
        out = []
        for p in prompts:
            if p.is_empty:
                out.append(np.zeros(np.asarray(image).shape[:2], bool))
                continue
            pts = np.array(p.points_xy_px) if p.points_xy_px else None
            masks, scores, _ = self.predictor.predict(
                point_coords=pts, point_labels=None if pts is None else np.ones(len(pts)),
                box=None if p.box_xyxy_px is None else np.array(p.box_xyxy_px),
                multimask_output=p.multimask)
            out.append(masks[int(np.argmax(scores))])
        self.decode_seconds += time.perf_counter() - t1
        return out


class TimedSamDecoder(SamDecoder):
    """The shipped SAM decoder, adding up the seconds spent embedding images."""

    embed_seconds = 0.0

    def _embed(self, image_hw3):
        t0 = time.perf_counter()
        try:
            return super()._embed(image_hw3)
        finally:
            self.embed_seconds += time.perf_counter() - t0


class TimedDecoder(_DecodeOnly):
    """Wraps a decoder and adds up the seconds spent inside `decode`."""

    def __init__(self, inner: MaskDecoder):
        super().__init__(cache_size=1)
        self.inner, self.seconds = inner, 0.0

    def decode(self, image, prompts):
        t0 = time.perf_counter()
        try:
            return self.inner.decode(image, prompts)
        finally:
            self.seconds += time.perf_counter() - t0


def make_batch(n_prompts: int, n_rollouts: int, size: int, vocab: SpatialVocab, seed: int):
    """Images, solutions and completions: rollouts jitter, drop, duplicate or garble the truth."""
    from rl.data.scenes import draw_scene

    rng = np.random.default_rng(seed)
    images, solutions, completions = [], [], []
    for _ in range(n_prompts):
        image, objects = draw_scene(rng, (size, size), n_objects=int(rng.integers(1, 4)))
        sol = make_solution(size, size, [o.mask_hw for o in objects],
                            [o.box_xyxy_px for o in objects])
        truth = []
        for o in objects:
            ys, xs = np.nonzero(o.mask_hw)
            x1, y1, x2, y2 = o.box_xyxy_px
            truth.append((np.array([x1, y1, x2, y2]) / size, xs / size, ys / size))
        for _r in range(n_rollouts):
            insts = []
            for box, xs, ys in truth:
                if rng.random() < 0.15:
                    continue  # a missed instance
                jitter = rng.normal(0, 0.03, 4)
                b = np.clip(box + jitter, 0, 1)
                b = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
                k = rng.choice(len(xs), size=int(rng.integers(1, 5)))
                insts.append(Instance(b, list(zip(xs[k], ys[k], strict=True))))
            text = serialize_answer(insts, think="looking")
            if rng.random() < 0.1:
                text = text[: int(rng.integers(len(text)))]  # truncated
            images.append(image)
            solutions.append(sol)
            completions.append(text)
    return images, solutions, completions


def sam_embed_seconds(variant: str, size: int) -> float:
    """Seconds for one `set_image` of a size×size image with SAM `variant` (random weights)."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(build_sam(variant))
    t0 = time.perf_counter()
    predictor.set_image(np.zeros((size, size, 3), np.uint8))
    return time.perf_counter() - t0


def run(n_prompts=8, n_rollouts=8, size=512, variant="tiny", seed=0,
        project: str | None = "vit_b") -> dict:
    import torch

    torch.manual_seed(seed)
    vocab = SpatialVocab()
    images, solutions, completions = make_batch(n_prompts, n_rollouts, size, vocab, seed)
    model = build_sam(variant)
    n = len(completions)

    naive_decoder = NaiveSamDecoder(model)
    naive_reward = build_reward("mask", decoder=naive_decoder)
    t0 = time.perf_counter()
    naive = [naive_reward([c], solution=[s], image=[i])[0]
             for c, s, i in zip(completions, solutions, images, strict=True)]
    naive_s = time.perf_counter() - t0

    sam = TimedSamDecoder(model, device="cpu", cache_size=64)
    timed = TimedDecoder(sam)
    shipped_reward = build_reward("mask", decoder=timed)
    t0 = time.perf_counter()
    shipped = shipped_reward(completions, solution=solutions, image=images)
    shipped_s = time.perf_counter() - t0
    mask_math_s = shipped_s - timed.seconds

    t0 = time.perf_counter()
    for name in ("format", "non_repeat", "box", "points"):
        build_reward(name)(completions, solution=solutions)
    other_s = time.perf_counter() - t0
    r = {
        "completions": n,
        "naive_s": naive_s,
        "shipped_s": shipped_s,
        "speedup": naive_s / shipped_s,
        "same_scores": bool(np.allclose(naive, shipped)),
        "non_sam_ms_per_completion": 1000 * (mask_math_s + other_s) / n,
        "embeddings": sam.cache.misses,
        "embed_s_per_image": sam.embed_seconds / max(sam.cache.misses, 1),
        "naive_decode_s": naive_decoder.decode_seconds,
        "shipped_decode_s": timed.seconds - sam.embed_seconds,
    }
    if project and project != variant:
        # The speed-up is (embeddings saved) against (prompt decoding, the same SAM decoder in
        # both paths): project it to a real-size encoder from one measured set_image.
        e = sam_embed_seconds(project, size)
        r["project"] = project
        r["project_embed_s"] = e
        r["project_speedup"] = ((n * e + r["naive_decode_s"])
                                / (r["embeddings"] * e + r["shipped_decode_s"]))
    return r


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m rl.bench.rewards",
                                description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--size", type=int, default=512, help="image and mask side in pixels")
    p.add_argument("--variant", default="tiny", help="SAM encoder: tiny, vit_b, vit_l, vit_h")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="vit_b",
                   help="also time one set_image of this encoder and project the speed-up to it "
                        "('none' to skip)")
    a = p.parse_args(argv)
    r = run(a.prompts, a.rollouts, a.size, a.variant, a.seed,
            None if a.project == "none" else a.project)
    print(f"batch: {a.prompts} prompts x {a.rollouts} rollouts = {r['completions']} completions, "
          f"{a.size} px, SAM {a.variant} (random weights)")
    print(f"(a) naive:   {r['naive_s']:.2f} s ({r['completions']} set_image calls)")
    print(f"(b) shipped: {r['shipped_s']:.2f} s ({r['embeddings']} embeddings)")
    print(f"speed-up: {r['speedup']:.1f}x   same scores: {r['same_scores']}")
    print(f"   embedding {r['embed_s_per_image']:.2f} s per image; prompt decoding "
          f"{r['naive_decode_s']:.2f} s naive, {r['shipped_decode_s']:.2f} s shipped")
    if "project" in r:
        print(f"projected to SAM {r['project']} (one set_image measured: "
              f"{r['project_embed_s']:.1f} s): speed-up {r['project_speedup']:.1f}x")
    print(f"non-SAM reward math: {r['non_sam_ms_per_completion']:.2f} ms per completion "
          "(format, non_repeat, box, points, and mask minus SAM)")
    return r


if __name__ == "__main__":
    main()
