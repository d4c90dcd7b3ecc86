import os

# No model hub here: anything that resolves a name online must fail at once, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Tiny Qwen2.5-VL checkpoints built offline: {"tied": path, "untied": path}."""
    from rl.models import build_tiny_qwen2_5_vl

    root = tmp_path_factory.mktemp("tiny")
    return {
        "tied": build_tiny_qwen2_5_vl(root / "tied", tie_word_embeddings=True),
        "untied": build_tiny_qwen2_5_vl(root / "untied", tie_word_embeddings=False),
    }


@pytest.fixture(scope="session")
def grid8_model(tiny_model_dirs, tmp_path_factory):
    """The tied tiny checkpoint with an 8-grid spatial vocabulary (untrained)."""
    from tokens.extend import main as extend

    out = tmp_path_factory.mktemp("grid8")
    extend(["--model", str(tiny_model_dirs["tied"]), "--out", str(out), "--grid-size", "8"])
    return out
