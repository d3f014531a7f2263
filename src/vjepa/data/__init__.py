"""Data: decoding, clip sampling, transforms, datasets, and the embedded synthetic set.

Every dataset yields dicts: `video` float [C, T, H, W] (train) or [V, C, T, H, W] (eval views),
`label` int (-1 when unlabelled), plus source-specific keys (`motion`, `appearance`, `path`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import Dataset

MAX_AUTO_WORKERS = 8  # decoding past ~8 workers per GPU stops paying at vitl16's ~0.2 s steps (issue 25)


def build_dataset(cfg, split: str = "train", train: bool = True) -> Dataset:
    """The dataset named by `cfg.source` (a DataConfig), with its train or eval transform."""
    if cfg.source == "synthetic":
        from vjepa.data.synthetic import SyntheticVideoDataset
        from vjepa.data.transforms import build_transform

        return SyntheticVideoDataset(cfg.synthetic, split, build_transform(cfg, train))
    from vjepa.data import datasets

    return datasets.build_dataset(cfg, split, train)


def collate(items: list[Any]) -> dict[str, Any]:
    """Stack dataset items, dropping the `None`s that stand for skipped (bad) files."""
    from vjepa.data.datasets import collate_clips

    batch = collate_clips(items)
    if batch is None:
        raise RuntimeError("every clip in this batch came from an unreadable file; see the warnings above")
    return batch


def resolve_workers(num_workers: int, device: torch.device | str) -> int:
    """The DataLoader workers `data.num_workers` means on `device` (-1: auto).

    Auto is 0 on the CPU (a worker competes with the model for the same cores) and, on CUDA, the
    CPUs this process may use divided among the GPUs of its node (torchrun's LOCAL_WORLD_SIZE),
    less one for the main process, at most `MAX_AUTO_WORKERS`: a vitl16 step needs 24 PyAV
    decodes of 50-200 ms each, far more than its ~0.2 s of GPU work in one process.

    Args:
        num_workers: the configured count; -1 for auto.
        device: where training runs.
    """
    if num_workers >= 0:
        return num_workers
    if torch.device(device).type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = cpus // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(0, min(MAX_AUTO_WORKERS, per_rank - 1))
