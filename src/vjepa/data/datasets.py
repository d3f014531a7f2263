"""Datasets of real video: CSV lists, labelled folders, frame folders, TIFF stacks and mixtures.

Every dataset yields dicts:
    video: training, float [C, T, h, w] (one clip) or [num_clips, C, T, h, w];
           evaluation, float [V, C, T, h, w] with V = num_clips x the transform's crops.
    label: int class id, -1 when unlabelled.
    path:  str, the file the clip came from.

Bad input (a missing, empty, corrupt, truncated or unsupported file, a clip with no frames) never
stops a run: the file is skipped with one warning naming it and the reason, counted in
`dataset.skipped` (a Counter of reasons, shared by all DataLoader workers), and the item is taken
from the next good video instead (index + 1, + 2, ... so it stays deterministic): right for
pretraining, where a clip is one more sample. Evaluation must not count a clip twice, so
`drop_bad_items(dataset)` makes a bad item come back as None (which `collate_clips` drops) instead.
Videos filtered by length (`too_short`, `too_long`) are counted the same way, with one warning per
reason. With `strict=True` the first bad file raises `DecodeError` naming it (filtering never raises).

`vjepa.data.build_dataset(cfg, split, train)` (the one factory) turns a `DataConfig` into the right dataset.

Shape legend: C channels (3), T frames per clip, h/w crop pixels, V views.
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vjepa.config import DataConfig, VJEPAWarning
from vjepa.data.decode import (
    IMAGE_EXTENSIONS,
    REASONS,
    TIFF_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DecodeError,
    available_decoders,
    probe_video,
    read_frames,
)
from vjepa.data.sampling import ClipSpec, clip_span, filter_reason, frame_step_for, sample_clip_indices

SOURCES = ("synthetic", "csv", "folder", "frames", "tiff", "mixture", "cache", "images")
FILTER_REASONS = frozenset({"too_short", "too_long"})  # expected filtering: counted, never strict


class SkippedVideoWarning(VJEPAWarning):
    """A video was skipped (the message names the file and the reason)."""


class DataError(ValueError):
    """A dataset description (CSV list, folder, data.* keys) is invalid; the message names it."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset: where it is and its class id (-1: unlabelled)."""

    path: str
    label: int = -1


# ---------------------------------------------------------------------------------------------
# sources: turning a path into records


def check_decoder(source: str, name: str) -> None:
    """Fail once, in one line, when the video decoder `name` (data.decoder) does not import here
    and `source` decodes video files (csv, folder, mixture), instead of skipping every file as
    unsupported.

    Raises:
        DataError: naming the key and the working alternative.
    """
    if source in ("csv", "folder", "mixture") and name != "pyav" and name not in available_decoders():
        raise DataError(f"data.decoder={name}, but {name} does not import here (it needs its package and FFmpeg's "
                        "shared libraries): install them, or use data.decoder=pyav")


