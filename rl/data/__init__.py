"""Data: synthetic referring scenes, converters for the real datasets, and sample builders.

Every source yields rows of the ground-truth contract (`rewards.solution`): an image, an
expression and a `solution`. The builders (`rl.data.samples`) turn rows into SFT and GRPO
samples; `python -m rl.data` does both from the command line.
"""
