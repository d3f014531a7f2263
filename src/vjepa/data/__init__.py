"""Data: decoding, clip sampling, transforms, datasets, and the embedded synthetic set.

Every dataset yields dicts: `video` float [C, T, H, W] (train) or [V, C, T, H, W] (eval views),
`label` int (-1 when unlabelled), plus source-specific keys (`motion`, `appearance`, `path`).
`build_dataset` is the one factory: every command and script gets its dataset from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from vjepa.config import DataConfig

# The source modules are imported where they are used, so `import vjepa.data` stays light and no
# source module needs the factory (none imports this package's namespace).


def build_dataset(
    cfg: DataConfig,
    split: str = "train",
    train: bool = True,
    transform: Callable[..., torch.Tensor] | None = None,
) -> Dataset:
    """The dataset that `cfg.source` names (a DataConfig), with `build_transform(cfg, train)` unless given.

    Sources: synthetic (built in), csv (`path label` list), folder (videos in class sub-folders),
    frames (folders of images), tiff (TIFF stacks), images (class folders of still images, each a
    clip of one repeated frame; see `data.images`), mixture (comma-separated paths, one weight each
    in `cfg.weights`), cache (a folder written by `prepare_cache`). `cfg.path` may hold `{split}`,
    or be a folder with a `split` sub-folder or `split.csv` (see `datasets.resolve_split_path`).

    Raises:
        DataError: for an unknown source, a path that does not exist, or a `cfg.decoder` that does
            not import here.
    """
    from vjepa.data.datasets import (
        SOURCES,
        DataError,
        MixtureDataset,
        check_decoder,
        detect_source,
        file_dataset,
        resolve_split_path,
    )
    from vjepa.data.sampling import ClipSpec
    from vjepa.data.transforms import build_transform

    transform = build_transform(cfg, train) if transform is None else transform
    check_decoder(cfg.source, cfg.decoder)
    if cfg.source == "synthetic":
        from vjepa.data.synthetic import SyntheticVideoDataset

        return SyntheticVideoDataset(cfg.synthetic, split, transform)
    if cfg.source == "images":
        from vjepa.data.images import ImageFolderDataset

        return ImageFolderDataset(resolve_split_path(cfg.path, split), cfg.num_frames, transform, train, cfg.strict)
    spec = ClipSpec.from_config(cfg)
    if cfg.source == "cache":
        from vjepa.data.prepare import build_cached_dataset

        cache_dir = resolve_split_path(cfg.path, split)
        return build_cached_dataset(cache_dir, spec, transform, train, cfg.weights, cfg.strict, cfg.crop_size)
    if cfg.source == "mixture":
        paths = [p.strip() for p in cfg.path.split(",") if p.strip()]
        parts = [file_dataset(cfg, spec, detect_source(resolve_split_path(p, split)), p, split, train, transform)
                 for p in paths]
        return MixtureDataset(parts, cfg.weights, train)
    if cfg.source in ("csv", "folder", "frames", "tiff"):
        return file_dataset(cfg, spec, cfg.source, cfg.path, split, train, transform)
    raise DataError(f"data.source={cfg.source!r}; choose one of {', '.join(SOURCES)}")


def collate(items: list[Any]) -> dict[str, Any]:
    """Stack dataset items, dropping the `None`s that stand for skipped (bad) files."""
    from vjepa.data.datasets import collate_clips

    batch = collate_clips(items)
    if batch is None:
        raise RuntimeError("every clip in this batch came from an unreadable file; see the warnings above")
    return batch

