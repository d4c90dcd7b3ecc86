"""Add the spatial vocabulary to a tokenizer and a model, once, offline (method spec §1).

    python -m tokens.extend --model PATH --out PATH [--grid-size 32] [--offset-radius 1]
        [--offset-step 0.5] [--init sincos|mean|text]

The tokens are added as normal (non-special) added tokens: trainers and vLLM decode completions
with `skip_special_tokens=True`, which would silently erase special ones. Embeddings are resized
to at least the current row count (real checkpoints carry spare rows), padded to a multiple of
64, and the rows of the new ids are initialized explicitly, because on a checkpoint with spare
rows the new ids land on rows that resizing does not touch. Afterwards input embeddings, output
head and config vocab size must agree, for tied and untied heads alike.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from tokens.vocab import SpatialVocab

INIT_METHODS = ("mean", "sincos", "fourier", "text")


class VocabMismatchError(RuntimeError):
    """Embedding rows, output-head rows, config vocab size or tokenizer length disagree."""


def add_spatial_tokens(tokenizer, vocab: SpatialVocab) -> list[int]:
    """Add the vocabulary's tokens as non-special added tokens; return their ids in order.

    Idempotent: a tokenizer that already holds all of them is left as it is. One that holds some
    but not all is refused (its ids would not be contiguous and the config is unknown).
    """
    from tokenizers import AddedToken

    wanted = vocab.all_tokens()
    vocab_map = tokenizer.get_vocab()
    present = [t for t in wanted if t in vocab_map]
    if present and len(present) != len(wanted):
        raise ValueError(
            f"tokenizer already has {len(present)} of the {len(wanted)} spatial tokens "
            f"(first: {present[0]}); it was extended with another vocabulary configuration"
        )
    if not present:
        tokenizer.add_tokens(
            [AddedToken(t, special=False, normalized=False, single_word=False,
                        lstrip=False, rstrip=False) for t in wanted],
            special_tokens=False,
        )
    id_map = vocab.token_ids(tokenizer)
    return [id_map[t] for t in wanted]


def _code_frame(x, y, dim: int):
    """Positions as (N, 1) float64 columns and a zero (N, dim) code to fill."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1)
    return x, y, torch.zeros(x.shape[0], dim, dtype=torch.float64)


def sincos_code(x, y, dim: int, grid_size: int):
    """A 2D sin-cos code of normalized positions, shape (N, dim); half the dims encode x, half y.

    Frequencies run geometrically from half a period over the image to one period per two
    cells, so neighbouring cells get similar codes and distant ones different codes.
    """
    import torch

    x, y, code = _code_frame(x, y, dim)
    n_freq = dim // 4
    if n_freq == 0:
        return code
    ratio = max(grid_size, 2) ** (1.0 / max(n_freq - 1, 1))
    freqs = math.pi * ratio ** torch.arange(n_freq, dtype=torch.float64)
    parts = [torch.sin(x * freqs), torch.cos(x * freqs), torch.sin(y * freqs), torch.cos(y * freqs)]
    code[:, : 4 * n_freq] = torch.cat(parts, dim=1)
    return code


def fourier_code(x, y, dim: int, grid_size: int, seed: int = 0):
    """A 2D random Fourier code of normalized positions, shape (N, dim): dim/2 plane waves
    cos(w.p), sin(w.p) with directions uniform on the circle and wavelengths log-uniform
    from twice the image to two cells (fixed by `seed`).

    Unlike `sincos_code`, whose x and y halves add (the dot product of two codes is
    k(dx) + k(dy)), the dot product here is a function of the 2D displacement alone, peaked at
    0: a hidden state halfway between two cells' codes scores those two cells highest, not the
    "ghost" cells that take x from one and y from the other.
    """
    import torch

    x, y, code = _code_frame(x, y, dim)
    n = dim // 2
    if n == 0:
        return code
    g = torch.Generator().manual_seed(seed)
    radius = math.pi * max(grid_size, 2) ** torch.rand(n, generator=g, dtype=torch.float64)
    angle = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    phase = x * (radius * torch.cos(angle)) + y * (radius * torch.sin(angle))
    code[:, : 2 * n] = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
    return code


