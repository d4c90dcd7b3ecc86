import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rewards.solution import parse_solution
from rl.data.referring import (
    AmbiguousExpression,
    SceneView,
    make_expression,
    resolve,
    retarget,
    synthetic_records,
)
from rl.data.scenes import draw_scene


def views(*objs):
    return [SceneView(*o) for o in objs]


SCENE = views(("circle", "red", 0.05, 0.2, 0.5), ("square", "blue", 0.02, 0.8, 0.5),
              ("circle", "blue", 0.021, 0.5, 0.1))


@pytest.mark.parametrize("text, targets", [
    ("the red circle", [0]), ("the square", [1]), ("the red shape", [0]),
    ("the blue circle", [2]), ("the purple star", []), ("all circles", [0, 2]),
    ("all blue shapes", [1, 2]), ("the largest shape", [0]), ("the leftmost shape", [0]),
    ("the topmost circle", [2]), ("the circle left of the blue square", []),
    ("the square right of the red circle", [1]), ("the blue shape below the blue circle", [1]),
])
def test_resolve_by_hand(text, targets):
    try:
        got = resolve(text, SCENE)
    except AmbiguousExpression:
        got = None
    if text == "the circle left of the blue square":
        assert got is None  # two circles are left of the square
    else:
        assert got == targets


@pytest.mark.parametrize("text", ["the circle", "the blue shape", "the smallest shape",
                                  "the blue shape right of the red circle"])
def test_ambiguous_expressions_are_refused(text):
    with pytest.raises(AmbiguousExpression):
        resolve(text, SCENE)


def test_unknown_text():
    with pytest.raises(ValueError, match="not a synthetic expression"):
        resolve("the big red thing", SCENE)


def test_deterministic_by_seed():
    a = list(synthetic_records(20, seed=5))
    b = list(synthetic_records(20, seed=5))
    c = list(synthetic_records(20, seed=6))
    assert [r.expression for r in a] == [r.expression for r in b]
    assert all((x.image == y.image).all() for x, y in zip(a, b, strict=True))
    assert [r.solution for r in a] == [r.solution for r in b]
    assert [r.expression for r in a] != [r.expression for r in c]
    # Record i depends on (seed, i) only: a longer run starts the same.
    assert [r.expression for r in synthetic_records(5, seed=5)] == [r.expression for r in a[:5]]


_PRINT_RECORDS = """
import hashlib
from rl.data.referring import synthetic_records
for r in synthetic_records(300, seed=3, objects=(2, 5), distractors="share"):
    print(r.expression, r.solution, hashlib.sha256(r.image.tobytes()).hexdigest()[:12])
"""


def test_records_do_not_depend_on_the_hash_seed():
    # Two processes with different string-hash seeds draw the same scenes and expressions (a
    # set of names iterates in an order that follows the hash seed).
    root = str(Path(__file__).resolve().parents[1])
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed,
               "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        outs.append(subprocess.run([sys.executable, "-c", _PRINT_RECORDS], env=env, check=True,
                                   capture_output=True, text=True).stdout)
    assert outs[0].count("\n") == 300 and outs[0] == outs[1]


def test_every_expression_resolves_to_its_targets():
    recs = list(synthetic_records(300, seed=2))
    kinds = {r.kind for r in recs}
    assert kinds == {"attribute", "relation", "superlative", "multi", "none"}
    for r in recs:
        scene = [SceneView(**v) for v in json.loads(r.extra["scene"])]
        targets = resolve(r.expression, scene)
        gt = parse_solution(r.solution)
        assert len(gt) == len(targets), r.expression
        if r.kind == "none":
            assert len(gt) == 0
        elif r.kind == "multi":
            assert len(gt) >= 2
        else:
            assert len(gt) == 1


def test_kind_mix_and_sizes_are_parameters():
    recs = list(synthetic_records(40, seed=0, image_size=96, objects=(2, 2),
                                  kinds={"attribute": 1.0}))
    assert {r.kind for r in recs} == {"attribute"}
    assert all(r.image.shape == (96, 96, 3) and r.extra["num_objects"] == 2 for r in recs)
    with pytest.raises(ValueError, match="unknown expression kinds"):
        list(synthetic_records(1, kinds={"colour": 1.0}))


def test_textures_keep_one_colour_region_per_object():
    from tokens.decoders import RegionDecoder

    rng = np.random.default_rng(4)
    image, objs = draw_scene(rng, (128, 128), 3, textures=("noise", "stripes"))
    labels, _ = RegionDecoder().embedding(image)
    for o in objs:
        assert len(np.unique(labels[o.mask_hw])) == 1
        assert (image[o.mask_hw] != image[o.mask_hw][0]).any()  # textured, not flat