def read_csv_list(csv_path: str | Path) -> list[VideoRecord]:
    """Read the official list format: one `path label` per line, space separated.

    Relative paths are resolved against the CSV's folder; a path may contain spaces (the label is
    the last field). A line with a single field is an unlabelled video (label -1). Blank lines and
    lines starting with `#` are ignored.

    Raises:
        DataError: naming the file (and line) when it is missing, not UTF-8 text, a label is not
            an integer, or a line is comma-separated.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"video list not found: {csv_path}")
    try:
        text = csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"video list {csv_path} is not UTF-8 text (byte {err.start}); is it a CSV list?") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            records.append(_csv_record(line, csv_path, number))
    return records


def _csv_record(line: str, csv_path: Path, number: int) -> VideoRecord:
    head, _, tail = line.rpartition(" ")
    _, comma, after = line.rpartition(",")
    if not head and comma and (after.strip().lstrip("-").isdigit() or not Path(after).suffix):  # `a.mp4,3`, `path,label`
        raise DataError(f"{csv_path}:{number}: {line!r} looks comma-separated; a video list has one "
                        "`path label` per line, separated by a space")
    if head and tail.lstrip("-").isdigit():
        path, label = head.strip(), int(tail)
    elif not head or Path(tail).suffix:  # a lone path (possibly with spaces): unlabelled
        path, label = line, -1
    else:
        raise DataError(f"{csv_path}:{number}: label {tail!r} is not an integer")
    resolved = Path(path) if Path(path).is_absolute() else csv_path.parent / path
    return VideoRecord(str(resolved), label)


class EmptyClassWarning(VJEPAWarning):
    """A class folder holds no videos in this split (its label is kept, so other splits agree)."""


# the splits whose class folders together define the class list (and so every label)
SPLITS = ("train", "val", "test")


def scan_folder(
    root: str | Path, kind: str = "folder", classes: Sequence[str] | None = None
) -> tuple[list[VideoRecord], list[str], list[str]]:
    """List the videos under `root`, labelled by the name of their sub-folder.

    Layouts: `root/CLASS/clip.mp4` (label = index of CLASS among the class names; deeper nesting
    under CLASS is allowed) and `root/clip.mp4` (label -1). For kind "frames" a video is a folder
    of images: `root/CLASS/VIDEO/0001.png` or `root/VIDEO/0001.png`. For kind "tiff" the files are
    .tif/.tiff stacks; a single TIFF file as `root` is a dataset of one.

    A class folder without videos keeps its index (an `EmptyClassWarning` names it): numbering only
    the non-empty ones would give a class another label in a split where some other class is empty.

    Args:
        root: the folder (or one TIFF file).
        kind: "folder" (video files), "frames" or "tiff".
        classes: the class names that define the labels, e.g. the union over all splits
            (`split_class_names`); default: this folder's class folders, sorted.

    Returns:
        (records, class names, ignored files with an unsupported extension).

    Raises:
        DataError: when `root` does not exist or is a CSV/TXT video list.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if root.is_file() and root.suffix.lower() in (".csv", ".txt"):
        raise DataError(f"{root} is a video list, not a {kind} source: use data.source=csv")
    if root.is_file() or (kind == "frames" and _is_frame_folder(root)):
        return [VideoRecord(str(root))], [], []
    records, ignored = _listing(root, kind, recursive=False)
    records = [VideoRecord(str(v)) for v in records]
    class_dirs = _class_dirs(root, kind)
    names = list(classes) if classes is not None else [d.name for d in class_dirs]
    index = {name: number for number, name in enumerate(names)}
    found = set()
    for folder in class_dirs:
        videos, skipped = _listing(folder, kind, recursive=True)
        if folder.name not in index:
            raise DataError(f"{folder}: class folder not among the classes {names}")
        records += [VideoRecord(str(v), index[folder.name]) for v in videos]
        found.update([folder.name] if videos else [])
        ignored += skipped
    for name in names:
        if name not in found:
            warnings.warn(f"class {name!r} has no videos in {root} (its label {index[name]} is kept)",
                          EmptyClassWarning, stacklevel=2)
    return records, names, [str(f) for f in ignored]


def _class_dirs(root: Path, kind: str) -> list[Path]:
    """The class sub-folders of `root`, sorted (hidden folders and, for frames, videos excluded)."""
    return [
        d for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and not (kind == "frames" and _is_frame_folder(d))
    ]


def split_class_names(path: str, kind: str, split: str = "train") -> list[str] | None:
    """The sorted union of class folder names over every split of `path` (None: not class folders).

    `path` as `data.path` holds it (with `{split}`, or a folder with split sub-folders; see
    `resolve_split_path`), so train, val and test all number their classes the same way.
    """
    if kind not in ("folder", "frames", "tiff"):
        return None
    names: set[str] = set()
    resolved = {resolve_split_path(path, s) for s in (split, *SPLITS)}
    # a split-structured path: only its split folders (`path` itself holds them, not classes)
    for root in {r for r in resolved if r != path} or {path}:
        folder = Path(root)
        if folder.is_dir() and not (kind == "frames" and _is_frame_folder(folder)):
            names.update(d.name for d in _class_dirs(folder, kind))
    return sorted(names)


