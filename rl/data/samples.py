"""Sample builders: contract records → SFT cold-start samples and GRPO prompts.

- SFT, stage 1: the prompt asks for the expression; the answer has each target's box (its
  ground-truth corners' cells) and `<seg>` points from the greedy conversion over the decoder's
  proposals (spec §4), so the tokens reproduce the mask as well as the decoder allows. Another
  codec (`BuildConfig.codec`) writes the same box and points in its own form (`rle_text`
  writes the mask itself).
- SFT, refinement: a dialogue with a simulated stage-1 answer (sampled Inside/Ring/Delete points,
  jittered box corners) and the offset answer that corrects it (spec §5).
- GRPO stage 1: the prompt, the image and the `solution`.
- GRPO stage 2: the stage-1 prompt, the policy's own stage-1 answer as the assistant turn, the
  refinement request, and the answer text in the `stage1` column.

Messages are conversational with typed parts (`{"type": "image"}`, `{"type": "text", ...}`).
Images are resized, never padded or cropped (the paper's Table 10); coordinates stay normalized,
and the `solution` keeps its original pixel frame (the rewards map masks back to it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rewards.solution import parse_solution
from rl.data.common import Record, Skips
from tokens import SpatialVocab, serialize_answer, serialize_refinement
from tokens.codec import Codec, GridCodec
from tokens.decoders import MaskProposer, as_image_array, image_key, resize_mask
from tokens.greedy import greedy_convert
from tokens.offsets import DEFAULT_QUOTAS, refinement_example

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "configs" / "prompts.yaml"
PROMPT_KEYS = ("stage1", "stage2", "think", "think_refine")
# Templates a prompts file may leave out, with the text used then. {region} is a `<box>`.
OPTIONAL_PROMPTS = {"caption": "Describe {region}."}


def load_prompts(path: str | Path | None = None) -> dict[str, str]:
    """Prompt templates from YAML (default `configs/prompts.yaml`); every key of PROMPT_KEYS
    is required, the keys of OPTIONAL_PROMPTS take their default text when absent, and no
    other key is accepted."""
    path = Path(path) if path is not None else PROMPTS_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: prompt templates not found") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of prompt templates")
    known = set(PROMPT_KEYS) | set(OPTIONAL_PROMPTS)
    unknown, missing = set(data) - known, set(PROMPT_KEYS) - set(data)
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    for key, text in data.items():
        if not isinstance(text, str):
            raise ValueError(f"{path}: {key}: expected a string template")
    return {**OPTIONAL_PROMPTS, **data}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def user_turn(text: str, image: bool = False, image_after_text: bool = False) -> dict:
    """A user turn; with `image`, the image part comes before the text, or after it when
    `image_after_text` (with causal attention the image tokens then see the question)."""
    parts = [text_part(text)]
    if image:
        img = {"type": "image", "text": None}
        parts = parts + [img] if image_after_text else [img] + parts
    return {"role": "user", "content": parts}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [text_part(text)]}


@dataclass
class BuildConfig:
    """How records become samples.

    image_size: resize images to this square size (None: keep). tau, max_tokens: greedy
    conversion (§4). min_iou: drop samples whose tokens reproduce a mask worse than this (None:
    keep all). n_points, quotas, jitter_cells: refinement data (§5); refinement_share: the
    share of records that get a refinement dialogue (1.0: every record with targets). codec:
    how stage-1 answers write the geometry (None: grid tokens of `vocab`); refinement data is
    grid-only. caption_share: the share of single-target records that also get a captioning
    row, the reverse task (the target's box in the question, its name as the answer; see
    `caption_row`).
    """

    vocab: SpatialVocab = field(default_factory=SpatialVocab)
    codec: Codec | None = None
    image_size: int | None = None
    tau: float = 0.8
    max_tokens: int = 32
    min_iou: float | None = None
    n_points: int = 12
    quotas: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    jitter_cells: float = 1.0
    refinement: bool = True
    refinement_share: float = 1.0
    caption_share: float = 0.0
    image_after_text: bool = False
    seed: int = 0

    def question(self, prompts: Mapping[str, str], expression: str) -> dict:
        """The stage-1 user turn: the question with the image."""
        return user_turn(prompts["stage1"].format(expression=expression), image=True,
                         image_after_text=self.image_after_text)

    def answer_codec(self) -> Codec:
        codec = self.codec or GridCodec(self.vocab)
        if self.refinement and codec.name != "grid":
            raise ValueError(f"refinement data is written in offset tokens; codec {codec.name!r} "
                             "has none (set refinement off)")
        return codec


def resize_image(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


@dataclass
class BuildStats:
    """What the builders saw: tokens per mask, conversion IoU per mask, samples by task."""

    tokens_per_mask: list[int] = field(default_factory=list)
    conversion_iou: list[float] = field(default_factory=list)
    tasks: dict[str, int] = field(default_factory=dict)

    def count(self, task: str) -> None:
        self.tasks[task] = self.tasks.get(task, 0) + 1


def _to_image(image) -> np.ndarray:
    if isinstance(image, str | Path):
        from rl.data.common import read_image

        return read_image(Path(image), source=image, record=None, field_name="image")
    return as_image_array(image)


def base_columns(rec: Record, image: np.ndarray) -> dict:
    """The columns every row carries; the image as a PIL image (what TRL's processors and
    `datasets.Image` take). `split` and `instance` (the object an expression refers to; the
    record id when unknown) let evaluation report per dataset/split and per instance; `objects`
    (their masks), `scene` (their names, sizes and centres: what `resolve` reads) and
    `targets` are the synthetic scenes' ("" / [] elsewhere)."""
    from PIL import Image

    return {"id": rec.id, "source": rec.source, "split": str(rec.extra.get("split", "")),
            "instance": str(rec.extra.get("instance", rec.id)), "image": Image.fromarray(image),
            "expression": rec.expression, "kind": rec.kind,
            "solution": json.dumps(rec.solution),
            "objects": str(rec.extra.get("objects", "")),
            "scene": str(rec.extra.get("scene", "")),
            "targets": json.dumps(rec.extra.get("targets", []))}


