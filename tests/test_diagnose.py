import json

import numpy as np
import pytest

from rl.data.common import Record
from rl.data.referring import scene_json, synthetic_records
from rl.data.samples import caption_text, scene_text
from rl.data.scenes import SceneObject
from rl.diagnose import (
    attribute_table,
    caption_table,
    inventory_table,
    refinement_table,
    telling_attribute,
)
from tokens import SpatialVocab, serialize_answer
from tokens.answer import Instance


def _scene(names, target=0):
    objs = []
    for k, (colour, shape) in enumerate(names):
        m = np.zeros((112, 112), bool)
        m[10:30, 10 + 25 * k:30 + 25 * k] = True
        objs.append(SceneObject(shape, colour, m, (10 + 25 * k, 10, 30 + 25 * k, 30)))
    return Record(id=f"s{len(names)}", source="synthetic", image=np.zeros((112, 112, 3), np.uint8),
                  expression="the x", solution={}, kind="attribute",
                  extra={"scene": scene_json(objs), "targets": [target],
                         "num_objects": len(objs)})


def test_what_tells_the_named_object_apart():
    assert telling_attribute(_scene([("red", "circle"), ("blue", "circle")])) == "colour"
    assert telling_attribute(_scene([("red", "circle"), ("red", "star")])) == "shape"
    assert telling_attribute(_scene([("red", "circle"), ("red", "star"),
                                     ("blue", "circle")])) == "both"


def test_attribute_table_counts_the_named_object_only():
    recs = [_scene([("red", "circle"), ("blue", "circle")]),           # colour, picked right
            _scene([("red", "circle"), ("red", "star")], target=1),    # shape, picked other
            _scene([("red", "circle"), ("red", "star"), ("blue", "circle")])]  # both, none
    table = attribute_table(recs, [0, 0, None])
    assert table["needs colour"] == {"right": 1.0, "rows": 1}
    assert table["needs shape"] == {"right": 0.0, "rows": 1}
    assert table["needs both"] == {"right": 0.0, "rows": 1}
    assert table["2 objects"] == {"right": 0.5, "rows": 2}


def test_caption_table_by_hand():
    recs = [_scene([("red", "circle"), ("blue", "star")]),
            _scene([("red", "circle"), ("blue", "star")], target=1)]
    assert [caption_text(r) for r in recs] == ["the red circle", "the blue star"]
    table = caption_table(recs, ["the red circle", "the red square"])
    assert (table["colour"], table["shape"], table["both"]) == (0.5, 0.5, 0.5)
    assert table["shape_confusion"] == {"circle -> circle": 1, "star -> square": 1}


def test_inventory_table_of_perfect_and_wrong_answers():
    v = SpatialVocab()
    recs = [r for r in synthetic_records(8, seed=5, objects=(2, 3), kinds={"attribute": 1.0},
                                         distractors="share")]

    def answer(rec, k):
        from pycocotools import mask as mask_utils

        rle = json.loads(rec.extra["objects"])[k]
        x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})
        H, W = rle["size"]
        box = (x / W, y / H, (x + w) / W, (y + h) / H)
        return serialize_answer([Instance(box=box)], think=scene_text(rec, v), vocab=v)

    right = [answer(r, r.extra["targets"][0]) for r in recs]
    table = inventory_table(recs, right, v)
    assert table["entries_counted_right"] == table["all_names_right"] == 1.0
    assert table["entry_box_exact"] == 1.0
    assert table["answer_copies_an_entry"] == table["answer_copies_the_named_entry"] == 1.0
    wrong = [answer(r, 1 - r.extra["targets"][0] if r.extra["targets"][0] < 2 else 0)
             for r in recs]
    table = inventory_table(recs, wrong, v)
    assert table["answer_copies_an_entry"] == 1.0 and table["answer_copies_the_named_entry"] == 0.0
    assert inventory_table(recs[:1], ["garbage"], v)["answer_copies_an_entry"] == 0.0


@pytest.mark.parametrize("what", ["attributes", "captions", "inventory", "refinements",
                                  "sharpening", "confidence"])
def test_the_cli_runs_on_a_checkpoint(grid8_model, tmp_path, what):
    import shutil

    from rl.config import load_config, to_dict
    from rl.diagnose import main

    run = tmp_path / "run"
    shutil.copytree(grid8_model, run / "sft")
    extra = []
    if what == "sharpening":  # the same checkpoint before and after: nothing changed
        extra = ["--before", "sft", "--stage", "sft", "--samples", "2"]
    cfg = load_config(None, {"model": {"grid_size": 8}, "output_dir": str(run),
                             "grpo_stage2": {"rewards": {"refine_format": 1.0,
                                                         "point_refine": 1.0}}})
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    result = main([what, str(run), "--n", "4", "--objects", "2", "2", "--max-new-tokens", "8",
                   *extra])
    assert result["what"] == what
    if what == "attributes":
        assert sum(v["rows"] for k, v in result.items()
                   if isinstance(v, dict) and k.startswith("needs")) == 4
    else:
        assert result["rows"] == 4
    if what == "sharpening":
        r = result["reward"]
        assert r["before_sampled"] == r["after_sampled"] and r["before_greedy"] == r["after_greedy"]
        assert result["after_greedy_minus_before_greedy"]["difference"] == 0.0
        d = result["before_greedy_minus_before_sampled"]["difference"]
        assert d == pytest.approx(r["before_greedy"] - r["before_sampled"])
    if what == "confidence":
        assert result["answer_nothing_below"]["gIoU_change"]["samples"] == 2
    if what == "refinements":
        g = result["gIoU"]
        assert g["oracle_round"] >= g["proposal"] - 1e-9  # the oracle never spoils a proposal


