"""Synthetic scenes: flat-coloured shapes on a plain background, with exact masks and boxes.

The drawing layer of the bundled synthetic referring task: deterministic by seed, no files.
Shapes may overlap; each object's mask is what remains visible after the shapes drawn above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.draw import ellipse, polygon

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "ellipse", "star")
BACKGROUND = (90, 90, 90)


@dataclass
class SceneObject:
    """shape, colour: names; mask_hw: (H, W) bool visible pixels; box_xyxy_px: tight box on
    pixel edges (x1, y1, x2 + 1, y2 + 1) of the visible mask."""

    shape: str
    colour: str
    mask_hw: np.ndarray
    box_xyxy_px: tuple[int, int, int, int]


def _shape_mask(shape: str, cx: float, cy: float, r: float, h: int, w: int,
                rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    if shape == "circle":
        rr, cc = ellipse(cy, cx, r, r, shape=(h, w))
    elif shape == "ellipse":
        rr, cc = ellipse(cy, cx, r * 0.55, r, shape=(h, w), rotation=rng.uniform(0, np.pi))
    elif shape == "square":
        rr, cc = polygon([cy - r, cy - r, cy + r, cy + r], [cx - r, cx + r, cx + r, cx - r],
                         shape=(h, w))
    elif shape == "triangle":
        rr, cc = polygon([cy - r, cy + r, cy + r], [cx, cx + r, cx - r], shape=(h, w))
    elif shape == "star":
        ang = np.arange(10) * np.pi / 5 - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=(h, w))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    m[rr, cc] = True
    return m


def tight_box_px(mask_hw: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box on pixel edges (xmin, ymin, xmax + 1, ymax + 1) of a non-empty mask."""
    ys, xs = np.nonzero(mask_hw)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def draw_scene(rng: np.random.Generator, size: tuple[int, int] = (112, 112),
               n_objects: int = 3, min_radius: float = 0.08, max_radius: float = 0.22,
               min_visible: float = 0.5) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw `n_objects` shapes of distinct (shape, colour) pairs on a (H, W) = `size` image.

    Radii are fractions of the shorter side. An object that would cover more than
    1 - `min_visible` of one drawn before it, or touch one of its colour, is re-drawn
    elsewhere, so every object keeps at least that fraction of its pixels visible and is a
    colour region of its own. Returns the (H, W, 3) uint8 image and objects.
    """
    h, w = size
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    chosen = rng.choice(len(pairs), size=n_objects, replace=False)
    full_masks: list[np.ndarray] = []
    objects: list[SceneObject] = []
    for k in chosen:
        shape, colour = pairs[k]
        for _attempt in range(50):
            r = rng.uniform(min_radius, max_radius) * min(h, w)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            m = _shape_mask(shape, cx, cy, r, h, w, rng)
            visible = [o.mask_hw & ~m for o in objects]
            # Same-colour objects never touch, so every object stays its own colour region.
            grown = binary_dilation(m, iterations=2)
            if (m.sum() >= 9
                    and all(v.sum() >= min_visible * f.sum()
                            for v, f in zip(visible, full_masks, strict=True))
                    and not any(o.colour == colour and (grown & o.mask_hw).any()
                                for o in objects)):
                break
        else:
            raise RuntimeError(f"could not place {n_objects} objects on a {w}x{h} image")
        for o, v in zip(objects, visible):
            o.mask_hw = v
            o.box_xyxy_px = tight_box_px(v)
        image[m] = COLOURS[colour]
        full_masks.append(m)
        objects.append(SceneObject(shape, colour, m, tight_box_px(m)))
    return image, objects
