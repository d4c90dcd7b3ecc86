"""Experiment trackers: what a run reports to besides its own files.

`report_to` (a run setting, e.g. `[tensorboard]`) is handed to every TRL trainer, so each stage
logs its steps there as transformers does for any tracker it supports (loss, each reward term's
`rewards/<name>/mean`, the stage-2 signal shares, KL, ...). Two things reach the trackers here:

- the held-out evaluation of each stage (`test_gIoU`, ...: trackers show `test/gIoU`, as
  transformers names a test split's figures), logged through
  the stage's last trainer once the stage is evaluated (`Trackers.log_evaluation`), so every
  tracker gets it the way it gets the training logs; the untrained model's evaluation has no
  trainer and is not sent;
- with TRL's `log_completions` (a GRPO stage's `log_completions: true`), the completion tables
  TRL writes (`<stage>/trainer/completions/*.parquet`; wandb and trackio also get them as
  tables) are written to TensorBoard as a text table per logging step
  (`CompletionTables`).

TensorBoard's files go where transformers puts them: `<stage>/trainer/runs/<date_host>/`;
`tensorboard --logdir runs/default` shows every stage.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

# The held-out figures sent to the trackers (rl.evaluate names); others stay in metrics.json.
TRACKED_METRICS = ("gIoU", "cIoU", "Acc@0.5", "Acc@0.8", "parse_failures",
                   "referent_accuracy", "no_target_accuracy", "answer_tokens_per_instance")
# Rows of a completion table written to TensorBoard per logging step.
COMPLETION_ROWS = 16


class Trackers:
    """The run's trackers. `attach` keeps the trainer that finished last (rl.training does it);
    `log_evaluation` sends a stage's held-out figures through it and lets it go."""

    def __init__(self, report_to=()):
        self.report_to = [r for r in report_to if r != "none"]
        self.trainer = None

    def __bool__(self) -> bool:
        return bool(self.report_to)

    def attach(self, trainer) -> None:
        self.trainer = trainer if self.report_to else None

    def log_evaluation(self, stage: str, metrics: dict) -> dict:
        """Log `metrics` (a stage's held-out evaluation) as `test_<name>` at the stage's last
        step; returns what was logged (empty without a tracker or a trainer)."""
        if self.trainer is None:
            return {}
        logs = {f"test_{k}": float(metrics[k]) for k in TRACKED_METRICS
                if isinstance(metrics.get(k), int | float)}
        self.trainer.log(logs)
        self.trainer = None  # the next stage attaches its own; this one's memory is freed
        return logs


def completion_table(frame, rows: int = COMPLETION_ROWS) -> str:
    """A markdown table (TensorBoard renders markdown text) of the first `rows` rows of a TRL
    completions frame: the prompt's last text, the completion, each reward and the advantage."""

    def text(value) -> str:
        if isinstance(value, list):  # a conversation: the last message's text parts
            parts = value[-1].get("content", "") if value and isinstance(value[-1], dict) else ""
            if isinstance(parts, list):
                parts = " ".join(p.get("text", "") for p in parts if isinstance(p, dict)
                                 and isinstance(p.get("text"), str))
            value = parts
        s = str(value).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= 300 else s[:297] + "..."

    cols = [c for c in frame.columns if c != "image"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.head(rows).iterrows():
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else text(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class CompletionTables(TrainerCallback):
    """Writes the completion tables TRL saves (`log_completions`) to TensorBoard as text,
    `completions` at each table's step. TRL writes a table after the trainer's log callbacks
    run, so each log writes the tables that exist by then, and the end of training the rest."""

    def __init__(self):
        self.written: set[Path] = set()
        self.writer = None

    def _write_new(self, args) -> None:
        import pandas as pd

        folder = Path(args.output_dir) / "completions"
        new = sorted(p for p in folder.glob("completions_*.parquet") if p not in self.written)
        if not new:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard_dir(args)))
        for path in new:
            step = int(path.stem.split("_")[-1])
            self.writer.add_text("completions", completion_table(pd.read_parquet(path)), step)
            self.written.add(path)
        self.writer.flush()

    def on_log(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._write_new(args)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._write_new(args)
            if self.writer is not None:
                self.writer.close()
                self.writer = None


def tensorboard_dir(args) -> Path:
    """Where a trainer's TensorBoard files go: the folder transformers' TensorBoardCallback
    picked (`<output_dir>/runs/<date_host>`), the newest one when it already ran."""
    runs = sorted((Path(args.output_dir) / "runs").glob("*"), key=lambda p: p.stat().st_mtime)
    if runs:
        return runs[-1]
    from transformers.integrations.integration_utils import default_logdir

    return Path(args.output_dir) / default_logdir()


def callbacks_for(report_to, log_completions: bool) -> list:
    """The callbacks a trainer needs for `report_to` beyond those transformers adds itself."""
    return [CompletionTables()] if log_completions and "tensorboard" in report_to else []
