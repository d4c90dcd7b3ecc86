"""Evaluation on the tiny model: deterministic, unparsable answers scored as empty."""

import numpy as np

from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_grpo_stage1, load_prompts
from rl.evaluate import Prediction, evaluate_rows, score
from tokens import Instance, SpatialVocab
from tokens.decoders import RegionDecoder


def test_scoring_predictions_by_hand():
    recs = list(synthetic_records(2, seed=1, objects=(1, 1), kinds={"attribute": 1.0}))
    rows = list(build_grpo_stage1(recs, load_prompts(), BuildConfig()))
    import json

    sol = json.loads(rows[0]["solution"])
    x1, y1, x2, y2 = sol["instances"][0]["box"]
    w, h = sol["size"]
    good = Prediction("", [], [Instance((x1 / w, y1 / h, x2 / w, y2 / h))], True)
    failed = Prediction("garbage", [], [], False)
    scores = score([good, failed], [rows[0]["image"], rows[1]["image"]],
                   [rows[0]["solution"], rows[1]["solution"]], RegionDecoder())
    assert scores[0].iou > 0.95 and scores[0].box_iou == 1.0
    assert scores[1].iou == 0.0 and not scores[1].parsed


def test_evaluating_twice_gives_identical_numbers(tiny_model_dirs, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tokens.extend import main as extend

    extend(["--model", str(tiny_model_dirs["tied"]), "--out", str(tmp_path), "--grid-size", "8"])
    model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    proc = AutoProcessor.from_pretrained(tmp_path)
    v = SpatialVocab(8)
    rows = list(build_grpo_stage1(synthetic_records(6, seed=2), load_prompts(),
                                  BuildConfig(vocab=v)))
    a, pa = evaluate_rows(model, proc, rows, RegionDecoder(), v, "Refine.", rounds=1,
                          max_new_tokens=12, batch_size=4)
    b, pb = evaluate_rows(model, proc, rows, RegionDecoder(), v, "Refine.", rounds=1,
                          max_new_tokens=12, batch_size=3)
    assert a == b and [p.stage1 for p in pa] == [p.stage1 for p in pb]
    assert a["samples"] == 6 and a["parse_failures"] == 6  # untrained: scored, not skipped
    assert np.isclose(a["gIoU"], np.mean([0.0] * 6)) or a["no_target_samples"] > 0
