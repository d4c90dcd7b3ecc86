"""The README's two set-up commands are the ones CI and the demo really run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_ci_runs_the_readme_test_command():
    test_cmd = 'pip install -e ".[test]" && pytest -q'
    assert any(b.strip() == test_cmd for b in bash_blocks())
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    assert "ruff check ." in ci


def test_readme_default_command_runs_the_training_pipeline():
    cmd = bash_blocks()[0].strip()
    assert cmd == "pip install -e . && accelerate launch rl/train_grpo.py"
    assert (ROOT / "rl" / "train_grpo.py").is_file()
    assert (ROOT / "configs" / "default.yaml").is_file()


def test_every_picture_and_recipe_the_readme_names_exists():
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "docs/infer_example.png" in pictures
    for pic in pictures:
        assert (ROOT / pic).is_file(), pic
    for recipe in set(re.findall(r"configs/[\w/]+\.yaml", text)):
        assert (ROOT / recipe).is_file(), recipe
