"""Data: decoding, clip sampling, transforms, datasets, and the embedded synthetic set.

Every dataset yields dicts: `video` float [C, T, H, W] (train) or [V, C, T, H, W] (eval views),
`label` int (-1 when unlabelled), plus source-specific keys (`motion`, `appearance`, `path`).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


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