def _listing(folder: Path, kind: str, recursive: bool) -> tuple[list[Path], list[Path]]:
    """(videos, files with an unsupported extension) in `folder`, or anywhere below it if recursive."""
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    entries = [e for e in entries if not e.name.startswith(".")]
    if kind == "frames":
        return [d for d in entries if d.is_dir() and _is_frame_folder(d)], []
    files = [f for f in entries if f.is_file()]
    wanted = TIFF_EXTENSIONS if kind == "tiff" else VIDEO_EXTENSIONS
    return [f for f in files if f.suffix.lower() in wanted], [
        f for f in files if f.suffix.lower() not in wanted
    ]


def _is_frame_folder(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir() if f.is_file())


def guess_source(path: str) -> str:
    """csv / folder / frames / tiff from what `path` holds (its train split stands for the others)."""
    return detect_source(resolve_split_path(path, "train"))


def detect_source(path: str | Path) -> str:
    """Guess "csv", "folder", "frames" or "tiff" for a path (used by mixtures)."""
    path = Path(path)
    if path.is_file():
        return "tiff" if path.suffix.lower() in TIFF_EXTENSIONS else "csv"
    if not path.is_dir():
        raise DataError(f"data path not found: {path}")
    suffixes = {f.suffix.lower() for f in path.rglob("*") if f.is_file()}
    if suffixes & VIDEO_EXTENSIONS:
        return "folder"
    if suffixes & TIFF_EXTENSIONS:
        return "tiff"
    if suffixes & IMAGE_EXTENSIONS:
        return "frames"
    raise DataError(f"{path}: no videos, frame images or TIFF stacks found")


def resolve_split_path(path: str, split: str) -> str:
    """Pick the split's data: `{split}` in the path is replaced, and a folder holding a `split`
    sub-folder or a `split.csv` file resolves to it; otherwise the path is used as is."""
    if "{split}" in path:
        return path.format(split=split)
    folder = Path(path)
    if folder.is_dir() and (folder / split).is_dir():
        return str(folder / split)
    if folder.is_dir() and (folder / f"{split}.csv").is_file():
        return str(folder / f"{split}.csv")
    return path


def shared_split_paths(path: str, source: str, split: str, other: str = "train") -> list[str]:
    """The paths in `path` (each comma-separated part of a mixture) that name the same data for
    `split` and `other`: no `{split}` placeholder, split sub-folder or split CSV tells them apart."""
    paths = [p.strip() for p in path.split(",") if p.strip()] if source == "mixture" else [path]
    return [p for p in paths if resolve_split_path(p, split) == resolve_split_path(p, other)]


def load_records(
    path: str, source: str, classes: Sequence[str] | None = None
) -> tuple[list[VideoRecord], list[str], list[str]]:
    """Records of a csv/folder/frames/tiff source: (records, class names, ignored files).

    `classes` fixes the class list of folder sources (see `scan_folder`, `split_class_names`).
    """
    if source == "csv":
        return read_csv_list(path), [], []
    if source in ("folder", "frames", "tiff"):
        return scan_folder(path, source, classes)
    raise DataError(f"data.source={source!r} does not name files; choose csv, folder, frames or tiff")


# ---------------------------------------------------------------------------------------------
# skip bookkeeping shared by DataLoader workers