def _text_for_token(vocab: SpatialVocab, token: str) -> str:
    cell = vocab.parse_grid_token(token)
    if cell is not None:
        return f"({cell[0]}, {cell[1]})"
    off = vocab.parse_offset_token(token)
    if off is not None:
        return f"move ({off[0]}, {off[1]})"
    return "delete"


def _new_rows(weight, base_rows: int, tokens: list[str], vocab: SpatialVocab, init: str,
              tokenizer):
    """Rows for `tokens` from the trained rows `weight[:base_rows]` (a (V, d) matrix)."""
    import torch

    base = weight[:base_rows].detach().to(torch.float64)
    mean = base.mean(dim=0)
    rows = mean.expand(len(tokens), -1).clone()
    if init == "mean":
        pass
    elif init in ("sincos", "fourier"):
        # Scale the code so its per-entry RMS matches the spread of the trained rows.
        scale = base.std().item()
        scale = scale if scale > 0 else 1.0
        k = vocab.offset_radius
        for n, tok in enumerate(tokens):
            cell = vocab.parse_grid_token(tok)
            off = vocab.parse_offset_token(tok)
            if cell is not None:
                x, y = vocab.cell_center(*cell)
                sign = 1.0
            elif off is not None:
                # Offsets get the negated code of their position in the (2K+1)² stencil, so
                # they are distinct from each other and from the grid tokens.
                x, y = ((off[0] + k + 0.5) / (2 * k + 1), (off[1] + k + 0.5) / (2 * k + 1))
                sign = -1.0
            else:
                continue
            coder = sincos_code if init == "sincos" else fourier_code
            code = coder([x], [y], base.shape[1], vocab.grid_size)[0]
            rows[n] += sign * scale * math.sqrt(2.0) * code
    elif init == "text":
        for n, tok in enumerate(tokens):
            ids = tokenizer(_text_for_token(vocab, tok), add_special_tokens=False)["input_ids"]
            ids = [i for i in ids if i < base_rows]
            if ids:
                rows[n] = base[ids].mean(dim=0)
    else:
        raise ValueError(f"unknown init {init!r}; expected one of {INIT_METHODS}")
    return rows.to(weight.dtype)


