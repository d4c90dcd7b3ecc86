"""Decoding the masks rewards score: one shared decoder per configuration, batched decoding
of a reward batch's instances, IoU of matched pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from rewards.solution import GroundTruth
from tokens.decoders import (
    MAX_PROMPT_POINTS,
    MaskDecoder,
    Prompt,
    as_image_array,
    build_decoder,
    image_key,
    resize_mask,
)

_SHARED_DECODERS: dict[str, MaskDecoder] = {}


def shared_decoder(spec) -> MaskDecoder:
    """One decoder per configuration in this process, so the `mask` and `mask_gain` rewards
    (and every call) share its embedding cache."""
    if isinstance(spec, MaskDecoder):
        return spec
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _SHARED_DECODERS:
        _SHARED_DECODERS[key] = build_decoder(spec)
    return _SHARED_DECODERS[key]


def decode_masks(decoder: MaskDecoder, images: Sequence, instance_lists: Sequence[Sequence],
                 frames: Sequence[tuple[int, int]],
                 max_points: int = MAX_PROMPT_POINTS) -> list[list]:
    """Masks of every instance of every row, in each row's ground-truth frame (W, H).

    Rows showing the same image (the G rollouts of a prompt) are decoded together: one
    embedding (cached across calls) and one `decode` call with all their prompts, identical
    prompts decoded once. A prompt keeps at most `max_points` distinct points, in order (the
    points reward already charges for more). An instance of None gives an empty mask; one that
    carries its own coarse mask (`rle_text`) is upsampled, not decoded.
    """
    out: list[list] = [[] for _ in images]
    groups: dict[str, list[int]] = {}
    arrays: dict[str, np.ndarray] = {}
    by_id: dict[int, str] = {}
    for row, image in enumerate(images):
        if image is None:
            raise ValueError(f"row {row}: the 'image' column is empty; mask rewards need it")
        if id(image) not in by_id:
            arr = as_image_array(image)
            by_id[id(image)] = key = image_key(arr)
            arrays.setdefault(key, arr)
        groups.setdefault(by_id[id(image)], []).append(row)
    for key, rows in groups.items():
        img = arrays[key]
        h, w = img.shape[:2]
        prompts, owners = [], []
        for row in rows:
            fw, fh = frames[row]
            out[row] = [np.zeros((fh, fw), dtype=bool) for _ in instance_lists[row]]
            for k, inst in enumerate(instance_lists[row]):
                if inst is None:
                    continue
                if inst.coarse is not None:  # a mask spelled out by the answer (rle_text)
                    out[row][k] = resize_mask(np.asarray(inst.coarse, dtype=bool), fh, fw)
                    continue
                prompts.append(Prompt.from_instance(inst, w, h, max_points))
                owners.append((row, k))
        masks = decoder.decode(img, prompts) if prompts else []
        for (row, k), m in zip(owners, masks, strict=True):
            fw, fh = frames[row]
            out[row][k] = resize_mask(m, fh, fw)
    return out


def pair_mask_ious(masks_hw: Sequence[np.ndarray], gt: GroundTruth,
                   pairs: Sequence[tuple[int, int]]) -> list[float]:
    """IoU of predicted mask i with ground-truth mask j for each matched pair (i, j).

    Predictions come from a decoder as dense arrays and the ground-truth masks are decoded once
    per solution (cached), so counting pixels of the matched pairs only is cheaper than
    encoding every prediction to RLE (measured: ~0.1 ms against ~0.6 ms per 512² mask)."""
    out = []
    areas = gt.areas_px
    for i, j in pairs:
        inter = np.count_nonzero(masks_hw[i] & gt.masks[j])
        union = areas[j] + np.count_nonzero(masks_hw[i]) - inter
        out.append(inter / union if union else 0.0)
    return out


def iou_or_one(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks, 1 when both are empty (a correct empty answer, spec §10)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union
