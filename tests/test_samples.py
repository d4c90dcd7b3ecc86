import numpy as np
import pytest

from rewards import build_reward
from rewards.solution import parse_solution
from rl.data.common import Skips
from rl.data.referring import synthetic_records
from rl.data.samples import (
    BuildConfig,
    BuildStats,
    build_grpo_stage1,
    build_grpo_stage2,
    build_sft,
    load_prompts,
)
from tokens import SpatialVocab, parse_answer, parse_refinement
from tokens.decoders import RegionDecoder

PROMPTS = load_prompts()


def sft_rows(n=12, **cfg):
    recs = list(synthetic_records(n, seed=3))
    stats = BuildStats()
    rows = list(build_sft(recs, RegionDecoder(), PROMPTS, BuildConfig(**cfg), Skips(), stats))
    return recs, rows, stats


def text_of(turn):
    return "".join(p["text"] for p in turn["content"] if p["type"] == "text")


def test_stage1_answers_score_well_and_are_well_formed():
    recs, rows, stats = sft_rows()
    stage1 = [r for r in rows if r["task"] == "stage1"]
    assert len(stage1) == len(recs) and stats.tasks["stage1"] == len(recs)
    for row, rec in zip(stage1, recs, strict=True):
        assert row["prompt"][0]["content"][0]["type"] == "image"
        assert rec.expression in text_of(row["prompt"][0])
        answer = text_of(row["completion"][0])
        parsed = parse_answer(answer)
        assert parsed.well_formed and len(parsed.instances) == len(rec.solution["instances"])
        for name in ("box", "mask", "format"):
            score = build_reward(name)([answer], solution=[row["solution"]],
                                       image=[row["image"]])[0]
            assert score >= (0.5 if name == "box" else 1.0), (name, rec.expression, answer)


def test_refinement_dialogues_fit_their_stage1_answer():
    recs, rows, _ = sft_rows()
    refine = [r for r in rows if r["task"] == "refine"]
    with_targets = [r for r in recs if r.solution["instances"]]
    assert len(refine) == len(with_targets) > 0
    for row in refine:
        assert [t["role"] for t in row["prompt"]] == ["user", "assistant", "user"]
        assert text_of(row["prompt"][1]) == row["stage1"]
        ref = parse_refinement(text_of(row["completion"][0]), row["stage1"])
        assert ref.complete and ref.errors == []
        # The target is what the refinement rewards pay most for.
        kw = {"solution": [row["solution"]], "stage1": [row["stage1"]]}
        assert build_reward("point_refine")([text_of(row["completion"][0])], **kw) == [1.0]


def test_images_are_resized_not_padded_and_solutions_keep_their_frame():
    recs, rows, _ = sft_rows(n=3, image_size=64)
    for row, rec in zip([r for r in rows if r["task"] == "stage1"], recs, strict=True):
        assert row["image"].size == (64, 64)
        assert parse_solution(row["solution"]).width == rec.image.shape[1]


def test_min_iou_drops_and_counts():
    recs = list(synthetic_records(6, seed=1))
    skips = Skips(strict=False)
    # A proposer that proposes nothing: every mask falls back with IoU 0.
    from tokens.decoders import MaskProposals

    class Nothing:
        def propose(self, image, vocab):
            return MaskProposals(np.zeros((0, *image.shape[:2]), bool), [])

    rows = list(build_sft(recs, Nothing(), PROMPTS, BuildConfig(min_iou=0.5), skips))
    with_targets = sum(bool(r.solution["instances"]) for r in recs)
    assert skips.counts == {"conversion IoU below 0.5": with_targets}
    assert len(rows) == 2 * (len(recs) - with_targets) - (len(recs) - with_targets)


