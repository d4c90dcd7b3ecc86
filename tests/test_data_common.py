import os
import pickle

import numpy as np
import pytest

from rl.data.common import (
    DataError,
    Skips,
    UnsafePickleError,
    load_pickle_restricted,
    polygons_to_mask,
    safe_join,
)


class SystemPayload:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


class CreateFilePayload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_plain_pickles_load(tmp_path):
    refs = [{"ref_id": 1, "sentences": [{"sent": "a cat", "tokens": ["a", "cat"]}],
             "bbox": (1.0, 2.0), "flag": None, "ok": True, "score": 0.5}]
    for protocol in (0, 2, 4, 5):
        p = tmp_path / f"refs{protocol}.p"
        p.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_pickle_restricted(p) == refs


@pytest.mark.parametrize("payload", ["system", "open"])
def test_malicious_refs_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "created_by_pickle"
    obj = SystemPayload() if payload == "system" else CreateFilePayload(str(target))
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0, "sentences": [obj]}], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\).p: refused to load global "
                                                r"(posix|os|nt|builtins|io)\.(system|open)"):
        load_pickle_restricted(path)
    assert not (tmp_path / "pwned_by_pickle").exists() and not target.exists()


def test_a_class_instance_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"when": np.float64(1.0)}]))
    with pytest.raises(UnsafePickleError, match="refused to load global numpy"):
        load_pickle_restricted(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_pickle_restricted(path)


def test_paths_cannot_leave_the_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    assert safe_join(root, "a/b.jpg", source="x.json", record=1, field_name="file_name") == \
        (root / "a/b.jpg").resolve()
    for bad in ("../outside.jpg", "../../etc/passwd", "/etc/passwd", "a/../../x.jpg"):
        with pytest.raises(DataError, match=r"x.json: record 7: field 'file_name': path .* "
                                            r"leaves the dataset root"):
            safe_join(root, bad, source="x.json", record=7, field_name="file_name")


def test_polygons():
    m = polygons_to_mask([[2, 2, 6, 2, 6, 5, 2, 5]], 8, 8, source="f", record=0,
                         field_name="segmentation")
    assert m.shape == (8, 8) and m[2:5, 2:6].all() and m.sum() == 12
    with pytest.raises(DataError, match=r"f: record 0: field 'segmentation\[0\]': polygon "
                                        r"reaches .* outside the 8x8 image"):
        polygons_to_mask([[2, 2, 20, 2, 20, 5]], 8, 8, source="f", record=0,
                         field_name="segmentation")
    with pytest.raises(DataError, match="at least 3"):
        polygons_to_mask([[1, 1, 2, 2]], 8, 8, source="f", record=0, field_name="segmentation")


def test_skips_count_or_raise():
    lenient = Skips(strict=False)
    lenient.skip("bad image", DataError("x: record 1: field 'image': missing"))
    lenient.skip("bad image", DataError("x: record 2: field 'image': missing"))
    assert lenient.counts == {"bad image": 2} and "record 1" in lenient.examples["bad image"]
    with pytest.raises(DataError, match="record 3"):
        Skips(strict=True).skip("bad image", DataError("x: record 3"))


def test_python2_string_pickles_decode_as_utf8(tmp_path):
    # Python 2's refs(*).p store str as 8-bit strings (SHORT_BINSTRING); hand-written here.
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x80\x02]q\x00U\x09caf\xc3\xa9 catq\x01a.")
    assert load_pickle_restricted(path) == ["café cat"]
