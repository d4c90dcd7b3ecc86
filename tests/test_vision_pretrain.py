import json

import numpy as np
import pytest
import torch

from rl.data.scenes import COLOURS, SHAPES
from rl.vision_pretrain import MIN_COVER, ObjectAttributes, object_examples


def test_object_examples_pool_the_tokens_each_object_covers():
    examples = object_examples(12, seed=3, image_size=112, tokens_per_side=4)
    assert len(examples) == 12
    for ex in examples:
        n = len(ex["shape"])
        assert 2 <= n <= 4 and len(ex["colour"]) == n and ex["pool"].shape == (n, 16)
        assert np.allclose(ex["pool"].sum(axis=1), 1.0) and (ex["pool"] >= 0).all()
        assert all(0 <= s < len(SHAPES) for s in ex["shape"])
        assert all(0 <= c < len(COLOURS) for c in ex["colour"])


def test_pool_weights_by_hand():
    """One object covering token (0, 0) fully and a quarter of token (0, 1); another covering
    a tenth of token (3, 3) only (a sliver: its best token, alone)."""
    from unittest import mock

    from rl.data.common import Record
    from rl.data.referring import objects_json, scene_json
    from rl.data.scenes import SceneObject

    a = np.zeros((112, 112), bool)
    a[:28, :28] = True
    a[:28, 28:35] = True  # 7 of 28 columns of token (0, 1): a quarter
    b = np.zeros((112, 112), bool)
    b[84:112, 84:87] = True  # 3 of 28 columns: below a quarter
    objs = [SceneObject("square", "red", a, (0, 0, 35, 28)),
            SceneObject("circle", "blue", b, (84, 84, 87, 112))]
    rec = Record(id="hand", source="synthetic", image=np.zeros((112, 112, 3), np.uint8),
                 expression="the red square", solution={}, kind="attribute",
                 extra={"scene": scene_json(objs), "objects": objects_json(objs)})
    with mock.patch("rl.data.referring.synthetic_records", return_value=iter([rec])):
        (ex,) = object_examples(1, seed=0, image_size=112, tokens_per_side=4)
    want_a = np.zeros(16)
    want_a[0], want_a[1] = 1.0, MIN_COVER
    assert np.allclose(ex["pool"][0], want_a / want_a.sum())
    want_b = np.zeros(16)
    want_b[15] = 1.0
    assert np.allclose(ex["pool"][1], want_b)
    assert ex["shape"] == [SHAPES.index("square"), SHAPES.index("circle")]
    assert ex["colour"] == [list(COLOURS).index("red"), list(COLOURS).index("blue")]
    assert ex["log_area"] == pytest.approx([np.log((28 * 28 + 28 * 7) / 112 ** 2),
                                            np.log(28 * 3 / 112 ** 2)])
    # per token: the log area of the object covering it most, where one covers a quarter
    with mock.patch("rl.data.referring.synthetic_records", return_value=iter([rec])):
        (ex,) = object_examples(1, seed=0, image_size=112, tokens_per_side=4, token_sizes=True)
    want = np.full(16, np.nan)
    want[0] = want[1] = ex["log_area"][0]  # token 15: b covers a tenth of it, below a quarter
    assert np.allclose(ex["token_log_area"], want, equal_nan=True)


def test_collator_places_each_scene_block_on_its_own_tokens(tiny_model_dirs):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dirs["tied"])
    examples = object_examples(3, seed=4, image_size=112, tokens_per_side=4)
    batch = ObjectAttributes(proc.image_processor)(examples)
    n = [len(e["shape"]) for e in examples]
    assert batch["pool"].shape == (sum(n), 48)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]] * 3
    rows = np.cumsum([0] + n)
    for k, e in enumerate(examples):
        block = batch["pool"][rows[k]:rows[k + 1]]
        assert torch.allclose(block[:, 16 * k:16 * (k + 1)], torch.from_numpy(e["pool"]).float())
        assert block.sum() == pytest.approx(n[k])  # nothing outside its own tokens
    assert batch["shape"].tolist() == [s for e in examples for s in e["shape"]]


