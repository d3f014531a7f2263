"""Evaluation views: each clip cut into S temporal segments of F frames, each seen through C crops.

A view is one [3, F, h, w] clip; a clip's views are stacked segment-major (view s*C + c).

Shape legend: S segments, C crops, F frames per segment, h/w crop side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from vjepa.config import Config, ConfigError, DataConfig, ProbeConfig


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


def probe_data_config(cfg: Config, probe_cfg: ProbeConfig) -> DataConfig:
    """The data section a probe reads: the run's pixels (crop size, mean, std) with the probe's own
    data (`probe_cfg.data` / `source`, else the run's) and its own clip sampling (F frames
    `probe_cfg.frame_step` apart, or at `probe_cfg.fps`; S segments, overlapping where a video is short).
    """
    data = cfg.data
    if probe_cfg.data:
        from vjepa.data.datasets import guess_source

        source = probe_cfg.source or guess_source(probe_cfg.data)
        data = dataclasses.replace(data, source=source, path=probe_cfg.data, weights=[])
    elif probe_cfg.source:
        data = dataclasses.replace(data, source=probe_cfg.source)
    return dataclasses.replace(data, num_clips=probe_cfg.num_segments, num_frames=frames_per_segment(cfg, probe_cfg),
                               frame_step=probe_cfg.frame_step, fps=probe_cfg.fps, allow_clip_overlap=True,
                               num_workers=probe_cfg.num_workers)


def _builtin(cfg: Config, probe_cfg: ProbeConfig) -> bool:
    """True when the probe reads the built-in set: a synthetic run and no other data asked for."""
    return cfg.data.source == "synthetic" and not probe_cfg.data and probe_cfg.source in ("", "synthetic")


def view_dataset(cfg: Config, probe_cfg: ProbeConfig, split: str, num_crops: int, augment: bool = False) -> Dataset:
    """Probe views of `split`: the synthetic set, or the one dataset factory (`data.build_dataset`).

    Real data: S = `num_segments` segments of F frames (see `probe_data_config`), `num_crops`
    crops each; items carry `video` [S*C, 3, F, h, w] ([3, F, h, w] for one view) and `label`.
    With `augment` (training), each segment is one random resized crop with random erasing, as the
    official frozen evaluation trains its probes (crop area 0.08-1, aspect 3/4-4/3, no flip, erasing 0.25).

    An unreadable clip's item is None (`datasets.drop_bad_items`), never another clip in its place:
    a probe trains and scores exactly the readable clips it was given, and reports the others
    (`features.skipped_records`).
    """
    if _builtin(cfg, probe_cfg):
        return SyntheticViews(cfg, probe_cfg, split, num_crops)
    from vjepa.data import build_dataset
    from vjepa.data.datasets import drop_bad_items

    data = probe_data_config(cfg, probe_cfg)
    return drop_bad_items(build_dataset(data, split, augment, probe_transform(data, probe_cfg, num_crops, augment)))


def check_held_out(cfg: Config, probe_cfg: ProbeConfig) -> None:
    """Refuse to score a probe on its own training clips unless asked (`eval_split` "train").

    A single CSV or a folder without split folders resolves to the same clips for `train` and
    `eval_split`: the score would pose as a test score (`vjepa finetune` leaves such data unscored).

    Raises:
        ConfigError: naming the data and what to pass instead.
    """
    from vjepa.data.datasets import shared_split_paths

    if probe_cfg.eval_split == "train" or probe_cfg.folds:
        return
    if _builtin(cfg, probe_cfg):
        return  # the built-in set has its own splits
    data = probe_data_config(cfg, probe_cfg)
    shared = shared_split_paths(data.path, data.source, probe_cfg.eval_split)
    if shared:
        raise ConfigError(
            f"{shared[0]} has no {probe_cfg.eval_split} split apart from train, so the probe would be scored on its "
            f"own training clips; pass a {{split}} pattern (e.g. lists/{{split}}.csv), a folder with train/ and "
            f"{probe_cfg.eval_split}/ (or train.csv and {probe_cfg.eval_split}.csv), --folds K to cross-validate on "
            "these clips, or --eval-split train to score the training clips knowingly")


def probe_transform(data: DataConfig, probe_cfg: ProbeConfig, num_crops: int, augment: bool):
    """The official evaluation's training augmentation, or resize + `num_crops` crops."""
    from vjepa.data.transforms import EvalTransform, TrainTransform

    if augment:
        return TrainTransform(data.crop_size, (0.08, 1.0), (0.75, 4 / 3), False, data.mean, data.std, erase_prob=0.25)
    return EvalTransform(data.crop_size, probe_cfg.resize_ratio, num_crops, data.mean, data.std)


def dataset_labels(dataset: Dataset, task: str = "label") -> torch.Tensor:
    """int64 [M] labels of every item, read from the listing (nothing decoded).

    Raises:
        ConfigError: for a dataset that cannot list its labels (then use cached features).
    """
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset, task)[torch.as_tensor(list(dataset.indices))]
    if isinstance(dataset, SyntheticViews):
        from vjepa.data.synthetic import split_labels

        return torch.as_tensor(split_labels(dataset.clips.cfg, dataset.clips.split)[task]).long()
    records = getattr(dataset, "records", None)
    if records is None:
        raise ConfigError(f"{type(dataset).__name__} does not list its labels; probe it with cached features")
    return torch.tensor([r.label for r in records], dtype=torch.int64)


def dataset_fingerprint(dataset: Dataset) -> str:
    """A hash of what a dataset holds: its files' names, sizes, modification times and labels
    (or the built-in set's settings), not where it was said to be."""
    import hashlib
    import json
    import os

    if isinstance(dataset, Subset):
        return f"{dataset_fingerprint(dataset.dataset)}[{hashlib.sha1(str(list(dataset.indices)).encode()).hexdigest()[:8]}]"
    if isinstance(dataset, SyntheticViews):
        from vjepa.config import to_dict

        return json.dumps([to_dict(dataset.clips.cfg), dataset.clips.split], sort_keys=True)
    records = getattr(dataset, "records", None)
    if records is None:
        return f"{type(dataset).__name__}:{len(dataset)}"
    digest = hashlib.sha1(json.dumps(getattr(dataset, "classes", [])).encode())
    for record in records:
        stat = os.stat(record.path) if os.path.exists(record.path) else None
        facts = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
        digest.update(f"{record.path}|{facts[0]}|{facts[1]}|{record.label}\n".encode())
    return digest.hexdigest()
