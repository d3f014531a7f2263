"""Mask statistics: how much each generator hides, and what the official truncating collator loses.

For each mask generator, samples `--batches` batches of `--batch-size` masks on a token grid
(default: the paper's 8x14x14, i.e. 16x224x224 clips, tubelet 2, patch 16) and prints:
- the hidden (target) share of the tokens: mean, min and max over samples;
- with the official collation (`mask.collate=truncate`: every row cut to the batch's shortest),
  the share of each sample's tokens that end up in *neither* context nor target, which our
  default padding collation (`mask.collate=pad`) never loses.

    python benchmarks/mask_stats.py                      # paper grid, batch 24, 200 batches
    python benchmarks/mask_stats.py --grid 8 8 8 --batch-size 8 --out runs/mask_stats.json

Prints a Markdown table; --out also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vjepa.config import MaskConfig
from vjepa.masks import collate_masks, indices_to_mask, target_masks


def lost_share(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample share of tokens in neither context nor target after collation: [B, N] -> [B]."""
    batch = collate_masks(mask, mode)
    num_tokens = mask.shape[1]
    context = indices_to_mask(batch.context_idx, batch.context_valid, num_tokens)
    target = indices_to_mask(batch.target_idx, batch.target_valid, num_tokens)
    return (~(context | target)).float().mean(dim=1)


def mask_statistics(
    cfg: MaskConfig, grid: tuple[int, int, int], batch_size: int, batches: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Hidden share and collation losses of every generator of `cfg` over `batches` batches.

    Returns:
        One dict per generator: hidden_mean / hidden_min / hidden_max, and lost_truncate /
        lost_pad (mean share of tokens in neither context nor target), all fractions of N.
    """
    generator = torch.Generator().manual_seed(seed)
    drawn = [target_masks(cfg, grid, batch_size, generator) for _ in range(batches)]  # [batch][generator]
    stats = []
    for g in range(len(drawn[0])):
        masks = [per_batch[g] for per_batch in drawn]  # truncation acts per batch, so keep batches apart
        shares = torch.cat([mask.float().mean(dim=1) for mask in masks])
        stats.append({
            "generator": g,
            "hidden_mean": shares.mean().item(),
            "hidden_min": shares.min().item(),
            "hidden_max": shares.max().item(),
            "lost_truncate": torch.cat([lost_share(mask, "truncate") for mask in masks]).mean().item(),
            "lost_pad": torch.cat([lost_share(mask, "pad") for mask in masks]).mean().item(),
        })
    return stats


def describe(cfg: MaskConfig, g: int) -> str:
    """A generator's name for the table."""
    if cfg.kind == "tube":
        return f"tube ({cfg.tube_ratio:g})"
    spec = cfg.generators[g]
    return f"{spec.num_blocks} blocks x {spec.spatial_scale[0]:g} of the frame"


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the statistics of the default multi-block masks."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, nargs=3, default=(8, 14, 14), metavar=("T", "H", "W"))
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--kind", default="multiblock", choices=("multiblock", "tube", "causal"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the figures here as JSON")
    args = p.parse_args(argv)
    cfg = MaskConfig(kind=args.kind)
    grid = tuple(args.grid)
    stats = mask_statistics(cfg, grid, args.batch_size, args.batches, args.seed)
    print(f"grid {'x'.join(map(str, grid))}, batch {args.batch_size}, {args.batches} batches, seed {args.seed}\n")
    print("| generator | hidden: mean (min-max) | lost by truncation (official) | lost by padding (ours) |")
    print("|---|---|---|---|")
    for s in stats:
        print(f"| {describe(cfg, s['generator'])} | {100 * s['hidden_mean']:.1f}% "
              f"({100 * s['hidden_min']:.1f}-{100 * s['hidden_max']:.1f}) | {100 * s['lost_truncate']:.1f}% "
              f"| {100 * s['lost_pad']:.1f}% |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        payload = {"command": " ".join(sys.argv), "grid": list(grid), "batch_size": args.batch_size,
                   "batches": args.batches, "seed": args.seed, "kind": args.kind, "generators": stats}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
