"""Scratch run (2026-11-30): the supervised baseline on the 64 px demo preset (`demo64`, then
called `demo`) with extra overrides,
written to runs/exp/NAME.

    python experiments/scratch/supervised_scratch.py NAME overrides...
"""
import json
import sys

from vjepa.config import apply_overrides, preset
from vjepa.supervised import train_supervised

name = sys.argv[1]
cfg = apply_overrides(preset("demo64"), [f"run.out_dir=runs/exp/{name}", "run.threads=1", "run.progress=false", "run.probe_after=false"] + sys.argv[2:])
print(json.dumps(train_supervised(cfg, task="motion"), default=str))
