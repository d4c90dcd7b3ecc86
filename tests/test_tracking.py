from types import SimpleNamespace

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl.tracking import (
    CompletionTables,
    Trackers,
    callbacks_for,
    completion_table,
    tensorboard_dir,
)


class LoggingTrainer:
    """Records what Trackers sends (the pipeline test sends it through a real trainer)."""

    def __init__(self):
        self.logged = []

    def log(self, logs):
        self.logged.append(logs)


def test_trackers_send_the_held_out_figures_once_through_the_last_trainer():
    metrics = {"gIoU": 0.25, "cIoU": 0.14, "Acc@0.5": None, "parse_failures": 3,
               "gIoU_by_kind": {"attribute": 0.2}}
    none = Trackers([])
    none.attach(LoggingTrainer())
    assert not none and none.trainer is None and none.log_evaluation("sft", metrics) == {}
    t = Trackers(["tensorboard"])
    first, last = LoggingTrainer(), LoggingTrainer()
    t.attach(first)
    t.attach(last)
    sent = t.log_evaluation("sft", metrics)
    assert sent == {"test_gIoU": 0.25, "test_cIoU": 0.14, "test_parse_failures": 3.0}
    assert last.logged == [sent] and first.logged == []
    assert t.log_evaluation("sft", metrics) == {}  # the trainer is let go after one stage


def test_completion_table_is_markdown_with_the_last_user_text():
    frame = pd.DataFrame({
        "step": [3, 3],
        "prompt": [[{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": "Locate the a|b"}]}],
                   "plain prompt"],
        "completion": ["<answer>\n<box></box>\n</answer>", "x" * 400],
        "format": [1.0, 0.0], "advantage": [0.5, -0.5]})
    table = completion_table(frame).splitlines()
    assert table[0] == "| step | prompt | completion | format | advantage |"
    assert table[2].startswith("| 3 | Locate the a\\|b | <answer> <box></box> </answer> | 1.000")
    assert table[3].split(" | ")[2].endswith("...") and len(table) == 4


def test_completion_tables_reach_tensorboard(tmp_path):
    out = tmp_path / "trainer"
    (out / "completions").mkdir(parents=True)
    frame = pd.DataFrame({"step": [1], "prompt": ["p"], "completion": ["c"], "r": [1.0],
                          "advantage": [0.0]})
    frame.to_parquet(out / "completions" / "completions_00001.parquet")
    args, state = SimpleNamespace(output_dir=str(out)), SimpleNamespace(is_world_process_zero=True)
    cb = CompletionTables()
    cb.on_log(args, state, None)
    frame.assign(step=[2]).to_parquet(out / "completions" / "completions_00002.parquet")
    cb.on_train_end(args, state, None)
    events = EventAccumulator(str(tensorboard_dir(args)), size_guidance={"tensors": 0})
    events.Reload()
    steps = [e.step for e in events.Tensors("completions/text_summary")]
    assert steps == [1, 2]
    assert b"| c |" in events.Tensors("completions/text_summary")[0].tensor_proto.string_val[0]


@pytest.mark.parametrize("report_to, log, n", [(["tensorboard"], True, 1),
                                               (["tensorboard"], False, 0), ([], True, 0)])
def test_callbacks_for(report_to, log, n):
    assert len(callbacks_for(report_to, log)) == n
