import numpy as np
from PIL import Image

from rl.visualize import BOX_COLOUR, DELETED_COLOUR, POINT_COLOUR, draw_prediction, plot_rewards
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


def test_reward_plots(tmp_path):
    hist = [{"step": s, "rewards/box/mean": s / 10, "rewards/format/mean": 1.0} for s in range(5)]
    paths = plot_rewards(hist + [{"step": 5, "loss": 0.1}], tmp_path, "grpo_stage1")
    assert sorted(p.name for p in paths) == ["grpo_stage1_box.png", "grpo_stage1_format.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