class SkipLog:
    """Which records were skipped and why, in shared memory so every DataLoader worker sees it.

    A record is marked once: the first worker to fail on it warns (naming the file and the reason)
    and counts it; later visits skip it without decoding it again.
    """

    def __init__(self, num_records: int, ignored: Sequence[str] = ()) -> None:
        self.status = torch.zeros(num_records, dtype=torch.int8).share_memory_()  # 0: not known bad
        self.ignored = len(ignored)
        self._filter_warned: set[str] = set()
        if ignored:
            shown = ", ".join(ignored[:3]) + (" ..." if len(ignored) > 3 else "")
            warnings.warn(
                f"ignored {len(ignored)} files with unsupported extensions: {shown}", SkippedVideoWarning
            )

    def is_bad(self, index: int) -> bool:
        """True if record `index` was already skipped."""
        return bool(self.status[index] != 0)

    def mark(self, index: int, error: DecodeError) -> None:
        """Record that `index` failed with `error`; warn the first time."""
        if self.is_bad(index):
            return
        self.status[index] = REASONS.index(error.reason) + 1
        if error.reason not in FILTER_REASONS:
            warnings.warn(f"skipping video {error}", SkippedVideoWarning, stacklevel=4)
        elif error.reason not in self._filter_warned:
            self._filter_warned.add(error.reason)
            warnings.warn(
                f"skipping video {error}; further videos filtered as {error.reason} are only counted "
                "(dataset.skipped)",
                SkippedVideoWarning,
                stacklevel=4,
            )

    def counts(self) -> Counter:
        """Counter {reason: number of distinct files skipped}."""
        codes = torch.bincount(self.status.long(), minlength=len(REASONS) + 1).tolist()
        counter = Counter({reason: codes[i + 1] for i, reason in enumerate(REASONS) if codes[i + 1]})
        if self.ignored:
            counter["unsupported"] += self.ignored
        return counter


# ---------------------------------------------------------------------------------------------
# the clip dataset


