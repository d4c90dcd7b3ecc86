"""Evaluation on the tiny model: deterministic, unparsable answers scored as empty."""

import json

import numpy as np

from rl.context import RunContext
from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_grpo_stage1, load_prompts
from rl.evaluate import EvalSettings, Prediction, evaluate_rows, score
from tokens import GridCodec, Instance, SpatialVocab
from tokens.decoders import RegionDecoder


def lone_shape_rows():
    """Two rows of one shape each, and an instance whose box is row 0's true box."""
    import json

    recs = list(synthetic_records(2, seed=1, objects=(1, 1), kinds={"attribute": 1.0}))
    rows = list(build_grpo_stage1(recs, load_prompts(), BuildConfig()))
    sol = json.loads(rows[0]["solution"])
    x1, y1, x2, y2 = sol["instances"][0]["box"]
    w, h = sol["size"]
    return rows, Instance((x1 / w, y1 / h, x2 / w, y2 / h))


def share_rows(n: int, prompts: dict, seed: int = 4) -> list[dict]:
    """Stage-1 rows of `n` held-out-style scenes (2-4 shapes, distractors sharing an
    attribute), the image after the question."""
    return list(build_grpo_stage1(synthetic_records(n, seed=seed, objects=(2, 4),
                                                    distractors="share"), prompts,
                                  BuildConfig(image_after_text=True)))


def test_scoring_predictions_by_hand():
    rows, exact = lone_shape_rows()
    good = Prediction("", [], [exact], True)
    failed = Prediction("garbage", [], [], False)
    scores = score([good, failed], [rows[0]["image"], rows[1]["image"]],
                   [rows[0]["solution"], rows[1]["solution"]], RegionDecoder())
    assert scores[0].iou > 0.95 and scores[0].box_iou == 1.0
    assert scores[1].iou == 0.0 and not scores[1].parsed


def test_evaluating_twice_gives_identical_numbers(grid8_model):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(grid8_model).eval()
    proc = AutoProcessor.from_pretrained(grid8_model)
    v = SpatialVocab(8)
    rows = list(build_grpo_stage1(synthetic_records(6, seed=2), load_prompts(),
                                  BuildConfig(vocab=v)))
    ctx = RunContext(vocab=v, codec=GridCodec(v), decoder_spec=RegionDecoder(), processor=proc,
                     prompts={"stage2": "Refine."})
    a, pa = evaluate_rows(model, rows, ctx, EvalSettings(rounds=1, max_new_tokens=12,
                                                         batch_size=4))
    b, pb = evaluate_rows(model, rows, ctx, EvalSettings(rounds=1, max_new_tokens=12,
                                                         batch_size=3))
    assert a == b and [p.stage1 for p in pa] == [p.stage1 for p in pb]
    assert a["samples"] == 6 and a["parse_failures"] == 6  # untrained: scored, not skipped
    assert np.isclose(a["gIoU"], np.mean([0.0] * 6)) or a["no_target_samples"] > 0


