"""Pictures of predictions and reward curves.

`draw_prediction` shows the image with the grid lattice, the decoded mask (translucent), each
box, each seg point, and for refinements each offset as an arrow and each deleted point crossed
out; with the ground truth, the named objects' outline (white) and a caption (the expression,
the IoU); after a refinement, the proposal and the refined result side by side.
`contact_sheet` puts many such pictures on one page (the pipeline: per evaluated stage, the
eight best and eight worst held-out samples by IoU).
`plot_rewards` writes one PNG per stage with each reward term's mean over steps, from
a TRL log history; `python -m rl.visualize runs/default` redraws them from a run's saved logs.
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
OUTLINE_COLOUR = (255, 255, 255)
LABEL_COLOUR = (255, 255, 255)
PANEL_GAP = 6  # black pixels between the panels of a picture and the tiles of a sheet


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return [line for part in text.split("\n") for line in textwrap.wrap(part, width) or [""]]


def refinement_marks(instances: Sequence[Instance], refinement, vocab: SpatialVocab
                     ) -> tuple[list, list]:
    """What one refinement answer (its text, or its `ParsedRefinement` against `instances`) did
    to `instances`: the moved points as ((x0, y0), (x1, y1)) and the deleted points as (x, y),
    normalized. Lines that are not well formed change nothing (as in `apply_refinement`) and
    are not drawn."""
    from tokens import parse_refinement

    moves, deleted = [], []
    ref = (parse_refinement(refinement, list(instances), vocab)
           if isinstance(refinement, str) else refinement)
    for inst, line in zip(instances, ref.lines, strict=False):
        if not line.well_formed or line.seg is None:
            continue
        for (x, y), op in zip(inst.points, line.seg, strict=False):
            if op is None:
                deleted.append((x, y))
            elif op != (0, 0):
                moves.append(((x, y), vocab.apply_offset(x, y, *op)))
    return moves, deleted


def render_panel(image, instances: Sequence[Instance], vocab: SpatialVocab,
                 mask_hw: np.ndarray | None = None, moves: Sequence = (),
                 deleted: Sequence = (), scale: int | None = None,
                 target_hw: np.ndarray | None = None, label: str = ""):
    """One prediction drawn on its image (a PIL image): the grid lattice, the decoded mask
    (translucent), boxes, points, offsets as arrows, deleted points crossed out, the named
    objects' outline (white) and an optional `label` in the top-left corner."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_erosion

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
    if target_hw is not None and target_hw.any():
        t = resize_mask(target_hw.astype(bool), H, W)
        edge = t & ~binary_erosion(t, iterations=2)
        arr = np.asarray(pic).copy()
        arr[edge] = OUTLINE_COLOUR
        pic = Image.fromarray(arr)
    if label:
        d = ImageDraw.Draw(pic)
        d.rectangle([0, 0, 7 * len(label) + 6, 14], fill=(0, 0, 0))
        d.text((3, 1), label, fill=LABEL_COLOUR)
    return pic


