"""What a checkpoint reads and sees, on fresh synthetic scenes (docs/experiments.md, "Binding a
word to an object"). Six questions, each a subcommand:

- `attributes`: on attribute rows of scenes of the default's kind, which object the model picks,
  split by what tells the named object apart (only its colour, only its shape, both), and by
  the number of objects;
- `captions`: asked "Describe <box>…</box>." (the prompts file's `caption` template) for each
  single-target row's object, how often the answer names its colour and its shape, with the
  shape confusion table;
- `inventory`: for a model trained with `think: "{scene}"`, how well its think lists the
  scene's objects (count, names, boxes) and whether its answer copies the entry the expression
  names;
- `refinements`: on scenes of the run's own task (its objects, kinds and distractors), the
  model's greedy proposal, its own refinement round, and the oracle's round (the targets the
  stage-2 rewards score as right, `rl.data.policy_refinement.refinement_lines`): gIoU after
  each with paired intervals (the oracle's is the most one round can give these proposals),
  and what the model did to each point the oracle would keep, move or delete;
- `sharpening`: what stage 2 changed in the refinements the policy samples. On the same scenes,
  the checkpoint before stage 2 (`--before`, default grpo_stage1) and after it (`--stage`)
  each refine their own greedy proposal: `--samples` refinements sampled as stage 2 samples
  them (its temperature and min_p, the same seed for both) and one greedy refinement, all
  scored by the run's stage-2 rewards (`rl.evaluate.sampled_rewards`). If the sampled
  reward rises by the gap between the earlier policy's sampled and greedy refinements and
  the greedy refinement is unchanged, the stage only collapsed its sampling onto the answer
  the policy already gave greedily (docs/experiments.md, "What stage 2 learns");
- `confidence`: whether the model's own confidence in its greedy proposal (the lowest
  teacher-forced log-probability of its grid tokens) tells a wrong proposal (IoU < 0.5) from a
  right one, and a no-target row's proposal (which should have been nothing) from the others:
  each as an AUC with its bootstrap interval; and what replacing every proposal less confident
  than a threshold by "nothing" would give (the threshold tuned on the first half of the scenes,
  the gIoU change measured on the second half with its paired interval): what the policy knows
  about its own proposal's being wrong (docs/experiments.md, "What the policy's own confidence
  says").

    python -m rl.diagnose attributes runs/default [--stage sft] [--n 400]
    python -m rl.diagnose captions runs/x --objects 2 4
    python -m rl.diagnose inventory runs/x --objects 2 2 --distractors shape
    python -m rl.diagnose refinements runs/default --stage grpo_stage2 --n 1000
    python -m rl.diagnose sharpening runs/default --stage grpo_stage2 --n 256
    python -m rl.diagnose confidence runs/default --stage grpo_stage1 --n 2000

Scenes come from seed `data.seed + 2,000,014` (neither training, held-out nor validation) and
carry attribute rows only (`refinements`, `sharpening`, `confidence`: the run's expression
kinds). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections import Counter
from collections.abc import Sequence

from rl.data.common import Record

SEED_OFFSET = 2_000_014
ENTRY_RE = re.compile(r"([a-z]+) ([a-z]+) (<box><grid_\d+_\d+><grid_\d+_\d+></box>)")


def telling_attribute(rec: Record) -> str:
    """What tells a single-target record's named object apart from the others of its scene:
    "colour" (every other object has its shape), "shape" (every other has its colour) or
    "both"."""
    views = json.loads(rec.extra["scene"])
    target = views[rec.extra["targets"][0]]
    others = [v for k, v in enumerate(views) if k != rec.extra["targets"][0]]
    if all(o["shape"] == target["shape"] for o in others):
        return "colour"
    if all(o["colour"] == target["colour"] for o in others):
        return "shape"
    return "both"


def attribute_table(recs: Sequence[Record], picked: Sequence[int | None]) -> dict:
    """Share of rows whose picked object is the named one, by what tells it apart and by
    object count; `picked`: the object each prediction picks (`rl.metrics.picked_object`)."""
    right, total = Counter(), Counter()
    for rec, k in zip(recs, picked, strict=True):
        keys = [f"needs {telling_attribute(rec)}", f"{rec.extra['num_objects']} objects"]
        for key in keys:
            total[key] += 1
            right[key] += int(k == rec.extra["targets"][0])
    return {key: {"right": right[key] / total[key], "rows": total[key]} for key in sorted(total)}


def caption_table(recs: Sequence[Record], answers: Sequence[str]) -> dict:
    """How often each answer names the object's colour, its shape, and both; shape confusions
    (wanted -> answered, "?" for none) as "want -> got" counts."""
    from rl.data.samples import caption_text

    colour = shape = both = 0
    confusion = Counter()
    for rec, answer in zip(recs, answers, strict=True):
        _, want_colour, want_shape = caption_text(rec).split()
        words = answer.split()
        c, s = want_colour in words, want_shape in words
        colour, shape, both = colour + c, shape + s, both + (c and s)
        got = words[2] if len(words) > 2 else "?"
        confusion[f"{want_shape} -> {got}"] += 1
    n = max(len(recs), 1)
    return {"colour": colour / n, "shape": shape / n, "both": both / n, "rows": len(recs),
            "shape_confusion": dict(sorted(confusion.items()))}


def inventory_table(recs: Sequence[Record], outputs: Sequence[str], vocab) -> dict:
    """For answers whose think lists the scene (`rl.data.samples.scene_text`): the share with
    the right number of entries and with every name right; per entry, colour, shape and box
    right; the share of answers whose first box is one of its entries' boxes, and the entry
    whose words are all in the expression."""
    from rl.data.samples import region_text, scene_text
    from tokens import parse_answer

    count = names = entries = colour = shape = box = copied = named = 0
    for rec, out in zip(recs, outputs, strict=True):
        want = ENTRY_RE.findall(scene_text(rec, vocab))
        got = ENTRY_RE.findall(out.split("</think>")[0])
        count += len(got) == len(want)
        names += [g[:2] for g in got] == [w[:2] for w in want]
        for g, w in zip(got, want, strict=False):
            entries += 1
            colour += g[0] == w[0]
            shape += g[1] == w[1]
            box += g[2] == w[2]
        answer = parse_answer(out, vocab)
        first = answer.instances[0].box if answer.instances else None
        if first is None:
            continue
        written = region_text(vocab, first)
        match = [g for g in got if g[2] == written]
        copied += bool(match)
        words = set(rec.expression.split()) - {"the", "shape"}
        named += bool(match) and words <= set(match[0][:2])
    n, e = max(len(recs), 1), max(entries, 1)
    return {"entries_counted_right": count / n, "all_names_right": names / n,
            "entry_colour": colour / e, "entry_shape": shape / e, "entry_box_exact": box / e,
            "answer_copies_an_entry": copied / n, "answer_copies_the_named_entry": named / n,
            "rows": len(recs)}


def point_op(op) -> str:
    """A refinement's op on one point: "delete" (None), "keep" (`<off_0_0>`) or "move"."""
    return "delete" if op is None else ("keep" if tuple(op) == (0, 0) else "move")


