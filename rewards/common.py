"""What every reward shares: reading TRL's arguments, parsing, matching, decoding masks.

A reward is called by TRL as `reward(prompts=..., completions=..., completion_ids=...,
**dataset_columns, trainer_state=..., log_metric=..., log_extra=...)` with one entry per
completion in every list. Completions are strings, or (conversational datasets) lists of
messages whose last one is the assistant's answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rewards.batch import matched_batch, parsed_batch
from rewards.solution import GroundTruth, SolutionCache
from tokens.codec import Codec
from tokens.registry import get_codec
from tokens.vocab import SpatialVocab


def completion_text(completion) -> str:
    """The text of one completion; never raises.

    A string is itself. A conversation (a list of messages) gives its last message's content:
    a string, or the concatenated `text` of its `{"type": "text", "text": ...}` parts, where a
    part whose `text` is not a string (model output is never trusted) contributes nothing.
    Anything else gives "" (None, numbers, odd shapes), which every reward scores as an answer
    with no `<answer>` tag.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, Sequence) or not completion:
        return ""
    last = completion[-1]
    content = last.get("content", "") if isinstance(last, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p["text"] for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text"
                       and isinstance(p.get("text"), str))
    return ""


def column(kwargs: Mapping, name: str, n: int, reward: str) -> list:
    """The dataset column `name`, checked to hold one value per completion."""
    if name not in kwargs or kwargs[name] is None:
        known = sorted(k for k in kwargs if k not in ("trainer_state", "log_metric", "log_extra"))
        raise KeyError(f"reward {reward!r} needs the dataset column {name!r}; the batch has "
                       f"{known}")
    values = kwargs[name]
    if len(values) != n:
        raise ValueError(f"reward {reward!r}: column {name!r} has {len(values)} values for "
                         f"{n} completions")
    return list(values)


def log(kwargs: Mapping, name: str, values) -> None:
    """Log the mean of `values` through TRL's `log_metric`, when TRL passed one."""
    log_metric = kwargs.get("log_metric")
    values = [v for v in values if v is not None]
    if log_metric is not None and values:
        log_metric(name, float(np.mean(values)))


# One cache for every reward in the process: they all see the same solution values.
SOLUTIONS = SolutionCache()


class Reward:
    """Base of the parameterized rewards: a picklable callable whose `__name__` is its config
    name, holding the codec and the matching parameters of §6."""

    name = ""
    value_range: tuple[float, float] = (0.0, 1.0)  # every value is None or inside it

    def __init__(self, codec: str | Mapping | Codec = "grid",
                 vocab: SpatialVocab | Mapping | None = None,
                 match_weights: Sequence[float] = (1.0, 1.0, 1.0), l1_scale: float = 0.05):
        if isinstance(vocab, Mapping):
            vocab = SpatialVocab(**vocab)
        self.vocab = vocab or SpatialVocab()
        if isinstance(codec, Mapping):  # {"name": ..., **params} from a config
            codec = get_codec(vocab=self.vocab, **codec)
        self.codec = codec if isinstance(codec, Codec) else get_codec(codec, vocab=self.vocab)
        if len(match_weights) != 3:
            raise ValueError(f"match_weights needs (w_iou, w_hit, w_box), got {match_weights!r}")
        self.match_weights = tuple(float(w) for w in match_weights)
        self.l1_scale = float(l1_scale)
        self.solutions = SOLUTIONS
        self.__name__ = self.name

    def texts(self, completions) -> list[str]:
        return [completion_text(c) for c in completions]

    def ground_truth(self, kwargs, n: int) -> list[GroundTruth]:
        return [self.solutions.get(v, row) for row, v in
                enumerate(column(kwargs, "solution", n, self.name))]

    def parsed(self, completions):
        """The batch's parsed answers, shared by every term (`rewards.batch`)."""
        return parsed_batch(self.texts(completions), self.codec)

    def matched(self, completions, kwargs):
        """The batch parsed and matched to its ground truth, shared by every term."""
        texts = self.texts(completions)
        return matched_batch(texts, self.ground_truth(kwargs, len(texts)), self.codec,
                             self.match_weights, self.l1_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
