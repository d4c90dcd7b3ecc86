"""SAM 2 backend (the optional `sam2` extra). `.ci/run` installs the extra and runs this module."""

import numpy as np
import pytest

pytest.importorskip("sam2")

from rl.data.scenes import draw_scene  # noqa: E402
from tokens.decoders import Prompt, Sam2Decoder, build_decoder  # noqa: E402


@pytest.fixture(scope="module")
def sam2_tiny():
    import torch

    torch.manual_seed(0)
    return Sam2Decoder("configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu")


def test_sam2_batched_cached_and_one_by_one_agree(sam2_tiny):
    image, _ = draw_scene(np.random.default_rng(0), (240, 320), n_objects=3)
    prompts = [Prompt((10, 20, 200, 200), ((50.0, 60.0), (70.0, 80.0))),
               Prompt((15, 25, 205, 205), ((55.0, 65.0), (75.0, 85.0))),
               Prompt(None, ((100.0, 100.0),)), Prompt(None, ((300.0, 100.0),)),
               Prompt((0, 0, 100, 100))]
    batched = sam2_tiny.decode(image, prompts)
    one_by_one = [sam2_tiny.decode(image, [p])[0] for p in prompts]
    assert sam2_tiny.cache.misses == 1
    for b, s in zip(batched, one_by_one, strict=True):
        assert b.shape == (240, 320) and b.dtype == bool and (b == s).all()


def test_sam2_by_config_name_and_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="not found"):
        build_decoder({"name": "sam2", "checkpoint": "/nowhere/sam2.pt", "device": "cpu"})
