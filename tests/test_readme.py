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


def test_the_lab_notebook_names_real_recipes_and_links():
    text = (ROOT / "docs" / "experiments.md").read_text()
    for recipe in set(re.findall(r"configs/[\w/]+\.yaml", text)):
        assert (ROOT / recipe).is_file(), recipe
    for target in re.findall(r"\]\((?!https?:)([^)#]+)[^)]*\)", text):
        assert (ROOT / "docs" / target).resolve().exists(), target


def notebook_titles():
    text = (ROOT / "docs" / "experiments.md").read_text()
    found = re.findall(r"^\*\*(.+?)\*\*", text, re.MULTILINE | re.DOTALL)
    return [" ".join(t.split()) for t in found]


def test_every_citation_of_the_lab_notebook_names_one_of_its_paragraphs():
    # A citation is `docs/experiments.md, "Title"` (in a comment the title may run on after a
    # line break and a "#"); the title, or its first words, must open a bold paragraph there.
    titles = notebook_titles()
    assert len(titles) > 30
    cited = 0
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("configs/**/*.yaml"),
                 *ROOT.glob("rl/**/*.py"), *ROOT.glob("tests/*.py")]:
        text = path.read_text()
        for quote in re.findall(r'docs/experiments\.md,\s+"([^"]+)"', text):
            title = " ".join(re.sub(r"\n\s*#", " ", quote).split())
            if title == "Title":   # this test's own example
                continue
            cited += 1
            assert any(t.startswith(title) for t in titles), (path.name, title)
    assert cited > 20
