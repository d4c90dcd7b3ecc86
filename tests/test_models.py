import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from rl.models import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer


def test_tiny_model_reloads_and_generates(tiny_model_dirs):
    for kind, path in tiny_model_dirs.items():
        model = AutoModelForImageTextToText.from_pretrained(path)
        proc = AutoProcessor.from_pretrained(path)
        assert model.config.tie_word_embeddings == (kind == "tied")
        assert proc.tokenizer.padding_side == "left"
        assert model.config.image_token_id == proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        msgs = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "the red circle"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert text.endswith("<|im_start|>assistant\n")
        image = Image.fromarray(np.zeros((112, 112, 3), np.uint8))
        inputs = proc(text=[text], images=[image], return_tensors="pt")
        # 112 px → 8×8 patches of 14 px, merged 2×2: 16 visual tokens.
        assert (inputs["input_ids"] == model.config.image_token_id).sum() == 16
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_tokenizer_has_qwen_specials_and_marks_assistant_spans():
    tok = build_tiny_tokenizer()
    for t in QWEN_SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    msgs = [{"role": "user", "content": "find it"}, {"role": "assistant", "content": "here"}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(marked) == "here<|im_end|>"


def test_tokenizer_spells_the_chat_templates_own_words_in_few_tokens():
    # Each sample carries the default system turn and the role names: spelled letter by letter
    # they were a third of a default sample's tokens.
    tok = build_tiny_tokenizer()
    msgs = [{"role": "user", "content": "Find the red circle."},
            {"role": "assistant", "content": "<answer></answer>"}]
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    for word in ("system", "user", "assistant", "Find", "Ġhelpful", "Ġassistant"):
        assert word in pieces, word
    # <|im_start|> system \n You are a helpful assistant . <|im_end|> \n
    system = tok("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")["input_ids"]
    assert len(system) == 11



def test_system_turn_is_a_tiny_option_and_changes_nothing_else():
    # The default recipe leaves out Qwen's default system turn: the same tokenizer (same ids
    # for every text), and a conversation starts at its first user turn.
    with_turn, without = build_tiny_tokenizer(), build_tiny_tokenizer(system_turn=False)
    assert with_turn.get_vocab() == without.get_vocab()
    msgs = [{"role": "user", "content": "Find the red circle."},
            {"role": "assistant", "content": "<answer></answer>"}]
    full = with_turn.apply_chat_template(msgs, tokenize=False)
    short = without.apply_chat_template(msgs, tokenize=False)
    assert full == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + short
    assert short.startswith("<|im_start|>user\nFind the red circle.<|im_end|>")
    # A conversation that brings its own system message renders the same under both.
    own = [{"role": "system", "content": "Be brief."}] + msgs
    assert with_turn.apply_chat_template(own, tokenize=False) == \
        without.apply_chat_template(own, tokenize=False)
    enc = without.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert without.decode(marked) == "<answer></answer><|im_end|>"


def test_mrope_section_is_a_tiny_option(tmp_path):
    from rl.models import build_tiny_qwen2_5_vl

    path = build_tiny_qwen2_5_vl(tmp_path / "m", rope_theta=3.0, mrope_section=[2, 7, 7])
    cfg = AutoModelForImageTextToText.from_pretrained(path).config.text_config
    assert cfg.rope_parameters["mrope_section"] == [2, 7, 7]
    assert cfg.rope_parameters["rope_theta"] == 3.0
    # Linear rotary scaling divides every frequency by the factor: with a base below 1 the
    # time section (listed first) gets the lowest frequencies, width the highest.
    path = build_tiny_qwen2_5_vl(tmp_path / "lin", rope_theta=0.0074, rope_factor=50.0,
                                 mrope_section=[8, 4, 4])
    model = AutoModelForImageTextToText.from_pretrained(path)
    rope = model.config.text_config.rope_parameters
    assert rope["rope_type"] == "linear" and rope["factor"] == 50.0
    inv = model.model.language_model.rotary_emb.inv_freq
    assert inv[0] == pytest.approx(0.02, rel=1e-3) and inv[-1] == pytest.approx(1.99, rel=1e-2)
    with pytest.raises(ValueError, match="summing to head_dim/2 = 16"):
        build_tiny_qwen2_5_vl(tmp_path / "bad", mrope_section=[4, 4, 4])


def test_rope_frequencies_give_each_pair_its_own_rate_and_survive_reload(tmp_path):
    from rl.models import build_tiny_qwen2_5_vl

    # Near-still pairs for time (attention by content at any distance), fast ones for height
    # and width: no single geometric ladder holds both.
    rates = [1e-3, 2e-3, 4e-3, 8e-3] + [1.0 - 0.02 * k for k in range(12)]
    path = build_tiny_qwen2_5_vl(tmp_path / "f", rope_frequencies=rates)
    model = AutoModelForImageTextToText.from_pretrained(path)
    rotary = model.model.language_model.rotary_emb
    assert rotary.attention_scaling == 1.0
    assert rotary.inv_freq.tolist() == pytest.approx(rates, rel=1e-5)
    assert model.config.text_config.rope_parameters["mrope_section"] == [4, 6, 6]
    with pytest.raises(ValueError, match="16 positive rates"):
        build_tiny_qwen2_5_vl(tmp_path / "bad", rope_frequencies=rates[:-1])
    with pytest.raises(ValueError, match="16 positive rates"):
        build_tiny_qwen2_5_vl(tmp_path / "bad", rope_frequencies=[0.0] + rates[1:])


def test_default_recipe_lets_attention_tell_image_columns_apart(tmp_path):
    # The language model learns where an image token sits only through multimodal RoPE, which
    # gives columns the last (lowest) rotary frequencies. Base 20 turned them by <= 0.46 rad
    # across the 4x4 image and the model answered stock boxes; the default must turn every
    # column frequency by at least 1.5 rad across the image (docs/experiments.md, "What was tried").
    from rl.config import load_config
    from rl.models import build_tiny_qwen2_5_vl

    tiny = load_config("configs/default.yaml").model.tiny
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_qwen2_5_vl(tmp_path, **tiny))
    inv = model.model.language_model.rotary_emb.inv_freq
    width = model.config.text_config.rope_parameters["mrope_section"][2]
    side = tiny["image_size"] // (14 * tiny.get("spatial_merge_size", 2))
    assert inv[-width:].min().item() * (side - 1) >= 1.5


