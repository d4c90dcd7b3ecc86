import numpy as np
import pytest

from rl.data import parallel
from rl.data.parallel import in_processes, ranges
from rl.data.referring import synthetic_records
from rl.data.samples import BuildConfig, build_sft, load_prompts
from tokens.decoders import RegionDecoder
from tokens.vocab import SpatialVocab


def test_ranges_cover_in_order():
    assert ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert ranges(2, 5) == [(0, 1), (1, 2)]
    assert ranges(0, 2) == [(0, 0)]


def _same_records(a, b):
    assert [r.id for r in a] == [r.id for r in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image)
        assert (x.expression, x.solution, x.kind, x.extra) == (y.expression, y.solution,
                                                               y.kind, y.extra)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PER_WORKER", 3)


def test_records_in_processes_are_the_records_of_one(small_chunks):
    def job(lo, hi):
        return list(synthetic_records(hi - lo, 7, 64, (2, 4), distractors="share", start=lo))

    one = job(0, 13)
    _same_records(in_processes(job, 13, 2), one)
    _same_records(in_processes(job, 13, 3), one)
    # a range is the same records as the whole sequence's
    _same_records(list(synthetic_records(5, 7, 64, (2, 4), distractors="share", start=8)),
                  one[8:])


def test_sft_rows_in_processes_are_the_rows_of_one(small_chunks):
    vocab = SpatialVocab(grid_size=8)
    recs = list(synthetic_records(9, 3, 64, (1, 3)))
    prompts = load_prompts()
    cfg = BuildConfig(vocab=vocab, refinement=True, refinement_share=0.5, caption_share=0.5,
                      n_points=4, seed=1)
    dec = RegionDecoder()

    def job(lo, hi):
        return list(build_sft(recs[lo:hi], dec, prompts, cfg, start=lo))

    one = job(0, len(recs))
    many = in_processes(job, len(recs), 2)
    assert [(r["task"], r["prompt"], r["completion"]) for r in many] == \
        [(r["task"], r["prompt"], r["completion"]) for r in one]
    assert {r["task"] for r in one} >= {"stage1", "refine"}


def test_one_worker_runs_here(monkeypatch):
    calls = []
    monkeypatch.setattr(parallel, "MIN_PER_WORKER", 1)
    assert in_processes(lambda lo, hi: calls.append((lo, hi)) or list(range(lo, hi)), 4, 1) \
        == [0, 1, 2, 3]
    assert calls == [(0, 4)]  # in this process: the list saw the call
