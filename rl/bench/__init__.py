"""Benchmarks that print their figures; each needs the whole stack, so they live above the
packages they measure.

    python -m rl.bench.tokens      # tokens per mask, conversion IoU, parse speed, codecs
    python -m rl.bench.rewards     # the mask reward with SAM: naive against cached/batched
    python -m rl.bench.training    # an SFT and a GRPO step against the bare model's step
    bash rl/bench/side_by_side.sh OLD NEW   # two commits' default runs, timed, in a fresh venv
"""
