"""Property check of every reward against generated completions (issue 19).

    python -m rewards.fuzz --n 100000          # prints counts; exit 1 when a property fails

Completions are built from the vocabulary's own pieces and from the ways model output goes
wrong: valid answers and refinements (some near the ground truth, so refinements can lose a
good proposal), the same with random edits, tag soup, nested and unclosed tags, offsets of every
kind, look-alike tokens (`<grid_٣_1>`, `<grid_03_1>`, `<off_-0_1>`), unicode, huge strings, and
conversational completions whose parts are not strings. Every reward of `rewards.REWARDS` scores
every completion of its stage, one completion per call, so each call's time is that
completion's; each group of completions of one scene is then scored again as one batch (the
shape GRPO calls with), which must give the same values.

Properties: no exception; one value per completion; each value None or finite and inside the
reward's documented range (`rewards.REWARD_RANGES`); batch and single scores equal. Printed:
counts of exceptions, wrong lengths, non-finite and out-of-range values, batch mismatches,
and the slowest single completion per reward (with the completion's length and head).

Nothing here imports a trainer: it needs `tokens` and `rewards` only.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from rewards import REWARD_RANGES, STAGE1_REWARDS, STAGE2_REWARDS, build_reward, make_solution
from tokens.answer import Instance
from tokens.codec import GridCodec
from tokens.refine import serialize_refinement
from tokens.vocab import DELETE_TOKEN, SpatialVocab

TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<box>", "</box>", "<seg>", "</seg>",
        "<offset>", "</offset>", DELETE_TOKEN)
# Spellings that look like tokens of the vocabulary but are none (no tokenizer id stands for
# them) and broken pieces of tokens.
LOOK_ALIKES = ("<grid_٣_1>", "<grid_03_1>", "<grid_1_٠>", "<grid_３_1>", "<grid_-1_2>",
               "<grid_1_2_3>", "<grid_ 1_2>", "<grid_1e1_2>", "<off_-0_1>", "<off_٣_1>",
               "<off_01_0>", "<off_+1_0>", "<off_1.0_0>", "<Grid_1_1>", "<DELETE >",
               "<grid_", "_1>", "<", ">", "</", "<<box>>", "<answer", "answer>")
JUNK = ("the red one", ".", "..", "\n", "\n\n", " ", "\t", "é", "٣", "\u202e", "\x00", "🟥",
        "𝟑", "0.5", "[0.1, 0.2, 0.3, 0.4]", "(3, 4)", "-", "…", "<|im_end|>", "\\n", "'", '"')


@dataclass
class Scene:
    """One image with its solution and the instances near its ground truth."""

    image: np.ndarray
    solution: dict
    near: list[Instance]  # proposals built from the ground truth (boxes and inside points)


def make_scenes(rng: random.Random, count: int, vocab: SpatialVocab) -> list[Scene]:
    """`count` small images with 0–3 coloured rectangles on a grey background."""
    scenes = []
    colours = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 30)]
    for _ in range(count):
        w, h = rng.choice([(64, 48), (48, 64), (40, 40)])
        img = np.full((h, w, 3), 110, np.uint8)
        masks, near = [], []
        for colour in rng.sample(colours, rng.randint(0, 3)):
            x1, y1 = rng.randrange(0, w - 8), rng.randrange(0, h - 8)
            x2, y2 = rng.randrange(x1 + 4, w + 1), rng.randrange(y1 + 4, h + 1)
            m = np.zeros((h, w), bool)
            m[y1:y2, x1:x2] = True
            if any((m & other).any() for other in masks):
                continue
            img[m] = colour
            masks.append(m)
            pts = [((rng.uniform(x1, x2)) / w, rng.uniform(y1, y2) / h)
                   for _ in range(rng.randint(0, 4))]
            near.append(Instance((x1 / w, y1 / h, x2 / w, y2 / h), pts))
        scenes.append(Scene(img, make_solution(w, h, masks), near))
    return scenes


class Generator:
    """Completions of both stages from the vocabulary's pieces and the ways output breaks."""

    def __init__(self, rng: random.Random, vocab: SpatialVocab, huge_every: int = 2000):
        self.rng, self.vocab, self.codec = rng, vocab, GridCodec(vocab)
        self.huge_every = huge_every

    # ---- pieces ------------------------------------------------------------------------------
    def grid_token(self) -> str:
        g = self.vocab.grid_size
        r = self.rng.random()
        if r < 0.85:
            return self.vocab.grid_token(self.rng.randrange(g), self.rng.randrange(g))
        if r < 0.95:
            return self.vocab.grid_token(self.rng.randrange(g, g + 5), self.rng.randrange(g))
        return self.rng.choice(LOOK_ALIKES)

    def offset_piece(self) -> str:
        k = self.vocab.offset_radius
        r = self.rng.random()
        if r < 0.7:
            return self.vocab.offset_token(self.rng.randint(-k, k), self.rng.randint(-k, k))
        if r < 0.8:
            return DELETE_TOKEN
        if r < 0.9:
            return self.vocab.offset_token(self.rng.randint(-k - 3, k + 3), self.rng.randint(-k, k))
        return self.rng.choice(LOOK_ALIKES)

    def piece(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.rng.choice(TAGS)
        if r < 0.6:
            return self.grid_token()
        if r < 0.75:
            return self.offset_piece()
        if r < 0.85:
            return self.rng.choice(LOOK_ALIKES)
        return self.rng.choice(JUNK)

    def instance(self, scene: Scene) -> Instance:
        rng = self.rng
        if scene.near and rng.random() < 0.5:
            base = rng.choice(scene.near)
            box = base.box if rng.random() < 0.8 else None
            points = list(base.points)
            if box is None and not points:  # the centre of its box
                points = [((base.box[0] + base.box[2]) / 2, (base.box[1] + base.box[3]) / 2)]
            return Instance(box, points)
        box = None
        if rng.random() < 0.7:
            x1, x2 = sorted(rng.random() for _ in range(2))
            y1, y2 = sorted(rng.random() for _ in range(2))
            box = (x1, y1, x2, y2)
        pts = [(rng.random(), rng.random()) for _ in range(rng.randint(0 if box else 1, 5))]
        return Instance(box, pts)

    def mutate(self, text: str, edits: int) -> str:
        for _ in range(edits):
            pos = self.rng.randrange(len(text) + 1)
            kind = self.rng.random()
            if kind < 0.4:
                text = text[:pos] + self.piece() + text[pos:]
            elif kind < 0.7:
                text = text[:pos] + text[pos + self.rng.randint(1, 12):]
            else:
                text = text[:pos] + self.piece() + text[pos + self.rng.randint(1, 12):]
        return text

    # ---- whole completions -------------------------------------------------------------------
    def stage1_answer(self, scene: Scene) -> str:
        insts = [self.instance(scene) for _ in range(self.rng.choice([0, 1, 1, 1, 2, 3, 4]))]
        return self.codec.serialize_answer(insts, think=self.rng.choice(["", "red. left.", "a"]))

    def refinement(self, stage1: str) -> str:
        insts = self.codec.parse_answer(stage1).instances
        k = self.vocab.offset_radius
        lines = []
        for inst in insts:
            box = None if inst.box is None else [
                (self.rng.randint(-k, k), self.rng.randint(-k, k)) for _ in range(2)]
            seg = [None if self.rng.random() < 0.2 else
                   (self.rng.randint(-k, k), self.rng.randint(-k, k)) for _ in inst.points]
            lines.append((box, seg or None))
        think = self.rng.choice([None, "", "move left."])
        return serialize_refinement(lines, think=think, vocab=self.vocab)

    def soup(self, n: int) -> str:
        return "".join(self.piece() for _ in range(n))

    def huge(self, valid: str) -> str:
        """A completion of about 10^4 to 4.5·10^5 characters."""
        rng = self.rng
        kind = rng.randrange(5)
        n = rng.randint(2_000, 30_000)
        if kind == 0:  # nested answer tags around a valid answer
            return "<answer>" * n + valid + "</answer>" * rng.randint(0, n)
        if kind == 1:  # one line of many tokens
            return "<think></think><answer><seg>" + "".join(
                self.grid_token() for _ in range(n)) + "</seg></answer>"
        if kind == 2:  # many instance lines
            body = "".join(f"<box>{self.grid_token()}{self.grid_token()}</box><seg>"
                           f"{self.grid_token()}</seg>\n" for _ in range(n // 10))
            return f"<think></think><answer>\n{body}</answer>"
        if kind == 3:  # many offset lines
            body = "".join(f"<offset><seg>{self.offset_piece()}</seg></offset>\n"
                           for _ in range(n // 5))
            return f"<answer>\n{body}</answer>"
        return self.soup(n // 3)

    def wrap(self, text: str):
        """Sometimes a conversational completion, sometimes not a string at all."""
        r = self.rng.random()
        if r < 0.85:
            return text
        if r < 0.9:
            return [{"role": "assistant", "content": text}]
        if r < 0.95:
            odd = self.rng.choice([5, None, 1.5, ["x"], {"t": 1}, text])
            return [{"role": "assistant", "content": [{"type": "text", "text": text},
                                                      {"type": "text", "text": odd}]}]
        return self.rng.choice([None, 5, b"<answer></answer>", {"content": text}, [], [5]])

    def completion(self, scene: Scene, stage: str, stage1: str | None = None):
        """One completion of `stage` ("stage1" or "stage2") for `scene`."""
        valid = self.stage1_answer(scene) if stage == "stage1" else self.refinement(stage1)
        if self.huge_every and self.rng.random() < 1.0 / self.huge_every:
            return self.huge(valid)
        r = self.rng.random()
        if r < 0.3:
            text = valid
        elif r < 0.65:
            text = self.mutate(valid, self.rng.randint(1, 6))
        elif r < 0.8:
            text = self.soup(self.rng.randint(1, 60))
        elif r < 0.9:  # nested or unclosed tags
            n = self.rng.randint(1, 4)
            text = "<answer>" * n + valid + "</answer>" * self.rng.randint(0, n)
        else:  # a line gains a look-alike token
            lines = valid.split("\n")
            k = self.rng.randrange(len(lines))
            lines[k] = lines[k].replace("<off_", "<off_٣", 1) if self.rng.random() < 0.3 \
                else self.mutate(lines[k], 1).replace("_", "_0", 1)
            text = "\n".join(lines)
        return self.wrap(text)


@dataclass
class Report:
    """What the run found, per reward."""

    scored: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)
    wrong_length: Counter = field(default_factory=Counter)
    non_finite: Counter = field(default_factory=Counter)
    out_of_range: Counter = field(default_factory=Counter)
    batch_mismatch: Counter = field(default_factory=Counter)
    slowest: dict = field(default_factory=dict)  # reward -> (seconds, completion)
    examples: list = field(default_factory=list)  # (reward, problem, completion) first few

    @property
    def failures(self) -> int:
        return sum(sum(c.values()) for c in (self.exceptions, self.wrong_length,
                                              self.non_finite, self.out_of_range,
                                              self.batch_mismatch))

    def note(self, counter: Counter, name: str, problem: str, completion) -> None:
        counter[name] += 1
        if len(self.examples) < 20:
            self.examples.append((name, problem, _head(completion)))


def _head(completion, n: int = 120) -> str:
    text = repr(completion)
    return text if len(text) <= n else f"{text[:n]}… ({len(text)} chars)"


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))


def _check(report: Report, name: str, values, n: int, completions) -> list | None:
    if not isinstance(values, list) or len(values) != n:
        report.note(report.wrong_length, name, f"{n} completions, got {values!r:.80}",
                    completions[0])
        return None
    lo, hi = REWARD_RANGES[name]
    for v, c in zip(values, completions):
        if v is None:
            continue
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            report.note(report.non_finite, name, f"value {v!r}", c)
        elif not lo <= v <= hi:
            report.note(report.out_of_range, name, f"value {v!r} outside [{lo}, {hi}]", c)
    return values


def _score(report: Report, name: str, reward, completions, columns) -> list | None:
    try:
        values = reward(completions=completions, **columns)
    except Exception as e:  # the property under test: rewards never raise on model output
        report.note(report.exceptions, name, f"{type(e).__name__}: {e}"[:200], completions[0])
        return None
    return _check(report, name, values, len(completions), completions)


def run(n: int = 100_000, seed: int = 0, group: int = 8, grid_size: int = 8,
        decoder="region", huge_every: int = 2000, progress: bool = False) -> Report:
    """Score `n` generated completions (half per stage) with every reward; see the module doc."""
    rng = random.Random(seed)
    vocab = SpatialVocab(grid_size=grid_size)
    gen = Generator(rng, vocab, huge_every)
    scenes = make_scenes(rng, 64, vocab)
    params = {"vocab": vocab}
    rewards = {name: build_reward(name, **({} if name == "non_repeat" else params),
                                  **({"decoder": decoder} if name in ("mask", "mask_gain")
                                     else {}))
               for name in STAGE1_REWARDS + STAGE2_REWARDS}
    report = Report()
    done, t_start = 0, time.perf_counter()
    while done < n:
        stage = "stage1" if (done // group) % 2 == 0 else "stage2"
        scene = rng.choice(scenes)
        columns = {"solution": [scene.solution], "image": [scene.image]}
        stage1 = None
        if stage == "stage2":
            stage1 = gen.stage1_answer(scene)
            if rng.random() < 0.2:
                stage1 = gen.mutate(stage1, rng.randint(1, 4))
            columns["stage1"] = [stage1]
        size = min(group, n - done)
        completions = [gen.completion(scene, stage, stage1) for _ in range(size)]
        names = STAGE1_REWARDS if stage == "stage1" else STAGE2_REWARDS
        for name in names:
            singles = []
            for c in completions:
                t0 = time.perf_counter()
                values = _score(report, name, rewards[name], [c], columns)
                dt = time.perf_counter() - t0
                report.scored[name] += 1
                if dt > report.slowest.get(name, (0.0, None))[0]:
                    report.slowest[name] = (dt, c)
                singles.append(values[0] if values else "failed")
            batch_cols = {k: v * size for k, v in columns.items()}
            batch = _score(report, name, rewards[name], completions, batch_cols)
            if batch is not None:
                for b, s, c in zip(batch, singles, completions):
                    if s != "failed" and not _same(b, s):
                        report.note(report.batch_mismatch, name, f"batch {b} vs single {s}", c)
        done += size
        if progress and done % (group * 500) == 0:
            print(f"  {done}/{n} completions, {time.perf_counter() - t_start:.0f} s",
                  file=sys.stderr, flush=True)
    return report


def format_report(report: Report, n: int, seconds: float) -> str:
    rows = ["| reward | range | scored | exceptions | wrong length | non-finite | out of range "
            "| batch ≠ single | slowest (s) | its length |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in STAGE1_REWARDS + STAGE2_REWARDS:
        lo, hi = REWARD_RANGES[name]
        dt, c = report.slowest.get(name, (0.0, None))
        length = len(c) if isinstance(c, (str, list)) else "-"
        rows.append(f"| {name} | [{lo:g}, {hi:g}] | {report.scored[name]} | "
                    f"{report.exceptions[name]} | {report.wrong_length[name]} | "
                    f"{report.non_finite[name]} | {report.out_of_range[name]} | "
                    f"{report.batch_mismatch[name]} | {dt:.4f} | {length} |")
    worst = max(report.slowest.items(), key=lambda kv: kv[1][0], default=None)
    lines = [f"{n} completions ({n // 2} per stage, every reward of its stage) in {seconds:.0f} s",
             *rows,
             f"totals: exceptions {sum(report.exceptions.values())}, out of range "
             f"{sum(report.out_of_range.values())}, non-finite "
             f"{sum(report.non_finite.values())}, wrong length "
             f"{sum(report.wrong_length.values())}, batch mismatches "
             f"{sum(report.batch_mismatch.values())}"]
    if worst:
        lines.append(f"slowest completion: {worst[1][0]:.4f} s in {worst[0]!r}: "
                     f"{_head(worst[1][1])}")
    for name, problem, head in report.examples:
        lines.append(f"  {name}: {problem}: {head}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rewards.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="completions (half per stage)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", type=int, default=8, help="completions per scene (a GRPO group)")
    ap.add_argument("--grid", type=int, default=8, help="grid size of the vocabulary")
    ap.add_argument("--huge-every", type=int, default=2000,
                    help="one completion in k (on average) is 10^4-4.5*10^5 characters (0: none)")
    ap.add_argument("--max-seconds", type=float, default=0.1,
                    help="a single completion slower than this fails the run")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    report = run(args.n, args.seed, args.group, args.grid, huge_every=args.huge_every,
                 progress=True)
    print(format_report(report, args.n, time.perf_counter() - t0))
    slowest = max((dt for dt, _ in report.slowest.values()), default=0.0)
    return 1 if report.failures or slowest > args.max_seconds else 0


if __name__ == "__main__":
    sys.exit(main())
