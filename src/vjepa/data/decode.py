"""Exact random access to frames of video files, frame-image folders and TIFF stacks.

Every reader returns uint8 RGB frames `[K, H, W, 3]` for a list of K frame indices, whatever the
source: a video file (PyAV, or torchcodec where installed), a folder of PNG/JPG frames (Pillow), or
a TIFF / OME-TIFF stack (tifffile; grayscale or multi-channel, 8- or 16-bit). Shape legend:
K requested frames, T frames in the source, H/W pixels.

PyAV decoding seeks to the keyframe before the first wanted frame and decodes forward, seeking again
only when a later keyframe lies before the next wanted frame; it never decodes a whole file for a
short clip. Frame indices come from presentation timestamps: for constant-rate streams
`index = round((pts - start) * time_base * fps)`; for variable-rate or jittered ones (and
containers without a frame count, like most mkv/webm) from a table of every packet's timestamp,
read once per process without decoding. Either way index i is the i-th frame shown.

Failures raise `DecodeError`, which names the file and carries a short `reason` for counting
(see `REASONS`).

Example:
    >>> info = probe_video("clip.mp4")
    >>> frames = read_frames("clip.mp4", [0, 4, 8, 12])  # uint8 [4, H, W, 3]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})

# Short reasons carried by DecodeError (and counted by the datasets).
REASONS = (
    "missing",  # the path does not exist
    "empty",  # zero bytes, or a folder without frames
    "unsupported",  # extension we cannot read, or an optional reader is not installed
    "corrupt",  # the container or codec rejected the data
    "truncated",  # the stream ends before a requested frame
    "zero_frames",  # no decodable frames
    "too_short",  # fewer frames than one clip (short_video_policy=skip) or than min_frames
    "too_long",  # more frames than max_frames
)

END_TOLERANCE = 2  # frames a header may over-count before a read past the end is "truncated"
MIN_SEEK_GAP = 16  # wanted frames closer than this are reached by decoding forward, never seeking


class DecodeError(RuntimeError):
    """A file could not be read; `path` names it and `reason` is one of `REASONS`."""

    def __init__(self, path: str | Path, reason: str = "", detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        message = f"{path}: {reason}" if reason else str(path)  # DataLoader re-raises with one argument
        super().__init__(message + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple:
        return (DecodeError, (self.path, self.reason, self.detail))  # picklable across workers


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows before decoding: frame count, frame rate (0.0: unknown) and size."""

    num_frames: int
    fps: float
    height: int
    width: int


class Backend(Protocol):
    """A decoder: `probe(path) -> VideoInfo`, `read(path, indices) -> uint8 [K, H, W, 3]`.

    `read` receives sorted, unique, non-negative indices and returns frames in that order.
    """

    def probe(self, path: str) -> VideoInfo:
        """Frame count, frame rate and size of `path`."""
        ...

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """uint8 frames [K, H, W, 3] at sorted unique `indices`."""
        ...


# ---------------------------------------------------------------------------------------------
# public entry points


def source_kind(path: str | Path) -> str:
    """Return "video", "frames" (a folder of images) or "tiff" for `path`.

    Raises:
        DecodeError: "missing" if the path does not exist, "unsupported" for an unknown extension.
    """
    path = Path(path)
    if not path.exists():
        raise DecodeError(path, "missing", "no such file or folder")
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTENSIONS:
        return "tiff"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    raise DecodeError(path, "unsupported", f"extension {suffix or '(none)'!r}")


