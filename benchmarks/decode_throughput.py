"""Decoded + augmented clips per second: each decoder and the prepared cache, for 0/1/2 workers,
against what the training step consumes.

    python benchmarks/decode_throughput.py VIDEO --presets demo64 vits16 --json feed.json

With `--presets` each preset's clip shape (frames, frame step, crop) is measured, and its training
step is timed (`vjepa.bench.benchmark`, `--step-dtype`, batch `--step-batch`; `--consumption
NAME=CLIPS_PER_S` skips the timing) so the report says how many times over each source feeds the
step (`feed_ratio`: clips/s delivered / clips/s consumed). The step and the loader share the cores
here, as they do in a CPU run.

Prints one JSON object. Real footage without a download: Debian's opencv-doc package ships
vtest.avi (768x576, 795 frames):

    apt-get download opencv-doc && dpkg -x opencv-doc*.deb /tmp/opencv-doc
    python benchmarks/decode_throughput.py /tmp/opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi

Without a path it first writes a synthetic 360x360 H.264 mp4 (240 frames) with `write_mp4`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vjepa.config import DataConfig, SyntheticConfig
from vjepa.data.datasets import VideoClipDataset, VideoRecord, collate_clips
from vjepa.data.decode import available_decoders, probe_video
from vjepa.data.prepare import CachedVideoDataset, prepare_cache
from vjepa.data.sampling import ClipSpec
from vjepa.data.transforms import TrainTransform


def synthetic_mp4(folder: Path, size: int = 360, num_frames: int = 240) -> Path:
    """Write a synthetic H.264 mp4 (procedural sprites) and return its path."""
    from vjepa.data.synthetic import render_clip, write_mp4

    cfg = SyntheticConfig(size=size, num_frames=48)
    frames = np.concatenate([render_clip(cfg, "train", i)[0] for i in range(num_frames // 48)])
    path = folder / "synthetic.mp4"
    write_mp4(frames, path, fps=25)
    return path


class _Repeated(Dataset):
    """`base` repeated to `length` items (one video read again and again)."""

    def __init__(self, base: Dataset, length: int) -> None:
        self.base, self.length = base, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.base[index % len(self.base)]


def clips_per_second(dataset: Dataset, workers: int, batch_size: int, seconds: float) -> float:
    """Clips/s a DataLoader delivers, after the first batch (worker start-up excluded)."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_clips
    )
    batches = iter(loader)
    next(batches)
    clips, start = 0, time.perf_counter()
    for batch in batches:
        clips += batch["video"].shape[0]
        if time.perf_counter() - start > seconds:
            break
    return clips / (time.perf_counter() - start)


def step_consumption(name: str, args: argparse.Namespace) -> float:
    """Clips/s the training step of preset `name` consumes on this machine (or `--consumption`)."""
    given = dict(item.split("=", 1) for item in args.consumption)
    if name in given:
        return float(given[name])
    from vjepa.bench import benchmark
    from vjepa.config import apply_overrides, preset

    cfg = apply_overrides(preset(name), [f"run.dtype={args.step_dtype}", f"data.batch_size={args.step_batch}"])
    return benchmark(cfg, steps=2, warmup=1, device="cpu")["clips_per_s"]


def run_presets(args: argparse.Namespace) -> dict:
    """Each preset's clip shape: decode and cache clips/s, the step's consumption, the feed ratios."""
    from vjepa.config import preset

    report = {"threads": torch.get_num_threads(), "presets": {}}
    for name in args.presets:
        d = preset(name).data
        args.frames, args.step, args.crop = d.num_frames, d.frame_step, d.crop_size
        measured = run(args)
        consumed = step_consumption(name, args)
        feed = {source: max(by_workers.values()) for source, by_workers in measured["clips_per_s"].items()}
        measured.update(step_clips_per_s=round(consumed, 3),
                        feed_ratio={source: round(rate / consumed, 1) for source, rate in feed.items()})
        report["presets"][name] = measured
    return report


def run(args: argparse.Namespace) -> dict:
    """Measure every decoder and the cache; return the JSON-ready results."""
    folder = Path(tempfile.mkdtemp(prefix="vjepa_bench_"))
    path = Path(args.path) if args.path else synthetic_mp4(folder)
    info = probe_video(path)
    spec = ClipSpec(frames_per_clip=args.frames, frame_step=args.step)
    transform = TrainTransform(args.crop)
    records = [VideoRecord(str(path))]
    results: dict = {
        "video": str(path),
        "frames": info.num_frames,
        "size": [info.height, info.width],
        "fps": info.fps,
        "clip": f"{args.frames}x{args.step} -> {args.crop}px",
        "threads": torch.get_num_threads(),
        "clips_per_s": {},
    }
    for decoder in [d for d in args.decoders if d in available_decoders()]:
        dataset = VideoClipDataset(records, spec, transform, train=True, decoder=decoder)
        results["clips_per_s"][decoder] = _sweep(_Repeated(dataset, args.repeats), args)
    csv = folder / "bench.csv"
    csv.write_text(f"{path} 0\n")
    cfg = DataConfig(source="csv", path=str(csv), crop_size=args.crop)
    start = time.perf_counter()
    cache = prepare_cache(cfg, folder / "cache", "train", progress=False)
    results["cache_prepare_s"] = round(time.perf_counter() - start, 2)
    cached = CachedVideoDataset(cache, spec, transform, train=True)
    results["clips_per_s"]["cache"] = _sweep(_Repeated(cached, args.repeats), args)
    return results


def _sweep(dataset: Dataset, args: argparse.Namespace) -> dict[str, float]:
    return {
        f"{w}_workers": round(clips_per_second(dataset, w, args.batch_size, args.seconds), 1)
        for w in args.workers
    }


def main() -> None:
    """Parse arguments, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="a video file (default: write a synthetic mp4)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--step", type=int, default=4, help="frame step")
    parser.add_argument("--crop", type=int, default=224, help="crop size")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--decoders", nargs="+", default=["pyav", "torchcodec"])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per setting")
    parser.add_argument("--repeats", type=int, default=1000, help="dataset length (the video repeated)")
    parser.add_argument("--presets", nargs="*", default=[], help="measure these presets' clip shapes and steps")
    parser.add_argument("--step-dtype", default="fp32", choices=["fp32", "bf16"], help="dtype of the timed step")
    parser.add_argument("--step-batch", type=int, default=2, help="batch of the timed step")
    parser.add_argument("--consumption", nargs="*", default=[], metavar="NAME=CLIPS_PER_S",
                        help="use these step rates instead of timing the step")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    report = run_presets(args) if args.presets else run(args)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
