"""The cold start's data path: rendered conversations and the per-sample collator give TRL's
own batches, tensor for tensor."""

import random

import torch
from datasets import Dataset
from transformers import AutoProcessor

from rl.config import SFTStageConfig
from rl.context import RunContext
from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_sft, load_prompts
from rl.models import load_model
from rl.train_sft import PackedPixels, PerSampleCollator, PixelCodes, sft_trainer
from tokens import GridCodec, SpatialVocab
from tokens.decoders import RegionDecoder


def _setup(model_dir, tmp_path, collate_cache=0, **stage_fields):
    processor = AutoProcessor.from_pretrained(model_dir)
    vocab = SpatialVocab(8)
    ctx = RunContext(vocab=vocab, codec=GridCodec(vocab), decoder_spec=RegionDecoder(),
                     processor=processor, prompts=load_prompts(), output_dir=tmp_path)
    rows = list(build_sft(synthetic_records(12, seed=4), RegionDecoder(), ctx.prompts,
                          BuildConfig(vocab=vocab, refinement=True, n_points=3)))
    ds = Dataset.from_list(rows).select_columns(["image", "prompt", "completion"])
    stage = SFTStageConfig(max_steps=1, batch_size=4, collate_cache=collate_cache, **stage_fields)
    return ctx, ds, sft_trainer(stage, ctx, load_model(model_dir), ds), processor


def test_rendered_conversations_collate_like_trl(grid8_model, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    ctx, ds, trainer, processor = _setup(grid8_model, tmp_path)
    assert isinstance(trainer.train_dataset[0]["prompt"], str)  # rendered once
    trl_collator = DataCollatorForVisionLanguageModeling(processor=processor,
                                                         completion_only_loss=True)
    idx = [0, 3, 5, 8]
    ours = trainer.data_collator([trainer.train_dataset[i] for i in idx])
    theirs = trl_collator([dict(ds[i]) for i in idx])  # conversational, rendered per step
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_per_sample_collator_builds_the_same_batches(grid8_model, tmp_path):
    ctx, ds, trainer, processor = _setup(grid8_model, tmp_path, collate_cache=64)
    assert isinstance(trainer.data_collator, PerSampleCollator)
    assert isinstance(trainer.train_dataset[0]["image"], dict)  # decoded on first sight only
    plain = trainer.data_collator.inner
    td = trainer.train_dataset
    rng = random.Random(0)
    for _ in range(6):
        idx = rng.sample(range(len(td)), 5)
        a = plain([PerSampleCollator._decoded(td[i]) for i in idx])  # images stay encoded
        b = trainer.data_collator([td[i] for i in idx])
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert 0 < len(trainer.data_collator.items) <= 64


def test_the_cache_is_bounded(grid8_model, tmp_path):
    ctx, ds, trainer, processor = _setup(grid8_model, tmp_path, collate_cache=3)
    td = trainer.train_dataset
    trainer.data_collator([td[i] for i in range(6)])
    assert len(trainer.data_collator.items) == 3


def test_samples_first_seen_together_are_made_in_one_call_and_cut_apart_exactly(grid8_model,
                                                                               tmp_path):
    """A batch's unseen samples go through TRL's collator in one call (refinement dialogues
    and stage-1 rows of different lengths, a sample twice), and each sample's cut equals its
    own collation, tensor for tensor."""
    ctx, ds, trainer, processor = _setup(grid8_model, tmp_path, collate_cache=64)
    col, td = trainer.data_collator, trainer.train_dataset
    calls = []
    inner = col.inner
    col.inner = lambda exs: calls.append(len(exs)) or inner(exs)
    idx = [0, 1, 2, 3, 2, 7]
    lengths = {len(td[i]["prompt"]) + len(td[i]["completion"]) for i in idx}
    assert len(lengths) > 2  # rows of several lengths: the cut must drop each one's padding
    batch = col([td[i] for i in idx])
    assert calls == [5]  # one call for the five distinct samples
    for i in set(idx):
        alone = inner([PerSampleCollator._decoded(td[i])])
        cut = col._unpack(col.items[col._key(td[i])])
        assert sorted(alone) == sorted(cut) and all(torch.equal(alone[k], cut[k]) for k in alone)
    plain = inner([PerSampleCollator._decoded(td[i]) for i in idx])
    assert all(torch.equal(plain[k], batch[k]) for k in plain)
    col([td[i] for i in (0, 3, 9)])
    assert calls == [5, 1]  # seen samples come from the cache


def test_the_cache_keeps_pixels_as_exact_one_byte_codes(grid8_model, tmp_path):
    """Remembered samples keep their pixel values as one byte each (a quarter of the memory),
    and a batch from the cache is still TRL's own, tensor for tensor."""
    ctx, ds, trainer, processor = _setup(grid8_model, tmp_path, collate_cache=64)
    col, td = trainer.data_collator, trainer.train_dataset
    idx = [0, 1, 2, 3, 4, 5]
    col([td[i] for i in idx])  # first sight: made, then kept packed
    kept = [col.items[col._key(td[i])]["pixel_values"] for i in idx]
    assert all(isinstance(k, PackedPixels) and k.codes.dtype == torch.uint8 for k in kept)
    again = col([td[i] for i in idx])  # from the cache, decoded
    plain = col.inner([PerSampleCollator._decoded(td[i]) for i in idx])
    assert sorted(again) == sorted(plain)
    assert all(torch.equal(again[k], plain[k]) for k in plain)


def test_pixel_codes_give_values_back_exactly_or_refuse(grid8_model):
    import numpy as np
    from PIL import Image

    processor = AutoProcessor.from_pretrained(grid8_model)
    ip = processor.image_processor
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (112, 112, 3), np.uint8))
    codes = PixelCodes.calibrate(ip)
    assert codes.table.shape[0] == 256
    pixels = ip(images=[image], return_tensors="pt")["pixel_values"]
    packed = codes.encode(pixels)
    assert packed is not None and torch.equal(codes.decode(packed), pixels)
    # A value no byte gives (an interpolated one), another width, another dtype: kept as is.
    off = pixels.clone()
    off[3, 7] += 1e-3
    assert codes.encode(off) is None
    assert codes.encode(pixels[:, :-1]) is None
    assert codes.encode(pixels.double()) is None


def test_extra_args_override_what_the_package_sets(grid8_model, tmp_path):
    # The package sets save_strategy "no" and max_length None; extra_args replace them (TRL's
    # config once got the keyword twice: a TypeError).
    extra = {"save_strategy": "steps", "save_steps": 3, "max_length": 512}
    trainer = _setup(grid8_model, tmp_path, extra_args=extra)[2]
    assert (trainer.args.save_strategy, trainer.args.save_steps, trainer.args.max_length) == (
        "steps", 3, 512)
