"""Scratch diagnostic (2026-11-30): is a trained encoder's within-clip collapse a masked-training
versus full-clip mismatch? For the same random 20% of tokens of 32 validation clips, compares the
features read out of the full clip with the features of those tokens encoded alone (as the context
encoder sees them in training).

    python experiments/scratch/subset_within_clip.py CKPT:init|encoder|target_encoder ...
"""
import sys

import torch

torch.set_num_threads(1)
from vjepa.checkpoint import load_checkpoint
from vjepa.config import config_from_stored
from vjepa.data import build_dataset
from vjepa.eval import load_frozen
from vjepa.jepa import collapse_stats, layer_norm_targets
from vjepa.models.factory import initial_encoder
from vjepa.models.vit import gather_tokens

for spec in sys.argv[1:]:
    path, which = spec.split(":")
    if which == "init":
        st = load_checkpoint(path); cfg = config_from_stored(st["config"], str(path)); enc = initial_encoder(cfg).eval()
    else:
        enc, cfg = load_frozen(path, which)
    ds = build_dataset(cfg.data, split="val", train=False)
    video = torch.stack([ds[i]["video"] for i in range(32)])
    video = video[:, 0]  # first (only) view
    g = torch.Generator().manual_seed(0)
    n = enc.grid[0] * enc.grid[1] * enc.grid[2]
    keep = torch.stack([torch.randperm(n, generator=g)[: n // 5] for _ in range(32)]).sort(1).values
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        full = enc(video)
        sub = enc(video, keep)
    a = collapse_stats(layer_norm_targets(gather_tokens(full.float(), keep)))
    b = collapse_stats(layer_norm_targets(sub.float()))
    print(spec, f"same 20% tokens: from full clip rank {a.effective_rank:.1f} within {a.within_clip:.3f} | encoded alone rank {b.effective_rank:.1f} within {b.within_clip:.3f}", flush=True)
