"""`vjepa prepare`: decode a dataset once into a compact cache that training reads at memory speed.

Decoding video on the fly can cap a small machine's training speed (decoders against the cache:
docs/results/2026-11-22-decode-throughput.md). The cache stores every frame once, as uint8 RGB with
the short side resized to `cache_short_side(crop_size)` (= the evaluation transform's resize,
crop_size x 256/224), in memory-mapped shards. `CachedVideoDataset` then samples clips with exactly
the same `ClipSpec` semantics as decoding on the fly (all frames are kept, so any frame step, fps,
number of clips or short-video policy can be chosen at training time).

Layout of a cache folder (one per split, `OUT/SPLIT/`):
    index.json          version, source, short_side, classes, skipped counts, shard names, and one
                        entry per video: path, label, source, shard, offset (bytes), num_frames,
                        height, width, fps
    shard_00000.npy     1-D uint8 arrays; video v is shard[offset : offset + T*h*w*3] as [T, h, w, 3]

Shape legend: T frames of a video, h/w cached pixels, K frames read.

Example:
    >>> prepare_cache(cfg.data, "cache", "train")      # then: data.source=cache data.path=cache
"""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vjepa.config import DataConfig
from vjepa.data.datasets import (
    FILTER_REASONS,
    DataError,
    MixtureDataset,
    SkipLog,
    VideoRecord,
    _accepts_generator,
    _check_length,
    _first_good,
    _item_generator,
    all_skipped_error,
    apply_transform,
    check_decoder,
    detect_source,
    load_records,
    resolve_split_path,
    shared_split_paths,
    split_class_names,
)
from vjepa.data.decode import DecodeError, iter_frames, probe_video
from vjepa.data.sampling import ClipSpec, frame_step_for, sample_clip_indices

CACHE_VERSION = 1
INDEX_NAME = "index.json"
SHARD_BYTES = 2**30  # start a new shard after this many bytes (a video never straddles two)
# A video decoding to fewer than this share of the frames its container declares is reported as a
# short read (a truncated or damaged file; Debian's tree.avi stops at 68 of 444). Containers'
# counts are estimates that are often a few frames off, hence the margin.
SHORT_READ_FRACTION = 0.8