class VideoClipDataset(Dataset):
    """Clips decoded on the fly from a list of videos (files, frame folders or TIFF stacks).

    Args:
        records: the videos.
        spec: how clips are sampled (see `ClipSpec`).
        transform: `TrainTransform` (called with `generator=`) in training, `EvalTransform` in
            evaluation; None returns float clips [C, T, H, W] in [0, 1].
        train: random clip positions and augmentation (True) or deterministic ones.
        decoder: video decoder name ("pyav" or "torchcodec").
        strict: raise at the first bad file instead of skipping it.
        classes: class names, index = label (folders); informational.
        ignored: files left out while listing (unsupported extensions); counted as skipped.
    """

    substitute = True  # a bad record gives the next good one (pretraining); False: None (`drop_bad_items`)

    def __init__(
        self,
        records: Sequence[VideoRecord],
        spec: ClipSpec,
        transform: Callable[..., torch.Tensor] | None = None,
        train: bool = True,
        decoder: str = "pyav",
        strict: bool = False,
        classes: Sequence[str] = (),
        ignored: Sequence[str] = (),
    ) -> None:
        if not records:
            raise DataError("the dataset lists no videos")
        self.records, self.spec, self.transform = list(records), spec, transform
        self.train, self.decoder, self.strict, self.classes = train, decoder, strict, list(classes)
        self.skips = SkipLog(len(self.records), ignored)
        self._takes_generator = transform is not None and _accepts_generator(transform)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def skipped(self) -> Counter:
        """Counter {reason: distinct files skipped so far}, summed over DataLoader workers."""
        return self.skips.counts()

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """The item of `index`, or of the next good video after it if that one is bad (None instead
        after `drop_bad_items`)."""
        return _first_good(self, index, self._load)

    def _load(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        generator = _item_generator() if self.train else None
        frames = read_clip_frames(record.path, self.spec, self.decoder, self.train, generator)  # [clips, T, H, W, 3]
        video = apply_transform(frames, self.transform, self.train, generator, self._takes_generator)
        return {"video": video, "label": record.label, "path": record.path}


def _first_good(dataset: Any, index: int, load: Callable[[int], dict]) -> dict[str, Any] | None:
    """load(index), or load(index + k) for the smallest k whose record is not bad; with
    `dataset.substitute` False (see `drop_bad_items`), None when record `index` is bad."""
    if not getattr(dataset, "substitute", True):
        return _load_or_mark(dataset, index, load)
    count = len(dataset)
    for attempt in range(count):
        item = _load_or_mark(dataset, (index + attempt) % count, load)
        if item is not None:
            return item
    hint = ("one clip needs more frames than these videos have: lower data.frame_step or data.num_frames, or "
            "keep short videos with data.short_video_policy=loop|pad") if "too_short" in dataset.skipped else ""
    raise all_skipped_error(count, dataset.skipped, hint)


def _load_or_mark(dataset: Any, index: int, load: Callable[[int], dict]) -> dict[str, Any] | None:
    """load(index), or None after marking the record bad (warning once); strict datasets raise."""
    if dataset.skips.is_bad(index):
        return None
    try:
        return load(index)
    except DecodeError as error:
        if dataset.strict and error.reason not in FILTER_REASONS:
            raise
        dataset.skips.mark(index, error)
        return None


def all_skipped_error(count: int, reasons: Counter | dict[str, int], hint: str = "") -> DataError:
    """The error when none of `count` videos could be used ({reason: files} says why; `hint`: what to change)."""
    return DataError(f"every one of the {count} videos was skipped: {dict(reasons)}" + (f"; {hint}" if hint else ""))


def reading_parts(dataset: Dataset) -> list[Dataset]:
    """The datasets under `dataset` that read files and keep a skip log (`skips`): itself, the one
    under a `Subset`, or a mixture's parts."""
    from torch.utils.data import Subset

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    return [part for part in getattr(base, "datasets", None) or [base] if hasattr(part, "skips")]


def drop_bad_items(dataset: Dataset) -> Dataset:
    """Make `dataset` return None for a bad record instead of the next good one (evaluation).

    Pretraining substitutes the next good video (one more sample, any sample will do); an
    evaluation that did so would count a clip twice and score a list it was not given. Each bad
    record is still warned about once and counted in `dataset.skipped`; `collate_clips` drops the
    Nones. Applies to the parts of a `MixtureDataset` and the dataset under a `Subset` too.

    Returns:
        `dataset` itself (changed in place).
    """
    for part in reading_parts(dataset):  # the datasets that read files (and so can meet a bad one)
        part.substitute = False
    return dataset


def read_clip_frames(path: str | Path, spec: ClipSpec, decoder: str = "pyav", train: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a video's clips (the official rules, `sample_clip_indices`) and decode only their frames.

    The one path from a file to clip frames: training and evaluation datasets and `vjepa classify`
    (`classify.ViewProtocol.read_views`) call it.

    Returns:
        uint8 [num_clips, T, H, W, 3].

    Raises:
        DecodeError: naming the file and the reason (missing, corrupt, zero_frames, too_short, ...).
    """
    info = probe_video(path, decoder)
    step = frame_step_for(spec, info.fps)
    _check_length(str(path), info.num_frames, spec, step)
    clips = sample_clip_indices(info.num_frames, spec, train, generator, step)  # [clips, T] or None
    if clips is None:
        raise DecodeError(path, "too_short", f"{info.num_frames} frames; one clip spans {clip_span(spec.frames_per_clip, step)}")
    frames = read_frames(path, clips.reshape(-1), decoder)  # [clips * T, H, W, 3]
    return torch.from_numpy(frames).view(clips.shape + frames.shape[1:])


def _check_length(path: str, num_frames: int, spec: ClipSpec, step: int) -> None:
    reason = filter_reason(num_frames, spec, step)
    if reason is not None:
        needed = clip_span(spec.frames_per_clip, step)
        detail = f"{num_frames} frames; one clip spans {needed}, min_frames={spec.min_frames}, "
        raise DecodeError(path, reason, detail + f"max_frames={spec.max_frames}")


def _item_generator() -> torch.Generator:
    """A generator for one item, seeded from torch's global RNG.

    DataLoader seeds each worker's global RNG differently every epoch, so clips and crops differ
    across workers and epochs, and `torch.manual_seed` makes a run repeatable.
    """
    return torch.Generator().manual_seed(int(torch.randint(2**62, ())))


def _accepts_generator(transform: Callable[..., Any]) -> bool:
    try:
        return "generator" in inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False


def apply_transform(
    clips: torch.Tensor,
    transform: Callable[..., torch.Tensor] | None,
    train: bool,
    generator: torch.Generator | None,
    takes_generator: bool,
) -> torch.Tensor:
    """Transform uint8 clips [N, T, H, W, 3] into one item's `video`.

    Returns:
        training: [C, T, h, w] for N = 1, else [N, C, T, h, w]; evaluation: [N * V, C, T, h, w]
        (V crops per clip). Without a transform, float [C, T, H, W] in [0, 1] per clip.
    """
    if transform is None:
        views = [clip.permute(3, 0, 1, 2).float() / 255.0 for clip in clips]  # [C, T, H, W] each
    elif takes_generator:
        views = [transform(clip, generator=generator) for clip in clips]
    else:
        views = [transform(clip) for clip in clips]
    if not train and views[0].ndim == 5:  # eval transforms return [V, C, T, h, w] per clip
        return torch.cat(views)
    return views[0] if len(views) == 1 and train else torch.stack(views)


# ---------------------------------------------------------------------------------------------
# mixtures


class MixtureDataset(Dataset):
    """Several datasets drawn with per-source weights (the paper's VideoMix2M recipe).

    In training each item picks a source with probability proportional to its weight, then a
    uniform video of that source; the item index is ignored and the draws come from torch's global
    RNG (reseeded per DataLoader worker and epoch), as the official weighted sampler draws with
    replacement. In evaluation it is a plain concatenation.
    Items gain a `source` key (the source's position).

    Args:
        datasets: the sources.
        weights: one non-negative weight per source (empty: proportional to size).
        train: weighted draws (True) or concatenation (False).
    """

    def __init__(
        self, datasets: Sequence[Dataset], weights: Sequence[float] = (), train: bool = True
    ) -> None:
        if not datasets:
            raise DataError("a mixture needs at least one dataset")
        sizes = [len(d) for d in datasets]
        weights = list(weights) or [float(s) for s in sizes]
        if len(weights) != len(datasets) or min(weights) < 0 or sum(weights) <= 0:
            raise DataError(f"data.weights={list(weights)} must give {len(datasets)} non-negative weights")
        self.datasets, self.train, self.sizes = list(datasets), train, sizes
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.offsets = np.cumsum([0] + sizes)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def pick(self, index: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """(source, index within it) for item `index`: a weighted draw (train) or concatenation."""
        if not self.train:
            source = int(np.searchsorted(self.offsets, index, side="right") - 1)
            return source, index - int(self.offsets[source])
        source = int(torch.multinomial(self.weights, 1, generator=generator))
        return source, int(torch.randint(self.sizes[source], (), generator=generator))

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        source, local = self.pick(index)
        item = self.datasets[source][local]
        return None if item is None else {**item, "source": source}  # None: a dropped bad item

    @property
    def skipped(self) -> Counter:
        """Skipped-file counts summed over the sources."""
        return sum((getattr(d, "skipped", Counter()) for d in self.datasets), Counter())


# ---------------------------------------------------------------------------------------------
# batching


def collate_clips(items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch dataset items, dropping None ones (the unreadable clips `drop_bad_items` leaves out).

    Returns:
        {"video": [B, ...], "label": int64 [B], "path": list[str], ...} (other keys by torch's
        default_collate), or None when every item was dropped.
    """
    items = [item for item in items if item is not None]
    if not items:
        return None
    batch = {"path": [item.get("path", "") for item in items]}
    rest = [{k: v for k, v in item.items() if k != "path"} for item in items]
    return {**default_collate(rest), **batch}


# ---------------------------------------------------------------------------------------------
# file datasets (the factory, `vjepa.data.build_dataset`, picks one per `data.source`)


def file_dataset(
    cfg: DataConfig,
    spec: ClipSpec,
    source: str,
    path: str,
    split: str,
    train: bool,
    transform: Callable[..., torch.Tensor] | None,
) -> VideoClipDataset:
    """A dataset of the videos that `path` lists (source csv, folder, frames or tiff) for `split`.

    Raises:
        DataError: when `path` is empty or does not exist.
    """
    if not path:
        raise DataError(f"data.source={source} needs data.path")
    names = split_class_names(path, source, split)  # the same labels in every split
    records, classes, ignored = load_records(resolve_split_path(path, split), source, names)
    return VideoClipDataset(records, spec, transform, train, cfg.decoder, cfg.strict, classes, ignored)