def test_make_expression_returns_none_when_impossible():
    rng = np.random.default_rng(0)
    _, objs = draw_scene(rng, (96, 96), 1)
    assert make_expression(objs, "multi", rng) is None


def test_confusable_pairs_share_the_anchors_colour_or_shape():
    from rl.data.scenes import confusable_pairs

    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 5))
        pairs = confusable_pairs(rng, n)
        (shape, colour), others = pairs[0], pairs[1:]
        assert len(set(pairs)) == n
        assert all((s == shape) != (c == colour) for s, c in others)  # exactly one shared
        if n >= 3:
            assert any(c == colour for _, c in others) and any(s == shape for s, _ in others)


def test_the_distractor_rule_holds_on_every_row():
    """With distractors="share": a single-target row's every other object shares the named
    object's colour or shape, and from three objects on neither attribute alone picks it out;
    a no-target row names an absent object sharing the scene's shapes or colours."""
    from rl.data.referring import SINGLE_TARGET_KINDS

    recs = list(synthetic_records(300, seed=9, objects=(2, 4), distractors="share"))
    assert {r.kind for r in recs} == {"attribute", "relation", "superlative", "multi", "none"}
    assert {r.extra["num_objects"] for r in recs} == {2, 3, 4}
    for r in recs:
        scene = [SceneView(**v) for v in json.loads(r.extra["scene"])]
        targets = r.extra["targets"]
        assert resolve(r.expression, scene) == targets
        assert len(json.loads(r.extra["objects"])) == len(scene)
        if r.kind in SINGLE_TARGET_KINDS:
            (t,) = targets
            others = [v for k, v in enumerate(scene) if k != t]
            same_colour = [v for v in others if v.colour == scene[t].colour]
            same_shape = [v for v in others if v.shape == scene[t].shape]
            assert all(v in same_colour or v in same_shape for v in others), r.expression
            if len(scene) >= 3:
                assert same_colour and same_shape, r.expression
        elif r.kind == "none":
            shape, colour = r.expression.removeprefix("the ").split(" ")[::-1]
            assert any(v.shape == shape for v in scene) or any(v.colour == colour
                                                                for v in scene)
    with pytest.raises(ValueError, match="unknown distractors"):
        list(synthetic_records(1, distractors="some"))


@pytest.mark.parametrize("mode,read,same,limit", [("colour", "colour", "shape", 9),
                                                   ("shape", "shape", "colour", 6)])
def test_one_attribute_distractors_leave_only_that_attribute_to_read(mode, read, same, limit):
    """distractors="colour" (one shape in distinct colours) and "shape" (one colour in distinct
    shapes): an attribute row names the anchor by the attribute that differs."""
    recs = list(synthetic_records(100, seed=4, objects=(2, 4), kinds={"attribute": 1.0},
                                  distractors=mode))
    for r in recs:
        scene = [SceneView(**v) for v in json.loads(r.extra["scene"])]
        assert len({getattr(v, same) for v in scene}) == 1
        assert len({getattr(v, read) for v in scene}) == len(scene)
        (t,) = r.extra["targets"]
        assert resolve(r.expression, scene) == [t]
        assert getattr(scene[t], read) in r.expression.split()
    with pytest.raises(ValueError, match=f"need {limit} {read}s"):
        list(synthetic_records(1, objects=(limit, limit), distractors=mode))


def test_random_scenes_are_unchanged_by_the_distractor_option():
    a = list(synthetic_records(10, seed=5))
    b = list(synthetic_records(10, seed=5, distractors="any"))
    assert [r.expression for r in a] == [r.expression for r in b]
    assert all((x.image == y.image).all() for x, y in zip(a, b, strict=True))


def test_superlative_order_follows_the_word_weights():
    from rl.data.referring import superlative_order

    texts = ["the largest shape", "the smallest shape", "the leftmost shape", "the largest star"]
    rng = np.random.default_rng(0)
    firsts = [texts[superlative_order(texts, {"smallest": 8.0, "largest": 1.0}, rng)[0]]
              for _ in range(2000)]
    # "leftmost" weighs 0 (left out): never tried; "smallest" first 8 times in 10 (one
    # expression of weight 8 against two of weight 1).
    assert "the leftmost shape" not in firsts
    assert abs(firsts.count("the smallest shape") / 2000 - 0.8) < 0.03
    order = superlative_order(texts, {"smallest": 8.0, "largest": 1.0}, rng)
    assert sorted(order) == [0, 1, 3]


@pytest.mark.parametrize("weights, match", [
    ({"tiniest": 1.0}, "unknown superlative words"), ({"largest": -1.0}, "non-negative"),
    ({"largest": 0.0}, "at least one positive"), ({"largest": "many"}, "non-negative")])
