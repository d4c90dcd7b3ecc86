"""write_json replaces its file whole."""

import json

from rl.files import write_json


def test_write_json_replaces_the_file_and_leaves_no_sibling(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "b": [1.5]}, indent=2)
    assert json.loads(path.read_text()) == {"a": 2, "b": [1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
