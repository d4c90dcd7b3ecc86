"""SAM and SAM 2 as mask decoders (method spec §3), with cached image embeddings.

SAM comes from `segment-anything` (a core dependency); SAM 2 from `sam2` (the `sam2` extra).
Checkpoints are read with `torch.load(..., weights_only=True)` or from safetensors, never with a
bare unpickler: a checkpoint from the internet must not be able to run code.

The paper notes that swapping SAM for SAM 2 at inference needs no retraining: both answer the
same prompts (a box and positive points, in pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokens.decoders.base import MaskDecoder, Prompt

# Encoder shapes of the released SAM models, plus a tiny one for tests and CPU benchmarks
# (same architecture, same 1024-px input and prompt/mask decoder, random weights).
SAM_VARIANTS = {
    "vit_h": dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=[7, 15, 23, 31]),
    "vit_l": dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=[5, 11, 17, 23]),
    "vit_b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                  encoder_global_attn_indexes=[2, 5, 8, 11]),
    "tiny": dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
                 encoder_global_attn_indexes=[1]),
}


def load_state_dict(path: str | Path) -> dict:
    """Tensors from a `.safetensors` file, or from a torch checkpoint with weights_only=True
    (plain tensors and containers only). A `{"model": ...}` wrapper (SAM 2) is unwrapped."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        # weights_only refuses anything but tensors and plain containers.
        raise ValueError(f"{path}: not a plain weights file ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


def build_sam(variant: str = "vit_b", checkpoint: str | Path | None = None):
    """A `segment_anything.modeling.Sam` of the given variant; random weights without
    `checkpoint`. Raises when the checkpoint does not fit the variant."""
    from segment_anything.build_sam import _build_sam

    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; known: {sorted(SAM_VARIANTS)}")
    model = _build_sam(checkpoint=None, **SAM_VARIANTS[variant])
    if checkpoint is not None:
        try:
            model.load_state_dict(load_state_dict(checkpoint), strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[1:2] or [str(e)[:200]]
            raise ValueError(f"{checkpoint}: does not fit SAM {variant} ({first[0].strip()})"
                             ) from None
    return model.eval()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _best_of(masks, scores):
    """(B, C, H, W) masks and (B, C) scores → the best-scoring mask and score per prompt."""
    best = scores.argmax(axis=1)
    rows = np.arange(len(best))
    return masks[rows, best], scores[rows, best]


class SamDecoder(MaskDecoder):
    """SAM through `segment_anything.SamPredictor`, one `set_image` per distinct image (cached).

    Args:
        model: a built `Sam` (e.g. from `build_sam`); or give `variant` and `checkpoint`.
        device: where SAM runs (default: CUDA when available).
        cache_size: images whose embeddings are kept (ViT-H: 4 MiB each).
    """

    name = "sam"

    def __init__(self, model=None, variant: str = "vit_b", checkpoint: str | None = None,
                 device: str | None = None, cache_size: int = 32):
        from segment_anything import SamPredictor

        super().__init__(cache_size)
        model = model if model is not None else build_sam(variant, checkpoint)
        self.predictor = SamPredictor(model.to(device or _default_device()).eval())

    def _embed(self, image_hw3):
        p = self.predictor
        p.set_image(image_hw3)
        embedding = (p.features, p.original_size, p.input_size)
        p.reset_image()
        return embedding

    def _decode_batch(self, embedding, image_hw3, prompts: Sequence[Prompt]):
        import torch

        p = self.predictor
        p.features, p.original_size, p.input_size = embedding
        p.is_image_set = True
        try:
            coords = labels = boxes = None
            if prompts[0].points_xy_px:
                pts = torch.tensor([q.points_xy_px for q in prompts], dtype=torch.float32,
                                   device=p.device)
                coords = p.transform.apply_coords_torch(pts, p.original_size)
                labels = torch.ones(pts.shape[:2], dtype=torch.int64, device=p.device)
            if prompts[0].box_xyxy_px is not None:
                b = torch.tensor([q.box_xyxy_px for q in prompts], dtype=torch.float32,
                                 device=p.device)
                boxes = p.transform.apply_boxes_torch(b, p.original_size)
            masks, scores, _ = p.predict_torch(coords, labels, boxes,
                                               multimask_output=prompts[0].multimask)
        finally:
            p.reset_image()
        return _best_of(masks.cpu().numpy(), scores.float().cpu().numpy())


class Sam2Decoder(MaskDecoder):
    """SAM 2 through `sam2.sam2_image_predictor.SAM2ImagePredictor` (the `sam2` extra).

    Args:
        config: a config bundled with `sam2`, e.g. "configs/sam2.1/sam2.1_hiera_l.yaml".
        checkpoint: its weights (`torch.load(weights_only=True)` inside sam2); None: random.
        model: an already built SAM 2 model instead of config/checkpoint.
    """

    name = "sam2"

    def __init__(self, config: str = "configs/sam2.1/sam2.1_hiera_l.yaml",
                 checkpoint: str | None = None, model=None, device: str | None = None,
                 cache_size: int = 32):
        try:
            from sam2.build_sam import build_sam2
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError:
            raise ImportError("SAM 2 needs the sam2 extra: "
                              "SAM2_BUILD_CUDA=0 pip install --no-build-isolation -e '.[sam2]'"
                              ) from None
        super().__init__(cache_size)
        device = device or _default_device()
        if model is None:
            if checkpoint is not None and not Path(checkpoint).is_file():
                raise FileNotFoundError(f"{checkpoint}: SAM 2 checkpoint not found")
            model = build_sam2(config, checkpoint, device=device)
        self.predictor = SAM2ImagePredictor(model)

    def _embed(self, image_hw3):
        p = self.predictor
        p.set_image(image_hw3)
        embedding = (p._features, p._orig_hw)
        p.reset_predictor()
        return embedding

    def _decode_batch(self, embedding, image_hw3, prompts: Sequence[Prompt]):
        p = self.predictor
        p._features, p._orig_hw = embedding
        p._is_image_set = True
        try:
            coords = labels = boxes = None
            if prompts[0].points_xy_px:
                coords = np.array([q.points_xy_px for q in prompts], dtype=np.float32)
                labels = np.ones(coords.shape[:2], dtype=np.int64)
            if prompts[0].box_xyxy_px is not None:
                boxes = np.array([q.box_xyxy_px for q in prompts], dtype=np.float32)
            masks, scores, _ = p.predict(coords, labels, boxes,
                                         multimask_output=prompts[0].multimask)
        finally:
            p.reset_predictor()
        h, w = image_hw3.shape[:2]
        masks = masks.reshape(len(prompts), -1, h, w) > 0
        return _best_of(masks, scores.reshape(len(prompts), -1))
