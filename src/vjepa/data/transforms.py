"""Clip transforms: uint8 frames [T, H, W, C] in, normalised float clips [C, T, h, w] out.

A transform treats the clip as one image stack: the same crop (and flip) applies to every frame,
so motion between frames is preserved. Pure torch (`F.interpolate`), no torchvision.

Shape legend: T frames, H/W input pixels, C channels (1 is repeated to 3), V eval views (crops).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from vjepa.config import DataConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator).item())


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    aspect: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Sample a crop as torchvision's RandomResizedCrop does.

    The crop covers a uniform fraction of the area in `scale`, with an aspect ratio (w / h)
    log-uniform in `aspect`; after 10 failed tries it falls back to the largest central crop whose
    aspect ratio lies in `aspect`.

    Returns:
        (top, left, crop_height, crop_width), a crop inside the height x width frame.
    """
    for _ in range(10):
        crop = _try_crop(height, width, scale, aspect, generator)
        if crop is not None:
            return crop
    return _central_crop_params(height, width, aspect)


def _try_crop(height: int, width: int, scale: tuple[float, float], aspect: tuple[float, float],
              generator: torch.Generator | None) -> tuple[int, int, int, int] | None:
    """One draw of `random_resized_crop_params`: the crop, or None when it does not fit the frame."""
    target_area = height * width * _uniform(scale[0], scale[1], generator)
    ratio = math.exp(_uniform(math.log(aspect[0]), math.log(aspect[1]), generator))
    crop_width = round(math.sqrt(target_area * ratio))
    crop_height = round(math.sqrt(target_area / ratio))
    if not (0 < crop_width <= width and 0 < crop_height <= height):
        return None
    top = _randint(height - crop_height + 1, generator)
    left = _randint(width - crop_width + 1, generator)
    return top, left, crop_height, crop_width


def _central_crop_params(height: int, width: int, aspect: tuple[float, float]) -> tuple[int, int, int, int]:
    ratio = width / height
    if ratio < min(aspect):
        crop_width, crop_height = width, round(width / min(aspect))
    elif ratio > max(aspect):
        crop_height, crop_width = height, round(height * max(aspect))
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def _as_frames(video: torch.Tensor) -> torch.Tensor:
    """[T, H, W, C] (or [T, H, W] grey) -> a [T, C, H, W] view (channels-last memory, no copy)."""
    if video.ndim == 3:
        video = video.unsqueeze(-1)
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"expected a video [T, H, W, C] with C in (1, 3), got {tuple(video.shape)}")
    return video.permute(0, 3, 1, 2)


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased resize of [T, C, H, W] to [T, C, height, width].

    uint8 input stays uint8: PyTorch's uint8 channels-last kernel is tens of times faster on CPU
    than the float one, and differs from it by at most one grey level.
    """
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    resized = F.interpolate(
        frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized if resized.dtype == torch.uint8 else resized.clamp(0.0, 255.0)


def normalise(video: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Pixel values in [0, 255] (uint8, or float) -> normalised float32, on the video's device.

    The one normalisation: the transforms call it in the data workers, and the training loop on
    the device, for clips the loader ships as uint8 (a quarter of the bytes).

    Args:
        video: [C, T, h, w] or [B, C, T, h, w]; C = 1 broadcasts to 3.
        mean, std: per-channel statistics of values in [0, 1].
    """
    m, s = _pixel_stats(tuple(mean), tuple(std), video.device)
    return (video.float() - m) / s


@functools.lru_cache(maxsize=16)
def _pixel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """255 * mean and 255 * std as float32 [3, 1, 1, 1] on `device`, made once per device (a copy
    from pageable host memory every step would make the GPU stream wait)."""
    shape = (3, 1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(shape) * 255.0
    return m.to(device), s.to(device)


class _Normalise:
    """Maps [T, C, h, w] in [0, 255] to [3, T, h, w]: normalised float, or as it is (`apply=False`:
    channels first, grey repeated to 3, the dtype kept; the caller normalises later)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], apply: bool = True) -> None:
        self.mean, self.std, self.apply = tuple(mean), tuple(std), apply

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(1, 0, 2, 3)  # [C, T, h, w]
        if self.apply:
            return normalise(frames.contiguous(), self.mean, self.std)
        return frames.expand(3, *frames.shape[1:]).contiguous()


class TrainTransform:
    """One random resized crop for all frames, an optional horizontal flip, normalisation.

    Args:
        crop_size: output side, pixels.
        scale: crop area range, as a fraction of the frame.
        aspect: crop aspect-ratio (w / h) range.
        horizontal_flip: flip the whole clip with probability 1/2. Flipping swaps the synthetic
            set's left/right and cw/ccw motion labels (see `synthetic.MOTION_HFLIP`).
        mean, std: per-channel normalisation, for values in [0, 1].
        erase_prob: chance that each frame gets one random rectangle replaced by unit Gaussian
            noise after normalisation (random erasing, as the official frozen evaluation trains
            its probes with 0.25); 0 turns it off.
        normalise: False returns the cropped clip unnormalised, in the frames' dtype (uint8 for
            video), for `vjepa.data.transforms.normalise` on the device; needs erase_prob 0.
    """

    def __init__(
        self,
        crop_size: int,
        scale: tuple[float, float] = (0.3, 1.0),
        aspect: tuple[float, float] = (0.75, 1.35),
        horizontal_flip: bool = False,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        erase_prob: float = 0.0,
        normalise: bool = True,
    ) -> None:
        if erase_prob > 0 and not normalise:
            raise ValueError("random erasing works on normalised clips: erase_prob > 0 needs normalise=True")
        self.crop_size, self.scale, self.aspect = crop_size, tuple(scale), tuple(aspect)
        self.horizontal_flip, self.erase_prob = horizontal_flip, erase_prob
        self.normalise = _Normalise(mean, std, apply=normalise)

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [T, H, W, C] -> float [3, T, crop_size, crop_size] (uint8 with normalise=False)."""
        frames = _as_frames(video)  # [T, C, H, W]
        height, width = frames.shape[-2:]
        top, left, crop_height, crop_width = random_resized_crop_params(
            height, width, self.scale, self.aspect, generator
        )
        frames = frames[:, :, top : top + crop_height, left : left + crop_width]
        frames = _resize(frames, self.crop_size, self.crop_size)
        if self.horizontal_flip and torch.rand((), generator=generator).item() < 0.5:
            frames = frames.flip(-1)
        video = self.normalise(frames)  # [3, T, crop, crop]
        if self.erase_prob > 0:
            for t in range(video.shape[1]):
                if torch.rand((), generator=generator).item() < self.erase_prob:
                    _erase(video[:, t], generator)
        return video


