"""How well do the pixels of the built-in set reveal each motion's direction? A hand-made ceiling.

For every clip of a split, the brightness-constancy equation I_t + grad(I) . v = 0 is fitted by
least squares inside a disc around each sprite (the renderer's ground-truth centres say where to
look; the motion itself comes from the pixels), with the flow field of the clip's motion type:
a shift (vx, vy) for translations, a rigid turn omega x r for rotations and a radial field g r for
grow / shrink. Each pair of consecutive frames gives one fit; the median over pairs (robust to the
size sawtooth's wrap) gives the direction. Printed: direction accuracy per motion type, "given the
type", the same number `vjepa.eval.direction_given_type` computes from a probe's confusion matrix.

    python experiments/motion_from_pixels.py --preset demo32 --split test
    python experiments/motion_from_pixels.py --preset demo32 --split test --probe-json RUN/target_vs_online.json

It answers one question: is a class that no encoder learns invisible, or just hard to learn?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vjepa.config import SyntheticConfig, preset
from vjepa.data.synthetic import (
    MOTION_CLASSES,
    MOTION_TYPES,
    motion_type,
    render_clip,
    split_labels,
    split_size,
    sprite_states,
)
from vjepa.eval import direction_given_type


def _flow_basis(kind: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Flow per unit parameter at offsets (dx, dy) from a sprite centre: [..., 2] (x, y)."""
    if kind == "horizontal":
        return np.stack([np.ones_like(dx), np.zeros_like(dy)], -1)
    if kind == "vertical":
        return np.stack([np.zeros_like(dx), np.ones_like(dy)], -1)
    if kind == "rotation":
        return np.stack([-dy, dx], -1)  # image y points down: this turn is clockwise on screen
    return np.stack([dx, dy], -1)  # scale


def fitted_direction(frames: np.ndarray, sprites: list[dict[str, np.ndarray]], kind: str) -> float:
    """Median over consecutive frame pairs of the fitted flow parameter of `kind` (sign = direction).

    Args:
        frames: [T, H, W, 3] uint8, one clip.
        sprites: `sprite_states` of the clip (centres and diameters say where to look).
        kind: horizontal | vertical | rotation | scale.
    """
    image = frames.astype(np.float64) / 255.0
    size = image.shape[1]
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    estimates = []
    for t in range(len(image) - 1):
        change = image[t + 1] - image[t]  # [H, W, 3]
        grad_y, grad_x = np.gradient(0.5 * (image[t] + image[t + 1]), axis=(0, 1))
        num = den = 0.0
        for sprite in sprites:
            centre_x = 0.5 * (sprite["x"][t] + sprite["x"][t + 1])
            centre_y = 0.5 * (sprite["y"][t] + sprite["y"][t + 1])
            dx = (cols - centre_x + size / 2) % size - size / 2
            dy = (rows - centre_y + size / 2) % size - size / 2
            radius = max(sprite["diameter"][t], sprite["diameter"][t + 1]) / 2 + 1.0
            inside = dx * dx + dy * dy <= radius * radius
            basis = _flow_basis(kind, dx, dy)  # [H, W, 2]
            along = grad_x * basis[..., :1] + grad_y * basis[..., 1:]  # [H, W, 3]
            num -= (change * along)[inside].sum()
            den += (along * along)[inside].sum()
        estimates.append(num / den if den > 0 else 0.0)
    return float(np.median(estimates))


def measure(cfg: SyntheticConfig, split: str, max_clips: int = 0) -> dict[str, dict[str, float]]:
    """Direction accuracy (percent) and clip count per motion type over `split` (all clips by default)."""
    labels = split_labels(cfg, split)["motion"]
    count = split_size(cfg, split) if max_clips <= 0 else min(max_clips, split_size(cfg, split))
    right = {kind: 0 for kind in MOTION_TYPES}
    seen = {kind: 0 for kind in MOTION_TYPES}
    for index in range(count):
        name = MOTION_CLASSES[int(labels[index])]
        kind = motion_type(name)
        frames, _, _ = render_clip(cfg, split, index)
        value = fitted_direction(frames, sprite_states(cfg, split, index), kind)
        guess = MOTION_TYPES[kind][1] if value > 0 else MOTION_TYPES[kind][0]
        right[kind] += guess == name
        seen[kind] += 1
    return {kind: {"direction_top1": 100.0 * right[kind] / max(seen[kind], 1), "clips": seen[kind]}
            for kind in MOTION_TYPES}


def main(argv: list[str] | None = None) -> int:
    """Print the pixel ceiling per motion type, and a probe's figures beside it if given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo32", help="whose built-in data to measure")
    p.add_argument("--split", default="test")
    p.add_argument("--max-clips", type=int, default=0, help="first N clips only (0: the whole split)")
    p.add_argument("--probe-json", nargs="*", default=[],
                   help="target_vs_online.json files: their per-encoder confusion matrices, side by side")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    cfg = preset(args.preset).data.synthetic
    pixels = measure(cfg, args.split, args.max_clips)
    columns = {"pixels (flow fit)": {k: v["direction_top1"] for k, v in pixels.items()}}
    for path in args.probe_json:
        payload = json.loads(Path(path).read_text())
        for name, row in payload["encoders"].items():
            if "confusion" in row:
                columns[f"{path}:{name}"] = direction_given_type(row["confusion"])
    print(f"direction given the motion type, {args.preset} data, {args.split} split (chance 50):\n")
    print("| type | clips | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for kind in MOTION_TYPES:
        cells = ["-" if c[kind] is None else f"{c[kind]:.1f}" for c in columns.values()]
        print(f"| {kind} | {pixels[kind]['clips']} | " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"preset": args.preset, "split": args.split, "pixels": pixels, "columns": columns}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
