"""Scratch experiment (2026-11-30), not a library option: encoder attention restricted to a
(2R+1)x(2R+1) spatial window over all time, by replacing `VisionTransformer.encode`.

    python experiments/scratch/local_attention.py R train <vjepa pretrain args>
    python experiments/scratch/local_attention.py R probe <target_vs_online args>

Run from the repository root. Padding slots may attend to themselves only (never read by the loss).
"""
import sys

import torch

from vjepa.models import vit
from vjepa.models.vit import gather_tokens, key_padding_mask, run_blocks

R = int(sys.argv[1])

def local_mask(grid, idx, device):
    t, h, w = grid
    n = torch.arange(t * h * w, device=device)
    hh, ww = (n // w) % h, n % w
    if idx is None:
        hh, ww = hh[None], ww[None]
    else:
        hh, ww = hh[idx], ww[idx]
    ok = ((hh[:, :, None] - hh[:, None, :]).abs() <= R) & ((ww[:, :, None] - ww[:, None, :]).abs() <= R)
    return ok[:, None]  # [B or 1, 1, K, K]

def encode(self, tokens, keep_idx=None, keep_valid=None):
    grid = self.grid
    assert tokens.shape[1] == grid[0] * grid[1] * grid[2]
    mask = local_mask(grid, keep_idx, tokens.device)
    if keep_idx is not None:
        tokens = gather_tokens(tokens, keep_idx)
        pad = key_padding_mask(keep_valid)
        if pad is not None:
            eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)[None, None]
            mask = (mask & pad) | eye
    tokens = run_blocks(self.blocks, tokens, mask, self.activation_checkpointing)
    return self.norm(tokens)

vit.VisionTransformer.encode = encode
mode = sys.argv[2]
if mode == "train":
    from vjepa.cli import main
    sys.exit(main(["pretrain"] + sys.argv[3:]))
else:
    sys.argv = ["target_vs_online.py"] + sys.argv[3:]
    import runpy
    from pathlib import Path
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "target_vs_online.py"), run_name="__main__")
