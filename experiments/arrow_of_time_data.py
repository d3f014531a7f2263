"""Labelled real video from the Debian opencv-doc clips: is a clip played forwards or backwards?

Each source video (vtest.avi, Megamind.avi, tree.avi) is cut into SEGMENT-frame pieces, resized to
a SIZE-px short side, and every piece is written twice: as recorded (class `forward`) and in reverse
(class `backward`). Pieces from the first 70% of each video go to `train/`, the rest to `test/`,
so the test scenes were never seen and the content alone cannot tell the class: only the
direction of time can. Used by docs/results/2026-12-04-finetune.md.

    python experiments/arrow_of_time_data.py OUT_DIR [--segment 40] [--size 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vjepa.data.decode import probe_video, read_frames
from vjepa.data.synthetic import write_mp4

SOURCES = ("vtest", "Megamind", "tree")
FOLDER = Path("/usr/share/doc/opencv-doc/examples/data")


def resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, h, w, 3] with short side `size` (bilinear)."""
    _, h, w, _ = frames.shape
    scale = size / min(h, w)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    video = F.interpolate(video, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    return video.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def write_dataset(out: Path, segment: int = 40, size: int = 48, sources: tuple[str, ...] = SOURCES) -> dict[str, int]:
    """Write out/{train,test}/{forward,backward}/NAME_II.mp4; return the file count per split/class."""
    counts: dict[str, int] = {}
    for name in sources:
        path = FOLDER / f"{name}.avi"
        frames = resize(read_frames(path, np.arange(probe_video(path).num_frames)), size)
        pieces = len(frames) // segment
        for index in range(pieces):
            split = "train" if index < round(0.7 * pieces) else "test"
            piece = frames[index * segment:(index + 1) * segment]
            for label, clip in (("forward", piece), ("backward", piece[::-1])):
                folder = out / split / label
                folder.mkdir(parents=True, exist_ok=True)
                write_mp4(np.ascontiguousarray(clip), folder / f"{name}_{index:02d}.mp4")
                counts[f"{split}/{label}"] = counts.get(f"{split}/{label}", 0) + 1
    return counts


def main() -> None:
    """Command line: write the data set and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--segment", type=int, default=40, help="frames per piece")
    parser.add_argument("--size", type=int, default=48, help="short side of the written frames")
    args = parser.parse_args()
    print(write_dataset(args.out, args.segment, args.size))


if __name__ == "__main__":
    main()