def _op_key(op):
    return None if op is None else tuple(op)


def refinement_table(refinements: Sequence, oracles: Sequence[Sequence]) -> dict:
    """The model's refinements (`ParsedRefinement`, or None where it gave none) against the
    oracle's lines ((box offsets, point ops) per proposed instance) of the same proposals:
    how many lines were well formed, and for the points of well-formed lines, what the model
    did (keep / move / delete, shares) to those the oracle keeps, moves or deletes, with the
    share of exact agreement; box corners likewise (the same offset as the oracle's)."""
    lines = Counter()
    points = {o: Counter() for o in ("keep", "move", "delete")}
    exact = Counter()
    corners = Counter()
    for ref, oracle in zip(refinements, oracles, strict=True):
        for k, (obox, oseg) in enumerate(oracle):
            line = ref.lines[k] if ref is not None and k < len(ref.lines) else None
            if line is None or not line.well_formed:
                lines["malformed or missing"] += 1
                continue
            lines["well_formed"] += 1
            for mine, want in zip(line.seg or [], oseg or []):
                points[point_op(want)][point_op(mine)] += 1
                exact["points"] += _op_key(mine) == _op_key(want)
            for mine, want in zip(line.box or [], obox or []):
                corners["n"] += 1
                corners["as_oracle"] += _op_key(mine) == _op_key(want)
    n_points = sum(sum(c.values()) for c in points.values())
    return {
        "lines": dict(lines),
        "points": {o: {"n": sum(c.values()),
                       **{m: c[m] / max(1, sum(c.values())) for m in ("keep", "move", "delete")}}
                   for o, c in points.items()},
        "points_as_oracle": exact["points"] / n_points if n_points else None,
        "box_corners": corners["n"],
        "box_corners_as_oracle": corners["as_oracle"] / corners["n"] if corners["n"] else None,
    }


