"""The run context and the one reader of decoder/codec specs."""

import pytest

from rl.config import load_config
from rl.context import RunContext, codec_spec, read_spec


def test_specs_are_read_in_one_place():
    assert read_spec("region") == "region"
    assert read_spec('{"name": "sam", "variant": "vit_b"}') == {"name": "sam", "variant": "vit_b"}
    assert read_spec(None, "grid") == "grid"
    assert codec_spec("text_bins") == {"name": "text_bins"}
    assert codec_spec('{"name": "text_bins", "bins": 10}') == {"name": "text_bins", "bins": 10}
    with pytest.raises(ValueError, match="not valid JSON"):
        read_spec("{name: sam")


def test_context_from_a_recipe(tmp_path):
    cfg = load_config(None, {"output_dir": str(tmp_path), "model": {"grid_size": 8}})
    ctx = RunContext.from_config(cfg, processor=None)
    assert ctx.vocab.grid_size == 8 and ctx.codec.name == "grid" and "stage2" in ctx.prompts
    stage = ctx.with_output(tmp_path / "sft", seed=3)
    assert stage.output_dir == tmp_path / "sft" and stage.seed == 3 and ctx.seed == cfg.seed
