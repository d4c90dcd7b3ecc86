"""Models by path, and a tiny Qwen2.5-VL built offline for the default run and the tests.

No model hub is reachable on the machines this package is tested on, so the tiny model is built
from a config with random weights: a byte-level BPE tokenizer trained here with the `tokenizers`
library, the Qwen chat special tokens, a chat template, and the Qwen2-VL image/video processors
inside a `Qwen2_5_VLProcessor`. It saves and reloads with `AutoProcessor` and
`AutoModelForImageTextToText`, exactly like a real checkpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from contextlib import contextmanager
from pathlib import Path

from rl.qwen_vocab import CHAT_TEMPLATE, chat_template

# Qwen's chat and vision special tokens, in the order the tiny tokenizer gives them ids.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

ANSWER_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<box>", "</box>", "<seg>",
               "</seg>", "<offset>", "</offset>")


_WORDS = (
    "the a an of and to in on left right above below of with is are all every no none "
    "red green blue yellow purple orange cyan white black gray pink brown "
    "circle square triangle star ellipse rectangle shape shapes object objects "
    "small large largest smallest biggest leftmost rightmost top bottom middle "
    "find segment point box locate where which please refine answer think output "
    "image picture region mask first then offsets tokens grid instance instances"
).split()

_CHAT_LINES = ["system\nYou are a helpful assistant.", "user\n", "assistant\n",
               "Find", "Refine", "Locate", "Segment", "Point", "Which", "Where"]


def _training_corpus(n_lines: int = 4000, seed: int = 0) -> list[str]:
    """Short English-like lines, digits and chat markup for training the tiny BPE."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        nums = [str(rng.randint(0, 1000)) for _ in range(rng.randint(0, 4))]
        lines.append(" ".join(words + nums) + rng.choice([".", "?", "", ","]))
    lines += [f"({i}, {j})" for i, j in itertools.product(range(64), range(0, 64, 7))]
    # The chat template's own words (its default system turn, the role names) and the
    # capitalized words that open the default prompts: without them each sample paid ~25
    # tokens of single letters for text that never changes (a third of a default sample).
    lines += _CHAT_LINES * 200
    return lines


