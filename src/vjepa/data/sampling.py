"""Which frames make a clip: pure functions of a video's length, the sampling spec and a generator.

Follows the official V-JEPA `VideoDataset` (facebookresearch/jepa, src/datasets/video_dataset.py):
a video of `num_frames` frames is cut into `num_clips` equal segments and clip i is taken from
segment i, at a random position in training and at the segment's start in evaluation. A clip is
`frames_per_clip` frames `frame_step` apart (or a step chosen from a target fps). Two deliberate
differences, both documented at the function that has them:
- frames are exactly `frame_step` apart (the official code spreads them with `linspace`, which
  stretches the step by fpc / (fpc - 1) and clips the last frame);
- the random start is uniform over every valid position (the official `randint` misses the last).

Shape legend: clip indices are int64 [num_clips, frames_per_clip].

Example:
    >>> spec = ClipSpec(frames_per_clip=16, frame_step=4)
    >>> sample_clip_indices(300, spec, train=True, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vjepa.config import DataConfig

SHORT_VIDEO_POLICIES = ("skip", "loop", "pad")


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video (the `data.*` sampling keys, see `DataConfig`).

    Attributes:
        frames_per_clip: frames in one clip (T).
        frame_step: distance between consecutive clip frames, in source frames.
        fps: > 0 to sample at this frame rate instead (step = round(source fps / fps)); sources
            without a known frame rate fall back to `frame_step`.
        num_clips: clips per video, each from its own segment.
        allow_clip_overlap: when a segment is shorter than a clip, let clips overlap (evenly spaced
            over the whole video) instead of repeating the segment's last frame.
        min_frames: videos with fewer frames are filtered (0: only the short-video policy applies).
        max_frames: videos with more frames are filtered (0: no limit).
        short_video_policy: a video shorter than one clip is skipped, looped or padded with its
            last frame.
    """

    frames_per_clip: int = 16
    frame_step: int = 4
    fps: float = 0.0
    num_clips: int = 1
    allow_clip_overlap: bool = False
    min_frames: int = 0
    max_frames: int = 0
    short_video_policy: str = "skip"

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1 or self.frame_step < 1 or self.num_clips < 1:
            raise ValueError(f"frames_per_clip, frame_step and num_clips must be >= 1: {self}")
        if self.short_video_policy not in SHORT_VIDEO_POLICIES:
            raise ValueError(
                f"short_video_policy={self.short_video_policy!r}; choose one of {', '.join(SHORT_VIDEO_POLICIES)}"
            )

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ClipSpec:
        """The spec of a `DataConfig` (data.num_frames, frame_step, fps, num_clips, ...)."""
        return cls(
            frames_per_clip=cfg.num_frames,
            frame_step=cfg.frame_step,
            fps=cfg.fps,
            num_clips=cfg.num_clips,
            allow_clip_overlap=cfg.allow_clip_overlap,
            min_frames=cfg.min_frames,
            max_frames=cfg.max_frames,
            short_video_policy=cfg.short_video_policy,
        )


def frame_step_for(spec: ClipSpec, video_fps: float) -> int:
    """The step between clip frames for a video at `video_fps` (0.0: unknown).

    With `spec.fps > 0` and a known rate, step = max(1, round(video_fps / spec.fps)); otherwise
    `spec.frame_step`.
    """
    if spec.fps > 0 and video_fps > 0:
        return max(1, round(video_fps / spec.fps))
    return spec.frame_step


def clip_span(frames_per_clip: int, step: int) -> int:
    """Source frames one clip covers, first to last inclusive: (T - 1) * step + 1."""
    return (frames_per_clip - 1) * step + 1


