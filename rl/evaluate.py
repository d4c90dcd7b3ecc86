"""Evaluation: greedy, batched propose-then-refine generation, masks from the decoder, metrics.

    python -m rl.evaluate --model runs/default/grpo_stage2 --data runs/data/eval [--rounds 1] \
        [--out runs/eval] [--vllm]
    python -m rl.evaluate --model runs/default/grpo_stage1 --recipe configs/default.yaml \
        --split validation --n 3000      # a synthetic recipe's own scenes
    python -m rl.evaluate --targets --recipe configs/codecs/sft/rle_text.yaml --split eval
                                         # no model: the recipe's cold-start targets, scored

`--data` takes one or more folders written by `python -m rl.data --build grpo` (or `rows`);
results come per dataset and split (the rows' `source` and `split`, or the folder name), per
expression and, for RefCOCO-style data with several expressions per object, per instance.
`--out DIR` writes `metrics.json`, `metrics.md` (the table) and `predictions.jsonl` (per row: the
answers, IoU, box IoU, kind and, on scenes whose objects are known, the referent hit), so two
models' rows can be paired.

`--targets` (with `--recipe`, instead of `--model`) scores the answers the recipe's cold start
teaches (its codec over the greedy conversion of each mask, `rl.data.splits.recipe_targets`)
as if a model had written them: the most a model that learnt its targets exactly could score,
what the codec, the conversion and the mask decoder leave.

Evaluation walks the path training walks: the same prompts, parser and mask decoder, so a
number here and a reward there mean the same thing. Completions that do not parse are scored
on what can be read from them, never skipped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewards.solution import parse_solution
from rl.context import RunContext
from rl.data.referring import SINGLE_TARGET_KINDS, SUPERLATIVES, SceneView, retarget
from rl.data.samples import assistant_turn, user_turn
from rl.metrics import (
    SampleScore,
    minus_rate,
    paired_difference,
    score_referents,
    score_sample,
    summarize,
)
from tokens import Instance, SpatialVocab, apply_refinement, parse_refinement
from tokens.decoders import MaskDecoder, as_image_array, instance_masks


@dataclass
class Prediction:
    """What the model answered for one sample: the stage-1 text, each refinement round's text,
    the final instances (normalized), and the instances each refinement round started from.
    `answers` holds the parsed objects (the stage-1 `ParsedAnswer`, then one `ParsedRefinement`
    per round), read once and used by everything downstream."""

    stage1: str
    refinements: list[str] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    parsed: bool = True
    before_rounds: list[list[Instance]] = field(default_factory=list)
    answers: list = field(default_factory=list)
    score: SampleScore | None = None  # set by `predict_and_score`


def generate(model, processor, conversations: Sequence[list], images: Sequence,
             max_new_tokens: int = 64, batch_size: int = 32, temperature: float | None = None,
             samples: int = 1, min_p: float = 0.0) -> list[str]:
    """Completions for conversations (each with one image), decoded like TRL does: greedy, or
    with `temperature` (and `min_p`, 0: off) `samples` sampled ones per conversation
    (consecutive in the output)."""
    import torch

    if temperature is None and samples != 1:
        raise ValueError(f"greedy decoding gives one completion per prompt, not {samples}")
    how = (dict(do_sample=False) if temperature is None else
           dict(do_sample=True, temperature=temperature, top_k=0, num_return_sequences=samples,
                **({"min_p": min_p} if min_p else {})))

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
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens,
                                     pad_token_id=tok.pad_token_id, **how)
            out += tok.batch_decode(ids[:, inputs["input_ids"].shape[1]:],
                                    skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


class VLLMGenerator:
    """Greedy generation with vLLM (`pip install vllm`, a CUDA machine): the same chat template
    and the same image per prompt as `generate`, as one batched `LLM.generate` call."""

    def __init__(self, model_dir: str | Path, processor, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError("--vllm needs vLLM: pip install -e '.[vllm]' on a CUDA machine "
                               f"({e})") from e
        self.processor = processor
        self.llm = LLM(model=str(model_dir), limit_mm_per_prompt={"image": 1},
                       **{"seed": 0, **llm_kwargs})

    def __call__(self, conversations: Sequence[list], images: Sequence,
                 max_new_tokens: int = 64) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                skip_special_tokens=True)
        inputs = [{"prompt": self.processor.apply_chat_template(c, add_generation_prompt=True,
                                                                tokenize=False),
                   "multi_modal_data": {"image": img if hasattr(img, "convert") else _pil(img)}}
                  for c, img in zip(conversations, images, strict=True)]
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def _pil(image):
    from PIL import Image

    return Image.fromarray(as_image_array(image))


@dataclass
class EvalSettings:
    """How an evaluation generates: refinement `rounds` after the proposal, greedy decoding of
    at most `max_new_tokens`, `batch_size` prompts at once; `generator` a callable
    (conversations, images, max_new_tokens) -> texts, e.g. `VLLMGenerator` (None: the model,
    with transformers)."""

    rounds: int = 0
    max_new_tokens: int = 64
    batch_size: int = 32
    generator: Callable | None = None


def predict(model, prompts: Sequence[list], images: Sequence, ctx: RunContext,
            settings: EvalSettings, start: Sequence[Prediction] | None = None
            ) -> list[Prediction]:
    """Propose, then refine `settings.rounds` times: each round the conversation gains the last
    answer and the refinement request (`ctx.prompts["stage2"]`), and the offsets move the
    current points. Proposals are read with `ctx.codec`; refinement needs grid tokens.

    `start`: this model's predictions on the same prompts with fewer rounds (from an earlier
    call); they are continued (copies; `start` is left as it was) up to `settings.rounds`
    instead of generated again. Greedy decoding makes the result the same as a call without
    `start` (the same conversations in the same batches)."""
    codec, vocab = ctx.codec, ctx.vocab
    if settings.rounds and codec.name != "grid":
        raise ValueError(f"refinement rounds need grid/offset tokens, not codec {codec.name!r}")

    def gen(convs, imgs):
        if settings.generator is not None:
            return settings.generator(convs, imgs, settings.max_new_tokens)
        return generate(model, ctx.processor, convs, imgs, settings.max_new_tokens,
                        settings.batch_size)

    if start is None:
        first = gen(list(prompts), list(images))
        preds = []
        for text in first:
            ans = codec.parse_answer(text)
            preds.append(Prediction(text, [], ans.instances, ans.well_formed, answers=[ans]))
        convs = [list(p) + [assistant_turn(t)] for p, t in zip(prompts, first, strict=True)]
        done = 0
    else:
        if len(start) != len(prompts):
            raise ValueError(f"{len(start)} predictions to continue for {len(prompts)} prompts")
        preds = [dataclasses.replace(copy.deepcopy(p), score=None) for p in start]
        convs = []
        for prompt, pred in zip(prompts, preds, strict=True):
            conv = list(prompt) + [assistant_turn(pred.stage1)]
            for text in pred.refinements:
                conv += [user_turn(ctx.prompts["stage2"]), assistant_turn(text)]
            convs.append(conv)
        done = max((len(p.refinements) for p in preds), default=0)
    for _ in range(settings.rounds - done):
        active = [k for k, p in enumerate(preds) if p.instances]
        if not active:
            break
        asks = [convs[k] + [user_turn(ctx.prompts["stage2"])] for k in active]
        texts = gen(asks, [images[k] for k in active])
        for k, text in zip(active, texts, strict=True):
            ref = parse_refinement(text, preds[k].instances, vocab)
            preds[k].refinements.append(text)
            preds[k].answers.append(ref)
            preds[k].before_rounds.append(preds[k].instances)
            preds[k].instances = apply_refinement(preds[k].instances, ref, vocab)
            convs[k] = asks[active.index(k)] + [assistant_turn(text)]
    return preds


def masks_for(decoder: MaskDecoder, image, instances: Sequence[Instance],
              frame: tuple[int, int]) -> np.ndarray:
    """Union of the instance masks, in the (W, H) `frame` of the ground truth: decoded from the
    same prompts the mask rewards use (at most MAX_PROMPT_POINTS distinct points), or upsampled
    from a coarse mask the answer spelled out."""
    fw, fh = frame
    union = np.zeros((fh, fw), dtype=bool)
    for m in instance_masks(decoder, image, instances, frame):
        union |= m
    return union


def scene_objects(objects: str, targets: str, row) -> tuple[np.ndarray, list[int]] | None:
    """A row's scene objects ((N, H, W) bool masks, from the `objects` column's COCO RLEs) and
    the indices the expression names (`targets` column); None when the row has no objects."""
    from pycocotools import mask as mask_utils

    if not objects:
        return None
    try:
        rles = json.loads(objects)
        named = json.loads(targets) if targets else []
        masks = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode("ascii")}
                                   for r in rles])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"row {row}: field objects/targets: expected COCO RLEs of the scene's "
                         f"objects and a list of their indices ({e})") from None
    masks = masks.transpose(2, 0, 1).astype(bool)
    if any(not isinstance(t, int) or not 0 <= t < len(masks) for t in named):
        raise ValueError(f"row {row}: field targets: {named} are not indices of its "
                         f"{len(masks)} objects")
    return masks, named


def superlative_word(expression: str) -> str:
    """The word of a superlative expression of the synthetic task ("the smallest star" ->
    "smallest"); "" for any other text."""
    words = expression.split(" ")
    return words[1] if len(words) > 2 and words[0] == "the" and words[1] in SUPERLATIVES else ""


def score(preds: Sequence[Prediction], images: Sequence, solutions: Sequence,
          decoder: MaskDecoder, kinds: Sequence[str] | None = None,
          instances: Sequence[str] | None = None,
          objects: Sequence[str] | None = None,
          targets: Sequence[str] | None = None,
          expressions: Sequence[str] | None = None) -> list[SampleScore]:
    """Per-sample scores; with the rows' `objects` and `targets` columns (the synthetic task),
    also which scene object each prediction picked (`rl.metrics.score_referents`); with their
    `expressions`, the word of each superlative row ("the smallest star": smallest)."""
    from pycocotools import mask as mask_utils

    out = []
    for k, (pred, image, sol) in enumerate(zip(preds, images, solutions, strict=True)):
        gt = parse_solution(sol, row=k)
        ignore = (mask_utils.decode(gt.ignore_rle).astype(bool) if gt.ignore_rle is not None
                  else None)
        frame = (gt.width, gt.height)
        per_instance = instance_masks(decoder, image, pred.instances, frame)
        pred_mask = np.zeros((gt.height, gt.width), dtype=bool)
        for m in per_instance:
            pred_mask |= m
        sample = score_sample(pred_mask, gt.union_mask(), ignore,
                              [i.box for i in pred.instances], list(gt.boxes_norm),
                              pred.parsed, kinds[k] if kinds else "",
                              instances[k] if instances else "")
        scene = (scene_objects(objects[k], targets[k] if targets else "", k)
                 if objects else None)
        if scene is not None:
            score_referents(sample, pred_mask, per_instance, *scene)
        if expressions and sample.kind == "superlative":
            sample.superlative = superlative_word(expressions[k])
        out.append(sample)
    return out


def predict_and_score(model, rows, ctx: RunContext, settings: EvalSettings
                      ) -> tuple[list[Prediction], list[SampleScore]]:
    """Predictions and per-sample scores on GRPO-style rows (`prompt`, `image`, `solution`,
    and optionally `kind`, `instance`)."""
    images = [r["image"] for r in rows]
    preds = predict(model, [r["prompt"] for r in rows], images, ctx, settings)
    scores = score(preds, images, [r["solution"] for r in rows], ctx.decoder(),
                   [r.get("kind", "") for r in rows], [r.get("instance", "") for r in rows],
                   [r.get("objects", "") for r in rows], [r.get("targets", "") for r in rows],
                   [r.get("expression", "") for r in rows])
    for p, s in zip(preds, scores, strict=True):
        p.score = s
    return preds, scores


def evaluate_rows(model, rows, ctx: RunContext, settings: EvalSettings
                  ) -> tuple[dict, list[Prediction]]:
    """Per-expression metrics of a model on GRPO-style rows, and its predictions."""
    preds, scores = predict_and_score(model, rows, ctx, settings)
    out = summarize(scores)
    out["answer_tokens_per_instance"] = answer_tokens_per_instance(ctx.processor, preds)
    return out, preds


def sampled_rewards(model, rows: Sequence[dict], ctx: RunContext, stage, stage_name: str,
                    samples: int, seed: int = 0, max_new_tokens: int = 64,
                    batch_size: int = 32, proposal_tokens: int | None = None,
                    proposals: Sequence[str] | None = None) -> list[float]:
    """Each row's mean weighted reward of stage `stage_name` (a GRPOStageConfig) over `samples`
    completions sampled at the stage's temperature and `min_p`, scored by the stage's reward
    functions as TRL scores them (a term that returns None counts 0, as in TRL's nansum).
    For `grpo_stage2` the completions are refinements of the policy's own greedy proposal (at
    most `proposal_tokens` tokens), after the refinement request, as on-policy stage 2 samples
    them (rl.rollout). `proposals`: those greedy proposals when the caller already has them
    (greedy decoding draws nothing from the random state, so the figures are the same).

    torch's random state is forked and seeded with `seed`: two policies are sampled with the
    same seed, and the caller's random state (a training run's) is left as it was. Fixed rows
    make the figures of two policies comparable row by row (`paired_difference`), which the
    training log's reward is not: each logged step scores other prompts."""
    import torch

    from rl.grpo import build_reward_funcs

    funcs, weights = build_reward_funcs(stage, ctx.vocab, ctx.decoder_spec, stage_name,
                                        ctx.codec)
    was_training = model.training
    model.eval()
    images = [r["image"] for r in rows]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if stage_name == "grpo_stage2":
            # The rollout's dialogue (rl.rollout): a greedy proposal, the request, sampled
            # refinements of it; the rewards read the proposal from the `stage1` column.
            if proposals is None:
                proposals = generate(model, ctx.processor, [r["prompt"] for r in rows], images,
                                     proposal_tokens or max_new_tokens, batch_size)
            convs = [list(r["prompt"]) + [assistant_turn(t), user_turn(ctx.prompts["stage2"])]
                     for r, t in zip(rows, proposals, strict=True)]
        else:
            convs, proposals = [r["prompt"] for r in rows], None
        texts = generate(model, ctx.processor, convs, images, max_new_tokens, batch_size,
                         temperature=stage.temperature, samples=samples, min_p=stage.min_p)
    model.train(was_training)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {key: [r[key] for r in rows for _ in range(samples)]
               for key in ("prompt", "image", "solution")}
    if proposals is not None:
        columns["stage1"] = [t for t in proposals for _ in range(samples)]
    total = np.zeros(len(texts))
    for func, weight in zip(funcs, weights, strict=True):
        values = func(prompts=columns["prompt"], completions=completions,
                      **{k: v for k, v in columns.items() if k != "prompt"})
        total += weight * np.array([0.0 if v is None else v for v in values], dtype=float)
    return total.reshape(len(rows), samples).mean(axis=1).tolist()