def test_grpo_stage1_and_stage2_rows():
    recs = list(synthetic_records(4, seed=0))
    rows = list(build_grpo_stage1(recs, PROMPTS, BuildConfig()))
    assert all(len(r["prompt"]) == 1 and "solution" in r for r in rows)
    answers = ["<think></think><answer></answer>"] * 4
    stage2 = list(build_grpo_stage2(rows, answers, PROMPTS))
    assert [t["role"] for t in stage2[0]["prompt"]] == ["user", "assistant", "user"]
    assert stage2[0]["stage1"] == answers[0] and text_of(stage2[0]["prompt"][1]) == answers[0]
    with pytest.raises(ValueError, match="3 stage-1 answers for 4 rows"):
        list(build_grpo_stage2(rows, answers[:3], PROMPTS))


def test_prompt_templates_are_checked(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("stage1: x\nstage2: y\nthink: z\nthink_refine: w\nextra: q\n")
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        load_prompts(bad)
    bad.write_text("stage1: x\n")
    with pytest.raises(ValueError, match="missing keys"):
        load_prompts(bad)
    good = tmp_path / "q.yaml"
    good.write_text("stage1: x\nstage2: y\nthink: z\nthink_refine: w\n")
    assert load_prompts(good)["caption"] == "Describe {region}."
    good.write_text("stage1: x\nstage2: y\nthink: z\nthink_refine: w\ncaption: 'Name {region}'\n")
    assert load_prompts(good)["caption"] == "Name {region}"


def test_other_grid_sizes():
    _, rows, _ = sft_rows(n=2, vocab=SpatialVocab(grid_size=16))
    answer = text_of(rows[0]["completion"][0])
    assert parse_answer(answer, SpatialVocab(16)).well_formed


@pytest.mark.parametrize("name, params", [("text_norm", {}), ("text_bins", {"bins": 1000}),
                                          ("anchor_offset_text", {}), ("rle_text", {"size": 8})])
def test_other_codecs_write_the_stage1_answers(name, params):
    from tokens import get_codec

    codec = get_codec(name, **params)
    recs, rows, _ = sft_rows(8, codec=codec, refinement=False)
    assert [r["id"] for r in rows] == [r.id for r in recs]
    box = build_reward("box", codec=codec)
    for row in rows:
        text = text_of(row["completion"][0])
        ans = codec.parse_answer(text)
        assert ans.well_formed, (text, ans.errors)
        assert "<grid_" not in text and "<seg>" not in text
        n_gt = len(parse_solution(row["solution"]))
        assert len(ans.instances) == n_gt
        if n_gt and name != "rle_text":  # the same boxes as the grid answers, finer written
            assert box([text], solution=[row["solution"]])[0] >= 0.9
    with pytest.raises(ValueError, match="refinement data is written in offset tokens"):
        sft_rows(2, codec=codec)


def test_refinement_share_keeps_a_part_of_the_dialogues():
    recs = list(synthetic_records(60, seed=3, objects=(2, 3), kinds={"attribute": 1.0}))
    prompts = load_prompts()
    every = [r["task"] for r in build_sft(recs, RegionDecoder(), prompts, BuildConfig())]
    some = [r["task"] for r in build_sft(recs, RegionDecoder(), prompts,
                                         BuildConfig(refinement_share=0.25))]
    assert every.count("refine") == 60 and some.count("stage1") == 60
    assert 5 <= some.count("refine") <= 25


def test_caption_rows_name_the_target_at_its_box():
    import json

    recs = list(synthetic_records(40, seed=3, objects=(2, 3)))
    cfg = BuildConfig(caption_share=1.0, refinement=False)
    rows = list(build_sft(recs, RegionDecoder(), PROMPTS, cfg))
    by_id = {r.id: r for r in recs}
    captions = [r for r in rows if r["task"] == "caption"]
    single = [r for r in recs if len(r.extra["targets"]) == 1]
    assert len(captions) == len(single) > 0  # multi- and no-target records get none
    v = cfg.vocab
    for row in captions:
        rec = by_id[row["id"]]
        view = json.loads(rec.extra["scene"])[rec.extra["targets"][0]]
        assert text_of(row["completion"][0]) == f"the {view['colour']} {view['shape']}"
        x1, y1, x2, y2 = parse_solution(rec.solution).boxes_norm[0]
        region = f"<box>{v.point_to_token(x1, y1)}{v.point_to_token(x2, y2)}</box>"
        assert text_of(row["prompt"][0]) == f"Describe {region}."
        assert [p["type"] for p in row["prompt"][0]["content"]] == ["image", "text"]
    # captions are added, nothing else changes: the other rows are a plain build's, to the byte
    plain = list(build_sft(recs, RegionDecoder(), PROMPTS, BuildConfig(refinement_share=0.5)))
    mixed = list(build_sft(recs, RegionDecoder(), PROMPTS,
                           BuildConfig(refinement_share=0.5, caption_share=0.5)))
    assert [(r["task"], r["prompt"], r["completion"]) for r in plain] == [
        (r["task"], r["prompt"], r["completion"]) for r in mixed if r["task"] != "caption"]
    some = [r["task"] for r in build_sft(recs, RegionDecoder(), PROMPTS,
                                         BuildConfig(caption_share=0.3, refinement=False))]
    assert 2 <= some.count("caption") < len(single) and some.count("stage1") == 40


def test_scene_think_lists_every_object_left_to_right_with_its_box():
    import json
    import re

    from rl.data.common import Record
    from rl.data.samples import scene_text

    recs = list(synthetic_records(6, seed=5, objects=(2, 4), distractors="share"))
    prompts = {**PROMPTS, "think": "{scene}"}
    rows = [r for r in build_sft(recs, RegionDecoder(), prompts, BuildConfig(refinement=False))]
    v = SpatialVocab()
    entry = re.compile(r"([a-z]+) ([a-z]+) <box>(<grid_\d+_\d+><grid_\d+_\d+>)</box>")
    for rec, row in zip(recs, rows, strict=True):
        views = sorted(json.loads(rec.extra["scene"]), key=lambda o: (o["cx"], o["cy"]))
        think = text_of(row["completion"][0]).split("<think>")[1].split("</think>")[0]
        entries = entry.findall(think)
        assert " ".join(f"{c} {s} <box>{b}</box>" for c, s, b in entries) == think
        assert [(c, s) for c, s, _ in entries] == [(o["colour"], o["shape"]) for o in views]
        # the target's entry carries the very box the answer writes
        answer = parse_answer(text_of(row["completion"][0]), v)
        for inst in answer.instances:
            box = "".join(v.point_to_token(*inst.box[k:k + 2]) for k in (0, 2))
            assert box in [b for _, _, b in entries]
    assert scene_text(recs[0], v) in text_of(rows[0]["completion"][0])
    other = Record(id="ref-7", source="refcoco", image=np.zeros((4, 4, 3), np.uint8),
                   expression="man", solution={}, kind="attribute")
    with pytest.raises(ValueError, match=r"ref-7: the think template asks for \{scene\}"):
        scene_text(other, v)


def test_caption_text_of_other_sources_is_the_expression():
    from rl.data.common import Record
    from rl.data.samples import caption_text

    rec = Record(id="r1", source="refcoco", image=np.zeros((4, 4, 3), np.uint8),
                 expression="man on the left", solution={}, kind="attribute")
    assert caption_text(rec) == "man on the left"


def test_image_after_text_puts_the_image_last_in_the_question():
    recs = list(synthetic_records(2, seed=3))
    first, after = (list(build_grpo_stage1(recs, load_prompts(),
                                           BuildConfig(image_after_text=flag)))
                    for flag in (False, True))
    assert [p["type"] for p in first[0]["prompt"][0]["content"]] == ["image", "text"]
    assert [p["type"] for p in after[0]["prompt"][0]["content"]] == ["text", "image"]