def build_tiny_tokenizer(vocab_size: int = 1024, system_turn: bool = True):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained offline in about a second;
    its chat template opens with Qwen's default system turn or not (`chat_template`)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    # The answer tags are single (normal, non-special) tokens in this tokenizer: byte-level
    # pre-tokenization splits "<box>" into "<", "box", ">", which no merge can join, and a
    # tiny model learns the answer grammar far sooner over one token per tag. Real
    # checkpoints keep the tags as plain text; nothing else depends on this.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ANSWER_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=chat_template(system_turn),
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    tie_word_embeddings: bool = True,
    tokenizer_vocab_size: int = 1024,
    image_size: int = 112,
    rope_theta: float = 10000.0,
    spatial_merge_size: int = 2,
    mrope_section: list | None = None,
    rope_factor: float | None = None,
    rope_frequencies: list | None = None,
    vision_pretrain: dict | None = None,
    system_turn: bool = True,
    seed: int = 0,
) -> Path:
    """Build a randomly initialized Qwen2.5-VL with tokenizer and processor; save it to `out_dir`.

    `image_size` fixes the processor's pixel budget so every image becomes
    (image_size / (14 * spatial_merge_size))² visual tokens (16 at 112 px with the usual 2×2
    merge, 64 with `spatial_merge_size=1`). `rope_theta`: the language model's rotary base;
    multimodal RoPE gives image rows and columns its lowest frequencies, which at 10,000 and a
    head size of 32 barely turn over a 4×4 image (see configs/default.yaml). `mrope_section`:
    how many of the head_dim/2 frequencies (highest first) go to time, height and width
    (default: an eighth of head_dim to time, the rest split); `rope_factor`: linear rotary
    scaling, every frequency divided by it (with a base below 1 the frequencies rise, so time
    gets the lowest); `rope_frequencies`: every one of the head_dim/2 rates (rad per position)
    given outright, in mrope order (overrides `rope_theta` and `rope_factor`).
    `system_turn`: whether the chat template opens a conversation that has no system message
    with Qwen's default one (Qwen's behaviour; the default recipe turns it off: 11 constant
    tokens of every sample's 58).
    `vision_pretrain`: the fields of `rl.vision_pretrain.TowerPretrainConfig` (steps,
    learning_rate, lr_scheduler_type, batch_size, scenes, output_norm, size): the vision
    tower is trained on the synthetic scenes' object colours and shapes before saving (its
    figures in `vision_pretrain.json`); None or 0 steps: random, as the rest.
    Returns the folder, loadable with `AutoModelForImageTextToText` and `AutoProcessor`.
    """
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(tokenizer_vocab_size, system_turn)
    head_dim = hidden_size // num_heads
    if head_dim % 8:
        raise ValueError(f"hidden_size/num_heads = {head_dim} must be a multiple of 8 (mrope)")
    # mrope splits head_dim/2 rotary frequencies over (time, height, width).
    if mrope_section is None:
        t = head_dim // 8
        mrope_section = [t, (head_dim // 2 - t) // 2, head_dim // 2 - t - (head_dim // 2 - t) // 2]
    elif len(mrope_section) != 3 or sum(mrope_section) != head_dim // 2:
        raise ValueError(f"mrope_section {mrope_section}: three counts of rotary frequencies "
                         f"(time, height, width) summing to head_dim/2 = {head_dim // 2}")
    mrope_section = [int(n) for n in mrope_section]
    rope = {"rope_type": "default", "rope_theta": float(rope_theta), "mrope_section": mrope_section}
    if rope_factor is not None:
        rope.update(rope_type="linear", factor=float(rope_factor))
    if rope_frequencies is not None:
        rope = _explicit_rope(rope_frequencies, mrope_section, max_positions=4096)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=4096,
            rope_parameters=rope,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=tie_word_embeddings,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden_size,
            intermediate_size=vision_hidden_size * 2,
            num_heads=max(1, vision_hidden_size // 32),
            out_hidden_size=hidden_size,
            fullatt_block_indexes=[vision_depth - 1],
            window_size=112,
            spatial_merge_size=spatial_merge_size,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    if vision_pretrain and vision_pretrain.get("steps", 0):
        import dataclasses

        from rl.vision_pretrain import TowerPretrainConfig, pretrain_tower

        known = {f.name for f in dataclasses.fields(TowerPretrainConfig)} - {"seed"}
        if set(vision_pretrain) - known:
            raise ValueError(f"model.tiny.vision_pretrain: unknown keys "
                             f"{sorted(set(vision_pretrain) - known)}; known: {sorted(known)}")

        out_dir.mkdir(parents=True, exist_ok=True)
        figures = pretrain_tower(model, _processor(tokenizer, image_size, spatial_merge_size),
                                 TowerPretrainConfig(**{"seed": seed, **vision_pretrain}),
                                 image_size)
        (out_dir / "vision_pretrain.json").write_text(json.dumps(figures, indent=2))
    return _save_with_processor(model, tokenizer, image_size, spatial_merge_size, out_dir)


def _explicit_rope(frequencies: list, mrope_section: list, max_positions: int) -> dict:
    """Rotary parameters giving each of the head_dim/2 frequency pairs its own rate (rad per
    position), in mrope order (time pairs first, then height, then width).

    Written as transformers' `longrope` type with base 1, so each inverse frequency is
    1 / factor and the per-pair factors survive save and load: with one geometric ladder the
    time, height and width sections cannot hold both near-zero rates (attention by content at
    any distance) and fast ones (image columns told apart)."""
    freqs = [float(f) for f in frequencies]
    if len(freqs) != sum(mrope_section) or min(freqs) <= 0:
        raise ValueError(f"rope_frequencies: {len(freqs)} values, expected {sum(mrope_section)} "
                         f"positive rates (head_dim/2, in mrope order {mrope_section})")
    factors = [1.0 / f for f in freqs]
    return {"rope_type": "longrope", "rope_theta": 1.0, "factor": 1.0, "attention_factor": 1.0,
            "short_factor": factors, "long_factor": factors,
            "original_max_position_embeddings": max_positions, "mrope_section": mrope_section}


def _processor(tokenizer, image_size: int, merge_size: int):
    """A Qwen2.5-VL processor whose pixel budget is exactly `image_size`² (so every image gives
    the same visual tokens), with the tokenizer's chat template (the package's)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = image_size * image_size
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels,
                                              merge_size=merge_size),
        video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels,
                                              merge_size=merge_size),
        tokenizer=tokenizer, chat_template=tokenizer.chat_template or CHAT_TEMPLATE)


def _save_with_processor(model, tokenizer, image_size: int, merge_size: int,
                         out_dir: str | Path) -> Path:
    """Save `model` with `_processor`'s processor."""
    processor = _processor(tokenizer, image_size, merge_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# The released Qwen2.5-VL checkpoints' widths (their config.json): language model, vision tower,
# embedding rows and head tying. Depth is what `build_qwen2_5_vl_at_width` cuts.
QWEN2_5_VL_WIDTHS = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
               num_hidden_layers=36, vision_out_hidden_size=2048),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
               num_hidden_layers=28, vision_out_hidden_size=3584),
    # Not a checkpoint: 3B's vocabulary rows, tying, head size (128) and grouped-query ratio
    # (8 query heads per key/value head) at width 1024, so the paper path's smoke run fits a CI
    # machine (rl/bench/paper_widths.py; the 3B run peaks at 17 GB). The vision tower stays real.
    "3b-narrow": dict(hidden_size=1024, intermediate_size=2048, num_attention_heads=8,
                      num_key_value_heads=1, vocab_size=151936, tie_word_embeddings=True,
                      num_hidden_layers=36, vision_out_hidden_size=1024),
}
# The vision tower is the same in both: 32 blocks of width 1280, 16 heads, 14-px patches merged
# 2x2, window attention with full attention every eighth block.
QWEN2_5_VL_VISION = dict(hidden_size=1280, intermediate_size=3420, num_heads=16, depth=32,
                         patch_size=14, spatial_merge_size=2, window_size=112,
                         fullatt_block_indexes=[7, 15, 23, 31])


def build_qwen2_5_vl_at_width(out_dir: str | Path, size: str = "3b", num_layers: int = 1,
                              vision_depth: int = 1, image_size: int = 112,
                              dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A Qwen2.5-VL with a released checkpoint's widths (`QWEN2_5_VL_WIDTHS`: every width,
    head count, vocabulary rows, tying, the real vision tower width) and its real tokenizer
    (`rl.qwen_vocab`), depth cut to `num_layers` language and `vision_depth` vision blocks,
    random weights; saved with its processor (an `image_size`² pixel budget) to `out_dir`.
    For running the paper recipe's code path at real widths on a CPU (rl/bench/paper_widths.py);
    not a model that knows anything."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    from rl.qwen_vocab import qwen2_5_vl_tokenizer

    if size not in QWEN2_5_VL_WIDTHS:
        raise ValueError(f"unknown size {size!r}; known: {sorted(QWEN2_5_VL_WIDTHS)}")
    w = QWEN2_5_VL_WIDTHS[size]
    tokenizer = qwen2_5_vl_tokenizer()
    tokenizer.padding_side = "left"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    v = QWEN2_5_VL_VISION
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=w["vocab_size"], hidden_size=w["hidden_size"],
            intermediate_size=w["intermediate_size"], num_hidden_layers=num_layers,
            num_attention_heads=w["num_attention_heads"],
            num_key_value_heads=w["num_key_value_heads"], max_position_embeddings=128000,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [16, 24, 24]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=w["tie_word_embeddings"],
            dtype=dtype),
        vision_config=dict(
            depth=vision_depth, hidden_size=v["hidden_size"],
            intermediate_size=v["intermediate_size"], num_heads=v["num_heads"],
            out_hidden_size=w["vision_out_hidden_size"], patch_size=v["patch_size"],
            spatial_merge_size=v["spatial_merge_size"], window_size=v["window_size"],
            fullatt_block_indexes=[vision_depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=w["tie_word_embeddings"], dtype=dtype)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, dtype))
    return _save_with_processor(model, tokenizer, image_size, v["spatial_merge_size"], out_dir)


