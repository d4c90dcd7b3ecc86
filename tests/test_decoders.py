import numpy as np
import pytest
import torch

from rl.data.scenes import draw_scene
from tokens import Instance
from tokens.decoders import (
    EmbeddingCache,
    MaskProposals,
    MaskProposer,
    Prompt,
    RegionDecoder,
    SamDecoder,
    SuperpixelProposer,
    as_image_array,
    build_decoder,
    build_sam,
    grid_points_px,
    image_key,
    load_state_dict,
    point_in_mask,
    points_in_mask,
)
from tokens.vocab import SpatialVocab


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_point_in_mask_convention():
    m = np.zeros((4, 8), bool)  # H = 4, W = 8
    m[1, 6] = True
    assert point_in_mask(m, 6 / 8, 1 / 4) and point_in_mask(m, 6.99 / 8, 1.99 / 4)
    assert not point_in_mask(m, 7 / 8, 1 / 4)
    m[3, 7] = True
    assert point_in_mask(m, 1.0, 1.0)  # the far edge belongs to the last pixel
    pts = np.array([[6 / 8, 1 / 4], [0.0, 0.0], [1.0, 1.0]])
    assert points_in_mask(m, pts).tolist() == [True, False, True]


def test_grid_points_follow_token_order():
    v = SpatialVocab(grid_size=2)
    pts, cells = grid_points_px(v, 100, 50)
    assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert pts.tolist() == [[25, 12.5], [25, 37.5], [75, 12.5], [75, 37.5]]


def test_grid_points_are_the_cell_centres_and_fresh_copies():
    v = SpatialVocab(grid_size=32)
    pts, cells = grid_points_px(v, 112, 96)
    want = np.array([v.cell_center(i, j) for i, j in cells]) * np.array([112.0, 96.0])
    assert np.array_equal(pts, want)  # bit for bit, as the per-cell formula
    pts[:] = -1  # a caller's change does not reach the kept table
    cells.clear()
    again, cells_again = grid_points_px(v, 112, 96)
    assert np.array_equal(again, want) and len(cells_again) == 32 * 32


def test_proposals_validate_shapes():
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        MaskProposals(np.zeros((4, 4), bool), [])
    with pytest.raises(ValueError, match="1 cells for 2 masks"):
        MaskProposals(np.zeros((2, 4, 4), bool), [(0, 0)])


def test_prompt_from_instance_and_multimask_rule():
    p = Prompt.from_instance(Instance((0.25, 0.5, 0.75, 1.0), [(0.5, 0.5)]), 200, 100)
    assert p.box_xyxy_px == (50, 50, 150, 100) and p.points_xy_px == ((100, 50),)
    assert not p.multimask
    assert Prompt(None, ((1.0, 2.0),)).multimask and Prompt().is_empty


def test_image_conversion_and_key():
    from PIL import Image

    arr = np.zeros((4, 6, 3), np.uint8)
    assert as_image_array(Image.fromarray(arr)).shape == (4, 6, 3)
    assert as_image_array(np.zeros((4, 6), np.uint8)).shape == (4, 6, 3)
    with pytest.raises(ValueError, match="uint8"):
        as_image_array(np.zeros((4, 6, 3)))
    assert image_key(arr) == image_key(arr.copy()) != image_key(arr + 1)
    assert image_key(arr) != image_key(arr.reshape(6, 4, 3))


def test_cache_is_bounded_lru():
    cache, calls = EmbeddingCache(2), []

    def compute(k):
        return lambda: calls.append(k) or k

    for k in "abab":
        cache.get(k, compute(k))
    cache.get("c", compute("c"))  # evicts a (least recently used)
    cache.get("b", compute("b"))
    cache.get("a", compute("a"))
    assert calls == ["a", "b", "c", "a"] and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 4)


# ---- the weight-free decoder ---------------------------------------------------------------
def scenes(n, size=192):
    rng = np.random.default_rng(11)
    for _ in range(n):
        yield draw_scene(rng, (size, size), n_objects=int(rng.integers(1, 5)))


def test_region_decoder_from_a_box_and_one_point():
    dec = RegionDecoder()
    ious = []
    for image, objects in scenes(12):
        prompts = []
        for o in objects:
            ys, xs = np.nonzero(o.mask_hw)
            k = len(xs) // 2
            prompts.append(Prompt(o.box_xyxy_px, ((xs[k] + 0.5, ys[k] + 0.5),)))
        for o, m in zip(objects, dec.decode(image, prompts), strict=True):
            ious.append(iou(m, o.mask_hw))
    assert len(ious) > 20 and np.mean(ious) >= 0.95 and np.min(ious) >= 0.9