def filter_reason(num_frames: int, spec: ClipSpec, step: int) -> str | None:
    """Why a video of `num_frames` frames yields no clip, or None if it does.

    Returns:
        "zero_frames", "too_short" (below `min_frames`, or below one clip under policy "skip"),
        "too_long" (above `max_frames`), or None.
    """
    if num_frames <= 0:
        return "zero_frames"
    if spec.max_frames and num_frames > spec.max_frames:
        return "too_long"
    if spec.min_frames and num_frames < spec.min_frames:
        return "too_short"
    if spec.short_video_policy == "skip" and num_frames < clip_span(spec.frames_per_clip, step):
        return "too_short"
    return None


def sample_clip_indices(
    num_frames: int,
    spec: ClipSpec,
    train: bool,
    generator: torch.Generator | None = None,
    step: int | None = None,
) -> np.ndarray | None:
    """Frame indices of `spec.num_clips` clips from a video of `num_frames` frames.

    Args:
        num_frames: frames in the video.
        spec: the sampling spec.
        train: random clip positions (True) or deterministic ones (False).
        generator: the randomness in training (None: torch's global generator).
        step: frame step to use (default: `spec.frame_step`; see `frame_step_for`).

    Returns:
        int64 [num_clips, frames_per_clip], every index in [0, num_frames); or None when the video
        is filtered (see `filter_reason`).
    """
    step = spec.frame_step if step is None else step
    if filter_reason(num_frames, spec, step) is not None:
        return None
    span = clip_span(spec.frames_per_clip, step)
    if num_frames < span:
        return _short_video(num_frames, spec, step, train, generator)
    segment = num_frames // spec.num_clips
    if segment >= span:
        return _clips_in_segments(num_frames, spec, step, train, generator)
    if spec.allow_clip_overlap:
        return _overlapping_clips(num_frames, spec, step)
    return _padded_segments(num_frames, spec, step)


def _offsets(spec: ClipSpec, step: int) -> np.ndarray:
    return np.arange(spec.frames_per_clip, dtype=np.int64) * step


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator))


def _clips_in_segments(
    num_frames: int, spec: ClipSpec, step: int, train: bool, generator: torch.Generator | None
) -> np.ndarray:
    """Each segment holds a whole clip: random start inside it (train) or its first frame (eval)."""
    segment = num_frames // spec.num_clips
    span = clip_span(spec.frames_per_clip, step)
    starts = [
        i * segment + (_randint(segment - span, generator) if train else 0) for i in range(spec.num_clips)
    ]
    return np.stack([start + _offsets(spec, step) for start in starts])


def _overlapping_clips(num_frames: int, spec: ClipSpec, step: int) -> np.ndarray:
    """Segments shorter than a clip, overlap allowed: starts evenly spaced over the whole video."""
    span = clip_span(spec.frames_per_clip, step)
    spacing = (num_frames - span) // max(spec.num_clips - 1, 1)
    return np.stack([i * spacing + _offsets(spec, step) for i in range(spec.num_clips)])


def _padded_segments(num_frames: int, spec: ClipSpec, step: int) -> np.ndarray:
    """Segments shorter than a clip, no overlap: step through the segment, repeat its last frame."""
    segment = num_frames // spec.num_clips
    within = np.minimum(_offsets(spec, step), segment - 1)
    return np.stack([i * segment + within for i in range(spec.num_clips)])


def _short_video(
    num_frames: int, spec: ClipSpec, step: int, train: bool, generator: torch.Generator | None
) -> np.ndarray:
    """A video shorter than one clip (policy loop or pad; skip never gets here).

    loop: frames wrap around to the start; clip i starts at a random frame (train) or at
    i * num_frames / num_clips (eval). pad: every clip steps from frame 0 and repeats the last frame.
    """
    offsets = _offsets(spec, step)
    if spec.short_video_policy == "pad":
        return np.tile(np.minimum(offsets, num_frames - 1), (spec.num_clips, 1))
    if train:
        starts = [_randint(num_frames - 1, generator) for _ in range(spec.num_clips)]
    else:
        starts = [i * num_frames // spec.num_clips for i in range(spec.num_clips)]
    return np.stack([(start + offsets) % num_frames for start in starts])