def _scenes(cfg, n: int, objects, distractors: str, kinds=None) -> list[Record]:
    from rl.data.referring import synthetic_records

    return list(synthetic_records(n, cfg.data.seed + SEED_OFFSET, cfg.data.image_size,
                                  tuple(objects), kinds or {"attribute": 1.0},
                                  tuple(cfg.data.textures), distractors=distractors))


def refinement_report(model, rows: Sequence[dict], ctx, max_new_tokens: int) -> dict:
    """`refinements` (module doc) on GRPO-style rows."""
    from rewards.solution import parse_solution
    from rl.data.policy_refinement import refinement_lines
    from rl.evaluate import EvalSettings, at_round, predict, score
    from rl.metrics import paired_difference
    from tokens.refine import apply_refinement, serialize_refinement

    preds = predict(model, [r["prompt"] for r in rows], [r["image"] for r in rows], ctx,
                    EvalSettings(1, max_new_tokens, 64))
    proposals = [at_round(p, 0) for p in preds]
    oracles, refined, answers = [], [], []
    for k, (p, row) in enumerate(zip(proposals, rows, strict=True)):
        lines = (refinement_lines(p.instances, parse_solution(row["solution"], row=k), ctx.vocab)
                 if p.instances else [])
        oracles.append(lines)
        answers.append(preds[k].answers[1] if len(preds[k].answers) > 1 else None)
        moved = (apply_refinement(p.instances, serialize_refinement(lines, vocab=ctx.vocab),
                                  ctx.vocab) if lines else p.instances)
        refined.append(dataclasses.replace(p, instances=moved))

    def ious(ps):
        return [s.iou for s in score(ps, [r["image"] for r in rows], [r["solution"] for r in rows],
                                     ctx.decoder())]

    base, own, best = ious(proposals), ious([at_round(p, 1) for p in preds]), ious(refined)

    def gain(x):
        d = paired_difference(x, base)
        return {"difference": d["difference"], "interval": d["interval"]}

    return {"rows": len(rows), "with_proposal": sum(bool(p.instances) for p in proposals),
            "gIoU": {"proposal": sum(base) / len(base), "model_round": sum(own) / len(own),
                     "oracle_round": sum(best) / len(best)},
            "model_round_minus_proposal": gain(own), "oracle_round_minus_proposal": gain(best),
            **refinement_table(answers, oracles)}


def sharpening_report(models: dict, rows: Sequence[dict], ctx, stage, samples: int, seed: int,
                      max_new_tokens: int, proposal_tokens: int) -> dict:
    """`sharpening` (module doc): `models` maps "before" and "after" to checkpoints; `stage`
    is the run's grpo_stage2 section (its rewards, temperature and min_p)."""
    from rl.evaluate import generate, sampled_rewards
    from rl.metrics import paired_difference

    greedy = dataclasses.replace(stage, temperature=None, min_p=0.0)
    scores = {}
    for name, model in models.items():
        model.eval()
        # Each policy's greedy proposals once, refined both ways.
        proposals = generate(model, ctx.processor, [r["prompt"] for r in rows],
                             [r["image"] for r in rows], proposal_tokens)
        for how, st, k in (("sampled", stage, samples), ("greedy", greedy, 1)):
            scores[(name, how)] = sampled_rewards(model, rows, ctx, st, "grpo_stage2", k,
                                                  seed=seed, max_new_tokens=max_new_tokens,
                                                  proposal_tokens=proposal_tokens,
                                                  proposals=proposals)

    def diff(a, b):
        d = paired_difference(scores[a], scores[b])
        return {"difference": d["difference"], "interval": d["interval"]}

    return {"rows": len(rows), "samples": samples,
            "reward": {f"{name}_{how}": sum(v) / len(v) for (name, how), v in scores.items()},
            "after_sampled_minus_before_sampled": diff(("after", "sampled"),
                                                       ("before", "sampled")),
            "before_greedy_minus_before_sampled": diff(("before", "greedy"),
                                                       ("before", "sampled")),
            "after_sampled_minus_after_greedy": diff(("after", "sampled"), ("after", "greedy")),
            "after_greedy_minus_before_greedy": diff(("after", "greedy"), ("before", "greedy"))}


