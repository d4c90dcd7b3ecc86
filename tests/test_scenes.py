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


def test_dilating_the_grown_box_equals_dilating_the_image():
    # draw_scene tests "touches an object of its colour" on the mask's box grown by the
    # dilation's reach: the same pixels as dilating the whole image, also at the edges.
    from scipy.ndimage import binary_dilation

    from rl.data.scenes import _grown_box

    rng = np.random.default_rng(1)
    assert _grown_box(np.zeros((6, 6), bool), 2) is None
    for _ in range(80):
        h, w = rng.integers(3, 30, size=2)
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = True
        near = _grown_box(m, 2)
        whole = binary_dilation(m, iterations=2)
        crop = np.zeros_like(whole)
        crop[near] = binary_dilation(m[near], iterations=2)
        assert (crop == whole).all()