@contextmanager
def hub_kernels(enabled: bool = False):
    """Within the block, models that transformers loads on its own (TRL's GRPO reference) use
    Hugging Face Hub kernels only when `enabled` (`model.use_kernels` in a recipe): the
    `USE_HUB_KERNELS` switch transformers reads at each `from_pretrained`, restored after."""
    before = os.environ.get("USE_HUB_KERNELS")
    os.environ["USE_HUB_KERNELS"] = "YES" if enabled else "NO"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("USE_HUB_KERNELS", None)
        else:
            os.environ["USE_HUB_KERNELS"] = before


def load_model(path: str | Path, model_cfg=None):
    """A saved vision-language model by path, in the configured dtype (float32 default), with
    Hub kernels only if the recipe asks (`model.use_kernels`, off by default)."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = getattr(torch, getattr(model_cfg, "dtype", "float32") or "float32")
    kwargs = {"dtype": dtype, "use_kernels": bool(getattr(model_cfg, "use_kernels", False))}
    attn = getattr(model_cfg, "attn_implementation", None)
    if attn:
        kwargs["attn_implementation"] = attn
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


class ModelInBackground:
    """`prepare_model` run in a spawned process on `threads` torch threads, so this process can
    build the run's data meanwhile (`rl.pipeline.Pipeline.run`). The child seeds torch with
    `seed` first, as the pipeline does before `prepare_model`, and then makes the same
    checkpoint: the tiny model, its tower pre-training (`model.tiny.vision_pretrain`, a
    single-thread `transformers.Trainer` that leaves the second core idle) and the spatial
    vocabulary. `join` waits for it and returns the folder, or raises if the child failed (its
    traceback is on stderr above); `stop` ends it."""

    def __init__(self, model_cfg, out_dir: str | Path, seed: int = 0, threads: int = 1):
        import multiprocessing

        self.out_dir = Path(out_dir)
        self.process = multiprocessing.get_context("spawn").Process(
            target=_prepare_model_process, args=(model_cfg, str(out_dir), seed, threads),
            name="getok-prepare-model")
        self.process.start()

    def join(self) -> Path:
        self.process.join()
        if self.process.exitcode != 0:
            raise RuntimeError(f"making the starting checkpoint in {self.out_dir} (model.path "
                               f"null: the tiny model, in a spawned process) failed with exit "
                               f"code {self.process.exitcode}; its traceback is above")
        return self.out_dir / "model_init"

    def stop(self) -> None:
        """End the child (this process failed before it needed the checkpoint)."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def _prepare_model_process(model_cfg, out_dir: str, seed: int, threads: int) -> None:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    prepare_model(model_cfg, out_dir, seed)