def test_models_load_without_hub_kernels_unless_the_recipe_asks(tiny_model_dirs, monkeypatch):
    """transformers >= 5.2 turns Hub kernels on by default (on CUDA they are downloaded at the
    first model.train(); an offline GPU run stopped there): every load here turns them off."""
    from types import SimpleNamespace

    from rl.models import hub_kernels, load_model

    path = tiny_model_dirs["tied"]
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    assert AutoModelForImageTextToText.from_pretrained(path).use_kernels  # transformers' default
    assert not load_model(path).use_kernels
    assert load_model(path, SimpleNamespace(dtype="float32", use_kernels=True)).use_kernels
    with hub_kernels(False):  # what TRL loads inside (its GRPO reference) follows the recipe
        assert not AutoModelForImageTextToText.from_pretrained(path).use_kernels
    assert "USE_HUB_KERNELS" not in os.environ
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    with hub_kernels(False):
        pass
    assert os.environ["USE_HUB_KERNELS"] == "YES"


def _small_tower_config(**tower):
    from pathlib import Path

    from rl.config import load_config

    root = Path(__file__).resolve().parents[1]
    return load_config(root / "configs" / "default.yaml",
                       {"model": {"tiny": {"num_layers": 2,
                                           "vision_pretrain": {"steps": 4, "scenes": 24,
                                                               **tower}}}})


def test_model_made_in_a_second_process_is_the_one_made_here(tmp_path):
    """`ModelInBackground` (a spawned process, one thread) makes the checkpoint `prepare_model`
    makes in this process after the pipeline's seeding, tensor for tensor."""
    from safetensors.torch import load_file

    from rl.models import ModelInBackground, prepare_model

    cfg = _small_tower_config()
    torch.manual_seed(0)
    here = prepare_model(cfg.model, tmp_path / "here", seed=0)
    there = ModelInBackground(cfg.model, tmp_path / "there", seed=0).join()
    assert there == tmp_path / "there" / "model_init"
    assert (there / "spatial_vocab.json").is_file()
    a, b = load_file(str(here / "model.safetensors")), load_file(str(there / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "there" / "base" / "vision_pretrain.json").is_file()


def test_model_made_in_a_second_process_reports_its_failure(tmp_path):
    from rl.models import ModelInBackground

    cfg = _small_tower_config(no_such_key=1)  # refused by the child's build
    with pytest.raises(RuntimeError, match="exit code 1"):
        ModelInBackground(cfg.model, tmp_path, seed=0).join()
    # stopped before it is done (the pipeline failed meanwhile): no child is left running
    child = ModelInBackground(_small_tower_config().model, tmp_path / "stopped", seed=0)
    child.stop()
    assert not child.process.is_alive() and child.process.exitcode != 0


def test_pipeline_makes_the_model_beside_the_data_only_where_it_pays(tmp_path, monkeypatch):
    """The second process is started for a tiny model with tower pre-training, on a run of one
    process with two cores or more, whose cold start trains; otherwise the model is made here."""
    from pathlib import Path

    import rl.models
    from rl.config import load_config
    from rl.pipeline import Pipeline

    started = []

    class Recorder:
        def __init__(self, model_cfg, out_dir, seed=0, threads=1):
            started.append((str(out_dir), seed, threads))

    monkeypatch.setattr(rl.models, "ModelInBackground", Recorder)
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    recipe = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"

    def decide(**over):
        base = {"output_dir": str(tmp_path / "run"), "cpu_threads": 2, "seed": 3}
        p = Pipeline(load_config(recipe, {**base, **over}))
        return p._model_in_background()

    assert isinstance(decide(), Recorder) and started == [(str(tmp_path / "run"), 3, 1)]
    assert decide(cpu_threads=1) is None
    assert decide(model={"tiny": {"vision_pretrain": {"steps": 0}}}) is None
    assert decide(model={"path": str(tmp_path)}) is None
    assert decide(sft={"enabled": False}) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert decide() is None
    assert len(started) == 1