def _erase(frame: torch.Tensor, generator: torch.Generator | None) -> None:
    """Fill one random rectangle of a normalised frame [C, H, W] with N(0, 1) noise, in place.

    The rectangle covers 2-33% of the frame with a log-uniform aspect ratio in [0.3, 3.3]; a draw
    that does not fit is retried up to 10 times.
    """
    height, width = frame.shape[-2:]
    for _ in range(10):
        area = height * width * _uniform(0.02, 1 / 3, generator)
        aspect = math.exp(_uniform(math.log(0.3), math.log(1 / 0.3), generator))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = _randint(height - h + 1, generator), _randint(width - w + 1, generator)
            frame[:, top : top + h, left : left + w] = torch.randn(
                (frame.shape[0], h, w), generator=generator, dtype=frame.dtype)
            return


class EvalTransform:
    """Resize the short side, then take 1 central or 3 spatial crops, and normalise.

    Args:
        crop_size: output side, pixels.
        resize_ratio: the short side is first resized to int(crop_size * resize_ratio).
        num_crops: 1 (centre) or 3 (left / centre / right along the long side; top / centre /
            bottom for portrait frames).
        mean, std: per-channel normalisation, for values in [0, 1].
    """

    def __init__(
        self,
        crop_size: int,
        resize_ratio: float = 256 / 224,
        num_crops: int = 1,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.crop_size, self.resize_ratio, self.num_crops = crop_size, resize_ratio, num_crops
        self.normalise = _Normalise(mean, std)

    def _resized_shape(self, height: int, width: int) -> tuple[int, int]:
        short = max(int(self.crop_size * self.resize_ratio), self.crop_size)
        if height <= width:
            return short, max(short, round(width * short / height))
        return max(short, round(height * short / width)), short

    def _crop_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in the resized frame."""
        centre = ((height - self.crop_size) // 2, (width - self.crop_size) // 2)
        if self.num_crops == 1:
            return [centre]
        if height > width:  # portrait: slide along the height
            return [(0, centre[1]), centre, (height - self.crop_size, centre[1])]
        return [(centre[0], 0), centre, (centre[0], width - self.crop_size)]

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, C] -> float [V, 3, T, crop_size, crop_size], V = num_crops."""
        frames = _as_frames(video)  # [T, C, H, W]
        height, width = self._resized_shape(*frames.shape[-2:])
        frames = _resize(frames, height, width)
        size = self.crop_size
        offsets = self._crop_offsets(height, width)
        crops = [frames[:, :, top : top + size, left : left + size] for top, left in offsets]
        return torch.stack([self.normalise(crop) for crop in crops])  # [V, 3, T, size, size]


def build_transform(
    cfg: DataConfig, train: bool, num_crops: int = 1, resize_ratio: float = 256 / 224, normalise: bool = True
) -> TrainTransform | EvalTransform:
    """The training (random crop) or evaluation (resize + `num_crops` crops) transform of `cfg`.

    `resize_ratio=1.0` keeps whole square frames (e.g. the synthetic set at crop_size = size).
    `normalise=False` (training only): clips stay in [0, 255] and their dtype, normalised later on
    the device (`normalise`), as the training loader ships them.
    """
    if train:
        return TrainTransform(
            cfg.crop_size, cfg.crop_scale, cfg.crop_aspect, cfg.horizontal_flip, cfg.mean, cfg.std,
            normalise=normalise,
        )
    return EvalTransform(cfg.crop_size, resize_ratio, num_crops, cfg.mean, cfg.std)
