import json

from data_fixtures import reasonseg_fixture, refcoco_fixture
from datasets import load_from_disk

from rl.data.__main__ import main


def test_synthetic_sft_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "sft"
    summary = main(["--source", "synthetic", "--n", "30", "--build", "sft", "--out", str(out)])
    printed = capsys.readouterr().out
    for text in ("records written:", "samples/s", "records skipped: none", "tokens per mask",
                 "conversion IoU: mean", "[0.9, 1.0]"):
        assert text in printed
    ds = load_from_disk(str(out))
    assert len(ds) == summary["records_written"] == sum(summary["tasks"].values())
    assert json.loads((out / "summary.json").read_text())["build"] == "sft"


def test_converters_through_the_cli_count_skips(tmp_path, capsys):
    root, images = refcoco_fixture(tmp_path)
    (images / "COCO_train2014_000000000002.jpg").unlink()
    summary = main(["--source", "refcoco", "--root", str(root), "--images", str(images),
                    "--no-strict", "--out", str(tmp_path / "rows")])
    assert summary["records_written"] == 3 and summary["skipped"] == {"bad file_name": 1}
    assert "does not exist" in capsys.readouterr().out
    rs = reasonseg_fixture(tmp_path)
    summary = main(["--source", "reasonseg", "--root", str(rs), "--build", "grpo",
                    "--image-size", "32", "--out", str(tmp_path / "grpo")])
    ds = load_from_disk(str(tmp_path / "grpo"))
    assert summary["records_written"] == 2 and ds[0]["image"].size == (32, 32)
