"""Two models on the same rows, paired: the differences `rl.evaluate --out` makes possible.

    python -m rl.compare --before runs/a-eval/predictions.jsonl \
        --after runs/b-eval/predictions.jsonl
    python -m rl.compare --before a0/predictions.jsonl a1/predictions.jsonl \
        --after b0/predictions.jsonl b1/predictions.jsonl     # two seeds, paired seed with seed

Each `--before` / `--after` file is one evaluation's `predictions.jsonl` (`rl.evaluate --out`)
on the same rows (matched by `id`); several files are training seeds, the k-th `--after`
paired with the k-th `--before`. Printed, per figure: rows, both means, the mean of after -
before with its 95 % paired-bootstrap interval (rows resampled; with seeds, rows and seeds,
`rl.metrics.seeded_paired_difference`) and whether the interval excludes 0. Figures: gIoU
(the mean of per-row IoU) over all rows and per expression kind (on no-target rows that is
N-acc: an empty answer scores 1, any mask 0), and referent accuracy over the rows that have it
(single-target rows of scenes whose objects are known), overall and per kind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rl.metrics import seeded_paired_difference


def read_predictions(path: str | Path) -> dict[str, dict]:
    """The rows of one `predictions.jsonl`, by `id`; a line that is not a prediction row, or an
    id seen twice, is an error naming the file and line."""
    rows: dict[str, dict] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, _ = str(row["id"]), float(row["iou"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {n}: expected a JSON row of rl.evaluate's "
                                 f"predictions.jsonl with `id` and `iou` ({e})") from None
            if key in rows:
                raise ValueError(f"{path}, line {n}: id {key!r} appears twice")
            rows[key] = row
    return rows


def _aligned(runs: list[dict[str, dict]], paths: list[str]) -> list[str]:
    ids = list(runs[0])
    for run, path in zip(runs[1:], paths[1:], strict=True):
        if set(run) != set(ids):
            missing = sorted(set(ids) - set(run))[:3] or sorted(set(run) - set(ids))[:3]
            raise ValueError(f"{path}: not the rows of {paths[0]} (e.g. id {missing[0]!r} is in "
                             "one and not the other); compare evaluations of the same rows")
    return ids


def figures(rows: list[dict]) -> dict[str, tuple[list[str], str]]:
    """Figure name -> (the ids it averages over, the per-row field)."""
    out = {"gIoU, all rows": ([r["id"] for r in rows], "iou")}
    kinds = sorted({r.get("kind") or "" for r in rows} - {""})
    for k in kinds:
        name = "N-acc (no-target rows)" if k == "none" else f"gIoU, {k}"
        out[name] = ([r["id"] for r in rows if r.get("kind") == k], "iou")
    read = [r for r in rows if r.get("referent") is not None]
    if read:
        out["referent accuracy, single-target"] = ([r["id"] for r in read], "referent")
        for k in sorted({r.get("kind") or "" for r in read} - {""}):
            out[f"referent accuracy, {k}"] = ([r["id"] for r in read if r.get("kind") == k],
                                              "referent")
    return out


def compare(before: list[str], after: list[str], n_resamples: int = 10_000) -> list[dict]:
    """Paired differences of the figures (`figures`) between the evaluations in `after` and
    those in `before` (files, one per seed, k-th with k-th)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"--before has {len(before)} file(s), --after {len(after)}: give one "
                         "per seed, the same number on both sides")
    paths = [*before, *after]
    runs = [read_predictions(p) for p in paths]
    ids = _aligned(runs, [str(p) for p in paths])
    first = [{**runs[0][i], "id": i} for i in ids]
    for run, path in zip(runs[1:], paths[1:], strict=True):  # the same rows mean the same kinds
        for i in ids:
            if run[i].get("kind") != runs[0][i].get("kind"):
                raise ValueError(f"{path}: row {i!r} has kind {run[i].get('kind')!r}, "
                                 f"{paths[0]} says {runs[0][i].get('kind')!r}")
    n = len(before)
    out = []
    for name, (keys, field) in figures(first).items():
        if field == "referent":  # a row has it in every run, or it is left out of this figure
            keys = [i for i in keys if all(r[i].get("referent") is not None for r in runs)]
        if not keys:
            continue
        a = np.array([[float(runs[n + s][i][field]) for i in keys] for s in range(n)])
        b = np.array([[float(runs[s][i][field]) for i in keys] for s in range(n)])
        d = seeded_paired_difference(a, b, n_resamples)
        out.append({"figure": name, "rows": len(keys), "before": float(b.mean()),
                    "after": float(a.mean()), **d})
    return out


def markdown(results: list[dict], seeds: int) -> str:
    over = ", seeds and rows resampled" if seeds > 1 else ""
    lines = [f"| figure | rows | before | after | after - before [95 %{over}] | |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["interval"] or (float("nan"), float("nan"))
        lines.append(f"| {r['figure']} | {r['rows']} | {r['before']:.3f} | {r['after']:.3f} | "
                     f"{r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m rl.compare", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--before", nargs="+", required=True,
                   help="predictions.jsonl of the reference model (one per seed)")
    p.add_argument("--after", nargs="+", required=True,
                   help="predictions.jsonl of the model compared with it (one per seed)")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    try:
        results = compare(a.before, a.after)
    except (ValueError, OSError) as e:
        raise SystemExit(f"rl.compare: {e}") from None
    print(markdown(results, len(a.before)))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
