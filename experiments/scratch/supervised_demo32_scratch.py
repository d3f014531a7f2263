"""Scratch (2026-11-30): supervised baseline at demo32's model, data and compute (12,000 steps of 32),
written to runs/exp/NAME.

    python experiments/scratch/supervised_demo32_scratch.py NAME overrides...
"""
import json
import sys

from vjepa.config import apply_overrides, preset
from vjepa.supervised import train_supervised

name = sys.argv[1]
cfg = apply_overrides(preset("demo32"), [f"run.out_dir=runs/exp/{name}", "run.threads=1", "run.progress=false",
                      "run.probe_after=false"] + sys.argv[2:])
print(json.dumps(train_supervised(cfg, task="motion"), default=str))
