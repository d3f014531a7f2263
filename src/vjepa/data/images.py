"""Image datasets as videos: every image is a clip of one repeated frame (the official image evaluation).

Layout (ImageNet, Places, iNat): `root/CLASS/*.jpg|png|...`, labels from the sorted class folder
names (`root/split/CLASS/...` is resolved by `resolve_split_path`). Unreadable images are skipped
and named, as bad videos are.

Shape legend: B images, C channels, T frames, H/W pixels, V crops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vjepa.data.datasets import DataError, SkipLog, VideoRecord, _first_good
from vjepa.data.decode import IMAGE_EXTENSIONS, FrameFolderBackend


def image_clip(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Images as videos: [B, C, H, W] -> clips of the repeated frame [B, C, num_frames, H, W]."""
    return images.unsqueeze(2).expand(-1, -1, num_frames, -1, -1).contiguous()


def scan_images(root: str | Path) -> tuple[list[VideoRecord], list[str]]:
    """(one record per image, class names) of `root/CLASS/**/image.ext`; labels index the names.

    Raises:
        DataError: when `root` is missing or holds no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    records, classes = [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            records += [VideoRecord(str(f), len(classes)) for f in files]
            classes.append(folder.name)
    if not records:
        raise DataError(f"{root}: no class folders with {'/'.join(sorted(IMAGE_EXTENSIONS))} images")
    return records, classes


class ImageFolderDataset(Dataset):
    """Images in class folders, each item a clip of `num_frames` copies of the (transformed) image.

    Args:
        root: the split's folder of class folders.
        num_frames: T, frames per clip (the encoder's clip length).
        transform: `TrainTransform` (called with `generator=`) or `EvalTransform`; it sees the image
            as a 1-frame clip [1, H, W, 3] and its output is repeated along time.
        train: random augmentation draws (True) or deterministic ones.

    Items: `video` [3, T, h, w] (train) or [V, 3, T, h, w] (eval), `label`, `path`.
    """

    def __init__(self, root: str | Path, num_frames: int, transform: Callable[..., torch.Tensor],
                 train: bool = True, strict: bool = False) -> None:
        self.records, self.classes = scan_images(root)
        self.num_frames, self.transform, self.train, self.strict = num_frames, transform, train, strict
        self.skips = SkipLog(len(self.records))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def skipped(self) -> Counter:
        """Counter {reason: images skipped so far}."""
        return self.skips.counts()

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The item of `index`, or of the next readable image after it."""
        return _first_good(self, index, self._load)

    def _load(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = torch.from_numpy(_read_image(record.path).copy())[None]  # [1, H, W, 3] (PIL arrays are read-only)
        if self.train:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
            view = self.transform(image, generator=generator)[None]  # [1, 3, 1, h, w]
        else:
            view = self.transform(image)  # [V, 3, 1, h, w]
        video = image_clip(view[:, :, 0], self.num_frames)  # [V, 3, T, h, w]
        return {"video": video[0] if self.train else video, "label": record.label, "path": record.path}


def _read_image(path: str):
    """uint8 [H, W, 3] of one image file; a DecodeError naming it when it cannot be read."""
    from vjepa.data.decode import DecodeError

    try:
        return FrameFolderBackend._load(Path(path))
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001 (PIL raises many types for bad files)
        raise DecodeError(path, "corrupt", f"{type(err).__name__}: {err}") from None