def prepare_model(model_cfg, out_dir: str | Path, seed: int = 0) -> Path:
    """The starting checkpoint with the spatial vocabulary, made once, in this process.

    `model_cfg.path` None builds the tiny offline Qwen2.5-VL first. A checkpoint that already
    carries `spatial_vocab.json` with the configured vocabulary is used as it is; one with
    another vocabulary is refused. Returns the folder (`out_dir/model_init` or the path).
    """
    from tokens import SpatialVocab
    from tokens.extend import extend_checkpoint

    out_dir = Path(out_dir)
    vocab = SpatialVocab(model_cfg.grid_size, model_cfg.offset_radius,
                         model_cfg.offset_step_cells)
    src = model_cfg.path
    if src is not None and (Path(src) / "spatial_vocab.json").is_file():
        have = SpatialVocab.load(src)
        if have != vocab:
            raise ValueError(f"{src}: carries {have}, the config asks for {vocab}")
        return Path(src)
    target = out_dir / "model_init"
    if (target / "spatial_vocab.json").is_file():
        have = SpatialVocab.load(target)
        if have != vocab:
            raise ValueError(f"{target}: made earlier with {have}, the config asks for {vocab}; "
                             "use another output folder")
        return target
    if src is None:
        src = build_tiny_qwen2_5_vl(out_dir / "base", seed=seed, **model_cfg.tiny)
    extend_checkpoint(src, target, vocab, init=model_cfg.init)
    return target
