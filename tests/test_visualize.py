import numpy as np
import pytest
from PIL import Image

from rl.visualize import (
    BOX_COLOUR,
    DELETED_COLOUR,
    POINT_COLOUR,
    draw_prediction,
    plot_rewards,
    reward_curves,
)
from tokens import Instance, SpatialVocab


def test_prediction_picture_has_its_marks(tmp_path):
    img = np.full((64, 64, 3), 90, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[8:40, 8:40] = True
    inst = Instance((0.125, 0.125, 0.625, 0.625), [(0.3, 0.3)])
    path = draw_prediction(img, [inst], SpatialVocab(8), tmp_path / "p.png", mask,
                           moves=[((0.5, 0.5), (0.55, 0.5))], deleted=[(0.8, 0.8)], scale=4)
    with Image.open(path) as pic:
        assert pic.size == (256, 256)
        px = pic.convert("RGB").load()
        assert px[int(0.3 * 256), int(0.3 * 256)] == POINT_COLOUR
        assert px[int(0.125 * 256), int(0.4 * 256)] == BOX_COLOUR
        assert px[int(0.8 * 256), int(0.8 * 256)] == DELETED_COLOUR
        assert px[100, 60] != (90, 90, 90)  # the mask is tinted


def test_reward_plot_is_one_png_per_stage_with_a_panel_per_term(tmp_path):
    hist = [{"step": s, "rewards/box/mean": s / 10, "rewards/format/mean": 1.0,
             "rewards/points/mean": None, "reward": 1 + s / 10} for s in range(1, 6)]
    curves = reward_curves(hist + [{"step": 6, "loss": 0.1}, {"train_runtime": 3.0}])
    assert sorted(curves) == ["box", "format", "total"]  # None-only terms have no curve
    assert curves["box"] == [(s, s / 10) for s in range(1, 6)]
    path = plot_rewards(hist, tmp_path, "grpo_stage1")
    assert path == tmp_path / "grpo_stage1_rewards.png"
    with Image.open(path) as pic:
        assert pic.size[0] > pic.size[1] > 200  # three panels side by side
    assert plot_rewards([{"step": 1, "loss": 0.5}], tmp_path, "grpo_stage2") is None


def test_plots_from_a_saved_run(tmp_path):
    import json

    from rl.visualize import main

    hist = [{"step": s, "rewards/mask/mean": 0.1 * s, "reward": 0.1 * s} for s in range(1, 4)]
    (tmp_path / "grpo_stage1").mkdir()
    (tmp_path / "grpo_stage1" / "stage.json").write_text(json.dumps({"log_history": hist}))
    ckpt = tmp_path / "grpo_stage2" / "checkpoint-2"  # a stage-2 run still going
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": hist}))
    paths = main([str(tmp_path)])
    assert [p.name for p in paths] == ["grpo_stage1_rewards.png", "grpo_stage2_rewards.png"]
    assert all(p.parent == tmp_path / "plots" and p.stat().st_size > 1000 for p in paths)
    with pytest.raises(SystemExit, match="no GRPO stage log"):
        main([str(tmp_path / "grpo_stage1")])
