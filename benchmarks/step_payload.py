"""What one training step's batch carries from the loader: clip bytes (float32 before, uint8 now),
mask bytes, and the time `masks_for_step` takes for the global batch of `--world` ranks (the time
that moved from the training loop into the data workers).

    OMP_NUM_THREADS=1 python benchmarks/step_payload.py                          # vitl16 vith16 demo, 32 ranks
    python benchmarks/step_payload.py --presets debug --world 2 --out payload.json

Prints a Markdown table; --out also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vjepa.config import preset
from vjepa.masks.step import masks_for_step
from vjepa.models.factory import token_grid


def step_payload(name: str, world_size: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Bytes of one step's clips and masks for preset `name`, and the fastest of `repeats` mask builds."""
    cfg = preset(name)
    d = cfg.data
    shape = (d.batch_size, 3, d.num_frames, d.crop_size, d.crop_size)
    grid = token_grid(cfg)
    masks = masks_for_step(cfg, grid, d.batch_size, 0, 0, 1)
    mask_bytes = sum(t.nbytes for m in masks for t in vars(m).values() if t is not None)
    seconds = []
    for step in range(repeats):
        start = time.perf_counter()
        masks_for_step(cfg, grid, d.batch_size, step, 0, world_size)
        seconds.append(time.perf_counter() - start)
    return {"preset": name, "clip_shape": list(shape), "float32_bytes": 4 * torch.Size(shape).numel(),
            "uint8_bytes": torch.empty(shape, dtype=torch.uint8).nbytes, "mask_bytes": mask_bytes,
            "world_size": world_size, "masks_for_step_ms": 1000 * min(seconds)}


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write --out JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["vitl16", "vith16", "demo"])
    parser.add_argument("--world", type=int, default=32, help="ranks whose global batch the masks cover")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = [step_payload(name, args.world) for name in args.presets]
    print(f"| preset | clips | float32 MB | uint8 MB | masks MB | masks_for_step at {args.world} ranks |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {' x '.join(map(str, r['clip_shape']))} | {r['float32_bytes'] / 1e6:.1f} | "
              f"{r['uint8_bytes'] / 1e6:.1f} | {r['mask_bytes'] / 1e6:.2f} | {r['masks_for_step_ms']:.0f} ms |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