def answer_logprobs(model, processor, prompts: Sequence[list], images: Sequence,
                    answers: Sequence[str], token_ids) -> list[list[float]]:
    """The log-probability the model gives each token of `answers[k]` that is in `token_ids`,
    teacher-forced after `prompts[k]` (its chat template with the generation prompt), one
    sample at a time (no padding)."""
    import torch

    keep = set(int(i) for i in token_ids)
    out = []
    for prompt, image, answer in zip(prompts, images, answers, strict=True):
        head = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        n_head = processor(text=[head], images=[image], return_tensors="pt")["input_ids"].shape[1]
        enc = processor(text=[head + answer], images=[image], return_tensors="pt")
        with torch.no_grad():
            logp = torch.log_softmax(model(**enc).logits[0, :-1].float(), dim=-1)
        ids = enc["input_ids"][0].tolist()
        out.append([float(logp[i - 1, ids[i]]) for i in range(n_head, len(ids)) if ids[i] in keep])
    return out


def _auc(pos, neg) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def separation(score, positive, n_resamples: int = 1000, seed: int = 0) -> dict:
    """How well `score` ranks the `positive` samples above the others: the AUC (the chance a
    positive scores higher than a negative, ties half) and its 95 % bootstrap interval (each
    group resampled)."""
    import numpy as np

    s, pos = np.asarray(score, float), np.asarray(positive, bool)
    a, b = s[pos], s[~pos]
    if not len(a) or not len(b):
        return {"auc": None, "interval": None, "positives": int(len(a)), "negatives": int(len(b))}
    rng = np.random.default_rng(seed)
    boot = [_auc(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
            for _ in range(n_resamples)]
    return {"auc": _auc(a, b), "interval": [float(np.percentile(boot, 2.5)),
                                             float(np.percentile(boot, 97.5))],
            "positives": int(len(a)), "negatives": int(len(b))}


def confidence_table(confidence: Sequence[float | None], ious: Sequence[float],
                     no_target: Sequence[bool]) -> dict:
    """`confidence` (None: no proposal) against what a proposal was worth (`ious`; `no_target`:
    the row names nothing, so "nothing" scores 1 there and 0 elsewhere). Returns the AUCs of low
    confidence for a wrong proposal (IoU < 0.5) and for a no-target row's proposal, over the rows
    with a proposal; and the threshold below which replacing the proposal by "nothing" gains
    most on the first half of the rows, with the gIoU change it gives on the second half."""
    from rl.metrics import paired_difference

    has = [c is not None for c in confidence]
    rows = [k for k, h in enumerate(has) if h]
    low = [-confidence[k] for k in rows]

    def answered_nothing(k, threshold):
        return threshold is not None and has[k] and confidence[k] < threshold

    def after(ks, threshold):
        return [(1.0 if no_target[k] else 0.0) if answered_nothing(k, threshold) else ious[k]
                for k in ks]

    half = len(confidence) // 2
    tune, test = range(half), range(half, len(confidence))
    seen = sorted({confidence[k] for k in tune if has[k]})
    candidates = seen + [seen[-1] + 1.0] if seen else []  # the last: every proposal
    best = None  # answer nothing nowhere
    best_gain = 0.0
    for th in candidates:
        g = sum(after(tune, th)) - sum(ious[k] for k in tune)
        if g > best_gain + 1e-12:
            best, best_gain = th, g
    return {"rows": len(confidence), "with_proposal": len(rows),
            "wrong_proposals": sum(ious[k] < 0.5 for k in rows),
            "no_target_proposals": sum(bool(no_target[k]) for k in rows),
            "low_confidence_finds_wrong": separation(low, [ious[k] < 0.5 for k in rows]),
            "low_confidence_finds_no_target": separation(low, [no_target[k] for k in rows]),
            "answer_nothing_below": {
                "threshold": best, "tuned_on": half,
                "tuning_gain": best_gain / max(half, 1),
                "deleted": sum(answered_nothing(k, best) for k in test),
                "gIoU_change": paired_difference(after(test, best), [ious[k] for k in test])}}


def confidence_report(model, rows: Sequence[dict], ctx, max_new_tokens: int) -> dict:
    """`confidence` (module doc) on GRPO-style rows: greedy proposals, their grid tokens' lowest
    log-probability, scored against the rows' solutions."""
    from rl.evaluate import EvalSettings, predict, score

    prompts, images = [r["prompt"] for r in rows], [r["image"] for r in rows]
    preds = predict(model, prompts, images, ctx, EvalSettings(0, max_new_tokens, 64))
    ious = [s.iou for s in score(preds, images, [r["solution"] for r in rows], ctx.decoder())]
    tok = getattr(ctx.processor, "tokenizer", ctx.processor)
    grid = tok.convert_tokens_to_ids(list(ctx.vocab.grid_tokens()))
    with_proposal = [k for k, p in enumerate(preds) if p.instances]
    logps = answer_logprobs(model, ctx.processor, [prompts[k] for k in with_proposal],
                            [images[k] for k in with_proposal],
                            [preds[k].stage1 for k in with_proposal], grid)
    confidence: list[float | None] = [None] * len(rows)
    for k, lp in zip(with_proposal, logps, strict=True):
        confidence[k] = min(lp) if lp else None
    return confidence_table(confidence, ious, [r.get("kind") == "none" for r in rows])


def main(argv: Sequence[str] | None = None) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.config import load_config
    from rl.context import RunContext
    from rl.data.samples import BuildConfig, base_columns, build_grpo_stage1, caption_row
    from rl.evaluate import EvalSettings, generate, masks_for, predict, scene_objects
    from rl.metrics import picked_object

    p = argparse.ArgumentParser(prog="python -m rl.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["attributes", "captions", "inventory", "refinements",
                                    "sharpening", "confidence"])
    p.add_argument("run", help="a run folder (config.json and the stage's checkpoint)")
    p.add_argument("--stage", default="sft")
    p.add_argument("--n", type=int, default=400, help="scenes")
    p.add_argument("--objects", type=int, nargs=2, default=None,
                   help="objects per scene (default: the run's data.objects)")
    p.add_argument("--distractors", default="share")
    p.add_argument("--max-new-tokens", type=int, default=90)
    p.add_argument("--before", default="grpo_stage1",
                   help="sharpening: the checkpoint before the stage (default grpo_stage1)")
    p.add_argument("--samples", type=int, default=8,
                   help="sharpening: sampled refinements per scene")
    args = p.parse_args(argv)

    cfg = load_config(f"{args.run}/config.json")
    model_dir = f"{args.run}/{args.stage}"
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, use_kernels=False).eval()
    ctx = RunContext.from_config(cfg, processor)
    build = BuildConfig(vocab=ctx.vocab, codec=ctx.codec,
                        image_after_text=cfg.data.image_after_text)
    if args.what in ("refinements", "sharpening", "confidence"):
        recs = _scenes(cfg, args.n, args.objects or cfg.data.objects, cfg.data.distractors,
                       cfg.data.kinds)
        rows = list(build_grpo_stage1(recs, ctx.prompts, build))
        if args.what == "refinements":
            result = refinement_report(model, rows, ctx, args.max_new_tokens)
        elif args.what == "confidence":
            result = confidence_report(model, rows, ctx, args.max_new_tokens)
        else:
            before = AutoModelForImageTextToText.from_pretrained(
                f"{args.run}/{args.before}", use_kernels=False).eval()
            result = sharpening_report({"before": before, "after": model}, rows, ctx,
                                       cfg.grpo_stage2, args.samples, cfg.seed,
                                       args.max_new_tokens, cfg.grpo_stage1.max_completion_length)
            result = {"before": args.before, **result}
        result = {"run": args.run, "stage": args.stage, "what": args.what, **result}
        print(json.dumps(result, indent=2))
        return result
    recs = _scenes(cfg, args.n, args.objects or cfg.data.objects, args.distractors)
    recs = [r for r in recs if len(r.extra["targets"]) == 1]
    if args.what == "captions":
        from rewards.solution import parse_solution

        rows = [caption_row(r, base_columns(r, r.image), parse_solution(r.solution).boxes_norm[0],
                            ctx.prompts, build) for r in recs]
        answers = generate(model, processor, [r["prompt"] for r in rows],
                           [r["image"] for r in rows], 8)
        result = caption_table(recs, answers)
    else:
        rows = list(build_grpo_stage1(recs, ctx.prompts, build))
        if args.what == "inventory":
            outputs = generate(model, processor, [r["prompt"] for r in rows],
                               [r["image"] for r in rows], args.max_new_tokens)
            result = inventory_table(recs, outputs, ctx.vocab)
        else:
            images = [r["image"] for r in rows]
            preds = predict(model, [r["prompt"] for r in rows], images, ctx,
                            EvalSettings(0, args.max_new_tokens, 64))
            size, decoder = (cfg.data.image_size,) * 2, ctx.decoder()
            picked = [picked_object(masks_for(decoder, row["image"], pred.instances, size),
                                    scene_objects(row["objects"], row["targets"], rec.id)[0])
                      for rec, row, pred in zip(recs, rows, preds, strict=True)]
            result = attribute_table(recs, picked)
    result = {"run": args.run, "stage": args.stage, "what": args.what, **result}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
