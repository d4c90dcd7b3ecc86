import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from tokens.extend import (
    VocabMismatchError,
    add_spatial_tokens,
    check_vocab_consistency,
    extend_model,
    main,
    sincos_code,
)
from tokens.vocab import SpatialVocab

V = SpatialVocab()


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_cli_extends_saves_and_reloads(kind, tiny_model_dirs, tmp_path):
    src = tiny_model_dirs[kind]
    base_model, base_proc = load(src)
    base_len = len(base_proc.tokenizer)
    report = main(["--model", str(src), "--out", str(tmp_path)])
    assert report["added"] == 1034
    assert report["ids"] == (base_len, base_len + 1033)
    assert report["embedding_rows"] % 64 == 0 and report["embedding_rows"] >= base_len + 1034
    assert report["tied"] == (kind == "tied")

    model, proc = load(tmp_path)
    tok = proc.tokenizer
    figures = check_vocab_consistency(model, tok)
    assert figures["embedding_rows"] == figures["head_rows"] == figures["config_vocab_size"]
    assert figures["tied"] == (kind == "tied")
    # Ids are stable after save/reload and contiguous after the base vocabulary.
    ids = V.token_ids(tok)
    assert [ids[t] for t in V.all_tokens()] == list(range(base_len, base_len + 1034))
    assert SpatialVocab.load(tmp_path) == V
    # Base rows are untouched.
    n = base_model.get_input_embeddings().weight.shape[0]
    assert torch.equal(model.get_input_embeddings().weight[:n],
                       base_model.get_input_embeddings().weight)


def test_decoding_keeps_spatial_tokens(tiny_model_dirs, tmp_path):
    main(["--model", str(tiny_model_dirs["tied"]), "--out", str(tmp_path)])
    tok = AutoProcessor.from_pretrained(tmp_path).tokenizer
    text = "<answer><box><grid_3_4><grid_31_0></box><seg><off_-1_1><DELETE></seg></answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<grid_3_4>") in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.batch_decode([ids + [tok.eos_token_id]], skip_special_tokens=True) == [text]
    # Each spatial token is one id, not split into pieces.
    assert len(tok("<grid_3_4><grid_3_4>", add_special_tokens=False)["input_ids"]) == 2


@pytest.mark.parametrize("init", ["mean", "sincos", "fourier", "text"])
@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_init_methods(init, kind, tiny_model_dirs):
    model, proc = load(tiny_model_dirs[kind])
    tok = proc.tokenizer
    extend_model(model, tok, V, init=init)
    ids = V.token_ids(tok)
    emb = model.get_input_embeddings().weight.detach()
    head = model.get_output_embeddings().weight.detach()
    for w in (emb, head):
        rows = w[[ids[t] for t in V.all_tokens()]]
        assert torch.isfinite(rows).all()
        base_mean = w[: ids["<grid_0_0>"]].mean(0)
        if init == "mean":
            assert torch.allclose(rows, base_mean.expand_as(rows), atol=1e-6)
        else:
            # Distinct grid tokens start distinct.
            g = rows[: V.grid_size**2]
            assert torch.unique(g, dim=0).shape[0] > 0.9 * g.shape[0]
    if init in ("sincos", "fourier"):
        def d(a, b):
            return (emb[ids[a]] - emb[ids[b]]).norm().item()
        # A grid token starts nearer its neighbour than a far cell: the point of the code.
        assert d("<grid_10_10>", "<grid_11_10>") < d("<grid_10_10>", "<grid_30_2>")
        assert d("<grid_10_10>", "<grid_10_11>") < d("<grid_10_10>", "<grid_2_30>")


def test_fourier_code_has_no_ghost_cells():
    from tokens.extend import fourier_code, sincos_code

    # Two objects at (0.2, 0.3) and (0.7, 0.8); a hidden state halfway between their codes.
    # Under the additive sin-cos code the "ghost" cells (0.2, 0.8) and (0.7, 0.3) score as high
    # as the two real ones (its dot product is k(dx) + k(dy)); under the 2D Fourier code they
    # score near 0, the real ones near the top.
    xs, ys = [0.2, 0.7, 0.2, 0.7], [0.3, 0.8, 0.8, 0.3]
    for coder, ghost_high in ((sincos_code, True), (fourier_code, False)):
        c = coder(xs, ys, 128, 32)
        h = c[0] + c[1]
        scores = (c @ h) / (c[0] @ c[0])
        assert scores[0] > 0.85 and scores[1] > 0.85
        assert (scores[2:] > 0.8).all() if ghost_high else (scores[2:].abs() < 0.2).all()
    # Fixed by its seed; neighbours closer than far cells.
    a = fourier_code([0.5], [0.5], 64, 32)
    assert torch.equal(a, fourier_code([0.5], [0.5], 64, 32))
    near, far = fourier_code([0.5 + 1 / 32], [0.5], 64, 32), fourier_code([0.1], [0.9], 64, 32)
    assert (a @ near.T).item() > 2 * abs((a @ far.T).item())


def test_spare_rows_are_initialized_and_never_shrunk(tiny_model_dirs):
    # Like Qwen2.5-VL-7B: more embedding rows than tokens. New ids land on existing rows,
    # which must be initialized explicitly, and the matrix must never shrink.
    model, proc = load(tiny_model_dirs["untied"])
    tok = proc.tokenizer
    model.resize_token_embeddings(len(tok) + 1500, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[len(tok):] = 1e3
        model.get_output_embeddings().weight[len(tok):] = 1e3
    report = extend_model(model, tok, V, init="mean")
    assert report["rows_before"] == len(tok) - 1034 + 1500
    assert report["embedding_rows"] == 2560  # >= rows_before, padded to 64
    new = model.get_input_embeddings().weight[report["ids"][0]: report["ids"][1] + 1]
    assert new.abs().max() < 10


def test_extending_twice_is_a_no_op_and_partial_vocab_is_refused(tiny_model_dirs):
    model, proc = load(tiny_model_dirs["tied"])
    tok = proc.tokenizer
    extend_model(model, tok, V)
    rows = model.get_input_embeddings().weight.shape[0]
    again = extend_model(model, tok, V)
    assert again["added"] == 0 and model.get_input_embeddings().weight.shape[0] == rows
    with pytest.raises(ValueError, match="another vocabulary configuration"):
        add_spatial_tokens(tok, SpatialVocab(grid_size=64))


def test_mismatch_is_detected(tiny_model_dirs):
    model, proc = load(tiny_model_dirs["untied"])
    extend_model(model, proc.tokenizer, V)
    model.config.get_text_config().vocab_size -= 64
    with pytest.raises(VocabMismatchError, match="config vocab_size"):
        check_vocab_consistency(model, proc.tokenizer)


def test_unknown_init_and_missing_model(tmp_path):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path), "--out", str(tmp_path / "o"), "--init", "zeros"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        main(["--model", str(tmp_path), "--out", str(tmp_path / "o")])


def test_sincos_code_shape_and_smoothness():
    code = sincos_code([0.1, 0.1 + 1 / 32, 0.9], [0.5, 0.5, 0.5], dim=64, grid_size=32)
    assert code.shape == (3, 64)
    assert (code[0] - code[1]).norm() < (code[0] - code[2]).norm()
