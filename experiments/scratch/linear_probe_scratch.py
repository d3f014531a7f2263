"""Scratch (2026-11-30): average-pool linear probe (motion, test, 4096 clips) on a run's init and target.

    python experiments/scratch/linear_probe_scratch.py RUN init target
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: target_vs_online

from target_vs_online import encoders

from vjepa.eval import probe_encoder

torch.set_num_threads(1)
run = sys.argv[1]
nets, cfg, share, step = encoders(Path(run))
out = {}
for which in sys.argv[2:]:
    r = probe_encoder(nets[which], cfg, "motion", "linear", max_train_clips=4096, eval_split="test")
    out[which] = {k: r[k] for k in ("top1", "train_top1", "per_class_top1")}
    print(run, which, "linear", round(r["top1"], 1), [round(x, 1) for x in r["per_class_top1"]], flush=True)
Path(f"lin_{Path(run).name}.json").write_text(json.dumps(out, indent=1))