def test_command_line_writes_json_markdown_and_predictions_per_dataset(grid8_model, tmp_path):
    import json

    from rl.data.__main__ import main as build
    from rl.evaluate import main

    build(["--source", "synthetic", "--n", "5", "--build", "grpo", "--grid-size", "8",
           "--out", str(tmp_path / "synthetic-val")])
    build(["--source", "synthetic", "--n", "3", "--seed", "7", "--build", "rows",
           "--out", str(tmp_path / "rows-test")])
    runs = []
    for k in range(2):
        out = tmp_path / f"eval{k}"
        main(["--model", str(grid8_model), "--data", str(tmp_path / "synthetic-val"),
              str(tmp_path / "rows-test"), "--rounds", "1", "--max-new-tokens", "10",
              "--batch-size", str(2 + k), "--out", str(out), "--shuffle-control",
              "--rounds-curve"])
        runs.append(out)
    first = json.loads((runs[0] / "metrics.json").read_text())
    assert first == json.loads((runs[1] / "metrics.json").read_text())  # identical numbers
    res = first["results"]
    assert list(res) == ["synthetic/synthetic-val", "synthetic/rows-test"]
    assert res["synthetic/synthetic-val"]["per_expression"]["samples"] == 5
    assert res["synthetic/rows-test"]["per_expression"]["samples"] == 3
    for entry in res.values():  # an untrained model: every answer a parse failure, all scored
        m = entry["per_expression"]
        assert m["parse_failures"] == m["samples"]
    table = (runs[0] / "metrics.md").read_text()
    assert "| synthetic/synthetic-val (per expression) | 5 |" in table
    # the reading table and the shuffled-expression control (rows carry their scene objects)
    assert "referent acc." in table and "Shuffled-expression control" in table
    assert list(first["shuffled_expression"]) == list(res)
    # the rows carry their synthetic scenes: the retargeted control too, with a reader's rate
    assert list(first["retargeted_expression"]) == list(res) + ["minus_reader_rate"]
    assert "Retargeted-expression control" in table and "A reader of every expression" in table
    # no answer parses, so nothing is refined: the curve is flat at the proposals' figures
    assert [c["rounds"] for c in first["rounds_curve"]] == [0, 1]
    assert first["rounds_curve"][0]["gIoU"] == first["rounds_curve"][1]["gIoU"]
    assert "Refinement rounds (all rows): 0 rounds: gIoU" in table
    preds = [json.loads(line) for line in (runs[0] / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and {"id", "dataset", "stage1", "iou"} <= set(preds[0])
    # per-row referent hits (paired comparisons of reading): they average to the table's figure
    for name, entry in res.items():
        hits = [p["referent"] for p in preds if p["dataset"] == name and p["referent"] is not None]
        assert hits and all(isinstance(h, bool) for h in hits)
        assert np.mean(hits) == entry["per_expression"]["referent_accuracy"]
        picked = [p["picked"] for p in preds if p["dataset"] == name and p["picked"] is not None]
        assert len(picked) == len(hits)
        assert np.mean(picked) == entry["per_expression"]["picked_share"]


def test_a_recipes_validation_scenes_are_the_ones_its_run_builds(grid8_model, tmp_path):
    from pathlib import Path

    from rl.config import load_config
    from rl.data.splits import recipe_rows, records
    from rl.evaluate import main

    root = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base: {root / 'configs' / 'default.yaml'}\nmodel: {{grid_size: 8}}\n"
                      f"data: {{prompts: {root / 'configs' / 'default_prompts.yaml'}}}\n")
    cfg = load_config(recipe)
    rows = recipe_rows(cfg, "validation", 3)
    # the first 3 of the run's validation scenes (eval.curve_samples of them), not held-out ones
    assert [r["solution"] for r in rows] == [
        r["solution"] for r in recipe_rows(cfg, "validation")[:3]]
    assert [r["expression"] for r in rows] == [r.expression for r in records(cfg, "validation")[:3]]
    assert [r["solution"] for r in rows] != [r["solution"] for r in recipe_rows(cfg, "eval", 3)]
    out = main(["--model", str(grid8_model), "--recipe", str(recipe), "--n", "3",
                "--max-new-tokens", "6"])
    (name, entry), = out["results"].items()
    assert name.endswith("validation") and entry["per_expression"]["samples"] == 3


def test_asking_for_vllm_without_it_says_how_to_get_it(grid8_model, tmp_path):
    import pytest

    from rl.evaluate import VLLMGenerator

    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    with pytest.raises(RuntimeError, match="needs vLLM"):
        VLLMGenerator(grid8_model, None)


def test_shuffled_expressions_keep_kinds_and_scenes():
    from rl.evaluate import shuffled_rows

    prompts = load_prompts()
    rows = share_rows(40, prompts)
    out = shuffled_rows(rows, prompts, seed=1)
    assert out == shuffled_rows(rows, prompts, seed=1)
    by_id = {r["id"]: r for r in rows}
    for a, b in zip(rows, out, strict=True):
        assert (b["id"], b["kind"], b["solution"], b["objects"], b["targets"]) == \
               (a["id"], a["kind"], a["solution"], a["objects"], a["targets"])
        assert b["image"] is a["image"]
        donor = by_id[b["shuffled_from"]]
        assert donor["kind"] == a["kind"] and b["expression"] == donor["expression"]
        if sum(r["kind"] == a["kind"] for r in rows) > 1:
            assert donor["id"] != a["id"]
        parts = b["prompt"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image"]  # the image stays where it was
        assert parts[0]["text"] == prompts["stage1"].format(expression=b["expression"])
    # a permutation within each kind: every expression is used once
    for kind in {r["kind"] for r in rows}:
        assert sorted(r["expression"] for r in rows if r["kind"] == kind) == \
               sorted(r["expression"] for r in out if r["kind"] == kind)


def test_retargeted_expressions_keep_rows_and_name_one_object_of_their_own_scene():
    import pytest

    from rl.data.referring import SceneView, resolve
    from rl.evaluate import retargeted_rows

    prompts = load_prompts()
    rows = share_rows(40, prompts)
    out = retargeted_rows(rows, prompts, seed=1)
    assert out == retargeted_rows(rows, prompts, seed=1)
    for a, b in zip(rows, out, strict=True):
        assert (b["id"], b["kind"], b["solution"], b["objects"], b["targets"], b["scene"]) == \
               (a["id"], a["kind"], a["solution"], a["objects"], a["targets"], a["scene"])
        assert b["image"] is a["image"]
        views = [SceneView(**v) for v in json.loads(a["scene"])]
        assert resolve(b["expression"], views) == json.loads(b["retargeted_to"])
        parts = b["prompt"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image"]
        assert parts[0]["text"] == prompts["stage1"].format(expression=b["expression"])
        if a["kind"] in ("attribute", "relation", "superlative"):
            assert len(json.loads(b["retargeted_to"])) == 1
            # 1 / the objects its kind can name here (mostly all of them)
            assert 1 / len(views) <= b["reader_rate"] <= 1
        else:
            assert b["reader_rate"] is None
    with pytest.raises(ValueError, match="row r7: no 'scene'"):
        retargeted_rows([{**rows[0], "id": "r7", "scene": ""}], prompts)


def test_a_perfect_reader_falls_far_below_chance_when_shuffled_and_to_chance_retargeted():
    """Why the retargeted control: a model that resolves every expression exactly (the
    generator's own `resolve`) scores 1 on the real rows; on shuffled rows it declines or
    answers another object, far below chance; on retargeted rows it scores the chance rate."""
    from rl.data.referring import AmbiguousExpression, SceneView, resolve
    from rl.evaluate import retargeted_rows, shuffled_rows

    prompts = load_prompts()
    rows = share_rows(400, prompts, seed=5)

    def reader(row):
        views = [SceneView(**v) for v in json.loads(row["scene"])]
        try:
            got = resolve(row["expression"], views)
        except AmbiguousExpression:
            return 0.0
        return float(got == json.loads(row["targets"]))

    single = [k for k, r in enumerate(rows) if r["kind"] in ("attribute", "relation",
                                                            "superlative")]
    chance = np.mean([1 / len(json.loads(rows[k]["scene"])) for k in single])
    assert np.mean([reader(rows[k]) for k in single]) == 1.0
    shuffled = shuffled_rows(rows, prompts, seed=0)
    assert np.mean([reader(shuffled[k]) for k in single]) < chance - 0.15
    retargeted = retargeted_rows(rows, prompts, seed=0)
    assert abs(np.mean([reader(retargeted[k]) for k in single]) - chance) < 0.08
    assert abs(np.mean([retargeted[k]["reader_rate"] for k in single]) - chance) < 0.01


def test_scene_objects_bad_input_names_the_row():
    import pytest

    from rl.evaluate import scene_objects

    assert scene_objects("", "[]", 3) is None
    with pytest.raises(ValueError, match="row 3: field objects/targets"):
        scene_objects("not json", "[0]", 3)
    rows = list(build_grpo_stage1(synthetic_records(1, seed=4, objects=(2, 2)), load_prompts(),
                                  BuildConfig()))
    with pytest.raises(ValueError, match="row 7: field targets"):
        scene_objects(rows[0]["objects"], "[5]", 7)
    masks, named = scene_objects(rows[0]["objects"], rows[0]["targets"], 0)
    assert masks.shape == (2, 112, 112) and masks.dtype == bool


def test_rounds_curve_scores_each_round_from_one_pass():
    from rl.evaluate import at_round, curve_line, rounds_curve

    rows, exact = lone_shape_rows()
    off = Instance((0.0, 0.0, 0.05, 0.05))
    # Row 0: the proposal missed, one round fixed it. Row 1: nothing to refine (no instance).
    fixed = Prediction("", ["r"], [exact], True, before_rounds=[[off]])
    idle = Prediction("", [], [], True)
    assert at_round(fixed, 0).instances == [off] and at_round(fixed, 1).instances == [exact]
    assert at_round(idle, 1).instances == []
    ctx = RunContext(vocab=SpatialVocab(), codec=GridCodec(SpatialVocab()),
                     decoder_spec=RegionDecoder(), processor=None, prompts={})
    curve, per_round = rounds_curve([fixed, idle], rows, ctx, 1)
    assert [c["rounds"] for c in curve] == [0, 1]
    assert per_round[0][0].iou == 0.0 and per_round[1][0].iou > 0.95
    assert curve[1]["gIoU"] > curve[0]["gIoU"]
    assert curve_line(curve).startswith("0 rounds: gIoU 0.000")


def test_sampled_rewards_score_each_rows_samples_with_the_stage_weights(grid8_model):
    import pytest
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rewards.stage1 import format_reward, non_repeat_reward
    from rl.config import GRPOStageConfig
    from rl.evaluate import generate, sampled_rewards

    model = AutoModelForImageTextToText.from_pretrained(grid8_model).train()  # as in a trainer
    proc = AutoProcessor.from_pretrained(grid8_model)
    v = SpatialVocab(8)
    rows = list(build_grpo_stage1(synthetic_records(3, seed=2), load_prompts(),
                                  BuildConfig(vocab=v)))
    ctx = RunContext(vocab=v, codec=GridCodec(v), decoder_spec=RegionDecoder(), processor=proc,
                     prompts={})
    stage = GRPOStageConfig(temperature=1.5, rewards={"format": 1.0, "non_repeat": 0.5})
    state = torch.get_rng_state()
    got = sampled_rewards(model, rows, ctx, stage, "grpo_stage1", samples=4, seed=7,
                          max_new_tokens=10, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert model.training  # left in the mode it was in
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(7)
        texts = generate(model, proc, [r["prompt"] for r in rows], [r["image"] for r in rows],
                         10, 2, temperature=1.5, samples=4)
    assert len(set(texts)) > 3  # sampled, not greedy
    per = [f + 0.5 * n for f, n in zip(format_reward(texts), non_repeat_reward(texts),
                                       strict=True)]
    assert got == pytest.approx([np.mean(per[4 * i: 4 * i + 4]) for i in range(3)])
    assert got == sampled_rewards(model, rows, ctx, stage, "grpo_stage1", samples=4, seed=7,
                                  max_new_tokens=10, batch_size=2)
    with pytest.raises(ValueError, match="greedy"):
        generate(model, proc, [rows[0]["prompt"]], [rows[0]["image"]], samples=2)


def test_sampled_rewards_of_stage2_refine_the_policys_own_proposal(monkeypatch):
    # Stage 2's fixed-prompt reward with a scripted policy: a greedy proposal (a point inside
    # the named object), the request, then two sampled refinements of it (keep the point;
    # delete it), sampled at the stage's temperature and min_p and scored with the proposal
    # as `stage1`: keep 1 + 0.5 * 1, delete 1 + 0.5 * (-1), a mean of 1.0 per row.
    import pytest

    import rl.evaluate
    from rewards.solution import parse_solution
    from rl.config import GRPOStageConfig
    from rl.data.samples import assistant_turn, user_turn
    from tokens.decoders import point_in_mask

    v = SpatialVocab(8)
    prompts = load_prompts()
    rows = list(build_grpo_stage1(synthetic_records(2, seed=4, kinds={"attribute": 1.0}),
                                  prompts, BuildConfig(vocab=v)))

    def inside(row):
        mask = parse_solution(row["solution"]).masks[0]
        cell = next((i, j) for i in range(8) for j in range(8)
                    if point_in_mask(mask, *v.cell_center(i, j)))
        return f"<think></think><answer>\n<seg>{v.grid_token(*cell)}</seg>\n</answer>"

    proposals = [inside(r) for r in rows]
    keep = "<think></think><answer>\n<offset><seg><off_0_0></seg></offset>\n</answer>"
    delete = "<think></think><answer>\n<offset><seg><DELETE></seg></offset>\n</answer>"
    calls = []

    def scripted(model, processor, convs, images, max_new_tokens=64, batch_size=32,
                 temperature=None, samples=1, min_p=0.0):
        calls.append((temperature, samples, min_p, max_new_tokens))
        if temperature is None:  # the greedy proposal
            assert list(convs) == [r["prompt"] for r in rows]
            return list(proposals)
        for conv, row, prop in zip(convs, rows, proposals, strict=True):
            assert conv == list(row["prompt"]) + [assistant_turn(prop),
                                                  user_turn(prompts["stage2"])]
        return [t for _ in convs for t in (keep, delete)]

    class Policy:
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    monkeypatch.setattr(rl.evaluate, "generate", scripted)
    ctx = RunContext(vocab=v, codec=GridCodec(v), decoder_spec=RegionDecoder(), processor=None,
                     prompts=prompts)
    stage = GRPOStageConfig(temperature=1.2, min_p=0.05,
                            rewards={"refine_format": 1.0, "point_refine": 0.5})
    policy = Policy()
    got = rl.evaluate.sampled_rewards(policy, rows, ctx, stage, "grpo_stage2", samples=2,
                                      seed=5, max_new_tokens=8, batch_size=2,
                                      proposal_tokens=12)
    assert got == pytest.approx([1.0, 1.0])
    assert calls == [(None, 1, 0.0, 12), (1.2, 2, 0.05, 8)] and policy.training


def test_targets_score_the_ceiling_the_codec_leaves(tmp_path):
    # `--targets`: no model, the recipe's cold-start answers scored as a model's. For rle_text
    # that is each ground-truth mask's n x n map upsampled, computed here the other way round.
    from pathlib import Path

    import pytest
    from pycocotools import mask as mask_utils

    from rl.config import load_config
    from rl.data.splits import recipe_rows
    from rl.evaluate import main
    from tokens.decoders.base import resize_mask
    from tokens.text_codecs import RleTextCodec

    root = Path(__file__).resolve().parents[1]
    recipe = root / "configs" / "codecs" / "sft" / "rle_text.yaml"
    out = main(["--targets", "--recipe", str(recipe), "--split", "eval", "--n", "20",
                "--out", str(tmp_path)])
    (entry,) = out["results"].values()
    coarse = RleTextCodec(load_config(recipe).codec_params["size"])
    ious = []
    for row in recipe_rows(load_config(recipe), "eval", 20):
        masks = [mask_utils.decode(i["mask"]).astype(bool)
                 for i in json.loads(row["solution"])["instances"]]
        if not masks:
            ious.append(1.0)  # nothing named, nothing answered
            continue
        h, w = masks[0].shape
        gt = np.any(masks, axis=0)
        pred = np.any([resize_mask(coarse.coarse_of(m), h, w) for m in masks], axis=0)
        ious.append((gt & pred).sum() / (gt | pred).sum())
    assert entry["per_expression"]["gIoU"] == pytest.approx(np.mean(ious))
    assert 0.3 < entry["per_expression"]["gIoU"] < 0.95  # an 8x8 map loses much, not all
    assert (tmp_path / "metrics.json").is_file()
    with pytest.raises(SystemExit):  # a model's options make no sense without a model
        main(["--targets", "--recipe", str(recipe), "--model", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--targets", "--split", "eval"])


def test_predict_continues_earlier_rounds_as_if_generated_again():
    from rl.evaluate import at_round, predict

    v = SpatialVocab(8)
    rows = list(build_grpo_stage1(synthetic_records(3, seed=2), load_prompts(),
                                  BuildConfig(vocab=v)))
    ctx = RunContext(vocab=v, codec=GridCodec(v), decoder_spec=RegionDecoder(), processor=None,
                     prompts={"stage2": "Refine."})
    calls = []

    def scripted(convs, images, max_new_tokens):
        """A proposal per row (none for the third row); each round moves the point one way,
        depending on the round."""
        calls.append(len(convs))
        out = []
        for conv, image in zip(convs, images, strict=True):
            turns = sum(t["role"] == "assistant" for t in conv)
            if turns == 0:
                out.append("<think></think>\n<answer>\n" + (
                    "" if image is rows[2]["image"] else
                    "<box><grid_1_1><grid_4_4></box><seg><grid_2_2></seg>\n") + "</answer>")
            else:
                op = ["<off_1_0>", "<off_0_1>", "<off_-1_0>"][turns - 1]
                out.append("<think></think>\n<answer>\n<offset><box><off_0_0><off_0_0></box>"
                           "<seg>" + op + "</seg></offset>\n</answer>")
        return out

    prompts, images = [r["prompt"] for r in rows], [r["image"] for r in rows]
    full = predict(None, prompts, images, ctx, EvalSettings(rounds=3, generator=scripted))
    assert calls == [3, 2, 2, 2]  # the proposal, then three rounds of the two with a proposal
    calls.clear()
    one = predict(None, prompts, images, ctx, EvalSettings(rounds=1, generator=scripted))
    kept = [(p.refinements[:], p.instances[:]) for p in one]
    calls.clear()
    more = predict(None, prompts, images, ctx, EvalSettings(rounds=3, generator=scripted),
                   start=one)
    assert calls == [2, 2]  # rounds 2 and 3 only
    assert [(p.refinements, p.instances) for p in one] == kept  # the start is not changed
    for a, b in zip(full, more, strict=True):
        assert (a.stage1, a.refinements, a.instances, a.parsed) == (
            b.stage1, b.refinements, b.instances, b.parsed)
        assert [at_round(a, r).instances for r in range(4)] == [
            at_round(b, r).instances for r in range(4)]
    assert full[0].instances != full[0].before_rounds[0]  # the rounds moved something
