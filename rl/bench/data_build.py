"""What building a run's data costs, in one process and over the run's cores.

    python -m rl.bench.data_build [--config configs/default.yaml] [--n 1200] [--workers 2]

Prints the seconds to draw `--n` synthetic training scenes (rl.pipeline.records) and to build
their SFT rows (Pipeline._build_sft), first in one process, then in `--workers` processes
(rl.data.parallel), their ratio, and whether both builds gave the same records and rows (they
must). Ratios, not seconds, compare across machines; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _build(config: str | None, n: int, workers: int) -> tuple[list, list, float, float]:
    from rl.config import load_config
    from rl.pipeline import Pipeline, records

    cfg = load_config(config, {"cpu_threads": workers, "data": {"n_train": n}})
    p = Pipeline(cfg)
    build = p.build_config()
    t0 = time.perf_counter()
    recs = records(cfg, "train")
    t1 = time.perf_counter()
    rows = p._build_sft(recs, build)
    return recs, rows, t1 - t0, time.perf_counter() - t1


def same(a: tuple, b: tuple) -> bool:
    """The same records (images, expressions, solutions) and the same rows."""
    ra, rb = a[0], b[0]
    return (len(ra) == len(rb)
            and all(np.array_equal(x.image, y.image) and x.expression == y.expression
                    and x.solution == y.solution for x, y in zip(ra, rb, strict=True))
            and [(r["prompt"], r["completion"]) for r in a[1]]
            == [(r["prompt"], r["completion"]) for r in b[1]])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="recipe YAML (default: configs/default.yaml)")
    p.add_argument("--n", type=int, default=1200, help="synthetic training scenes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    one = _build(a.config, a.n, 1)
    many = _build(a.config, a.n, a.workers)
    r = {"n": a.n, "workers": a.workers, "rows": len(one[1]),
         "records_s": [one[2], many[2]], "rows_s": [one[3], many[3]],
         "speedup": (one[2] + one[3]) / max(many[2] + many[3], 1e-9),
         "identical": same(one, many)}
    print(f"{a.n} scenes, {r['rows']} SFT rows")
    print(f"| processes | scenes (s) | SFT rows (s) |\n|---|---|---|\n"
          f"| 1 | {one[2]:.2f} | {one[3]:.2f} |\n| {a.workers} | {many[2]:.2f} | {many[3]:.2f} |")
    print(f"speedup {r['speedup']:.2f}x; the same records and rows: {r['identical']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main()