def test_region_decoder_box_only_point_only_and_background_point():
    dec = RegionDecoder()
    image, objects = draw_scene(np.random.default_rng(5), (160, 160), n_objects=2)
    o = objects[0]
    x1, y1, x2, y2 = o.box_xyxy_px
    box_only, bg_point = dec.decode(image, [Prompt(o.box_xyxy_px), Prompt(
        o.box_xyxy_px, ((x1 + 0.5, y1 + 0.5),) if not o.mask_hw[y1, x1] else ())])
    assert iou(box_only, o.mask_hw) >= 0.95
    # A point on the background inside the box is ignored in favour of the box.
    assert iou(bg_point, o.mask_hw) >= 0.95
    ys, xs = np.nonzero(o.mask_hw)
    (pt,) = dec.decode(image, [Prompt(None, ((xs[0] + 0.5, ys[0] + 0.5),))])
    assert iou(pt, o.mask_hw) >= 0.95
    (empty,) = dec.decode(image, [Prompt()])
    assert not empty.any()


class CountingRegionDecoder(RegionDecoder):
    def __init__(self):
        super().__init__()
        self.batches = []

    def _decode_batch(self, embedding, image, prompts):
        self.batches.append(len(prompts))
        return super()._decode_batch(embedding, image, prompts)


def test_decode_embeds_once_dedupes_and_groups_by_shape():
    dec = CountingRegionDecoder()
    image, _ = draw_scene(np.random.default_rng(2), (96, 96), n_objects=2)
    a, b = Prompt((0, 0, 50, 50), ((10.0, 10.0),)), Prompt(None, ((20.0, 20.0),))
    c = Prompt(None, ((40.0, 40.0),))
    out = dec.decode(image, [a, b, a, c, b, Prompt()])
    assert len(out) == 6 and (out[0] == out[2]).all()
    assert sorted(dec.batches) == [1, 2]  # {a} and {b, c}: one batch per prompt shape
    dec.decode(image.copy(), [a])  # same pixels, other object: no new embedding
    assert (dec.cache.hits, dec.cache.misses) == (1, 1)


@pytest.mark.parametrize("proposer", [RegionDecoder(), SuperpixelProposer()])
def test_proposers_tag_each_mask_with_a_lattice_point_inside_it(proposer):
    v = SpatialVocab(grid_size=16)
    image, objects = draw_scene(np.random.default_rng(0), (128, 128), n_objects=2)
    assert isinstance(proposer, MaskProposer)
    p = proposer.propose(image, v)
    assert p.masks.shape[1:] == (128, 128) and len(p) == len(p.cells) >= 2
    for mask, cell in zip(p.masks, p.cells, strict=True):
        assert point_in_mask(mask, *v.cell_center(*cell))
    if isinstance(proposer, RegionDecoder):
        # Flat shapes: each object's visible mask is one proposal (or the union of its pieces).
        for obj in objects:
            inter = (p.masks & obj.mask_hw).sum((1, 2))
            assert (p.masks[inter > 0].any(0) == obj.mask_hw).all()


def test_build_decoder():
    assert isinstance(build_decoder("region"), RegionDecoder)
    assert build_decoder({"name": "region", "levels": 4}).levels == 4
    with pytest.raises(ValueError, match="unknown mask decoder 'sam3'"):
        build_decoder("sam3")
    with pytest.raises(ValueError, match="bad arguments"):
        build_decoder({"name": "region", "colour": 1})


# ---- SAM, real architecture, random weights ---------------------------------------------
@pytest.fixture(scope="module")
def sam_tiny():
    torch.manual_seed(0)
    return build_sam("tiny")


def sam_prompts():
    return [Prompt((10, 20, 200, 300), ((50.0, 60.0), (70.0, 80.0))),
            Prompt((15, 25, 205, 305), ((55.0, 65.0), (75.0, 85.0))),
            Prompt(None, ((100.0, 100.0),)), Prompt(None, ((300.0, 100.0),)),
            Prompt((0, 0, 100, 100))]


