"""GETok training in one command: cold start, GRPO stage 1, GRPO stage 2, evaluation.

    accelerate launch rl/train_grpo.py                                  # the default run (CPU)
    accelerate launch rl/train_grpo.py --config configs/paper_qwen2_5_vl_7b.yaml
    accelerate launch --config_file configs/accelerate/zero2.yaml rl/train_grpo.py --config ...

Every stage is optional (the recipe's `enabled`) and resumable (run the same command again).
The output folder gets metrics.json, one reward-curve plot per reward term, prediction
pictures, and one checkpoint per stage. See rl/pipeline.py for what each stage does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `accelerate launch rl/train_grpo.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="recipe YAML")
    p.add_argument("--output-dir", default=None, help="override the recipe's output_dir")
    a = p.parse_args(argv)
    from rl.config import load_config
    from rl.pipeline import Pipeline, RecipeMismatch

    overrides = {"output_dir": a.output_dir} if a.output_dir else None
    try:
        return Pipeline(load_config(a.config, overrides)).run()
    except RecipeMismatch as e:  # a message, not a traceback: nothing ran
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
