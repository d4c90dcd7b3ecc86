"""Propose-then-refine inference on one image: tokens, boxes, points, masks and a picture.

    python -m rl.infer --model runs/default/grpo_stage2 --image scene.png \\
        --query "the red circle" --rounds 1 --out prediction.png

From Python:

    from rl.infer import Grounder
    g = Grounder("runs/default/grpo_stage2")
    result = g("scene.png", "the red circle", rounds=1)
    result.boxes, result.points, result.masks      # pixels of the input image
    g.draw(result, "prediction.png")

Round 0 is the grid-token proposal; each later round asks for offset tokens and moves, keeps or
deletes (`<DELETE>`) every proposed point. `--rounds 0` is grid only.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokens import Instance, SpatialVocab


@dataclass
class InferenceResult:
    """One query's answer. Coordinates are pixels of the input image (x, y), boxes xyxy.

    answers: the model's text per round (round 0: the proposal). tokens: the spatial tokens of
    each answer. instances: final instances, normalized. masks: one (H, W) bool mask per final
    instance. moves/deleted: per refinement round, the offsets applied (from, to) and the points
    deleted, normalized."""

    image: np.ndarray
    query: str
    answers: list[str]
    tokens: list[list[str]]
    instances: list[Instance]
    masks: list[np.ndarray]
    moves: list[list] = field(default_factory=list)
    deleted: list[list] = field(default_factory=list)
    proposed: list[Instance] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return w, h

    @property
    def boxes(self) -> list[tuple[float, float, float, float] | None]:
        w, h = self.size
        return [None if i.box is None else (i.box[0] * w, i.box[1] * h, i.box[2] * w,
                                            i.box[3] * h) for i in self.instances]

    @property
    def points(self) -> list[list[tuple[float, float]]]:
        w, h = self.size
        return [[(x * w, y * h) for x, y in i.points] for i in self.instances]

    @property
    def mask(self) -> np.ndarray:
        """The union of the instance masks."""
        h, w = self.image.shape[:2]
        out = np.zeros((h, w), bool)
        for m in self.masks:
            out |= m
        return out

    def to_json(self) -> dict:
        return {"query": self.query, "answers": self.answers, "tokens": self.tokens,
                "boxes": self.boxes, "points": self.points,
                "mask_pixels": [int(m.sum()) for m in self.masks],
                "deleted_per_round": [len(d) for d in self.deleted],
                "moved_per_round": [len(m) for m in self.moves]}


class Grounder:
    """A trained checkpoint plus a mask decoder, answering (image, query) pairs."""

    def __init__(self, model_dir: str | Path, decoder="region", prompts: str | None = None,
                 max_new_tokens: int = 64, device: str | None = None, codec=None):
        """prompts, codec (a name or {"name": ..., **params}): default to what the checkpoint's
        run was trained with (`rl.config.checkpoint_settings`)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from rl.config import checkpoint_settings
        from rl.context import RunContext, codec_spec
        from rl.data.samples import load_prompts
        from tokens.decoders import build_decoder
        from tokens.registry import get_codec

        self.model_dir = Path(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_dir, use_kernels=False).eval()
        if device:
            self.model.to(device)
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        self.vocab = SpatialVocab.load(self.model_dir)
        settings = checkpoint_settings(self.model_dir)
        self.prompts = load_prompts(prompts or settings["prompts"])
        self.codec = get_codec(vocab=self.vocab, **codec_spec(codec or settings["codec"]))
        self.decoder = build_decoder(decoder) if isinstance(decoder, str | dict) else decoder
        self.max_new_tokens = max_new_tokens
        self.image_after_text = settings["image_after_text"]
        self.ctx = RunContext(vocab=self.vocab, codec=self.codec, decoder_spec=self.decoder,
                              processor=self.processor, prompts=self.prompts)

    def __call__(self, image, query: str, rounds: int = 1) -> InferenceResult:
        """Propose, refine `rounds` times, decode: the result for one image and query."""
        img = _load_image(image)
        pred = self.predict(img, query, rounds)
        return self._result(img, query, [pred.stage1, *pred.refinements], pred.answers)

    def answers(self, image, query: str, rounds: int = 1) -> list[str]:
        """The model's texts: the grid-token proposal, then one offset answer per round
        (fewer when a round leaves no instance to refine)."""
        pred = self.predict(image, query, rounds)
        return [pred.stage1, *pred.refinements]

    def predict(self, image, query: str, rounds: int = 1):
        """The model's `rl.evaluate.Prediction` for one image and query (texts and their parsed
        answers)."""
        from rl.data.samples import user_turn
        from rl.evaluate import EvalSettings, predict

        question = self.prompts["stage1"].format(expression=query)
        if self.codec.name != "grid":
            rounds = 0  # refinement is written in offset tokens only
        settings = EvalSettings(rounds, self.max_new_tokens, batch_size=1)
        turn = user_turn(question, image=True, image_after_text=self.image_after_text)
        return predict(self.model, [[turn]], [_load_image(image)],
                       self.ctx, settings)[0]

    def result(self, image, query: str, answers: list[str]) -> InferenceResult:
        """Read answer texts (a proposal, then refinements) and build their result."""
        from tokens import apply_refinement, parse_refinement

        parsed = [self.codec.parse_answer(answers[0])]
        instances = parsed[0].instances
        for text in answers[1:]:
            parsed.append(parse_refinement(text, instances, self.vocab))
            instances = apply_refinement(instances, parsed[-1], self.vocab)
        return self._result(image, query, answers, parsed)

    def _result(self, image, query: str, answers: list[str], parsed: list) -> InferenceResult:
        """The result from parsed answers (the proposal's `ParsedAnswer`, then one
        `ParsedRefinement` per round): final instances, what each round moved and deleted, and
        one decoded mask per final instance."""
        from rl.visualize import refinement_marks
        from tokens import apply_refinement
        from tokens.decoders import as_image_array, instance_masks

        arr = as_image_array(_load_image(image))
        proposed = parsed[0].instances
        instances, moves, deleted = proposed, [], []
        for ref in parsed[1:]:
            m, d = refinement_marks(instances, ref, self.vocab)
            moves.append(m)
            deleted.append(d)
            instances = apply_refinement(instances, ref, self.vocab)
        masks = instance_masks(self.decoder, arr, instances)
        tokens = [self.vocab.tokens_in(p.answer_text or "") for p in parsed]
        return InferenceResult(arr, query, list(answers), tokens, instances, masks, moves,
                               deleted, proposed)

    def picture(self, result: InferenceResult, scale: int | None = None):
        """The picture (a PIL image): the query written above; image, grid lattice, decoded
        mask, boxes, final points, each offset as an arrow and each deleted point crossed out
        (all rounds); after refinement rounds, the proposal drawn beside the refined result."""
        from rl.visualize import prediction_picture

        moves = [m for rnd in result.moves for m in rnd]
        deleted = [d for rnd in result.deleted for d in rnd]
        proposal = (result.proposed, self.proposal_mask(result)) if result.moves else None
        return prediction_picture(result.image, result.instances, self.vocab, result.mask,
                                  moves, deleted, scale, caption=f'"{result.query}"',
                                  proposal=proposal)

    def proposal_mask(self, result: InferenceResult) -> np.ndarray:
        """The union of the proposal's decoded masks (before any refinement round)."""
        from tokens.decoders import instance_masks

        h, w = result.image.shape[:2]
        out = np.zeros((h, w), bool)
        for m in instance_masks(self.decoder, result.image, result.proposed):
            out |= m
        return out

    def draw(self, result: InferenceResult, path: str | Path, scale: int | None = None) -> Path:
        """Save `picture(result)` to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.picture(result, scale).save(path)
        return path


def _load_image(image):
    from PIL import Image

    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image not found")
        with Image.open(path) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    return image.convert("RGB")


def main(argv=None) -> InferenceResult:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m rl.infer", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a saved checkpoint (with spatial_vocab.json)")
    p.add_argument("--image", required=True)
    p.add_argument("--query", required=True, help="the referring expression or question")
    p.add_argument("--rounds", type=int, default=1, help="refinement rounds (0: grid only)")
    p.add_argument("--decoder", default="region",
                   help='"region", or JSON like {"name": "sam", "variant": "vit_h", '
                        '"checkpoint": "sam_vit_h.pth"}')
    p.add_argument("--prompts", default=None, help="prompt templates (default: the run's)")
    p.add_argument("--codec", default=None,
                   help='answer codec, a name or JSON like {"name": "text_bins", "bins": 1000} '
                        "(default: the run's)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", default="prediction.png", help="the picture to write")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    a = p.parse_args(argv)
    from rl.context import read_spec

    g = Grounder(a.model, read_spec(a.decoder), a.prompts, a.max_new_tokens,
                 codec=read_spec(a.codec))
    result = g(a.image, a.query, a.rounds)
    g.draw(result, a.out)
    info = result.to_json()
    print(json.dumps(info, indent=2))
    print(f"picture: {a.out}")
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
