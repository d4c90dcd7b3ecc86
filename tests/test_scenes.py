import numpy as np
import pytest

from rl.data.scenes import COLOURS, draw_scene, tight_box_px


def test_deterministic_by_seed():
    a_img, a_obj = draw_scene(np.random.default_rng(7), (96, 128), n_objects=3)
    b_img, b_obj = draw_scene(np.random.default_rng(7), (96, 128), n_objects=3)
    assert a_img.shape == (96, 128, 3) and (a_img == b_img).all()
    assert [(o.shape, o.colour, o.box_xyxy_px) for o in a_obj] == \
           [(o.shape, o.colour, o.box_xyxy_px) for o in b_obj]


def test_masks_boxes_and_pixels_agree():
    image, objects = draw_scene(np.random.default_rng(1), (128, 128), n_objects=4)
    assert len({(o.shape, o.colour) for o in objects}) == 4
    union = np.zeros((128, 128), bool)
    for obj in objects:
        assert obj.mask_hw.any() and not (union & obj.mask_hw).any()  # visible parts disjoint
        union |= obj.mask_hw
        assert (image[obj.mask_hw] == COLOURS[obj.colour]).all()
        assert obj.box_xyxy_px == tight_box_px(obj.mask_hw)


def test_too_many_objects_is_an_error():
    with pytest.raises(RuntimeError, match="could not place"):
        draw_scene(np.random.default_rng(0), (16, 16), n_objects=12, min_radius=0.45,
                   max_radius=0.5)