def test_refinement_table_by_hand():
    from tokens.refine import parse_refinement, serialize_refinement

    v = SpatialVocab(grid_size=8)
    proposal = [Instance((0.1, 0.1, 0.4, 0.4), [(0.2, 0.2), (0.3, 0.3)])]
    oracle = [([(0, 0), (1, 0)], [(0, 0), None])]          # keep one point, delete the other
    mine = parse_refinement(serialize_refinement([([(0, 0), (0, 0)], [(0, 0), (0, 0)])],
                                                 vocab=v), proposal, v)  # keeps everything
    table = refinement_table([mine, None], [oracle, oracle])
    assert table["lines"] == {"well_formed": 1, "malformed or missing": 1}
    assert table["points"]["keep"] == {"n": 1, "keep": 1.0, "move": 0.0, "delete": 0.0}
    assert table["points"]["delete"] == {"n": 1, "keep": 1.0, "move": 0.0, "delete": 0.0}
    assert table["points"]["move"]["n"] == 0
    assert table["points_as_oracle"] == 0.5
    assert table["box_corners"] == 2 and table["box_corners_as_oracle"] == 0.5


def test_confidence_table_by_hand():
    from rl.diagnose import confidence_table

    # Tuning half (rows 0-2): a right proposal, a no-target row's proposal, no proposal.
    # Test half (rows 3-5): a no-target proposal, a right one just under the threshold, another
    # no-target proposal.
    conf = [-0.1, -2.0, None, -3.0, -0.2, -2.5]
    ious = [1.0, 0.0, 0.0, 0.0, 0.9, 0.0]
    none = [False, True, True, True, False, True]
    t = confidence_table(conf, ious, none)
    assert (t["rows"], t["with_proposal"], t["wrong_proposals"], t["no_target_proposals"]) == \
        (6, 5, 3, 3)
    # Low confidence ranks every wrong (and no-target) proposal above every right one.
    assert t["low_confidence_finds_wrong"]["auc"] == 1.0
    assert t["low_confidence_finds_no_target"]["auc"] == 1.0
    a = t["answer_nothing_below"]
    # Below -0.1 only row 1 answers nothing on the tuning half: +1 over 3 rows; below the
    # highest value + 1 row 0 is lost too (gain 0); below -2.0 nothing changes.
    assert a["threshold"] == -0.1 and a["tuning_gain"] == pytest.approx(1 / 3)
    # On the test half all three answer nothing: +1, -0.9, +1.
    assert a["deleted"] == 3
    assert a["gIoU_change"]["difference"] == pytest.approx((1 - 0.9 + 1) / 3)
    # Where answering nothing never pays, nothing is deleted.
    flat = confidence_table([-1.0, -2.0, -1.0, -2.0], [1.0, 0.0, 1.0, 0.0], [False] * 4)
    assert flat["answer_nothing_below"]["threshold"] is None
    assert flat["answer_nothing_below"]["deleted"] == 0


def test_answer_logprobs_are_the_greedy_decoder_s_own(grid8_model):
    # Teacher-forced log-probabilities of a greedy answer equal the scores generate() gave its
    # tokens: the positions are aligned (no off-by-one), and only the asked-for ids are kept.
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.diagnose import answer_logprobs

    proc = AutoProcessor.from_pretrained(grid8_model)
    model = AutoModelForImageTextToText.from_pretrained(grid8_model, use_kernels=False).eval()
    image = np.full((112, 112, 3), 90, np.uint8)
    from PIL import Image

    pil = Image.fromarray(image)
    prompt = [{"role": "user", "content": [{"type": "image"},
                                           {"type": "text", "text": "Find the red circle."}]}]
    head = proc.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    enc = proc(text=[head], images=[pil], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    new = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
    expected = [float(torch.log_softmax(s[0].float(), -1)[i]) for s, i in zip(out.scores, new)]
    text = proc.tokenizer.decode(new, skip_special_tokens=False)
    assert proc(text=[head + text], images=[pil], return_tensors="pt")["input_ids"][0].tolist()[
        enc["input_ids"].shape[1]:] == new  # the decoded answer tokenizes back to itself
    got = answer_logprobs(model, proc, [prompt], [pil], [text], set(new))
    assert got[0] == pytest.approx(expected, abs=1e-4)
    keep = {new[0]}
    assert answer_logprobs(model, proc, [prompt], [pil], [text], keep)[0] == pytest.approx(
        [e for e, i in zip(expected, new) if i in keep], abs=1e-4)