def with_caption(pic, caption: str):
    """`pic` with `caption` written in white on a black band above it."""
    from PIL import Image, ImageDraw

    if not caption:
        return pic
    W = pic.width
    lines = _wrap(caption, max(20, W // 7))
    band = Image.new("RGB", (W, 14 * len(lines) + 6), (0, 0, 0))
    bd = ImageDraw.Draw(band)
    for k, line in enumerate(lines):
        bd.text((4, 3 + 14 * k), line, fill=(255, 255, 255))
    full = Image.new("RGB", (W, band.height + pic.height))
    full.paste(band, (0, 0))
    full.paste(pic, (0, band.height))
    return full


def side_by_side(pictures, gap: int = PANEL_GAP):
    """Pictures of one height in a row, `gap` black pixels apart."""
    from PIL import Image

    W = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    row = Image.new("RGB", (W, max(p.height for p in pictures)))
    x = 0
    for p in pictures:
        row.paste(p, (x, 0))
        x += p.width + gap
    return row


def prediction_picture(image, instances: Sequence[Instance], vocab: SpatialVocab,
                       mask_hw: np.ndarray | None = None, moves: Sequence = (),
                       deleted: Sequence = (), scale: int | None = None,
                       target_hw: np.ndarray | None = None, caption: str = "",
                       proposal: tuple | None = None):
    """A picture of one prediction (a PIL image).

    image: (H, W, 3) array or PIL image. instances: final instances (normalized). mask_hw: the
    decoded mask in the image frame, drawn translucent. moves: ((x0, y0), (x1, y1)) offsets
    drawn as arrows; deleted: (x, y) points drawn crossed out (normalized). target_hw: the
    ground-truth mask (the named objects), drawn as a white outline. caption: text written
    above the picture (e.g. the expression and the IoU). proposal: (instances, mask_hw) of the
    grid-token proposal a refinement started from: drawn on the left, labelled "proposal",
    beside the refined result ("refined", with its moves and deletions).
    """
    panel = render_panel(image, instances, vocab, mask_hw, moves, deleted, scale, target_hw,
                         label="refined" if proposal is not None else "")
    if proposal is not None:
        before = render_panel(image, proposal[0], vocab, proposal[1], scale=scale,
                              target_hw=target_hw, label="proposal")
        panel = side_by_side([before, panel])
    return with_caption(panel, caption)


def draw_prediction(image, instances: Sequence[Instance], vocab: SpatialVocab, path: str | Path,
                    *args, **kwargs) -> Path:
    """Save `prediction_picture(image, instances, vocab, *args, **kwargs)` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prediction_picture(image, instances, vocab, *args, **kwargs).save(path)
    return path


def contact_sheet(tiles: Sequence, path: str | Path, title: str, cols: int = 4) -> Path:
    """Save `tiles` (PIL images, e.g. captioned pictures) in a grid of `cols` columns under a
    `title` band; each tile is centred in a cell the size of the largest tile."""
    from PIL import Image

    rows = -(-len(tiles) // cols)
    cw = max(t.width for t in tiles) + PANEL_GAP
    ch = max(t.height for t in tiles) + PANEL_GAP
    sheet = Image.new("RGB", (cols * cw, max(1, rows) * ch), (0, 0, 0))
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(t, (c * cw + (cw - t.width) // 2, r * ch + (ch - t.height) // 2))
    sheet = with_caption(sheet, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def reward_curves(log_history: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, mean) per reward term (`rewards/<name>/mean` in TRL's log) and for the weighted
    total (`reward`); steps where a term was None (nothing to score) are left out."""
    curves: dict[str, list] = {}
    for e in log_history:
        if "step" not in e:
            continue
        for key, value in e.items():
            name = ("total" if key == "reward" else key.split("/")[1]
                    if key.startswith("rewards/") and key.endswith("/mean") else None)
            if name is not None and isinstance(value, int | float) and np.isfinite(value):
                curves.setdefault(name, []).append((e["step"], float(value)))
    return curves


def plot_rewards(log_history: Sequence[dict], out_dir: str | Path, stage: str) -> Path | None:
    """One PNG per stage, `<stage>_rewards.png`: a panel per reward term with its mean over
    steps, and the weighted total. None when the log has no reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = reward_curves(log_history)
    if not curves:
        return None
    names = (["total"] if "total" in curves else []) + sorted(n for n in curves if n != "total")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*curves[name], strict=True)
        ax.plot(steps, values, marker=".", lw=1, color="black" if name == "total" else None)
        ax.set_title(name if name != "total" else "total (weighted sum)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{stage}: mean reward per term")
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stage}_rewards.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """The reward plots of every GRPO stage of a training run, from the logs it saved
    (`<stage>/stage.json`, or TRL's `trainer_state.json` of a run still going)."""
    import json

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "plots"
    paths = []
    for stage in ("grpo_stage1", "grpo_stage2"):
        hist = None
        if (run_dir / stage / "stage.json").is_file():
            hist = json.loads((run_dir / stage / "stage.json").read_text())["log_history"]
        else:
            states = sorted((run_dir / stage).glob("**/trainer_state.json"),
                            key=lambda p: p.stat().st_mtime)
            if states:
                hist = json.loads(states[-1].read_text())["log_history"]
        if hist and (path := plot_rewards(hist, out, stage)) is not None:
            paths.append(path)
    return paths


def main(argv=None) -> list[Path]:
    import argparse

    p = argparse.ArgumentParser(prog="python -m rl.visualize",
                                description="Reward plots of a training run, one PNG per stage.")
    p.add_argument("run", help="a run folder (e.g. runs/default)")
    p.add_argument("--out", default=None, help="where to write (default RUN/plots)")
    a = p.parse_args(argv)
    paths = plot_run(a.run, a.out)
    if not paths:
        raise SystemExit(f"{a.run}: no GRPO stage log found (grpo_stage*/stage.json or "
                         "trainer_state.json)")
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