def test_bad_superlative_weights_are_refused(weights, match):
    with pytest.raises(ValueError, match=match):
        list(synthetic_records(1, superlatives=weights))


def test_superlative_weights_shift_the_words_and_nothing_else():
    kw = dict(objects=(2, 4), distractors="share", kinds={"superlative": 0.5, "attribute": 0.5})
    plain = list(synthetic_records(300, seed=4, **kw))
    sized = list(synthetic_records(300, seed=4, superlatives={"smallest": 1.0}, **kw))

    def words(recs):
        return [r.expression.split(" ")[1] for r in recs if r.kind == "superlative"]

    # Where the scene allows "smallest" it is asked; where it does not, the row falls back to
    # the next kind-preserving draw (another scene), so every row stays a superlative.
    assert set(words(sized)) == {"smallest"}
    assert len(set(words(plain))) == 6
    assert [r.kind for r in sized] == [r.kind for r in plain]
    for r in sized:  # every expression still resolves to its targets in its scene
        scene = [SceneView(**v) for v in json.loads(r.extra["scene"])]
        assert resolve(r.expression, scene) == r.extra["targets"]
    # The weights only touch superlatives: attribute rows are the same rows.
    assert ([r.expression for r in plain if r.kind == "attribute"]
            == [r.expression for r in sized if r.kind == "attribute"])


def test_superlative_twins_ask_the_same_scene_with_the_opposite_word():
    kw = dict(objects=(2, 4), distractors="share", kinds={"superlative": 0.5, "attribute": 0.5})
    plain = list(synthetic_records(200, seed=1, **kw))
    paired = list(synthetic_records(200, seed=1, twins=("largest", "smallest"), **kw))
    twins = [k for k, r in enumerate(paired) if r.id.endswith("-twin")]
    assert twins  # some size rows have a twin ...
    # ... and without the twins the records are the plain ones, in order
    assert ([r.expression for r in paired if not r.id.endswith("-twin")]
            == [r.expression for r in plain])
    opposite = {"largest": "smallest", "smallest": "largest"}
    for k in twins:
        first, twin = paired[k - 1], paired[k]
        assert twin.id == first.id + "-twin" and np.array_equal(twin.image, first.image)
        w0, w1 = first.expression.split(" "), twin.expression.split(" ")
        assert w1[1] == opposite[w0[1]] and w1[2:] == w0[2:]
        scene = [SceneView(**v) for v in json.loads(twin.extra["scene"])]
        assert resolve(twin.expression, scene) == twin.extra["targets"]
        assert twin.extra["targets"] != first.extra["targets"]  # only the word tells them apart
    # every two-candidate "the largest/smallest shape" row gets its twin (two objects, clear
    # ratio: the other one is the opposite extreme)
    pairs = [k for k, r in enumerate(paired) if not r.id.endswith("-twin")
             and r.expression.split(" ")[1] in opposite
             and r.expression.split(" ")[2] == "shape" and r.extra["num_objects"] == 2]
    assert pairs and all(paired[k + 1].id == paired[k].id + "-twin" for k in pairs)
    with pytest.raises(ValueError, match="unknown superlative words"):
        list(synthetic_records(1, twins=("biggest",)))


def test_retarget_names_each_object_alike_and_resolves():
    rng = np.random.default_rng(0)
    drawn = {0: 0, 1: 0, 2: 0}
    for _ in range(600):
        text, named, choices = retarget(SCENE, "attribute", rng)
        assert resolve(text, SCENE) == named and choices == 3
        drawn[named[0]] += 1
    # every object of SCENE has an attribute expression: each drawn about a third of the time
    assert all(150 <= n <= 250 for n in drawn.values()), drawn
    # positional superlatives name every object; "the smallest shape" never (no clear winner)
    texts = set()
    for _ in range(300):
        text, named, choices = retarget(SCENE, "superlative", rng)
        assert resolve(text, SCENE) == named and choices == 3
        texts.add(text)
    assert "the smallest shape" not in texts and "the largest shape" in texts
    for kind, check in (("multi", lambda t: len(t) >= 2), ("none", lambda t: t == [])):
        for _ in range(20):
            text, named, _ = retarget(SCENE, kind, rng)
            assert resolve(text, SCENE) == named and check(named)


def test_retarget_keeps_a_rows_own_expression_among_the_candidates():
    # one relation names object 1 here; with the row's own expression it is always drawable
    rng = np.random.default_rng(1)
    own = ("the square right of the red circle", [1])
    got = {tuple(retarget(SCENE, "relation", rng, own=own)[1]) for _ in range(50)}
    assert (1,) in got
