"""Tiny test videos whose pixels spell out their frame index (no downloads, no fixtures)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVEL_STEP = 6  # grey-level distance between consecutive indices: survives lossy coding
LEVEL_BASE = 10
LEVELS = 40  # indices per half-frame; the right half counts the "tens" (index // LEVELS)


def index_frame(index: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Return a uint8 RGB frame [H, W, 3] whose grey levels encode `index` (< LEVELS**2)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = LEVEL_BASE + LEVEL_STEP * (index % LEVELS)
    frame[:, width // 2 :] = LEVEL_BASE + LEVEL_STEP * (index // LEVELS)
    return frame


def decode_index(frames: np.ndarray) -> np.ndarray:
    """Read back the indices from frames [K, H, W, 3] written by `index_frame`."""
    width = frames.shape[2]
    # the centres of each half, away from chroma bleeding at the boundary
    low = frames[:, :, : width // 4].astype(np.float64).mean(axis=(1, 2, 3))
    high = frames[:, :, -width // 4 :].astype(np.float64).mean(axis=(1, 2, 3))
    return _level(high) * LEVELS + _level(low)


def _level(value: np.ndarray) -> np.ndarray:
    return np.rint((value - LEVEL_BASE) / LEVEL_STEP).astype(np.int64)


def write_index_video(
    path: str | Path,
    num_frames: int = 40,
    height: int = 32,
    width: int = 32,
    fps: int = 8,
    codec: str = "libx264",
    gop: int = 10,
    jitter: bool = False,
    pix_fmt: str = "",
) -> Path:
    """Encode `num_frames` index frames with PyAV (short GOP so seeking is exercised).

    jitter: odd frames are shown 40% of a frame period late (a variable-rate stream whose average
    rate differs from its base rate, as in many transcoded or phone videos).
    """
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or ("yuv420p" if codec != "mjpeg" else "yuvj420p")
        stream.gop_size = gop
        stream.bit_rate = 4_000_000  # near-lossless for the tiny frames of lossy codecs (mpeg4)
        if jitter:
            stream.codec_context.time_base = Fraction(1, 10 * fps)
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast", "bf": "2", "g": str(gop)}
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(index, height, width), format="rgb24")
            if jitter:
                frame.time_base = Fraction(1, 10 * fps)
                frame.pts = 10 * index + (4 if index % 2 else 0)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
