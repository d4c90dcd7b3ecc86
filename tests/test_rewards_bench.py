from rl.bench.rewards import main


def test_bench_prints_its_figures(capsys):
    r = main(["--prompts", "2", "--rollouts", "2", "--size", "128", "--project", "tiny"])
    out = capsys.readouterr().out
    for text in ("(a) naive", "(b) shipped", "speed-up", "non-SAM reward math"):
        assert text in out
    assert r["completions"] == 4 and r["embeddings"] == 2
    assert r["same_scores"] and r["naive_s"] > 0 and r["shipped_s"] > 0