def cache_short_side(crop_size: int) -> int:
    """Short side of cached frames: the evaluation resize, int(crop_size * 256 / 224)."""
    return int(crop_size * 256 / 224)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Shrink uint8 frames [K, H, W, 3] so min(H, W) = short_side (never enlarges).

    Returns:
        uint8 [K, h, w, 3] (bilinear, antialiased).
    """
    height, width = frames.shape[1:3]
    if min(height, width) <= short_side:
        return frames
    scale = short_side / min(height, width)
    size = (max(short_side, round(height * scale)), max(short_side, round(width * scale)))
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [K, 3, H, W], channels-last memory
    video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    return np.ascontiguousarray(video.permute(0, 2, 3, 1).numpy())  # [K, h, w, 3]


# ---------------------------------------------------------------------------------------------
# writing


class _ShardWriter:
    """Appends bytes to numbered 1-D uint8 .npy shards; each header is rewritten on close."""

    def __init__(self, folder: Path, max_bytes: int = SHARD_BYTES) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.names: list[str] = []
        self.file: io.BufferedWriter | None = None
        self.size = 0

    def begin_video(self) -> tuple[int, int]:
        """(shard number, byte offset) where the next video starts."""
        if self.file is None or self.size >= self.max_bytes:
            self._open_next()
        return len(self.names) - 1, self.size

    def write(self, chunk: np.ndarray) -> None:
        """Append uint8 frames [K, h, w, 3]."""
        assert self.file is not None and chunk.dtype == np.uint8
        self.file.write(np.ascontiguousarray(chunk).data)
        self.size += chunk.nbytes

    def close(self) -> None:
        """Finish the current shard: write its real length into the header."""
        if self.file is None:
            return
        header = _npy_header(self.size)
        assert len(header) == len(_npy_header(10**15)), "npy header length changed"
        self.file.seek(0)
        self.file.write(header)
        self.file.close()
        self.file = None

    def _open_next(self) -> None:
        self.close()
        self.names.append(f"shard_{len(self.names):05d}.npy")
        self.file = open(self.folder / self.names[-1], "wb")  # noqa: SIM115 (closed in close())
        self.file.write(_npy_header(10**15))  # placeholder of the same length
        self.size = 0


def _npy_header(num_bytes: int) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": (num_bytes,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


class _WholeVideos(Dataset):
    """Decodes and resizes whole videos (so DataLoader workers can prepare in parallel)."""

    def __init__(
        self, records: Sequence[VideoRecord], short_side: int, decoder: str, max_frames: int
    ) -> None:
        self.records, self.short_side = records, short_side
        self.decoder, self.max_frames = decoder, max_frames

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """{"frames": uint8 [T, h, w, 3], "fps": float, "declared": container's frame count} or {"error": DecodeError}."""
        path = self.records[index].path
        try:
            info = probe_video(path, self.decoder)
            if self.max_frames and info.num_frames > self.max_frames:
                raise DecodeError(
                    path, "too_long", f"{info.num_frames} frames > max_frames={self.max_frames}"
                )
            chunks = [resize_short_side(c, self.short_side) for c in iter_frames(path, self.decoder)]
            if not chunks:
                raise DecodeError(path, "zero_frames", "no frame decoded")
            return {"frames": np.concatenate(chunks), "fps": info.fps, "declared": info.num_frames}
        except DecodeError as error:
            return {"error": error}


def prepare_cache(
    cfg: DataConfig,
    out_dir: str | Path,
    split: str = "train",
    progress: bool = True,
    short_side: int | None = None,
) -> Path:
    """Decode every video of `cfg`'s csv/folder/frames/tiff/mixture source into a cache.

    Args:
        cfg: the data config (source, path, weights, decoder, num_workers, max_frames, strict,
            crop_size).
        out_dir: the cache root; the split is written to `out_dir/split/`.
        split: which split (`cfg.path` may hold `{split}`, see `resolve_split_path`).
        progress: show a tqdm progress bar.
        short_side: cached short side (default `cache_short_side(cfg.crop_size)`).

    Returns:
        The split's cache folder (read it with `data.source=cache data.path=out_dir`).

    Raises:
        DataError: for a source that names no files or when no video could be read; DecodeError for a
            bad file when `cfg.strict`.
    """
    check_decoder(cfg.source, cfg.decoder)
    sources, records, classes = _mixture_records(cfg, split)
    folder = Path(out_dir) / split
    folder.mkdir(parents=True, exist_ok=True)
    short_side = short_side or cache_short_side(cfg.crop_size)
    writer = _ShardWriter(folder)
    videos, skipped, short_reads = _write_videos(cfg, records, short_side, writer, progress, f"prepare {split}")
    if not videos:  # an empty cache would only fail later, at training
        raise all_skipped_error(len(records), Counter(reason for _, reason in skipped), f"nothing cached in {folder}")
    index = {
        "version": CACHE_VERSION,
        "source": cfg.source,
        "sources": sources,
        "weights": list(cfg.weights),
        "classes": classes,
        "short_side": short_side,
        "shards": writer.names,
        "skipped": dict(Counter(reason for _, reason in skipped)),
        "skipped_files": skipped,
        "short_reads": short_reads,
        "videos": videos,
    }
    from vjepa.checkpoint import atomic_write

    atomic_write(folder / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    return folder


def _mixture_records(
    cfg: DataConfig, split: str
) -> tuple[list[str], list[tuple[VideoRecord, int]], list[str]]:
    """(source paths, (record, source number) pairs, class names of the first labelled source)."""
    if cfg.source in ("synthetic", "cache"):
        raise DataError(
            f"data.source={cfg.source} needs no preparing; prepare a csv/folder/frames/tiff source"
        )
    paths = [p.strip() for p in cfg.path.split(",") if p.strip()] if cfg.source == "mixture" else [cfg.path]
    records, classes = [], []
    for number, path in enumerate(paths):
        resolved = resolve_split_path(path, split)
        kind = detect_source(resolved) if cfg.source == "mixture" else cfg.source
        found, names, _ = load_records(resolved, kind, split_class_names(path, kind, split))
        records += [(record, number) for record in found]
        classes = classes or names
    return paths, records, classes


def _write_videos(
    cfg: DataConfig,
    records: list[tuple[VideoRecord, int]],
    short_side: int,
    writer: _ShardWriter,
    progress: bool,
    desc: str,
) -> tuple[list[dict], list[list[str]], list[list]]:
    """Decode (in `cfg.num_workers` workers), resize and append every video.

    Returns:
        (index entries, [path, reason] of skipped files, [path, decoded, declared] of short reads:
        videos that decoded to far fewer frames than their container declares, cached as decoded).
    """
    from tqdm import tqdm

    decoded = _WholeVideos([r for r, _ in records], short_side, cfg.decoder, cfg.max_frames)
    from vjepa.data.workers import resolve_workers

    workers = resolve_workers(cfg.num_workers, "cpu")  # preparing decodes on the CPU: auto is 0
    loader = DataLoader(decoded, batch_size=None, num_workers=workers, collate_fn=_identity)
    videos, skipped, short_reads = [], [], []
    try:
        for (record, source), item in tqdm(
            zip(records, loader), total=len(records), desc=desc, disable=not progress
        ):
            if "error" in item:
                _skip_or_raise(cfg, item["error"], skipped)
                continue
            frames = item["frames"]
            if len(frames) < SHORT_READ_FRACTION * item["declared"]:
                _note_short_read(record.path, len(frames), item["declared"], short_reads)
            shard, offset = writer.begin_video()
            writer.write(frames)
            num_frames, height, width = frames.shape[:3]
            videos.append(
                {
                    "path": record.path,
                    "label": record.label,
                    "source": source,
                    "shard": shard,
                    "offset": offset,
                    "num_frames": num_frames,
                    "height": height,
                    "width": width,
                    "fps": item["fps"],
                }
            )
    finally:
        writer.close()
    return videos, skipped, short_reads


def _note_short_read(path: str, decoded: int, declared: int, short_reads: list[list]) -> None:
    import warnings

    from vjepa.data.datasets import SkippedVideoWarning

    warnings.warn(f"short read: {path} decoded to {decoded} of the {declared} frames its container declares "
                  "(cached as decoded)", SkippedVideoWarning, stacklevel=3)
    short_reads.append([path, decoded, declared])


def _identity(item: Any) -> Any:
    return item


def _skip_or_raise(cfg: DataConfig, error: DecodeError, skipped: list[list[str]]) -> None:
    if cfg.strict and error.reason not in FILTER_REASONS:
        raise error
    import warnings

    from vjepa.data.datasets import SkippedVideoWarning

    warnings.warn(f"not cached: {error}", SkippedVideoWarning, stacklevel=2)
    skipped.append([error.path, error.reason])


# ---------------------------------------------------------------------------------------------
# reading


def load_cache_index(cache_dir: str | Path) -> dict[str, Any]:
    """Read and check a cache's index.json.

    Raises:
        DataError: naming the folder when it holds no cache or one of another version.
    """
    path = Path(cache_dir) / INDEX_NAME
    if not path.is_file():
        raise DataError(f"{cache_dir}: no {INDEX_NAME}; write one with `vjepa prepare`")
    index = json.loads(path.read_text())
    if index.get("version") != CACHE_VERSION:
        raise DataError(
            f"{path}: cache version {index.get('version')}, expected {CACHE_VERSION}; prepare it again"
        )
    return index


class CachedVideoDataset(Dataset):
    """Clips read from a `prepare_cache` folder, sampled exactly as `VideoClipDataset` samples.

    Items: {"video", "label", "path"} as in `vjepa.data.datasets` (path: the original video).
    Shards are memory-mapped lazily in each process (never pickled into DataLoader workers).

    Args:
        cache_dir: a split's cache folder (holding index.json).
        spec: clip sampling (frame step, fps, clips, short-video policy, ...).
        transform: training or evaluation transform (None: float [C, T, h, w] in [0, 1]).
        train: random clip positions and augmentation.
        strict: unused for reading (bad files were already left out by `prepare_cache`); kept so
            skip handling matches the decoding datasets.
        source: keep only the videos of this mixture source (None: all).
    """

    def __init__(
        self,
        cache_dir: str | Path,
        spec: ClipSpec,
        transform: Callable[..., torch.Tensor] | None = None,
        train: bool = True,
        strict: bool = False,
        source: int | None = None,
    ) -> None:
        self.cache_dir, self.index = Path(cache_dir), load_cache_index(cache_dir)
        self.videos = [v for v in self.index["videos"] if source is None or v["source"] == source]
        if not self.videos:
            raise DataError(f"{cache_dir}: the cache holds no videos (skipped: {self.index['skipped']})")
        self.spec, self.transform, self.train, self.strict = spec, transform, train, strict
        self.classes = self.index.get("classes", [])
        self.skips = SkipLog(len(self.videos))
        self._takes_generator = transform is not None and _accepts_generator(transform)
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shards"] = {}  # memory maps are reopened in each worker, never copied
        return state

    @property
    def skipped(self) -> Counter:
        """Videos filtered at read time plus the files `prepare_cache` could not decode."""
        return self.skips.counts() + Counter(self.index.get("skipped", {}))

    def frames(self, number: int) -> np.ndarray:
        """All cached frames of video `number`: a read-only uint8 view [T, h, w, 3]."""
        video = self.videos[number]
        shard = self._shards.get(video["shard"])
        if shard is None:
            shard = np.load(self.cache_dir / self.index["shards"][video["shard"]], mmap_mode="r")
            self._shards[video["shard"]] = shard
        shape = (video["num_frames"], video["height"], video["width"], 3)
        return shard[video["offset"] : video["offset"] + int(np.prod(shape))].reshape(shape)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The item of `index`, or of the next video that yields a clip."""
        return _first_good(self, index, self._load)

    def _load(self, number: int) -> dict[str, Any]:
        video = self.videos[number]
        step = frame_step_for(self.spec, video["fps"])
        _check_length(video["path"], video["num_frames"], self.spec, step)
        generator = _item_generator() if self.train else None
        clips = sample_clip_indices(video["num_frames"], self.spec, self.train, generator, step)
        frames = self.frames(number)[clips.reshape(-1)]  # [clips * T, h, w, 3], copied from the map
        frames = torch.from_numpy(frames).view(clips.shape + frames.shape[1:])  # [clips, T, h, w, 3]
        clip = apply_transform(frames, self.transform, self.train, generator, self._takes_generator)
        return {"video": clip, "label": video["label"], "path": video["path"]}


def build_cached_dataset(
    cache_dir: str | Path,
    spec: ClipSpec,
    transform: Callable[..., torch.Tensor] | None,
    train: bool,
    weights: Sequence[float] = (),
    strict: bool = False,
    crop_size: int | None = None,
) -> Dataset:
    """A cache as a dataset; a cached mixture becomes a `MixtureDataset` of its sources in training.

    Weights: `weights` if given, else the ones stored at prepare time, else proportional to size.

    Raises:
        DataError: the cache was prepared for a smaller crop than `crop_size` (its frames would be
            enlarged: prepare it again with the run's preset and data.crop_size).
    """
    index = load_cache_index(cache_dir)
    needed = cache_short_side(crop_size) if crop_size else 0
    if index["short_side"] < needed:
        raise DataError(f"{cache_dir} holds frames at short side {index['short_side']} (prepared for a smaller crop) "
                        f"but data.crop_size={crop_size} needs {needed}: run vjepa prepare again with the same "
                        "preset and data.crop_size as the run")
    weights = list(weights) or list(index.get("weights", []))
    if not train or len(index.get("sources", [])) <= 1:
        return CachedVideoDataset(cache_dir, spec, transform, train, strict)
    parts = [
        CachedVideoDataset(cache_dir, spec, transform, train, strict, source=k)
        for k in range(len(index["sources"]))
    ]
    return MixtureDataset(parts, weights, train)


def cache_summary(cache_dir: str | Path) -> str:
    """One line describing a cache: videos, frames, size on disk, skipped files."""
    index = load_cache_index(cache_dir)
    frames = sum(v["num_frames"] for v in index["videos"])
    size = sum((Path(cache_dir) / name).stat().st_size for name in index["shards"])
    short = index.get("short_reads", [])
    shorts = (f"; short reads {len(short)} (far fewer frames decoded than declared, cached as decoded): "
              + ", ".join(f"{path} ({decoded} of {declared})" for path, decoded, declared in short)) if short else ""
    skipped = index.get("skipped_files", [])
    named = (": " + ", ".join(f"{path} ({reason})" for path, reason in skipped[:10])
             + (f", ... ({len(skipped)} in all)" if len(skipped) > 10 else "")) if skipped else ""
    return (
        f"{cache_dir}: {len(index['videos'])} videos, {frames} frames at short side {index['short_side']}, "
        f"{size / 2**20:.1f} MiB in {len(index['shards'])} shards; skipped {index['skipped'] or 'none'}{named}"
        f"{shorts}"
    )


def prepare_main(
    cfg: DataConfig, out_dir: str | Path, splits: Sequence[str] = ("train",), progress: bool = True
) -> list[str]:
    """`vjepa prepare`: cache each split of `cfg`'s source under `out_dir`; return summary lines.

    Args:
        cfg: the data config (`data.source`, `data.path` with `{split}` for several splits, ...).
        out_dir: the cache root; train with `data.source=cache data.path=out_dir`.
        splits: the splits to prepare.
        progress: show tqdm progress bars.

    Returns:
        One `cache_summary` line per split.

    Raises:
        DataError: two splits resolve to the same videos, or a split has no readable video.
    """
    if cfg.source not in ("synthetic", "cache"):  # (those two are refused by prepare_cache)
        for split, other in itertools.combinations(splits, 2):
            if shared := shared_split_paths(cfg.path, cfg.source, split, other):
                raise DataError(f"--split {split} {other}: {shared[0]} has no {{split}} placeholder, split sub-folders "
                                "or split CSVs, so both splits would cache the same videos")
    return [cache_summary(prepare_cache(cfg, out_dir, split, progress)) for split in splits]
