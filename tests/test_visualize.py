import numpy as np
import pytest
from PIL import Image

from rl.visualize import (
    BOX_COLOUR,
    DELETED_COLOUR,
    MASK_COLOUR,
    OUTLINE_COLOUR,
    PANEL_GAP,
    POINT_COLOUR,
    contact_sheet,
    draw_prediction,
    plot_rewards,
    render_panel,
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


def _scene():
    img = np.full((64, 64, 3), 90, np.uint8)
    target = np.zeros((64, 64), bool)
    target[16:48, 16:48] = True  # the named object
    return img, target


def test_caption_and_outline_are_drawn(tmp_path):
    img, target = _scene()
    inst = Instance((0.25, 0.25, 0.75, 0.75), [(0.5, 0.5)])
    path = draw_prediction(img, [inst], SpatialVocab(8), tmp_path / "p.png", target,
                           scale=4, target_hw=target, caption='"the red circle"\nIoU 1.00')
    with Image.open(path) as pic:
        arr = np.asarray(pic.convert("RGB"))
    band = arr.shape[0] - 256
    assert arr.shape[1] == 256 and band >= 2 * 14  # two caption lines above the picture
    # The text is written (light, anti-aliased, on black).
    assert (arr[:band].min(axis=-1) > 128).sum() > 50
    assert (arr[:band] == 0).all(axis=-1).mean() > 0.5
    # The outline: white on the object's border, not inside it nor outside it.
    pic = arr[band:]
    assert tuple(pic[16 * 4 + 1, 100]) == OUTLINE_COLOUR
    assert tuple(pic[32 * 4, 32 * 4 + 20]) != OUTLINE_COLOUR
    assert tuple(pic[4, 4]) != OUTLINE_COLOUR


def test_refinement_is_drawn_beside_its_proposal(tmp_path):
    img, target = _scene()
    vocab = SpatialVocab(8)
    proposal = [Instance((0.125, 0.125, 0.5, 0.5), [(0.3, 0.3)])]
    refined = [Instance((0.25, 0.25, 0.75, 0.75), [(0.5, 0.5)])]
    before_mask = np.zeros((64, 64), bool)
    before_mask[8:32, 8:32] = True
    path = draw_prediction(img, refined, vocab, tmp_path / "p.png", target,
                           moves=[((0.3, 0.3), (0.5, 0.5))], scale=4, target_hw=target,
                           caption="x", proposal=(proposal, before_mask))
    with Image.open(path) as pic:
        arr = np.asarray(pic.convert("RGB"))
    assert arr.shape[1] == 2 * 256 + PANEL_GAP
    left, right = arr[-256:, :256], arr[-256:, 256 + PANEL_GAP:]
    # Each panel has its own points and mask; the labels say which is which.
    assert tuple(left[int(0.3 * 256), int(0.3 * 256)]) == POINT_COLOUR
    assert tuple(right[int(0.5 * 256), int(0.5 * 256)]) == POINT_COLOUR
    tinted = tuple((0.5 * 90 + 0.5 * np.array(MASK_COLOUR)).astype(np.uint8))
    assert tuple(left[40, 60]) == tinted and tuple(right[40, 60]) == (90, 90, 90)
    for panel in (left, right):
        assert (panel[:14, :60].min(axis=-1) > 128).sum() > 20  # light text on black
        assert (panel[:14, :60] == 0).all(axis=-1).sum() > 200


def test_contact_sheet_layout(tmp_path):
    img, target = _scene()
    tiles = [render_panel(img, [], SpatialVocab(8), target if k % 2 else None, scale=1)
             for k in range(6)]
    path = contact_sheet(tiles, tmp_path / "sheet.png", "stage: best (top), worst (bottom)")
    with Image.open(path) as pic:
        arr = np.asarray(pic.convert("RGB"))
    cell = 64 + PANEL_GAP
    band = arr.shape[0] - 2 * cell
    assert arr.shape[1] == 4 * cell and band > 0  # four to a row, two rows for six
    body = arr[band:]
    for k in range(8):
        r, c = divmod(k, 4)
        centre = body[r * cell + cell // 2, c * cell + cell // 2]
        if k < 6:  # a tile: the grey image, tinted where the mask is
            assert tuple(centre) != (0, 0, 0)
        else:  # no tile: the black background
            assert tuple(centre) == (0, 0, 0)
