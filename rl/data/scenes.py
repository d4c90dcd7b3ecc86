"""Synthetic scenes: flat-coloured shapes on a plain background, with exact masks and boxes.

The drawing layer of the bundled synthetic referring task: deterministic by seed, no files.
Shapes may overlap; each object's mask is what remains visible after the shapes drawn above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.draw import ellipse, polygon

# Channel values sit at the centres of 4-level quantization bins (32, 96, 160, 224), so a
# texture of up to ±31 keeps every shape inside one colour bin (what the weight-free decoder
# groups by) while still changing its pixels.
COLOURS = {
    "red": (224, 32, 32),
    "green": (32, 160, 32),
    "blue": (32, 32, 224),
    "yellow": (224, 224, 32),
    "purple": (160, 32, 224),
    "orange": (224, 160, 32),
    "cyan": (32, 224, 224),
    "white": (224, 224, 224),
}
SHAPES = ("circle", "square", "triangle", "ellipse", "star")
TEXTURES = ("flat", "noise", "stripes")
BACKGROUND = (96, 96, 96)
TEXTURE_AMPLITUDE = 20


@dataclass
class SceneObject:
    """shape, colour, texture: names; mask_hw: (H, W) bool visible pixels; box_xyxy_px: tight
    box on pixel edges (x1, y1, x2 + 1, y2 + 1) of the visible mask."""

    shape: str
    colour: str
    mask_hw: np.ndarray
    box_xyxy_px: tuple[int, int, int, int]
    texture: str = "flat"

    @property
    def area(self) -> int:
        return int(self.mask_hw.sum())

    @property
    def centre_norm(self) -> tuple[float, float]:
        """Centroid of the visible mask, normalized."""
        ys, xs = np.nonzero(self.mask_hw)
        h, w = self.mask_hw.shape
        return (float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h)


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


def _grown_box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of `mask` grown by `margin` pixels on each side (clipped to the image),
    or None for an empty mask. `binary_dilation(mask, iterations=margin)` reaches no pixel
    outside it, so dilating the crop gives the whole image's dilation there, bit for bit."""
    if not mask.any():
        return None
    x0, y0, x1, y1 = tight_box_px(mask)
    h, w = mask.shape
    return (slice(max(y0 - margin, 0), min(y1 + margin, h)),
            slice(max(x0 - margin, 0), min(x1 + margin, w)))


def _paint(image: np.ndarray, mask: np.ndarray, colour: str, texture: str,
           rng: np.random.Generator) -> None:
    base = np.array(COLOURS[colour], dtype=np.int16)
    if texture == "flat":
        image[mask] = base
        return
    if texture == "noise":
        delta = rng.integers(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE + 1, size=(int(mask.sum()), 1))
    elif texture == "stripes":
        rows = np.nonzero(mask)[0]
        delta = np.where((rows // 3) % 2 == 0, TEXTURE_AMPLITUDE, -TEXTURE_AMPLITUDE)[:, None]
    else:
        raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")
    image[mask] = np.clip(base + delta, 0, 255).astype(np.uint8)


def confusable_pairs(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """`n` distinct (shape, colour) pairs around an anchor (the first pair): every other pair
    shares the anchor's colour or its shape, and from three pairs on, at least one shares the
    colour and one the shape, so neither attribute alone picks the anchor out."""
    shape, colour = SHAPES[int(rng.integers(len(SHAPES)))], \
        list(COLOURS)[int(rng.integers(len(COLOURS)))]
    pairs = [(shape, colour)]
    first = ["colour", "shape"] if rng.random() < 0.5 else ["shape", "colour"]
    for j in range(1, n):
        share = first[j - 1] if j <= 2 else ("colour" if rng.random() < 0.5 else "shape")
        if share == "colour":
            free = [s for s in SHAPES if (s, colour) not in pairs]
            pairs.append((free[int(rng.integers(len(free)))], colour))
        else:
            free = [c for c in COLOURS if (shape, c) not in pairs]
            pairs.append((shape, free[int(rng.integers(len(free)))]))
    return pairs


def same_shape_pairs(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """`n` (shape, colour) pairs of one shape in distinct colours, the anchor first: only the
    colour tells the objects apart (a binding-first curriculum's scenes)."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    if n > len(COLOURS):
        raise ValueError(f"{n} objects of one shape need {n} colours; there are {len(COLOURS)}")
    names = list(COLOURS)
    return [(shape, names[int(k)]) for k in rng.permutation(len(names))[:n]]


def same_colour_pairs(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """`n` (shape, colour) pairs of one colour in distinct shapes, the anchor first: only the
    shape tells the objects apart (a shape-binding probe's scenes)."""
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if n > len(SHAPES):
        raise ValueError(f"{n} objects of one colour need {n} shapes; there are {len(SHAPES)}")
    return [(SHAPES[int(k)], colour) for k in rng.permutation(len(SHAPES))[:n]]


def draw_scene(rng: np.random.Generator, size: tuple[int, int] = (112, 112),
               n_objects: int = 3, min_radius: float = 0.08, max_radius: float = 0.22,
               min_visible: float = 0.5, textures: tuple[str, ...] = ("flat",),
               pairs: list[tuple[str, str]] | None = None,
               ) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw `n_objects` shapes of distinct (shape, colour) pairs on a (H, W) = `size` image,
    each painted with a texture drawn from `textures`. `pairs` gives the (shape, colour) of
    each object in drawing order (default: drawn at random).

    Radii are fractions of the shorter side. An object that would cover more than
    1 - `min_visible` of one drawn before it, or touch one of its colour, is re-drawn
    elsewhere, so every object keeps at least that fraction of its pixels visible and is a
    colour region of its own. Returns the (H, W, 3) uint8 image and objects.
    """
    h, w = size
    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    if pairs is None:
        every = [(s, c) for s in SHAPES for c in COLOURS]
        pairs = [every[k] for k in rng.choice(len(every), size=n_objects, replace=False)]
    elif len(pairs) != n_objects or len(set(pairs)) != len(pairs):
        raise ValueError(f"pairs must be {n_objects} distinct (shape, colour) pairs: {pairs}")
    full_masks: list[np.ndarray] = []
    objects: list[SceneObject] = []
    for shape, colour in pairs:
        for _attempt in range(50):
            r = rng.uniform(min_radius, max_radius) * min(h, w)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            m = _shape_mask(shape, cx, cy, r, h, w, rng)
            visible = [o.mask_hw & ~m for o in objects]
            # Same-colour objects never touch, so every object stays its own colour region.
            near = _grown_box(m, 2)
            grown = binary_dilation(m[near], iterations=2) if near else None
            if (m.sum() >= 9
                    and all(v.sum() >= min_visible * f.sum()
                            for v, f in zip(visible, full_masks, strict=True))
                    and not any(o.colour == colour and (grown & o.mask_hw[near]).any()
                                for o in objects)):
                break
        else:
            raise RuntimeError(f"could not place {n_objects} objects on a {w}x{h} image")
        for o, v in zip(objects, visible):
            o.mask_hw = v
            o.box_xyxy_px = tight_box_px(v)
        texture = textures[int(rng.integers(len(textures)))]
        _paint(image, m, colour, texture, rng)
        full_masks.append(m)
        objects.append(SceneObject(shape, colour, m, tight_box_px(m), texture))
    return image, objects
