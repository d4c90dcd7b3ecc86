"""The default recipe made small enough for a test: the default trains a 4-layer model after
3,000 steps of tower pre-training and a 3,000-step curriculum on 16,000 scenes (15 minutes);
tests that run the pipeline take its wiring with these parts cut to nothing (or, with
`keep_parts`, to a few steps each, so the test still walks them)."""

from __future__ import annotations

from rl.config import _merge


def small(overrides: dict, keep_parts: bool = False) -> dict:
    """`overrides` for configs/default.yaml (merged over it as recipes merge), with the
    default's costly parts cut first."""
    cut = {"model": {"tiny": {"num_layers": 2,
                              "vision_pretrain": {"steps": 10 if keep_parts else 0}}},
           "sft": ({"curriculum_steps": 20, "curriculum_scenes": 16} if keep_parts
                   else {"curriculum_steps": 0, "curriculum_scenes": None})}
    return _merge(cut, overrides)
