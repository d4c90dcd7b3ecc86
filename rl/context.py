"""What every stage of a run shares, passed whole instead of a dozen loose arguments."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokens import SpatialVocab
from tokens.codec import Codec


def read_spec(spec: str | dict | None, default: str | None = None) -> str | dict | None:
    """A decoder or codec given on a command line or in a recipe: a name (`"region"`,
    `"text_bins"`), JSON of a mapping (`{"name": "sam", ...}`), or already a mapping."""
    if spec is None:
        return default
    if isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {spec!r} ({e})") from None
    return spec


def codec_spec(spec: str | dict | None) -> dict:
    """A codec spec as `{"name": ..., **params}`."""
    spec = read_spec(spec, "grid")
    return dict(spec) if isinstance(spec, dict) else {"name": spec}


@dataclass
class RunContext:
    """The run-wide settings a trainer or an evaluation needs besides its own stage config.

    vocab, codec: the spatial vocabulary and how answers are written. decoder_spec: the mask
    decoder config (`"region"`, `{"name": "sam", ...}`). processor: the model's processor
    (tokenizer inside). prompts: the prompt templates. output_dir: where this trainer writes.
    """

    vocab: SpatialVocab
    codec: Codec
    decoder_spec: str | dict
    processor: Any
    prompts: dict = field(default_factory=dict)
    output_dir: Path = Path("runs/default")
    seed: int = 0
    logging_steps: int = 10
    progress_bars: bool = True
    callbacks: list = field(default_factory=list)  # transformers TrainerCallbacks for trainers
    report_to: tuple = ()  # experiment trackers (transformers' report_to)
    trackers: Any = None  # rl.tracking.Trackers: held-out figures to the trackers
    score_labelled_only: bool = True  # rl.training.score_labelled_positions_only
    use_kernels: bool = False  # Hub kernels for models TRL loads itself (rl.models.hub_kernels)

    @classmethod
    def from_config(cls, cfg, processor) -> RunContext:
        from rl.data.samples import load_prompts
        from rl.tracking import Trackers
        from tokens.registry import get_codec

        vocab = SpatialVocab(cfg.model.grid_size, cfg.model.offset_radius,
                             cfg.model.offset_step_cells)
        return cls(vocab=vocab, codec=get_codec(cfg.codec, vocab=vocab, **cfg.codec_params),
                   decoder_spec=cfg.data.decoder, processor=processor,
                   prompts=load_prompts(cfg.data.prompts), output_dir=Path(cfg.output_dir),
                   seed=cfg.seed, logging_steps=cfg.logging_steps,
                   progress_bars=cfg.progress_bars, report_to=tuple(cfg.report_to),
                   trackers=Trackers(cfg.report_to),
                   score_labelled_only=cfg.score_labelled_only,
                   use_kernels=cfg.model.use_kernels)

    def decoder(self):
        """The mask decoder, one per configuration in this process (shared embedding cache)."""
        from rewards.masks import shared_decoder

        return shared_decoder(self.decoder_spec)

    def with_output(self, folder: str | Path, **changes) -> RunContext:
        return dataclasses.replace(self, output_dir=Path(folder), **changes)