def check_vocab_consistency(model, tokenizer=None) -> dict:
    """Assert that input embeddings, output head and config vocab size agree (and that the
    tokenizer fits); return the figures. Raises VocabMismatchError naming what differs."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    text_cfg = model.config.get_text_config()
    figures = {
        "embedding_rows": emb.shape[0],
        "head_rows": None if head is None else head.weight.shape[0],
        "config_vocab_size": text_cfg.vocab_size,
        "tokenizer_len": None if tokenizer is None else len(tokenizer),
        "tied": head is not None and head.weight.data_ptr() == emb.data_ptr(),
    }
    problems = []
    if figures["head_rows"] is not None and figures["head_rows"] != emb.shape[0]:
        problems.append(f"output head has {figures['head_rows']} rows, embeddings {emb.shape[0]}")
    if text_cfg.vocab_size != emb.shape[0]:
        problems.append(f"config vocab_size is {text_cfg.vocab_size}, embeddings {emb.shape[0]}")
    top_vocab = getattr(model.config, "vocab_size", None)
    if top_vocab is not None and top_vocab != emb.shape[0]:
        problems.append(f"top-level config vocab_size is {top_vocab}, embeddings {emb.shape[0]}")
    if tokenizer is not None and len(tokenizer) > emb.shape[0]:
        problems.append(f"tokenizer has {len(tokenizer)} tokens, embeddings {emb.shape[0]} rows")
    tie = getattr(model.config, "tie_word_embeddings", None)
    if tie is None:
        tie = getattr(text_cfg, "tie_word_embeddings", False)
    if head is not None and bool(tie) != figures["tied"]:
        problems.append(f"config tie_word_embeddings={tie} but head tied={figures['tied']}")
    if problems:
        raise VocabMismatchError("; ".join(problems))
    return figures


def extend_model(model, tokenizer, vocab: SpatialVocab, init: str = "sincos",
                 pad_to_multiple_of: int = 64) -> dict:
    """Add `vocab` to `tokenizer`, resize `model` and initialize the new rows, in place.

    Returns a report: number of new tokens, their id range, row counts before/after, and the
    consistency figures of `check_vocab_consistency`.
    """
    import torch

    if init not in INIT_METHODS:
        raise ValueError(f"unknown init {init!r}; expected one of {INIT_METHODS}")
    base_len = len(tokenizer)
    already = vocab.all_tokens()[0] in tokenizer.get_vocab()
    ids = add_spatial_tokens(tokenizer, vocab)
    if already:
        figures = check_vocab_consistency(model, tokenizer)
        return {"added": 0, "ids": (min(ids), max(ids)), **figures}
    if ids != list(range(base_len, base_len + len(ids))):
        raise VocabMismatchError("new token ids are not contiguous after the tokenizer's end")
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(len(tokenizer), old_rows),
                                  pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    tokens = vocab.all_tokens()
    # Base rows: ids of the original tokenizer (spare rows beyond it are untrained).
    base_rows = min(base_len, old_rows)
    idx = torch.tensor(ids)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[idx] = _new_rows(emb, base_rows, tokens, vocab, init, tokenizer)
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != emb.data_ptr():
            head.weight[idx] = _new_rows(head.weight, base_rows, tokens, vocab, init, tokenizer)
            if getattr(head, "bias", None) is not None:
                head.bias[idx] = head.bias[:base_rows].mean()
    figures = check_vocab_consistency(model, tokenizer)
    return {"added": len(ids), "ids": (ids[0], ids[-1]), "rows_before": old_rows, **figures}


def load_model_and_processor(path: str | Path):
    """Load a local checkpoint: a vision-language model with its processor, or a causal LM
    with its tokenizer. Returns (model, processor_or_tokenizer, tokenizer)."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a saved model folder")
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError):
        processor = AutoTokenizer.from_pretrained(path)
    tokenizer = getattr(processor, "tokenizer", processor)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype="auto")
    except ValueError:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    return model, processor, tokenizer


def extend_checkpoint(model_path: str | Path, out_path: str | Path, vocab: SpatialVocab,
                      init: str = "sincos", pad_to_multiple_of: int = 64) -> dict:
    """Load, extend and save model, tokenizer, processor and `spatial_vocab.json` together."""
    model, processor, tokenizer = load_model_and_processor(model_path)
    report = extend_model(model, tokenizer, vocab, init, pad_to_multiple_of)
    out = Path(out_path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    vocab.save(out)
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tokens.extend", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="folder of the base model (local, offline)")
    p.add_argument("--out", required=True, help="folder for the extended model")
    p.add_argument("--grid-size", type=int, default=32, help="G, cells per side (default 32)")
    p.add_argument("--offset-radius", type=int, default=1, help="K, offsets in -K..K (default 1)")
    p.add_argument("--offset-step", type=float, default=0.5,
                   help="offset step as a fraction of a cell (default 0.5)")
    p.add_argument("--init", choices=INIT_METHODS, default="sincos",
                   help="initialization of the new rows (default sincos)")
    p.add_argument("--pad-to-multiple-of", type=int, default=64)
    args = p.parse_args(argv)
    vocab = SpatialVocab(args.grid_size, args.offset_radius, args.offset_step)
    report = extend_checkpoint(args.model, args.out, vocab, args.init, args.pad_to_multiple_of)
    print(f"added {report['added']} tokens (ids {report['ids'][0]}..{report['ids'][1]}); "
          f"embedding rows {report.get('rows_before', report['embedding_rows'])} -> "
          f"{report['embedding_rows']}; tied head: {report['tied']}; saved to {args.out}")
    return report


if __name__ == "__main__":
    main()

