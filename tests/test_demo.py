from PIL import Image

from rl.demo import main


def test_demo_runs_offline_and_draws(tmp_path, capsys):
    r = main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert r["report"]["added"] == 1034
    assert "parsed back: 3 instances, errors: []" in out
    with Image.open(r["picture"]) as pic:
        px = pic.convert("RGB").load()
        w, h = pic.size
        # Red seg points are drawn where the answer's points are.
        x, y = r["instances"][0].points[0]
        assert px[int(x * w), int(y * h)] == (255, 0, 0)
