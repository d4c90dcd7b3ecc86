from rl.bench.data_build import main


def test_bench_prints_its_figures_and_the_builds_agree(capsys, monkeypatch):
    from rl.data import parallel

    monkeypatch.setattr(parallel, "MIN_PER_WORKER", 10)  # split even this small build
    r = main(["--n", "40", "--workers", "2"])
    out = capsys.readouterr().out
    assert "| processes | scenes (s) | SFT rows (s) |" in out and "speedup" in out
    assert r["identical"] is True and r["rows"] >= 40 and r["speedup"] > 0