def region_text(vocab: SpatialVocab, box) -> str:
    """A normalized (x1, y1, x2, y2) box as answers write it: `<box><grid_i_j><grid_k_l></box>`."""
    x1, y1, x2, y2 = (float(c) for c in box)
    return f"<box>{vocab.point_to_token(x1, y1)}{vocab.point_to_token(x2, y2)}</box>"


def scene_text(rec: Record, vocab: SpatialVocab) -> str:
    """Every object of a synthetic scene, left to right: its name and its box
    (`red circle <box><grid_i_j><grid_k_l></box>`, space-separated). What a `{scene}` in the
    think template writes: an inventory the answer can pick its object from by the words."""
    from pycocotools import mask as mask_utils

    scene, objects = rec.extra.get("scene"), rec.extra.get("objects")
    if not scene or not objects:
        raise ValueError(f"{rec.id}: the think template asks for {{scene}}, which only "
                         f"synthetic records carry (extra 'scene' and 'objects')")
    entries = []
    for view, rle in zip(json.loads(scene), json.loads(objects), strict=True):
        x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})
        H, W = rle["size"]
        region = region_text(vocab, (x / W, y / H, (x + w) / W, (y + h) / H))
        entries.append((view["cx"], view["cy"], f"{view['colour']} {view['shape']} {region}"))
    return " ".join(text for _, _, text in sorted(entries))


def caption_text(rec: Record) -> str:
    """What a captioning row answers for a single-target record: for a synthetic scene the
    target's full name ("the red circle", from the scene kept with the record, whatever the
    expression's kind), otherwise the record's own expression."""
    scene, targets = rec.extra.get("scene"), rec.extra.get("targets")
    if scene and targets and len(targets) == 1:
        view = json.loads(scene)[targets[0]]
        return f"the {view['colour']} {view['shape']}"
    return rec.expression


def caption_row(rec: Record, row: Mapping, box_norm, prompts: Mapping[str, str],
                cfg: BuildConfig) -> dict:
    """A captioning row (task "caption"): the question names a region by the target's box
    corners (`<box><grid_i_j><grid_k_l></box>`) and the answer is its name (`caption_text`).
    The reverse of grounding: the answer's words can only come from what the image shows at
    the named cells, so every such row asks for the target's colour and shape directly."""
    question = user_turn(prompts["caption"].format(region=region_text(cfg.vocab, box_norm)),
                         image=True,
                         image_after_text=cfg.image_after_text)
    return {**row, "task": "caption", "prompt": [question],
            "completion": [assistant_turn(caption_text(rec))], "stage1": "",
            "conversion_iou": 1.0}


