"""Learning curves: the model evaluated on validation scenes every few steps of each stage.

Validation scenes come from their own seed (neither the training scenes nor the held-out scenes
a run reports), so a recipe can be tuned on its curves without tuning on the reported figures.
Set `eval.curve_every` (steps) and `eval.curve_samples` in a recipe; the run writes
`curves.json` (one point per evaluation: stage, step, gIoU, referent accuracy, N-acc, ...)
and `plots/curves.png`.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from rl.files import write_json

# What each curve point keeps of the evaluation's summary.
CURVE_KEYS = ("gIoU", "cIoU", "Acc@0.5", "referent_accuracy", "chance", "no_target_accuracy",
              "multi_instance_recall", "parse_failures")


def curve_point(stage: str, step: int, metrics: dict) -> dict:
    point = {"stage": stage, "step": step}
    point.update({k: metrics.get(k) for k in CURVE_KEYS})
    for key in ("referent_by_kind", "referent_by_objects"):
        point[key] = {k: v["referent_accuracy"] for k, v in metrics.get(key, {}).items()}
    return point


class CurveCallback(TrainerCallback):
    """Evaluates the trained model on `rows` every `every` optimizer steps (and at the end of
    training), appending a point to `points` and rewriting `path` (JSON) each time.

    `stage` names the stage being trained and `offset` is added to the trainer's step (a stage
    trained by several trainers in turn); the pipeline sets both."""

    def __init__(self, rows, ctx, settings, every: int, path: str | Path):
        if every <= 0:
            raise ValueError(f"curve_every must be a positive number of steps, got {every}")
        self.rows, self.ctx, self.settings, self.every = rows, ctx, settings, every
        self.path = Path(path)
        self.points: list[dict] = []
        self.stage, self.offset = "", 0
        self.seconds = 0.0

    def record(self, model, step: int) -> dict:
        from rl.evaluate import evaluate_rows

        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        metrics, _ = evaluate_rows(model, self.rows, self.ctx, self.settings)
        if was_training:
            model.train()
        point = curve_point(self.stage, self.offset + step, metrics)
        self.points.append(point)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.points, indent=1)
        self.seconds += time.perf_counter() - t0
        return point

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.record(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            self.record(model, state.global_step)


def plot_curves(points: list[dict], out_path: str | Path) -> Path | None:
    """Referent accuracy (with its chance rate), gIoU and N-acc against steps, stages laid
    end to end."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, offset, last_stage, last_step, bounds = [], 0, None, 0, []
    for p in points:
        if p["stage"] != last_stage and last_stage is not None:
            offset += last_step
            bounds.append((offset, p["stage"]))
        xs.append(offset + p["step"])
        last_stage, last_step = p["stage"], p["step"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("referent_accuracy", "-o"), ("chance", ":"), ("gIoU", "-s"),
                       ("no_target_accuracy", "-^")):
        ys = [p.get(key) for p in points]
        if any(y is not None for y in ys):
            ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=key,
                    markersize=3)
    for x, name in bounds:
        ax.axvline(x, color="grey", lw=0.5)
        ax.text(x, 0.98, f" {name}", fontsize=7, va="top", rotation=90)
    ax.set_xlabel("step (stages end to end)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("validation scenes")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
