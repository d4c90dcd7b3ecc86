from pathlib import Path

import pytest
import yaml

from rl.config import ConfigError, RunConfig, load_config, load_yaml_chain
from rl.grpo import build_reward_funcs
from tokens import SpatialVocab

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
RECIPES = [p for p in CONFIGS if p.parent.name not in ("accelerate", "tasks")
           and "prompts" not in p.name]
TASKS = [p for p in CONFIGS if p.parent.name == "tasks"]


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.name)
def test_task_overlays_merge_over_a_recipe(path):
    cfg = load_config(ROOT / "configs" / "default.yaml", load_yaml_chain(path))
    assert cfg.cpu_threads == 1 or path.name != "one_thread.yaml"


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"default.yaml", "paper_qwen2_5_vl_7b.yaml"} <= names
    assert len([p for p in RECIPES if p.parent.name == "ablations"]) == 9


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_builds_its_rewards(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    vocab = SpatialVocab(cfg.model.grid_size)
    for stage in ("grpo_stage1", "grpo_stage2"):
        funcs, weights = build_reward_funcs(getattr(cfg, stage), vocab, "region", stage)
        assert [f.__name__ for f in funcs] == [n for n, w in getattr(cfg, stage).rewards.items()
                                               if w]
        assert all(w > 0 for w in weights)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name == "accelerate"],
                         ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED")
    if data["distributed_type"] == "DEEPSPEED":
        assert data["deepspeed_config"]["zero_stage"] in (2, 3)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name == "ablations"],
                         ids=lambda p: p.name)
def test_ablations_differ_from_their_base_only_in_rewards_and_outputs(path):
    raw = yaml.safe_load(path.read_text())
    base = load_yaml_chain(path.parent / raw["base"])
    mine = load_yaml_chain(path)
    diff = {k for k in set(base) | set(mine) if base.get(k) != mine.get(k)}
    assert diff <= {"output_dir", "grpo_stage1", "grpo_stage2"}, diff
    for stage in ("grpo_stage1", "grpo_stage2"):
        b, m = base.get(stage, {}), mine.get(stage, {})
        changed = {k for k in set(b) | set(m) if b.get(k) != m.get(k)}
        assert changed <= {"rewards", "reward_params"}, (stage, changed)
    assert mine["output_dir"] != base["output_dir"]
    dropped = [n for s in ("grpo_stage1", "grpo_stage2")
               for n, w in mine[s]["rewards"].items() if w == 0]
    assert len(dropped) == 1 and dropped[0] in path.stem