def at_round(pred: Prediction, r: int) -> Prediction:
    """The prediction as it stood after `r` refinement rounds (0: the proposal); a prediction
    whose refinement stopped earlier (nothing left to refine) keeps its last instances."""
    instances = pred.before_rounds[r] if r < len(pred.before_rounds) else pred.instances
    return dataclasses.replace(pred, instances=instances, score=None)


def rounds_curve(preds: Sequence[Prediction], rows: Sequence[dict], ctx: RunContext,
                 rounds: int) -> tuple[list[dict], list[list[SampleScore]]]:
    """gIoU, cIoU, Acc@0.5 and referent accuracy (with intervals) after 0, 1, ..., `rounds`
    refinement rounds, from predictions made with that many rounds (`predict`). Returns the
    curve (one summary per round count) and the per-sample scores of each round count."""
    images = [r["image"] for r in rows]
    curve, per_round = [], []
    for r in range(rounds + 1):
        scores = score([at_round(p, r) for p in preds], images, [x["solution"] for x in rows],
                       ctx.decoder(), [x.get("kind", "") for x in rows],
                       [x.get("instance", "") for x in rows], [x.get("objects", "") for x in rows],
                       [x.get("targets", "") for x in rows])
        m = summarize(scores)
        point = {"rounds": r, **{k: m.get(k) for k in (
            "gIoU", "cIoU", "Acc@0.5", "referent_accuracy", "intervals", "referent_interval")}}
        if r:  # what the rounds added over the proposal, paired over the same samples
            point["gIoU_minus_proposal"] = paired_difference(
                [s.iou for s in scores], [s.iou for s in per_round[0]])
        curve.append(point)
        per_round.append(scores)
    return curve, per_round


