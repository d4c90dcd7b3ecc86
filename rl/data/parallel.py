"""Data builds over several processes, with the result of one.

A build whose item i depends on its index only (synthetic scene i: `synthetic_records`; SFT rows
of record i: `build_sft`) is split into contiguous index ranges, each built in a forked process,
and the pieces are joined in order: the same list as the build in one process, bit for bit
(tested). The job is handed to the children by fork, not pickled: only the ranges go out and
only the built items come back.

    rows = in_processes(lambda lo, hi: list(build(items[lo:hi], start=lo)), len(items), 2)

On a platform without fork, with one worker, or for a build too small to pay the start of the
processes, it runs in this process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

# Below this many items per process the build runs here: a forked worker costs ~0.1 s to start
# and the default run's records take ~5 ms each.
MIN_PER_WORKER = 200

_JOB: Callable[[int, int], list] | None = None


def _run(bounds: tuple[int, int]) -> list:
    assert _JOB is not None, "rl.data.parallel: the job is set before the workers fork"
    return _JOB(*bounds)


def ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous ranges covering [0, n), sizes differing by at most one."""
    parts = max(1, min(parts, n)) if n else 1
    base, extra = divmod(n, parts)
    out, lo = [], 0
    for k in range(parts):
        hi = lo + base + (1 if k < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def in_processes(job: Callable[[int, int], list], n: int, workers: int | None) -> list:
    """`job(lo, hi)` (the items of indices lo..hi-1, as a list) over [0, n) in `workers` forked
    processes, joined in index order; the same list as `job(0, n)`."""
    global _JOB
    workers = int(workers or 1)
    if (workers < 2 or n < 2 * MIN_PER_WORKER
            or "fork" not in multiprocessing.get_all_start_methods()):
        return job(0, n)
    parts = ranges(n, min(workers, n // MIN_PER_WORKER))
    _JOB = job
    try:
        with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("fork")) as ex:
            pieces = list(ex.map(_run, parts))
    finally:
        _JOB = None
    out: list = []
    for piece in pieces:
        out.extend(piece)
    return out