def test_unknown_keys_fail_loudly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  max_step: 10\n")
    with pytest.raises(ConfigError, match=r"sft: unknown keys \['max_step'\]"):
        load_config(bad)
    bad.write_text("grpo_stage1:\n  beta: fast\n")
    with pytest.raises(ConfigError, match="grpo_stage1.beta: expected"):
        load_config(bad)
    bad.write_text("outputdir: x\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(bad)


def test_unknown_reward_names_fail(tmp_path):
    cfg = load_config(overrides={"grpo_stage1": {"rewards": {"iou": 1.0}}})
    with pytest.raises(ValueError, match=r"\['iou'\] are not rewards of this stage"):
        build_reward_funcs(cfg.grpo_stage1, SpatialVocab(), "region", "grpo_stage1")
    cfg = load_config(overrides={"grpo_stage2": {"rewards": {"box": 1.0}}})
    with pytest.raises(ValueError, match="not rewards of this stage"):
        build_reward_funcs(cfg.grpo_stage2, SpatialVocab(), "region", "grpo_stage2")


def test_base_chain_merges(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 3\nsft: {max_steps: 5, learning_rate: 0.1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nsft: {max_steps: 7}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.seed == 3 and cfg.sft.max_steps == 7 and cfg.sft.learning_rate == 0.1


def test_codec_is_checked_and_text_codecs_refuse_refinement(tmp_path):
    from rl.config import ConfigError

    cfg = load_config(ROOT / "configs" / "codecs" / "sft" / "rle_text.yaml")
    assert cfg.codec == "rle_text" and cfg.codec_params == {"size": 8}
    with pytest.raises(ConfigError, match="codec: unknown codec 'polygon'"):
        load_config(None, {"codec": "polygon"})
    with pytest.raises(ConfigError, match="bad parameters"):
        load_config(None, {"codec": "text_norm", "codec_params": {"bins": 3}})
    with pytest.raises(ConfigError, match="turn off sft.refinement, sft.policy_refinement_steps, "
                                          "grpo_stage2.enabled, eval.rounds"):
        load_config(ROOT / "configs" / "default.yaml", {"codec": "text_bins"})
    # The cold start's second pass is refinement dialogues too: with sft.refinement off it is
    # refused, not run (the codec recipes once ran it, on text answers).
    with pytest.raises(ConfigError, match=r"sft.policy_refinement_steps: 300 steps of "
                                          r"refinement dialogues, but sft.refinement is false"):
        load_config(ROOT / "configs" / "default.yaml", {"sft": {"refinement": False}})
    for path in sorted((ROOT / "configs" / "codecs").rglob("*.yaml")):
        assert load_config(path).sft.policy_refinement_steps == 0, path
    with pytest.raises(ConfigError, match="sft.policy_refinement_box: expected corner, mask, "
                                          "gain or open, not 'nearest'"):
        load_config(None, {"sft": {"policy_refinement_box": "nearest"}})


def test_codec_recipes_differ_from_their_grid_row_only_in_the_codec():
    from rl.ablate import differences

    grid = load_config(ROOT / "configs" / "codecs" / "grid.yaml")
    grid_sft = load_config(ROOT / "configs" / "codecs" / "grid_sft.yaml")
    for name in ("text_norm", "text_bins"):
        cfg = load_config(ROOT / "configs" / "codecs" / "grpo" / f"{name}.yaml")
        assert differences(cfg, grid) == [f"codec={name}"]
    for path in sorted((ROOT / "configs" / "codecs" / "sft").glob("*.yaml")):
        diff = differences(load_config(path), grid_sft)
        assert diff[0] == f"codec={path.stem}"
        assert all(d.startswith(("codec", "eval.max_new_tokens", "grpo_stage1.max_completion"))
                   for d in diff)


def test_a_mapping_can_replace_its_base_and_the_sjtu_baselines_load():
    cfg = load_config(ROOT / "configs" / "baselines" / "sjtu_qwen2_5_vl_7b.yaml")
    assert cfg.data.decoder == {"name": "sam2", "config": "configs/sam2.1/sam2.1_hiera_l.yaml",
                                "checkpoint": "checkpoints/sam2.1_hiera_large.pt"}
    assert cfg.codec_params == {"decimals": 3, "box_only": True}
    small = load_config(ROOT / "configs" / "baselines" / "sjtu_default_task.yaml")
    assert small.codec == "text_norm" and small.grpo_stage1.rewards["points"] == 0.0


@pytest.mark.parametrize("key", ["refinement_share", "caption_share"])
def test_sft_shares_are_checked(key):
    assert getattr(load_config(None, {"sft": {key: 0.5}}).sft, key) == 0.5
    with pytest.raises(ConfigError, match=rf"sft.{key}: expected a share in \[0, 1\], got 1.5"):
        load_config(None, {"sft": {key: 1.5}})


def test_min_p_is_checked_and_reaches_trl():
    from trl import GRPOConfig

    cfg = load_config(None, {"grpo_stage2": {"min_p": 0.1}})
    assert cfg.grpo_stage2.min_p == 0.1 and "min_p" in GRPOConfig.__dataclass_fields__
    with pytest.raises(ConfigError, match=r"grpo_stage2.min_p: expected a share in \[0, 1\)"):
        load_config(None, {"grpo_stage2": {"min_p": 1.0}})
    with pytest.raises(ConfigError, match="extra_args.min_p"):  # one place sets it
        load_config(None, {"grpo_stage2": {"extra_args": {"min_p": 0.1}}})


def test_extra_args_may_not_set_what_a_recipe_field_sets():
    from rl.config import (
        GRPO_TRAINER_ARG_FIELDS,
        SFT_TRAINER_ARG_FIELDS,
        TRAINER_ARG_FIELDS,
        GRPOStageConfig,
        SFTStageConfig,
    )

    with pytest.raises(ConfigError, match=r"config.sft.extra_args.learning_rate: the recipe sets "
                                          r"this TRL argument through `sft.learning_rate`"):
        load_config(None, {"sft": {"extra_args": {"learning_rate": 1e-3}}})
    with pytest.raises(ConfigError, match=r"grpo_stage2.extra_args.reward_weights: .*"
                                          r"`grpo_stage2.rewards`"):
        load_config(None, {"grpo_stage2": {"extra_args": {"reward_weights": [1.0]}}})
    with pytest.raises(ConfigError, match=r"grpo_stage1.extra_args.seed: .* through `seed`"):
        load_config(None, {"grpo_stage1": {"extra_args": {"seed": 3}}})
    with pytest.raises(ConfigError, match=r"sft.extra_args.logging_steps: .* `logging_steps`"):
        load_config(None, {"sft": {"extra_args": {"logging_steps": 3}}})
    # What the package sets by itself may be overridden (the trainers merge, see test_grpo).
    cfg = load_config(None, {"sft": {"extra_args": {"save_strategy": "steps", "save_steps": 5}}})
    assert cfg.sft.extra_args == {"save_strategy": "steps", "save_steps": 5}
    # Every named field exists, so the error points somewhere real.
    for cls, own in ((SFTStageConfig, SFT_TRAINER_ARG_FIELDS),
                     (GRPOStageConfig, GRPO_TRAINER_ARG_FIELDS)):
        for name in {**TRAINER_ARG_FIELDS, **own}.values():
            assert name in cls.__dataclass_fields__ or name in RunConfig.__dataclass_fields__, \
                (cls.__name__, name)


def test_trainable_is_checked():
    cfg = load_config(None, {"grpo_stage2": {"trainable": "refinement_tokens"}})
    assert cfg.grpo_stage2.trainable == "refinement_tokens" and cfg.grpo_stage1.trainable == "all"
    with pytest.raises(ConfigError, match=r"grpo_stage2.trainable: expected one of all, "
                                          r"refinement_tokens, got 'rows'"):
        load_config(None, {"grpo_stage2": {"trainable": "rows"}})
    with pytest.raises(ConfigError, match=r"grpo_stage1.trainable: refinement_tokens .* only "
                                          r"stage 2 writes"):
        load_config(None, {"grpo_stage1": {"trainable": "refinement_tokens"}})
    with pytest.raises(ConfigError, match=r"grpo_stage2: trainable refinement_tokens with lora"):
        load_config(None, {"grpo_stage2": {"trainable": "refinement_tokens",
                                           "lora": {"r": 8}}})


def test_sampled_proposals_are_stage2_on_policy_only():
    assert load_config(None).grpo_stage2.proposal == "greedy"
    cfg = load_config(None, {"grpo_stage2": {"proposal": "sampled"}})
    assert cfg.grpo_stage2.proposal == "sampled"
    with pytest.raises(ConfigError, match="grpo_stage2.proposal: expected greedy or sampled"):
        load_config(None, {"grpo_stage2": {"proposal": "beam"}})
    with pytest.raises(ConfigError, match="grpo_stage1.proposal: sampled proposals are made by"):
        load_config(None, {"grpo_stage1": {"proposal": "sampled"}})
    with pytest.raises(ConfigError, match="grpo_stage2.proposal: sampled proposals are made by"):
        load_config(None, {"grpo_stage2": {"proposal": "sampled", "on_policy": False}})


def test_stage_prompts_setting_is_checked(tmp_path):
    default = ROOT / "configs" / "default.yaml"
    base = {"output_dir": str(tmp_path)}
    assert load_config(default, {**base, "grpo_stage2": {"prompts": "proposed"}}
                       ).grpo_stage2.prompts == "proposed"
    with pytest.raises(ConfigError, match=r"grpo_stage2\.prompts: expected all or proposed"):
        load_config(default, {**base, "grpo_stage2": {"prompts": "some"}})
    with pytest.raises(ConfigError, match=r"grpo_stage1\.prompts: proposed keeps the prompts"):
        load_config(default, {**base, "grpo_stage1": {"prompts": "proposed"}})


def test_on_policy_stage2_with_vllm_is_refused_when_the_recipe_loads():
    # The on-policy rollout generates with transformers; before this check the paper recipe
    # asked for both and would have stopped at stage 2's first step, after its cold start and
    # stage 1.
    with pytest.raises(ConfigError, match=r"grpo_stage2: on_policy with use_vllm: .*set "
                                          r"use_vllm: false, or on_policy: false"):
        load_config(None, {"grpo_stage2": {"use_vllm": True}})
    rounds = load_config(None, {"grpo_stage2": {"use_vllm": True, "on_policy": False}})
    assert rounds.grpo_stage2.use_vllm and not rounds.grpo_stage2.on_policy
    off = load_config(None, {"grpo_stage2": {"use_vllm": True, "enabled": False}})
    assert not off.grpo_stage2.enabled
    assert load_config(None, {"grpo_stage1": {"use_vllm": True}}).grpo_stage1.use_vllm
    paper = load_config(ROOT / "configs" / "paper_qwen2_5_vl_7b.yaml")
    assert paper.grpo_stage1.use_vllm and paper.grpo_stage2.on_policy
    assert not paper.grpo_stage2.use_vllm