def probe_video(path: str | Path, decoder: str = "pyav") -> VideoInfo:
    """Read frame count, frame rate and size of a video file, frame folder or TIFF stack.

    Args:
        path: the source.
        decoder: backend for video files ("pyav" or "torchcodec"; see `DECODERS`).

    Returns:
        VideoInfo; `fps` is 0.0 where the source does not say (frame folders, most TIFFs).

    Raises:
        DecodeError: naming the file, for a missing, empty, unsupported or unreadable source.
    """
    path_str, backend = _backend_for(path, decoder)
    return _guarded(path_str, lambda: backend.probe(path_str))


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray, decoder: str = "pyav") -> np.ndarray:
    """Decode exactly the frames at `indices` (any order, repeats allowed).

    Args:
        path: a video file, a folder of frame images, or a TIFF stack.
        indices: K frame indices, each >= 0.
        decoder: backend for video files ("pyav" or "torchcodec").

    Returns:
        uint8 array [K, H, W, 3], frame k being the source's frame `indices[k]`.

    Raises:
        DecodeError: naming the file and the reason (see `REASONS`).
    """
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted.size == 0:
        raise DecodeError(path, "zero_frames", "no frame indices requested")
    if wanted.min() < 0:
        raise ValueError(f"{path}: negative frame index {int(wanted.min())}")
    unique, inverse = np.unique(wanted, return_inverse=True)
    path_str, backend = _backend_for(path, decoder)
    frames = _guarded(path_str, lambda: backend.read(path_str, unique))
    return _as_rgb_uint8(frames[inverse], path_str)


def iter_frames(path: str | Path, decoder: str = "pyav", chunk: int = 32) -> Iterator[np.ndarray]:
    """Yield every frame of a source in order, `chunk` frames at a time (uint8 [<=chunk, H, W, 3]).

    Video files are decoded sequentially in one pass (used by `prepare_cache`).
    """
    path_str, backend = _backend_for(path, decoder)
    if isinstance(backend, PyAVBackend):
        yield from _guarded_iter(path_str, backend.iter_chunks(path_str, chunk))
        return
    num_frames = probe_video(path_str, decoder).num_frames
    for start in range(0, num_frames, chunk):
        yield read_frames(path_str, np.arange(start, min(start + chunk, num_frames)), decoder)


@functools.lru_cache(maxsize=1)
def available_decoders() -> list[str]:
    """Names of the video decoders that import on this machine (tried once per process)."""
    names = ["pyav"]
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # noqa: BLE001 (an ImportError, or an OSError for missing FFmpeg libraries)
        return names
    return names + ["torchcodec"]


# ---------------------------------------------------------------------------------------------
# dispatch and error wrapping


def _backend_for(path: str | Path, decoder: str) -> tuple[str, Backend]:
    kind = source_kind(path)
    path_str = str(path)
    if kind == "frames":
        return path_str, FRAME_FOLDER
    if kind == "tiff":
        return path_str, TIFF_STACK
    if os.path.getsize(path_str) == 0:
        raise DecodeError(path_str, "empty", "0 bytes")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    return path_str, DECODERS[decoder]


def _guarded(path: str, call: Callable[[], Any]) -> Any:
    """Run `call`, turning any reader exception into a DecodeError that names `path`."""
    try:
        return call()
    except DecodeError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # FFmpeg, PIL and tifffile raise many types for bad data
        raise DecodeError(path, "corrupt", f"{type(err).__name__}: {err}") from err