def build_sft(records: Iterable[Record], proposer: MaskProposer, prompts: Mapping[str, str],
              cfg: BuildConfig, skips: Skips | None = None,
              stats: BuildStats | None = None, start: int = 0) -> Iterator[dict]:
    """SFT rows (`prompt`/`completion` conversations) for stage 1; when `cfg.refinement`, an
    offset-refinement dialogue for a share `cfg.refinement_share` of the records that have
    targets; a captioning row for a share `cfg.caption_share` of the single-target records
    (both drawn per record, from the record's index: `start` is the first record's, so a
    range of records builds the rows it would in the whole list)."""
    skips = skips if skips is not None else Skips()
    stats = stats if stats is not None else BuildStats()
    v = cfg.vocab
    codec = cfg.answer_codec()
    proposals_cache: dict[str, object] = {}
    for n, rec in enumerate(records, start):
        rng = np.random.default_rng([cfg.seed, n])
        image = resize_image(_to_image(rec.image), cfg.image_size)
        h, w = image.shape[:2]
        gt = parse_solution(rec.solution, row=rec.id)
        masks = [resize_mask(m, h, w) for m in gt.masks]
        key = image_key(image)
        if key not in proposals_cache:
            proposals_cache.clear()  # records of one image are adjacent; keep one image
            proposals_cache[key] = proposer.propose(image, v)
        results = [greedy_convert(m, proposals_cache[key], v, cfg.tau, cfg.max_tokens)
                   for m in masks]
        ious = [r.iou for r in results]
        if cfg.min_iou is not None and ious and min(ious) < cfg.min_iou:
            skips.skip(f"conversion IoU below {cfg.min_iou}",
                       f"{rec.id}: tokens reproduce IoU {min(ious):.2f} < {cfg.min_iou}")
            continue
        stats.tokens_per_mask += [len(r.cells) for r in results]
        stats.conversion_iou += ious
        instances = [codec.target_instance(tuple(float(c) for c in gt.boxes_norm[k]),
                                           r.points(v), masks[k])
                     for k, r in enumerate(results)]
        think = prompts["think"].format(
            expression=rec.expression,
            **({"scene": scene_text(rec, v)} if "{scene}" in prompts["think"] else {}))
        stage1_text = codec.serialize_answer(instances, think=think)
        row = base_columns(rec, image)
        yield {**row, "task": "stage1", "prompt": [cfg.question(prompts, rec.expression)],
               "completion": [assistant_turn(stage1_text)], "stage1": "",
               "conversion_iou": float(min(ious)) if ious else 1.0}
        stats.count("stage1")
        # Its own draw, so the other rows are those of a build without captions.
        if (cfg.caption_share and len(gt) == 1
                and np.random.default_rng([cfg.seed, n, 1]).random() < cfg.caption_share):
            yield caption_row(rec, row, gt.boxes_norm[0], prompts, cfg)
            stats.count("caption")
        if not cfg.refinement or not len(gt):
            continue
        if cfg.refinement_share < 1.0 and rng.random() >= cfg.refinement_share:
            continue
        examples = [refinement_example(m, tuple(gt.boxes_norm[k]), v, rng, cfg.n_points,
                                       cfg.quotas, cfg.jitter_cells)
                    for k, m in enumerate(masks)]
        sim_stage1 = serialize_answer([ex.stage1 for ex in examples], think=think, vocab=v)
        target = serialize_refinement([(ex.box_ops, ex.seg_ops or None) for ex in examples],
                                      think=prompts["think_refine"], vocab=v)
        yield {**row, "task": "refine",
               "prompt": [cfg.question(prompts, rec.expression), assistant_turn(sim_stage1),
                          user_turn(prompts["stage2"])],
               "completion": [assistant_turn(target)], "stage1": sim_stage1,
               "conversion_iou": float(min(ious))}
        stats.count("refine")


def build_grpo_stage1(records: Iterable[Record], prompts: Mapping[str, str],
                      cfg: BuildConfig) -> Iterator[dict]:
    """GRPO stage-1 rows: the question with the image, and the `solution` for the rewards."""
    for rec in records:
        image = resize_image(_to_image(rec.image), cfg.image_size)
        yield {**base_columns(rec, image), "prompt": [cfg.question(prompts, rec.expression)]}


def build_grpo_stage2(rows: Iterable[Mapping], stage1_answers: Iterable[str],
                      prompts: Mapping[str, str]) -> Iterator[dict]:
    """GRPO stage-2 rows from stage-1 rows and the policy's stage-1 answers (one per row): the
    conversation gains the answer and the refinement request, `stage1` holds the answer."""
    answers = list(stage1_answers)
    rows = list(rows)
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} stage-1 answers for {len(rows)} rows")
    for row, answer in zip(rows, answers, strict=True):
        if not isinstance(answer, str):
            raise ValueError(f"row {row.get('id')}: stage-1 answer must be text, got "
                             f"{type(answer).__name__}")
        yield {**row, "prompt": list(row["prompt"]) + [assistant_turn(answer),
                                                       user_turn(prompts["stage2"])],
               "stage1": answer}