def curve_line(curve: Sequence[dict]) -> str:
    """One line: gIoU (and referent accuracy) per number of refinement rounds."""
    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    def gain(c):
        d = c.get("gIoU_minus_proposal")
        if not d or d["interval"] is None:
            return ""
        lo, hi = d["interval"]
        return f" ({d['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] over the proposal)"

    return "; ".join(f"{c['rounds']} rounds: gIoU {fmt(c['gIoU'])}" + gain(c)
                     + (f", referent {fmt(c['referent_accuracy'])}"
                        if c.get("referent_accuracy") is not None else "") for c in curve)


def shuffled_rows(rows: Sequence[dict], prompts: dict, seed: int = 0) -> list[dict]:
    """The shuffled-expression control: the same rows (image, ground truth, scene objects) with
    expressions permuted among the rows of the same kind, no row keeping its own where its kind
    has two or more rows (a cyclic shift over a random order). A model that ignores the text
    scores the same on these rows as on the real ones; one that reads falls below chance, by
    declining expressions that name an object the scene lacks and by answering the object
    another row's expression names (a model that resolved every expression exactly: 0.07
    against chance 0.37 on the default's held-out scenes). The control where a reader lands at
    chance: `retargeted_rows`."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_kind.setdefault(r.get("kind", ""), []).append(k)
    source = list(range(len(rows)))
    for members in by_kind.values():
        order = [members[int(i)] for i in rng.permutation(len(members))]
        for a, b in zip(order, order[1:] + order[:1], strict=True):
            source[a] = b
    return [{**_asking(r, rows[source[k]]["expression"], prompts),
             "shuffled_from": rows[source[k]].get("id")} for k, r in enumerate(rows)]


def _asking(row: dict, expression: str, prompts: dict) -> dict:
    """`row` with its question asking `expression` instead (the image where it was)."""
    text = prompts["stage1"].format(expression=expression)
    first, *rest = row["prompt"]
    content = [{**part, "text": text} if part.get("type") == "text" else part
               for part in first["content"]]
    return {**row, "prompt": [{**first, "content": content}, *rest], "expression": expression}


def retargeted_rows(rows: Sequence[dict], prompts: dict, seed: int = 0) -> list[dict]:
    """The retargeted-expression control: the same rows (image, ground truth, scene objects),
    each asking a fresh expression of its own kind (`rl.data.referring.retarget`) that names a
    uniformly drawn object of its own scene, scored against the row's original targets.

    The shuffled control (`shuffled_rows`) cannot tell a reader from chance: an expression
    from another scene mostly names an object this scene lacks or a look-alike of the target,
    so a model that resolved every expression exactly would score far below chance on it
    (0.07 against 0.37 on the default's held-out scenes). Here that model scores the chance
    rate (each row's `reader_rate`, 1 / the objects its kind can name here, one of which is
    the target: the chance rate 1 / objects on the bundled task) and a model that ignores the
    text scores as on the real expressions. Needs the synthetic scenes (`scene`, what
    `resolve` reads); `retargeted_to` holds the objects the new expression names."""
    rng = np.random.default_rng(seed)
    out = []
    for k, r in enumerate(rows):
        if not r.get("scene"):
            raise ValueError(f"row {r.get('id', k)}: no 'scene' (the objects' names, sizes and "
                             f"centres); the retargeted control needs synthetic scenes")
        views = [SceneView(**v) for v in json.loads(r["scene"])]
        targets = json.loads(r["targets"]) if r.get("targets") else []
        text, named, choices = retarget(views, r["kind"], rng, own=(r["expression"], targets))
        rate = 1 / choices if r["kind"] in SINGLE_TARGET_KINDS else None
        out.append({**_asking(r, text, prompts), "retargeted_to": json.dumps(named),
                    "reader_rate": rate})
    return out


def reader_gap(scores: Sequence[SampleScore], rows: Sequence[dict]) -> dict | None:
    """Referent hits against the rows' `reader_rate` (what a reader of every expression scores
    on `retargeted_rows`), row by row over the single-target rows (`rl.metrics.minus_rate`:
    `rate`, `difference`, `interval`, `samples`); None when no row has both."""
    hits = [(float(sc.referent), r["reader_rate"]) for sc, r in zip(scores, rows, strict=True)
            if sc.referent is not None and r.get("reader_rate") is not None]
    return minus_rate([h for h, _ in hits], [r for _, r in hits]) if hits else None


def answer_tokens_per_instance(processor, preds: Sequence[Prediction]) -> float | None:
    """Tokenizer tokens inside the `<answer>` blocks (proposal and every refinement round) per
    proposed instance, over the predictions that proposed any: what a mask costs in tokens."""
    tok = getattr(processor, "tokenizer", processor)
    tokens = instances = 0
    for p in preds:
        proposed = len(p.before_rounds[0]) if p.before_rounds else len(p.instances)
        if not proposed:
            continue
        instances += proposed
        for parsed in p.answers:
            body = (parsed.answer_text or "").strip()
            tokens += len(tok(body, add_special_tokens=False)["input_ids"]) if body else 0
    return tokens / instances if instances else None


def dataset_name(row, folder: str | Path) -> str:
    """`source/split` of a row; the folder name stands in for a missing split."""
    split = row.get("split") or Path(folder).name
    return f"{row.get('source') or Path(folder).name}/{split}"


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m rl.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None,
                   help="a saved model folder (with spatial_vocab.json); or --targets")
    p.add_argument("--targets", action="store_true",
                   help="with --recipe, no --model: score the recipe's cold-start targets as "
                        "answers (the ceiling its codec, conversion and decoder leave)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+",
                        help="folders written by `python -m rl.data --build grpo` (or rows)")
    source.add_argument("--recipe", default=None,
                        help="a run's YAML (synthetic data): evaluate on the scenes of its "
                             "--split, built as that run builds them")
    p.add_argument("--split", choices=["validation", "eval"], default="validation",
                   help="with --recipe: the validation scenes (free to tune on; default) or "
                        "the held-out ones the run reports")
    p.add_argument("--n", type=int, default=None,
                   help="with --recipe: this many scenes (default: as many as the run uses)")
    p.add_argument("--rounds", type=int, default=0, help="refinement rounds (0: grid only)")
    p.add_argument("--decoder", default=None,
                   help='"region" (default; with --targets the recipe\'s), or JSON like '
                        '{"name": "sam", "variant": "vit_h", "checkpoint": "sam_vit_h.pth"}')
    p.add_argument("--prompts", default=None,
                   help="prompt templates (default: the run's, else configs/prompts.yaml)")
    p.add_argument("--codec", default=None,
                   help='answer codec, a name or JSON like {"name": "text_bins", "bins": 1000} '
                        "(default: the run's, else grid)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="at most this many rows per folder")
    p.add_argument("--vllm", action="store_true", help="generate with vLLM (needs vllm, CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds-curve", action="store_true",
                   help="also score the predictions after 0, 1, ..., --rounds rounds (one pass)")
    p.add_argument("--shuffle-control", action="store_true",
                   help="also score the rows with expressions shuffled among rows of the same "
                        "kind and, where the rows carry synthetic scenes, with a fresh "
                        "expression of each row's kind naming a random object of its scene "
                        "(there a model that reads scores the chance rate)")
    p.add_argument("--out", default=None,
                   help="write metrics.json, metrics.md and predictions.jsonl into this folder")
    a = p.parse_args(argv)
    if a.targets:
        clash = [f for f, on in (("--model", a.model), ("--data", a.data), ("--vllm", a.vllm),
                                 ("--rounds", a.rounds), ("--shuffle-control", a.shuffle_control),
                                 ("--codec", a.codec), ("--prompts", a.prompts)) if on]
        if clash or not a.recipe:
            p.error("--targets scores a recipe's own targets: it takes --recipe (and --split, "
                    f"--n, --decoder, --out), not {', '.join(clash) or 'a missing --recipe'}")
        return targets_main(a)
    if a.model is None:
        p.error("--model is required (or --targets with --recipe)")
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.config import checkpoint_settings
    from rl.context import codec_spec, read_spec
    from rl.data.samples import load_prompts
    from rl.metrics import markdown_table, reading_table, report
    from tokens.registry import get_codec

    torch.manual_seed(a.seed)
    processor = AutoProcessor.from_pretrained(a.model)
    vocab = SpatialVocab.load(a.model)
    trained = checkpoint_settings(a.model)
    prompts = load_prompts(a.prompts or trained["prompts"])
    spec = codec_spec(a.codec) if a.codec else trained["codec"]
    ctx = RunContext(vocab=vocab, codec=get_codec(vocab=vocab, **spec),
                     decoder_spec=read_spec(a.decoder or "region"), processor=processor,
                     prompts=prompts)
    generator = VLLMGenerator(a.model, processor) if a.vllm else None
    model = None if a.vllm else AutoModelForImageTextToText.from_pretrained(
        a.model, use_kernels=False).eval()
    rows, names = [], []
    if a.recipe:
        from rl.config import load_config
        from rl.data.splits import recipe_rows

        rows = recipe_rows(load_config(a.recipe), a.split, a.n)
        names = [dataset_name(r, a.split) for r in rows]
    for folder in a.data or []:
        ds = load_from_disk(folder)
        part = [ds[i] for i in range(len(ds) if a.limit is None else min(a.limit, len(ds)))]
        if part and "prompt" not in part[0]:  # `--build rows`: ask the stage-1 question
            part = [{**r, "prompt": [user_turn(prompts["stage1"].format(
                expression=r["expression"]), image=True,
                image_after_text=trained["image_after_text"])]} for r in part]
        rows += part
        names += [dataset_name(r, folder) for r in part]
    settings = EvalSettings(a.rounds, a.max_new_tokens, a.batch_size, generator)
    preds, scores = predict_and_score(model, rows, ctx, settings)
    results = report(scores, names)
    results_meta = {"model": a.model, "rounds": a.rounds, "decoder": a.decoder or "region",
                    "codec": spec, "results": results}
    table = markdown_table(results, a.model) + "\n" + reading_table(results)
    if a.rounds_curve:
        curve, _ = rounds_curve(preds, rows, ctx, a.rounds)
        results_meta["rounds_curve"] = curve
        table += "\nRefinement rounds (all rows): " + curve_line(curve) + "\n"
    if a.shuffle_control:
        _, shuffled = predict_and_score(model, shuffled_rows(rows, prompts, a.seed), ctx,
                                        settings)
        control = report(shuffled, names)
        results_meta["shuffled_expression"] = control
        table += ("\nShuffled-expression control (expressions permuted among rows of the "
                  "same kind):\n\n" + markdown_table(control) + "\n" + reading_table(control))
        if rows and all(r.get("scene") for r in rows):
            retargeted = retargeted_rows(rows, prompts, a.seed)
            _, scored = predict_and_score(model, retargeted, ctx, settings)
            control = report(scored, names)
            reader = reader_gap(scored, retargeted)
            results_meta["retargeted_expression"] = {**control, "minus_reader_rate": reader}
            line = ""
            if reader:
                lo, hi = reader["interval"]
                line = (f"A reader of every expression scores {reader['rate']:.3f} here; "
                        f"referent accuracy minus that, row by row: {reader['difference']:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}] ({reader['samples']} rows).\n")
            table += ("\nRetargeted-expression control (each row asks a fresh expression of its "
                      "kind naming a random object of its scene):\n\n" + markdown_table(control)
                      + "\n" + reading_table(control) + line)
    print(table)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(results_meta, indent=2) + "\n")
        (out / "metrics.md").write_text(table)
        with (out / "predictions.jsonl").open("w") as f:
            for r, name, pred, sc in zip(rows, names, preds, scores, strict=True):
                f.write(json.dumps({"id": r.get("id"), "dataset": name,
                                    "stage1": pred.stage1, "refinements": pred.refinements,
                                    "parsed": pred.parsed, "iou": sc.iou,
                                    "box_iou": sc.box_iou, "kind": sc.kind,
                                    "referent": sc.referent, "picked": sc.picked,
                                    "targets_found": sc.targets_found,
                                    "instances_on_target": sc.instances_on_target}) + "\n")
        print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'predictions.jsonl'}")
    return results_meta


def targets_main(a) -> dict:
    """`--targets`: the recipe's cold-start targets for its `--split` rows, scored as answers."""
    from rl.config import load_config
    from rl.context import read_spec
    from rl.data.splits import recipe_targets
    from rl.metrics import markdown_table, reading_table, report

    cfg = load_config(a.recipe)
    if a.decoder:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                decoder=read_spec(a.decoder)))
    rows, texts = recipe_targets(cfg, a.split, a.n)
    ctx = RunContext.from_config(cfg, processor=None)
    settings = EvalSettings(generator=lambda convs, imgs, _: texts)
    preds, scores = predict_and_score(None, rows, ctx, settings)
    names = [dataset_name(r, a.split) for r in rows]
    results = report(scores, names)
    label = f"targets of {a.recipe}"
    table = markdown_table(results, label) + "\n" + reading_table(results)
    print(table)
    meta = {"targets": a.recipe, "split": a.split, "codec": {"name": cfg.codec,
            **cfg.codec_params}, "decoder": cfg.data.decoder, "results": results}
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (out / "metrics.md").write_text(table)
        print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}")
    return meta


if __name__ == "__main__":
    main()
