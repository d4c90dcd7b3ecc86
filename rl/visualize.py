"""Pictures of predictions and reward curves.

`draw_prediction` shows the image with the grid lattice, the decoded mask (translucent), each
box, each seg point, and for refinements each offset as an arrow and each deleted point crossed
out. `plot_rewards` writes one PNG per reward term from a TRL log history.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokens import Instance, SpatialVocab

MASK_COLOUR = (0, 160, 255)
BOX_COLOUR = (0, 255, 0)
POINT_COLOUR = (255, 0, 0)
ARROW_COLOUR = (255, 255, 0)
DELETED_COLOUR = (255, 0, 255)
GRID_COLOUR = (70, 70, 70)


def draw_prediction(image, instances: Sequence[Instance], vocab: SpatialVocab, path: str | Path,
                    mask_hw: np.ndarray | None = None, moves: Sequence = (),
                    deleted: Sequence = (), scale: int | None = None) -> Path:
    """Save a picture of one prediction.

    image: (H, W, 3) array or PIL image. instances: final instances (normalized). mask_hw: the
    decoded mask in the image frame, drawn translucent. moves: ((x0, y0), (x1, y1)) offsets
    drawn as arrows; deleted: (x, y) points drawn crossed out (normalized).
    """
    from PIL import Image, ImageDraw

    from tokens.decoders import as_image_array, resize_mask

    img = as_image_array(image).copy()
    h, w = img.shape[:2]
    if mask_hw is not None:
        m = resize_mask(mask_hw.astype(bool), h, w)
        img[m] = (0.5 * img[m] + 0.5 * np.array(MASK_COLOUR)).astype(np.uint8)
    scale = scale or max(1, 448 // max(h, w))
    pic = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
    d = ImageDraw.Draw(pic)
    W, H = pic.size
    g = vocab.grid_size
    for k in range(1, g):
        d.line([(k * W / g, 0), (k * W / g, H)], fill=GRID_COLOUR)
        d.line([(0, k * H / g), (W, k * H / g)], fill=GRID_COLOUR)
    r = max(3, scale * 2)
    for (x0, y0), (x1, y1) in moves:
        d.line([(x0 * W, y0 * H), (x1 * W, y1 * H)], fill=ARROW_COLOUR, width=2)
        d.ellipse([x1 * W - 2, y1 * H - 2, x1 * W + 2, y1 * H + 2], fill=ARROW_COLOUR)
    for x, y in deleted:
        d.line([(x * W - r, y * H - r), (x * W + r, y * H + r)], fill=DELETED_COLOUR, width=2)
        d.line([(x * W - r, y * H + r), (x * W + r, y * H - r)], fill=DELETED_COLOUR, width=2)
    for inst in instances:
        if inst.box is not None:
            x1, y1, x2, y2 = inst.box
            d.rectangle([x1 * W, y1 * H, x2 * W, y2 * H], outline=BOX_COLOUR, width=2)
        for x, y in inst.points:
            d.ellipse([x * W - r, y * H - r, x * W + r, y * H + r], fill=POINT_COLOUR)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pic.save(path)
    return path


def plot_rewards(log_history: Sequence[dict], out_dir: str | Path, stage: str) -> list[Path]:
    """One PNG per reward term (`rewards/<name>/mean` in TRL's log) of one stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({k.split("/")[1] for entry in log_history for k in entry
                    if k.startswith("rewards/") and k.endswith("/mean")})
    paths = []
    for name in names:
        pts = [(e["step"], e[f"rewards/{name}/mean"]) for e in log_history
               if f"rewards/{name}/mean" in e]
        if not pts:
            continue
        steps, values = zip(*pts, strict=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(steps, values, marker=".", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.set_title(f"{stage}: {name}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stage}_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