def test_pretraining_trains_only_the_tower_and_sets_the_token_norm(tmp_path):
    from transformers import AutoModelForImageTextToText

    from rl.models import build_tiny_qwen2_5_vl

    plain = build_tiny_qwen2_5_vl(tmp_path / "plain", seed=1)
    eyes = build_tiny_qwen2_5_vl(tmp_path / "eyes", seed=1,
                                 vision_pretrain={"steps": 30, "scenes": 40, "output_norm": 1.0})
    figures = json.loads((eyes / "vision_pretrain.json").read_text())
    # 30 steps: colour is learnt (the head reads it from the pooled tokens), the loss falls
    assert figures["held_out_after"]["colour"] > figures["held_out_before"]["colour"] + 0.3
    assert figures["loss"][-1] < figures["loss"][0]
    a = AutoModelForImageTextToText.from_pretrained(plain)
    b = AutoModelForImageTextToText.from_pretrained(eyes)
    pb = dict(b.named_parameters())
    for name, p in a.named_parameters():
        same = torch.equal(p, pb[name])
        assert same == (".visual." not in f".{name}"), name
    images = [e["image"] for e in object_examples(8, seed=9, image_size=112, tokens_per_side=4)]
    from transformers import AutoProcessor

    inputs = AutoProcessor.from_pretrained(eyes).image_processor(images=images,
                                                                 return_tensors="pt")
    with torch.no_grad():
        tokens = b.model.visual(inputs["pixel_values"],
                                grid_thw=inputs["image_grid_thw"]).pooler_output
    assert float(tokens.norm(dim=-1).mean()) == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize("option, figure", [
    ("size", "size_correlation"),              # from an object's pooled tokens
    ("size_tokens", "token_size_correlation"),  # from every token it covers most
])
def test_size_regression_is_trained_only_when_asked(tmp_path, option, figure):
    from rl.models import build_tiny_qwen2_5_vl

    sized = build_tiny_qwen2_5_vl(tmp_path / "sized", seed=1, vision_pretrain={
        "steps": 60, "scenes": 80, "output_norm": 1.0, option: True})
    figures = json.loads((sized / "vision_pretrain.json").read_text())
    before, after = figures["held_out_before"], figures["held_out_after"]
    # the head learns to order the objects by size
    assert after[figure] > max(before[figure], 0.0) + 0.3
    other = {"size_correlation", "token_size_correlation"} - {figure}
    assert not other & set(after)  # each size head is its own option
    plain = build_tiny_qwen2_5_vl(tmp_path / "plain", seed=1, vision_pretrain={
        "steps": 2, "scenes": 8, "output_norm": 1.0})
    assert figure not in json.loads((plain / "vision_pretrain.json").read_text())[
        "held_out_after"]


def test_pretraining_rate_schedule_is_the_configured_one(tmp_path):
    from rl.models import build_tiny_qwen2_5_vl

    rates = {}
    for schedule in ("constant", "cosine"):
        out = build_tiny_qwen2_5_vl(tmp_path / schedule, seed=1, vision_pretrain={
            "steps": 20, "scenes": 16, "learning_rate": 3e-3, "lr_scheduler_type": schedule})
        rates[schedule] = json.loads((out / "vision_pretrain.json").read_text())["learning_rate"]
    assert len(rates["constant"]) == 10 and set(rates["constant"]) == {3e-3}
    cosine = rates["cosine"]
    assert cosine[0] == pytest.approx(3e-3, rel=0.05) and cosine[-1] < 1e-4
    assert all(a > b for a, b in zip(cosine, cosine[1:]))


def test_unknown_pretraining_keys_fail(tmp_path):
    from rl.models import build_tiny_qwen2_5_vl

    with pytest.raises(ValueError, match=r"model.tiny.vision_pretrain: unknown keys \['step'\]"):
        build_tiny_qwen2_5_vl(tmp_path / "m", vision_pretrain={"steps": 5, "step": 5})


def test_object_examples_built_over_processes_are_the_one_process_list():
    import numpy as np

    one = object_examples(450, seed=5, image_size=112, tokens_per_side=4)
    two = object_examples(450, seed=5, image_size=112, tokens_per_side=4, workers=2)
    assert len(one) == len(two) == 450
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        assert np.array_equal(a["pool"], b["pool"])
        assert (a["shape"], a["colour"]) == (b["shape"], b["colour"])