def test_sam_batched_cached_and_one_by_one_agree(sam_tiny):
    from segment_anything import SamPredictor

    image, _ = draw_scene(np.random.default_rng(0), (320, 384), n_objects=3)
    dec = SamDecoder(sam_tiny, device="cpu")
    prompts = sam_prompts()
    batched = dec.decode(image, prompts)
    assert dec.cache.misses == 1
    one_by_one = [dec.decode(image, [p])[0] for p in prompts]
    assert dec.cache.misses == 1 and dec.cache.hits == len(prompts)
    uncached = SamPredictor(sam_tiny)
    uncached.set_image(image)
    for p, b, s in zip(prompts, batched, one_by_one, strict=True):
        assert b.shape == (320, 384) and b.dtype == bool
        assert (b == s).all()
        m, scores, _ = uncached.predict(
            point_coords=np.array(p.points_xy_px) if p.points_xy_px else None,
            point_labels=np.ones(len(p.points_xy_px)) if p.points_xy_px else None,
            box=np.array(p.box_xyxy_px) if p.box_xyxy_px else None,
            multimask_output=p.multimask)
        assert (m[scores.argmax()] == b).all()


def test_decoding_goes_max_batch_prompts_at_a_time(sam_tiny):
    # 1,024 lattice prompts in one SAM call held 3 x 1024 x 1024 floats each (~13 GiB): a
    # G = 32 `propose` ran out of memory. Chunks give the same masks.
    image, _ = draw_scene(np.random.default_rng(3), (96, 96), n_objects=2)
    prompts = [Prompt(None, ((float(x), float(y)),)) for x in range(4, 96, 9)
               for y in range(4, 96, 9)]  # 121 single-point prompts
    whole = SamDecoder(sam_tiny, device="cpu")
    whole.max_batch = 1000
    chunked = SamDecoder(sam_tiny, device="cpu")
    sizes = []
    original = chunked._decode_batch
    chunked._decode_batch = lambda emb, img, group: (sizes.append(len(group)),
                                                     original(emb, img, group))[1]
    assert chunked.max_batch == 64
    a, b = whole.decode_with_scores(image, prompts), chunked.decode_with_scores(image, prompts)
    assert sizes == [64, 57]
    for (ma, sa), (mb, sb) in zip(a, b, strict=True):
        assert (ma == mb).all() and sa == pytest.approx(sb, abs=1e-6)


def test_sam_propose_on_the_lattice(sam_tiny):
    image, _ = draw_scene(np.random.default_rng(1), (128, 128), n_objects=2)
    p = SamDecoder(sam_tiny, device="cpu").propose(image, SpatialVocab(grid_size=4))
    assert 1 <= len(p) <= 16 and p.scores is not None
    assert list(p.scores) == sorted(p.scores, reverse=True)


def test_sam_checkpoints_load_weights_only(sam_tiny, tmp_path):
    from safetensors.torch import save_file

    state = sam_tiny.state_dict()
    torch.save(state, tmp_path / "sam.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "sam.safetensors")
    for name in ("sam.pth", "sam.safetensors"):
        model = build_sam("tiny", tmp_path / name)
        assert torch.equal(model.mask_decoder.iou_token.weight,
                           sam_tiny.mask_decoder.iou_token.weight)
    with pytest.raises(ValueError, match="does not fit SAM vit_b"):
        build_sam("vit_b", tmp_path / "sam.safetensors")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "missing.pth")


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch payload_ran",))


def test_a_checkpoint_that_carries_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": torch.zeros(1), "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth: not a plain weights file"):
        load_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "payload_ran").exists()


def test_depth_in_the_grown_box_equals_the_whole_images_transform():
    # proposals_from_labels takes each region's distance transform on its box grown by one
    # pixel: on the region's pixels it equals the whole image's, bit for bit, also where the
    # region touches the image's edges (which give no ring) or has holes.
    from scipy import ndimage

    from tokens.decoders.region import _depth_in_box

    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = rng.integers(5, 40, size=2)
        labels = ndimage.label(rng.random((h, w)) < rng.uniform(0.3, 0.8))[0]
        if trial % 3 == 0:
            labels[:, 0] = labels.max() + 1  # a region along the left edge
        for lab, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            region = labels == lab
            (y0, y1), (x0, x1), depth = _depth_in_box(region, box)
            whole = ndimage.distance_transform_edt(region)
            assert depth.shape == (y1 - y0, x1 - x0)
            crop = region[y0:y1, x0:x1]
            assert (depth[crop] == whole[y0:y1, x0:x1][crop]).all()
            assert not whole[region].size or depth.max() == whole.max()
