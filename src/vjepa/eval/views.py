"""Evaluation views: each clip cut into S temporal segments of F frames, each seen through C crops.

A view is one [3, F, h, w] clip; a clip's views are stacked segment-major (view s*C + c).

Shape legend: S segments, C crops, F frames per segment, h/w crop side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.data import Dataset

from vjepa.config import Config, ConfigError, ProbeConfig


def segment_starts(total_frames: int, frames_per_segment: int, num_segments: int) -> list[int]:
    """First frame of each of `num_segments` windows of `frames_per_segment`, evenly spaced.

    The first window starts at 0 and the last ends at `total_frames`; windows overlap when the
    clip is shorter than S*F frames (with S = 1 the window is the clip's start).
    """
    if frames_per_segment > total_frames:
        raise ConfigError(f"segments of {frames_per_segment} frames do not fit in {total_frames}-frame clips")
    if num_segments == 1:
        return [0]
    span = total_frames - frames_per_segment
    return [round(i * span / (num_segments - 1)) for i in range(num_segments)]


def image_clip(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Probe images as videos: [B, C, H, W] -> clips of the repeated frame [B, C, num_frames, H, W]."""
    return images.unsqueeze(2).expand(-1, -1, num_frames, -1, -1).contiguous()


def frames_per_segment(cfg: Config, probe_cfg: ProbeConfig) -> int:
    """F: `probe_cfg.frames_per_segment`, or the frames the encoder was trained on."""
    return probe_cfg.frames_per_segment or cfg.data.num_frames


class SyntheticViews(Dataset):
    """The built-in set as evaluation views: item `video` [S*C, 3, F, h, w], plus its labels.

    Segments are temporal windows of the rendered clip (`data.synthetic.num_frames` frames);
    crops are those of `EvalTransform` after resizing the short side to crop_size * resize_ratio.
    """

    def __init__(self, cfg: Config, probe_cfg: ProbeConfig, split: str, num_crops: int):
        from vjepa.data.synthetic import SyntheticVideoDataset
        from vjepa.data.transforms import EvalTransform

        d = cfg.data
        self.clips = SyntheticVideoDataset(d.synthetic, split, transform=None, cache=False)
        self.transform = EvalTransform(d.crop_size, probe_cfg.resize_ratio, num_crops, d.mean, d.std)
        self.length = frames_per_segment(cfg, probe_cfg)
        self.starts = segment_starts(d.synthetic.num_frames, self.length, probe_cfg.num_segments)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frames, motion, appearance = self.clips.clip(index)  # [T, H, W, 3] uint8
        frames = torch.from_numpy(frames)
        views = [self.transform(frames[s : s + self.length]) for s in self.starts]  # each [C, 3, F, h, w]
        return {"video": torch.cat(views), "motion": motion, "appearance": appearance}


def view_dataset(cfg: Config, probe_cfg: ProbeConfig, split: str, num_crops: int) -> Dataset:
    """Evaluation views of `split`: the synthetic set, or `data.datasets.build_dataset` for real video.

    Real video: `data.num_clips` = S segments of F frames, `num_crops` crops each; items carry
    `video` [S*C, 3, F, h, w] and `label`.
    """
    if cfg.data.source == "synthetic":
        return SyntheticViews(cfg, probe_cfg, split, num_crops)
    from vjepa.data.datasets import build_dataset
    from vjepa.data.transforms import build_transform

    frames = frames_per_segment(cfg, probe_cfg)
    data = dataclasses.replace(cfg.data, num_clips=probe_cfg.num_segments, num_frames=frames)
    transform = build_transform(data, train=False, num_crops=num_crops, resize_ratio=probe_cfg.resize_ratio)
    return build_dataset(data, split, False, transform)

