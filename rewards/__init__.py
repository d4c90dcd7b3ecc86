"""GETok rewards (method spec §6–§8): pure functions of completion text, ground truth and
decoded masks, each a TRL reward function `(completions, **columns) -> list[float | None]`.

`REWARDS` maps every config name to its reward: a plain function (`non_repeat`) or a class
whose instances are the reward functions (built with `build_reward(name, **params)` so every
constant is a config value). Every reward's `__name__` is its config name, so TRL logs
`rewards/<name>/mean`.

>>> reward = build_reward("box")
>>> reward.__name__
'box'
"""

from __future__ import annotations

from collections.abc import Callable

from rewards.common import completion_text
from rewards.masks import shared_decoder
from rewards.matching import Matching, box_iou, match
from rewards.solution import GroundTruth, SolutionError, make_solution, parse_solution
from rewards.stage1 import BoxReward, FormatReward, MaskReward, PointsReward, non_repeat_reward
from rewards.stage2 import BoxRefineReward, MaskGainReward, PointRefineReward, RefineFormatReward

REWARDS: dict[str, Callable | type] = {
    "format": FormatReward,
    "non_repeat": non_repeat_reward,
    "box": BoxReward,
    "mask": MaskReward,
    "points": PointsReward,
    "refine_format": RefineFormatReward,
    "point_refine": PointRefineReward,
    "box_refine": BoxRefineReward,
    "mask_gain": MaskGainReward,
}
STAGE1_REWARDS = ("format", "non_repeat", "box", "mask", "points")
STAGE2_REWARDS = ("refine_format", "point_refine", "box_refine", "mask_gain")
# The documented range of each reward: every value it returns is None or finite and inside it.
REWARD_RANGES: dict[str, tuple[float, float]] = {
    name: entry.value_range for name, entry in REWARDS.items()}


def build_reward(name: str, **params) -> Callable:
    """The reward function for config name `name`, built with `params` (codec, vocab,
    match_weights, l1_scale, decoder, tiers, kappa, ...). Unknown names and parameters fail."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {sorted(REWARDS)}")
    entry = REWARDS[name]
    if not isinstance(entry, type):
        if params:
            raise ValueError(f"reward {name!r} takes no parameters, got {sorted(params)}")
        return entry
    try:
        return entry(**params)
    except TypeError as e:
        raise ValueError(f"reward {name!r}: bad parameters {sorted(params)} ({e})") from None


__all__ = [
    "REWARDS",
    "REWARD_RANGES",
    "STAGE1_REWARDS",
    "STAGE2_REWARDS",
    "BoxRefineReward",
    "BoxReward",
    "FormatReward",
    "GroundTruth",
    "MaskGainReward",
    "MaskReward",
    "Matching",
    "PointRefineReward",
    "PointsReward",
    "RefineFormatReward",
    "SolutionError",
    "box_iou",
    "build_reward",
    "completion_text",
    "make_solution",
    "match",
    "non_repeat_reward",
    "parse_solution",
    "shared_decoder",
]