def _guarded_iter(path: str, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    while (chunk := _guarded(path, lambda: next(chunks, None))) is not None:
        yield chunk


def _as_rgb_uint8(frames: np.ndarray, path: str) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DecodeError(path, "corrupt", f"reader returned {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise DecodeError(path, "zero_frames", f"reader returned shape {tuple(frames.shape)}")
    return frames


# ---------------------------------------------------------------------------------------------
# PyAV


@dataclass(frozen=True)
class _FrameClock:
    """Maps presentation timestamps (stream time_base units) to frame indices and back."""

    start: int
    seconds_per_tick: Fraction  # the stream's time_base
    fps: Fraction

    def index(self, pts: int) -> int:
        """The frame index shown at timestamp `pts`."""
        return round((pts - self.start) * self.seconds_per_tick * self.fps)

    def pts(self, index: int) -> int:
        """A timestamp half a frame before frame `index`: seeking at-or-before it finds its keyframe."""
        return self.start + int((Fraction(index) - Fraction(1, 2)) / self.fps / self.seconds_per_tick)


@dataclass(frozen=True)
class _FrameTable:
    """Every frame's presentation timestamp, sorted: exact indices for variable-rate streams."""

    stamps: np.ndarray  # int64 [T]

    def index(self, pts: int) -> int:
        """The index of the frame shown at timestamp `pts`."""
        return max(int(np.searchsorted(self.stamps, pts, side="right")) - 1, 0)

    def pts(self, index: int) -> int:
        """The timestamp of frame `index`."""
        return int(self.stamps[min(index, len(self.stamps) - 1)])


_Clock = _FrameClock | _FrameTable  # constant-rate arithmetic, or the exact table


class PyAVBackend:
    """PyAV (bundled FFmpeg), one decoding thread per call so DataLoader workers don't oversubscribe."""

    def probe(self, path: str) -> VideoInfo:
        """Frame count from the header (constant rate) or from the packets' timestamps (otherwise)."""
        with _open_av(path) as container:
            stream = _video_stream(container, path)
            clock = _stream_clock(stream, path)
            num_frames = len(clock.stamps) if isinstance(clock, _FrameTable) else stream.frames
            ctx = stream.codec_context
            return VideoInfo(int(num_frames), float(_stream_fps(stream, path)), ctx.height, ctx.width)

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Decode sorted unique `indices`, seeking only where a keyframe lets us skip ahead."""
        with _open_av(path) as container:
            stream = _video_stream(container, path)
            stream.codec_context.thread_count = 1
            clock = _stream_clock(stream, path)
            found = _decode_indices(container, stream, clock, [int(i) for i in indices], path)
        return np.stack([found[int(i)] for i in indices])

    def iter_chunks(self, path: str, chunk: int) -> Iterator[np.ndarray]:
        """Decode the whole file in order, yielding uint8 [<=chunk, H, W, 3]."""
        with _open_av(path) as container:
            stream = _video_stream(container, path)
            stream.codec_context.thread_count = 1
            buffer: list[np.ndarray] = []
            for frame in container.decode(stream):
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk:
                    yield np.stack(buffer)
                    buffer = []
            if buffer:
                yield np.stack(buffer)


def _open_av(path: str) -> Any:
    import av

    return av.open(path, mode="r")


def _video_stream(container: Any, path: str) -> Any:
    if not container.streams.video:
        raise DecodeError(path, "unsupported", "no video stream")
    return container.streams.video[0]


def _stream_fps(stream: Any, path: str) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise DecodeError(path, "corrupt", "the stream has no frame rate")


def _stream_clock(stream: Any, path: str) -> _Clock:
    """Arithmetic timestamps for constant-rate streams, else the frame table from the packets.

    A stream counts as constant-rate when its header gives a frame count and its average rate equals
    its base rate (FFmpeg's r_frame_rate); anything else (variable rate, jittered timestamps, no
    count in the header as in most mkv/webm) is scanned once per process (packets only, no decoding).
    """
    fps = _stream_fps(stream, path)
    base = Fraction(stream.base_rate) if stream.base_rate else None
    if stream.frames and base is not None and Fraction(stream.average_rate or 0) == base:
        return _FrameClock(stream.start_time or 0, stream.time_base, fps)
    stat = os.stat(path)
    return _frame_table(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _frame_table(path: str, size: int, mtime_ns: int) -> _FrameTable:
    """Demux (without decoding) to collect the timestamps; cached by path, size and mtime."""
    with _open_av(path) as container:
        stream = _video_stream(container, path)
        packets = [p.pts for p in container.demux(stream) if p.size > 0]
    stamps = [pts for pts in packets if pts is not None]
    if not packets:
        raise DecodeError(path, "zero_frames", "no video packets")
    if len(stamps) < len(packets):
        raise DecodeError(path, "corrupt", f"{len(packets) - len(stamps)} packets without timestamps")
    return _FrameTable(np.unique(np.array(stamps, dtype=np.int64)))


def _decode_indices(container: Any, stream: Any, clock: _Clock, wanted: list[int], path: str) -> dict:
    """Seek-and-decode until every wanted index has a frame; returns {index: uint8 [H, W, 3]}."""
    found: dict[int, np.ndarray] = {}
    pos, backoff = 0, 0
    while pos < len(wanted):
        seek_index = max(0, wanted[pos] - backoff)
        start = clock.pts(seek_index) if seek_index > 0 else (stream.start_time or 0)
        container.seek(start, stream=stream, backward=True, any_frame=False)
        new_pos = _decode_run(container, stream, clock, wanted, pos, found, path, from_start=seek_index == 0)
        # no progress: the seek landed after the wanted frame (keyframes found by decode time); back off
        backoff = 0 if new_pos > pos else max(2 * backoff, MIN_SEEK_GAP)
        pos = new_pos
    return found


def _decode_run(
    container: Any,
    stream: Any,
    clock: _Clock,
    wanted: list[int],
    pos: int,
    found: dict,
    path: str,
    from_start: bool,
) -> int:
    """Decode forward from the current position, filling `found`; return the next wanted position.

    Returns early (for the caller to seek) when, after some progress, the next wanted frame lies past
    a later keyframe; or, with no progress, when the first decoded frame is already past
    `wanted[pos]` (the seek went too far).
    """
    previous: tuple[int, Any] | None = None
    keyframes, first_pos = _KeyframeIndex(stream, clock), pos
    for frame in container.decode(stream):
        if frame.pts is None:
            raise DecodeError(path, "corrupt", "frames without timestamps")
        index = clock.index(frame.pts)
        if previous is None and wanted[pos] < index and not from_start:
            return pos
        while pos < len(wanted) and wanted[pos] <= index:
            # variable frame rate or a missing frame: take the frame showing at that time
            use = frame if wanted[pos] == index or previous is None else previous[1]
            found[wanted[pos]] = use.to_ndarray(format="rgb24")
            pos += 1
        if pos == len(wanted):
            return pos
        previous = (index, frame)
        far = pos > first_pos and wanted[pos] - index > MIN_SEEK_GAP
        if far and keyframes.between(index, wanted[pos]):
            return pos
    return _fill_tail(previous, wanted, pos, found, path)


def _fill_tail(previous: tuple[int, Any] | None, wanted: list[int], pos: int, found: dict, path: str) -> int:
    """The stream ended: headers may over-count by a frame or two; more than that is truncation."""
    if previous is None:
        raise DecodeError(path, "zero_frames", "no frame decoded")
    last_index, last_frame = previous
    if wanted[-1] - last_index > END_TOLERANCE:
        raise DecodeError(
            path, "truncated", f"stream ends at frame {last_index}, frame {wanted[-1]} requested"
        )
    for index in wanted[pos:]:
        found[index] = last_frame.to_ndarray(format="rgb24")
    return len(wanted)


class _KeyframeIndex:
    """Keyframe indices from the demuxer's index (read lazily: only long gaps ask)."""

    def __init__(self, stream: Any, clock: _Clock) -> None:
        self.stream, self.clock, self.indices = stream, clock, None

    def between(self, after: int, upto: int) -> bool:
        """True if a keyframe lies in (after, upto] or the container has no index to tell."""
        if self.indices is None:
            entries = getattr(self.stream, "index_entries", None) or []
            stamps = [e.timestamp for e in entries if e.is_keyframe]
            self.indices = np.array([self.clock.index(t) for t in stamps], dtype=np.int64)
        if self.indices.size == 0:
            return True
        return bool(np.any((self.indices > after) & (self.indices <= upto)))


# ---------------------------------------------------------------------------------------------
# torchcodec (optional)


class TorchCodecBackend:
    """torchcodec's VideoDecoder (needs the system FFmpeg libraries; see README).

    seek_mode "exact" scans the packets on every open, like our PyAV frame table; "approximate"
    trusts the header's frame rate and returns wrong frames for jittered or variable-rate files.
    """

    def __init__(self, seek_mode: str = "exact") -> None:
        self.seek_mode = seek_mode

    def _decoder(self, path: str) -> Any:
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as err:  # noqa: BLE001 (ImportError, or OSError for missing FFmpeg libraries)
            raise DecodeError(path, "unsupported", f"torchcodec does not import: {err}") from None
        return VideoDecoder(path, seek_mode=self.seek_mode, num_ffmpeg_threads=1, dimension_order="NHWC")

    def probe(self, path: str) -> VideoInfo:
        """Frame count and rate from the stream header."""
        meta = self._decoder(path).metadata
        return VideoInfo(int(meta.num_frames or 0), float(meta.average_fps or 0.0), meta.height, meta.width)

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Decode `indices` (the last frames repeat when the header over-counts by a little)."""
        decoder = self._decoder(path)
        count = len(decoder)
        if count == 0:
            raise DecodeError(path, "zero_frames", "no frames")
        if int(indices[-1]) - (count - 1) > END_TOLERANCE:
            raise DecodeError(path, "truncated", f"{count} frames, frame {int(indices[-1])} requested")
        clipped = np.minimum(indices, count - 1).tolist()
        return decoder.get_frames_at(indices=clipped).data.numpy()


DECODERS: dict[str, Backend] = {"pyav": PyAVBackend(), "torchcodec": TorchCodecBackend()}


def register_decoder(name: str, backend: Backend) -> None:
    """Make `backend` selectable as `data.decoder=name` (e.g. a GPU decoder)."""
    DECODERS[name] = backend


# ---------------------------------------------------------------------------------------------
# folders of frame images (Pillow)


class FrameFolderBackend:
    """A folder of PNG/JPG/BMP frames, in natural name order (frame_2 before frame_10)."""

    def probe(self, path: str) -> VideoInfo:
        """Frame count from the listing, size from the first image; fps unknown (0.0)."""
        files = _frame_files(path)
        height, width = self._load(files[0]).shape[:2]
        return VideoInfo(len(files), 0.0, height, width)

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Load the images at `indices` (all must share one size)."""
        files = _frame_files(path)
        if int(indices[-1]) >= len(files):
            raise DecodeError(path, "truncated", f"{len(files)} frames, frame {int(indices[-1])} requested")
        frames = [self._load(files[int(i)]) for i in indices]
        if len({f.shape for f in frames}) > 1:
            raise DecodeError(path, "corrupt", "frames differ in size")
        return np.stack(frames)

    @staticmethod
    def _load(file: Path) -> np.ndarray:
        try:
            from PIL import Image
        except ImportError:
            raise DecodeError(file, "unsupported", "frame folders need Pillow (a vjepa dependency): pip install pillow") from None
        with Image.open(file) as image:
            if image.mode not in ("L", "RGB", "I;16", "I", "F", "1"):  # palette, alpha, CMYK, ...
                image = image.convert("RGB")
            array = np.asarray(image)
        return to_rgb_uint8(array, channel_axis=-1 if array.ndim == 3 else None)


def _frame_files(path: str) -> list[Path]:
    files = [p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DecodeError(path, "empty", "no PNG/JPG/BMP frames in the folder")
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> list:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


# ---------------------------------------------------------------------------------------------
# TIFF / OME-TIFF stacks (tifffile)


class TiffStackBackend:
    """A TIFF or OME-TIFF stack, frames along the T axis (else Z, I or Q; a single image is T=1).

    Channels (C or S axis) map to RGB: 1 is replicated, 2 fill R and G, 3 are kept, more keep the
    first 3. A Z axis next to T is reduced to its middle slice. Non-uint8 data are contrast-stretched
    per clip and channel (0.1-99.9 percentile) to uint8, so 12/16-bit microscopy is visible.
    """

    def probe(self, path: str) -> VideoInfo:
        """Frame count along the time axis; fps from OME metadata is not read (0.0)."""
        with _open_tiff(path) as tif:
            layout = _TiffLayout.of(tif.series[0])
            return VideoInfo(layout.num_frames, 0.0, layout.height, layout.width)

    def read(self, path: str, indices: np.ndarray) -> np.ndarray:
        """Load only the pages of the requested frames."""
        with _open_tiff(path) as tif:
            series = tif.series[0]
            layout = _TiffLayout.of(series)
            if int(indices[-1]) >= layout.num_frames:
                raise DecodeError(path, "truncated", f"{layout.num_frames} frames, frame {int(indices[-1])}")
            stack = layout.read(series, indices)  # [K, C, H, W]
        return to_rgb_uint8(stack, channel_axis=1)


def _open_tiff(path: str) -> Any:
    try:
        import tifffile
    except ImportError:
        raise DecodeError(path, "unsupported", "TIFF stacks need tifffile: pip install 'vjepa[tiff]'") from None
    return tifffile.TiffFile(path)


@dataclass(frozen=True)
class _TiffLayout:
    """Where T, Z and channel axes sit in a tifffile series, and how pages map to them."""

    axes: str
    shape: tuple[int, ...]
    time_axis: int | None

    @classmethod
    def of(cls, series: Any) -> _TiffLayout:
        """The layout of a tifffile series; time is T, else Z, I or Q (none: a single frame)."""
        axes, shape = series.axes, tuple(series.shape)
        time_axis = next((axes.index(a) for a in "TZIQ" if a in axes), None)
        return cls(axes, shape, time_axis)

    @property
    def num_frames(self) -> int:
        """Frames along the time axis."""
        return 1 if self.time_axis is None else self.shape[self.time_axis]

    @property
    def height(self) -> int:
        """Pixels along Y."""
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        """Pixels along X."""
        return self.shape[self.axes.index("X")]

    def read(self, series: Any, indices: np.ndarray) -> np.ndarray:
        """Return float-or-int data [K, C, H, W] for frame `indices`."""
        data = self._pages(series, indices)
        if data is None:  # no page layout we understand: read the series whole
            data = series.asarray()
            if self.time_axis is not None:
                data = np.take(data, indices, axis=self.time_axis)
            else:
                data = data[np.newaxis]
        return self._to_kchw(data)

    def _pages(self, series: Any, indices: np.ndarray) -> np.ndarray | None:
        """Read just the pages holding `indices`, shaped like the series with T replaced by K."""
        page_shape = tuple(series.pages[0].shape) if len(series.pages) else ()
        num_page_axes = len(self.shape) - len(page_shape)
        if self.time_axis is None or self.time_axis >= num_page_axes or num_page_axes <= 0:
            return None
        page_grid = self.shape[:num_page_axes]
        if int(np.prod(page_grid)) != len(series.pages) or self.shape[num_page_axes:] != page_shape:
            return None
        numbers = np.take(np.arange(len(series.pages)).reshape(page_grid), indices, axis=self.time_axis)
        pages = [series.pages[int(n)].asarray() for n in numbers.reshape(-1)]
        return np.stack(pages).reshape(numbers.shape + page_shape)

    def _to_kchw(self, data: np.ndarray) -> np.ndarray:
        """Move axes to [K, C, H, W]: middle Z slice, channels from C or S, others' first index."""
        time_name = "T" if self.time_axis is None else self.axes[self.time_axis]
        axes = list(self.axes) if self.time_axis is not None else ["T"] + list(self.axes)
        keep = {time_name, "Y", "X"}
        channel = next((a for a in "CS" if a in axes and a not in keep), None)
        for axis_name in [a for a in axes if a not in keep and a != channel]:
            dim = axes.index(axis_name)
            middle = data.shape[dim] // 2 if axis_name == "Z" else 0
            data = np.take(data, middle, axis=dim)
            axes.pop(dim)
        if channel is None:
            data, axes = data[..., np.newaxis], axes + ["C"]
            channel = "C"
        order = [axes.index(a) for a in (time_name, channel, "Y", "X")]
        return np.transpose(data, order)


# ---------------------------------------------------------------------------------------------
# pixel formats


def to_rgb_uint8(array: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Convert images to uint8 with 3 channels last.

    Args:
        array: [..., H, W] (no channels), or with channels on `channel_axis`; any dtype.
        channel_axis: the channel axis, or None for single-channel data.

    Returns:
        uint8 [..., H, W, 3]. 1 channel is replicated, 2 fill R and G (B zero), 4+ keep the first 3.
        Non-uint8 data are stretched per channel from the 0.1 to the 99.9 percentile to 0..255
        (bool data map to 0/255).
    """
    if channel_axis is None:
        array = array[..., np.newaxis]
    else:
        array = np.moveaxis(array, channel_axis, -1)
    array = _stretch_to_uint8(array)
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 2:
        return np.concatenate([array, np.zeros_like(array[..., :1])], axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    flat = array.reshape(-1, array.shape[-1]).astype(np.float32)
    low, high = np.percentile(flat, [0.1, 99.9], axis=0)
    scale = np.where(high > low, 255.0 / np.maximum(high - low, 1e-12), 0.0)
    return np.clip((array.astype(np.float32) - low) * scale, 0, 255).round().astype(np.uint8)


FRAME_FOLDER = FrameFolderBackend()
TIFF_STACK = TiffStackBackend()
