from tokens.bench import main


def test_bench_prints_its_figures(capsys):
    r = main(["--masks", "12", "--size", "128", "--proposer", "region"])
    out = capsys.readouterr().out
    assert "tokens per mask" in out and "parse throughput" in out and "10th percentile" in out
    assert r["masks"] == 12 and r["tokens_per_mask"] >= 1
    assert 0 < r["iou_p10"] <= r["iou_mean"] <= 1 and r["parse_completions_per_s"] > 0
