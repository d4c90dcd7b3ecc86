"""rl.data.splits: each synthetic split of a recipe from its own seed, rows built as a run
builds them, bad split names refused."""

import json
from pathlib import Path

import pytest

from rl.config import ConfigError, load_config
from rl.data.splits import SPLIT_SEEDS, recipe_rows, records

ROOT = Path(__file__).resolve().parents[1]


def small_recipe(tmp_path, n: int = 4, data: dict | None = None, scenes: int | None = None):
    """The default recipe on `n` held-out and validation scenes (and `n` training and
    `scenes` curriculum scenes where given), with `data` values over the default's."""
    over = {"output_dir": str(tmp_path), "cpu_threads": 1, "data": {
        "n_eval": n, "prompts": str(ROOT / "configs" / "default_prompts.yaml"), **(data or {})},
        "eval": {"curve_samples": n}}
    if data:
        over["data"]["n_train"] = n
    if scenes:
        over["sft"] = {"curriculum_scenes": scenes}
    return load_config(ROOT / "configs" / "default.yaml", over)


def test_splits_have_their_own_seeds_and_rows_follow_the_records(tmp_path):
    assert len(set(SPLIT_SEEDS.values())) == len(SPLIT_SEEDS)
    cfg = small_recipe(tmp_path)
    held_out, validation = records(cfg, "eval"), records(cfg, "validation")
    assert len(held_out) == len(validation) == 4
    assert [r.expression for r in held_out] != [r.expression for r in validation]
    rows = recipe_rows(cfg, "eval")
    assert [r["expression"] for r in rows] == [r.expression for r in held_out]
    assert [r["expression"] for r in recipe_rows(cfg, "eval", 2)] == [
        r.expression for r in held_out[:2]]  # the first n of the same scenes


def test_evaluation_rows_come_from_eval_or_validation_only(tmp_path):
    with pytest.raises(ValueError, match="'eval' or 'validation'"):
        recipe_rows(small_recipe(tmp_path), "train")


def test_train_kinds_change_the_training_scenes_only(tmp_path):
    base = small_recipe(tmp_path)
    cfg = small_recipe(tmp_path, 12, {"train_kinds": {"superlative": 1.0}})
    assert {r.kind for r in records(cfg, "train")} == {"superlative"}
    for split in ("eval", "validation"):  # the stated held-out mix is kept
        assert len({r.kind for r in records(cfg, split)}) > 1
    held_out = [r.expression for r in records(cfg, "eval")]
    assert held_out[:4] == [r.expression for r in records(base, "eval")]


def test_targets_are_the_cold_starts_answers_for_the_evaluation_rows(tmp_path):
    from rl.data.splits import recipe_targets
    from tokens import GridCodec, SpatialVocab

    cfg = small_recipe(tmp_path)
    rows, texts = recipe_targets(cfg, "eval", 12)
    assert [r["id"] for r in rows] == [r["id"] for r in recipe_rows(cfg, "eval", 12)]
    codec = GridCodec(SpatialVocab(cfg.model.grid_size, cfg.model.offset_radius,
                                   cfg.model.offset_step_cells))
    for row, text in zip(rows, texts, strict=True):
        ans = codec.parse_answer(text)
        targets = json.loads(row["targets"])
        assert ans.well_formed, text
        assert len(ans.instances) == len(targets)  # one instance a named object, none if none
    assert any(not json.loads(r["targets"]) for r in rows)  # the none kind is among them


def test_train_superlatives_change_the_training_and_curriculum_scenes_only(tmp_path):
    base = small_recipe(tmp_path)
    cfg = small_recipe(tmp_path, 200, {"train_superlatives": {"smallest": 1.0}}, scenes=60)

    def words(split):
        return {r.expression.split(" ")[1] for r in records(cfg, split)
                if r.kind == "superlative"}

    assert words("train") == words("curriculum") == {"smallest"}
    for split in ("eval", "validation"):  # the held-out words stay alike
        assert len(words(split)) > 2
    with pytest.raises(ConfigError, match="data.train_superlatives: unknown superlative"):
        load_config(ROOT / "configs" / "default.yaml",
                    {"data": {"train_superlatives": {"tiniest": 1.0}}})
    with pytest.raises(ConfigError, match="data.train_superlative_twins: expected superlative"):
        load_config(ROOT / "configs" / "default.yaml",
                    {"data": {"train_superlative_twins": ["tiniest"]}})
    assert base.data.train_superlatives is None


def test_superlative_twins_come_in_the_training_and_curriculum_scenes_only(tmp_path):
    cfg = small_recipe(tmp_path, 60, {"train_superlative_twins": ["largest", "smallest"]},
                       scenes=60)
    for split in ("train", "curriculum"):
        recs = records(cfg, split)
        assert any(r.id.endswith("-twin") for r in recs) and len(recs) > 60
    for split in ("eval", "validation"):
        recs = records(cfg, split)
        assert not any(r.id.endswith("-twin") for r in recs) and len(recs) == 60
