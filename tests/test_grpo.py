"""rl.grpo: a stage's GRPO settings reach TRL's trainer as the config names them."""

from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_grpo_stage1, load_prompts
from tokens import SpatialVocab

V8 = SpatialVocab(8)


def trainer_for(model_dir, out, **stage_fields):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rl.config import GRPOStageConfig
    from rl.context import RunContext
    from rl.grpo import grpo_trainer
    from tokens import GridCodec
    from tokens.decoders import RegionDecoder

    prompts = load_prompts()
    recs = list(synthetic_records(2, seed=3, objects=(1, 1), kinds={"attribute": 1.0}))
    ds = Dataset.from_list(list(build_grpo_stage1(recs, prompts, BuildConfig(vocab=V8))))
    stage = GRPOStageConfig(max_steps=1, batch_size=4, num_generations=4, beta=0.0,
                            max_completion_length=8, rewards={"format": 1.0}, **stage_fields)
    ctx = RunContext(vocab=V8, codec=GridCodec(V8), decoder_spec=RegionDecoder(),
                     processor=AutoProcessor.from_pretrained(model_dir), prompts=prompts,
                     output_dir=out, logging_steps=1)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return grpo_trainer(stage, "grpo_stage1", ctx, model,
                        ds.select_columns(["image", "prompt", "solution"]))


def test_loss_type_and_reward_scaling_reach_trl(grid8_model, tmp_path):
    default = trainer_for(grid8_model, tmp_path / "a")
    assert (default.args.loss_type, default.args.scale_rewards) == ("grpo", "group")
    assert default.args.min_p is None and default.generation_config.min_p is None
    dr = trainer_for(grid8_model, tmp_path / "b", loss_type="dr_grpo", scale_rewards="none",
                     temperature=0.7, min_p=0.1)
    assert (dr.args.loss_type, dr.args.scale_rewards, dr.args.temperature) == (
        "dr_grpo", "none", 0.7)
    # min_p reaches the sampler that stage 2's rollout copies (rl.rollout.transformers_generate)
    assert dr.args.min_p == 0.1 and dr.generation_config.min_p == 0.1



def test_extra_args_override_what_the_package_sets(grid8_model, tmp_path):
    # save_strategy and num_completions_to_print are the package's own choices ("no", 2): a
    # recipe's extra_args replace them (TRL's config once got the keyword twice: a TypeError).
    trainer = trainer_for(grid8_model, tmp_path, log_completions=True,
                          extra_args={"save_strategy": "steps", "save_steps": 7,
                                      "num_completions_to_print": 5})
    assert (trainer.args.save_strategy, trainer.args.save_steps) == ("steps", 7)
    assert trainer.args.num_completions_to_print == 5
