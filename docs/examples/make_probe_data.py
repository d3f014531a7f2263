"""Small labelled probe sets cut from real videos, in the layouts `vjepa probe` reads (docs/evaluation.md).

From each source video (default: OpenCV's sample videos vtest.avi, Megamind.avi, tree.avi) it cuts
64-frame clips, resized to a 64-pixel short side, and writes:

- kinetics/  clips/*.mp4 with train.csv and test.csv (`path label`, label = source video): a
  Kinetics-style appearance task (which scene is this?);
- ssv2/      the same clips forwards (label 0) and time-reversed (label 1), train.csv / test.csv: a
  Something-Something-style motion task that one frame cannot answer;
- images/    train/<source>/*.png and test/<source>/*.png, one frame of every fourth clip step:
  an ImageNet-style class-folder image set.

Every third clip of a source goes to test, the rest to train.

    python docs/examples/make_probe_data.py /tmp/probe_data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
SOURCES = [OPENCV / name for name in ("vtest.avi", "Megamind.avi", "tree.avi")]
CLIP_FRAMES = 64


def resize(frames: np.ndarray, short: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> short side `short` (area resampling via PyTorch)."""
    import torch
    import torch.nn.functional as F

    height, width = frames.shape[1:3]
    scale = short / min(height, width)
    size = (round(height * scale), round(width * scale))
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return F.interpolate(video, size=size, mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def write_mp4(frames: np.ndarray, path: Path, fps: int = 10) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in frames[:, : stream.height, : stream.width]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    from PIL import Image

    from vjepa.data.decode import probe_video, read_frames

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--videos", nargs="+", default=[str(p) for p in SOURCES])
    args = parser.parse_args()
    out = Path(args.out)
    lines: dict[tuple[str, str], list[str]] = {}
    for label, source in enumerate(map(Path, args.videos)):
        total = probe_video(source).num_frames
        for number, start in enumerate(range(0, total - CLIP_FRAMES + 1, CLIP_FRAMES)):
            split = "test" if number % 3 == 2 else "train"
            frames = resize(read_frames(source, np.arange(start, start + CLIP_FRAMES)), 64)
            name = f"{source.stem}_{number:02d}"
            for task, variants in (("kinetics", [(frames, label)]), ("ssv2", [(frames, 0), (frames[::-1], 1)])):
                for k, (clip, target) in enumerate(variants):
                    clip_path = out / task / "clips" / f"{name}{'_rev' if k else ''}.mp4"
                    clip_path.parent.mkdir(parents=True, exist_ok=True)
                    write_mp4(clip, clip_path)
                    lines.setdefault((task, split), []).append(f"clips/{clip_path.name} {target}")
            image_dir = out / "images" / split / source.stem
            image_dir.mkdir(parents=True, exist_ok=True)
            for t in range(0, CLIP_FRAMES, 16):
                Image.fromarray(frames[t]).save(image_dir / f"{name}_{t:02d}.png")
    for (task, split), rows in lines.items():
        (out / task / f"{split}.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {sum(len(v) for v in lines.values())} clip lines under {out}")


if __name__ == "__main__":
    main()
