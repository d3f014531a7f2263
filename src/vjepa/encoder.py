"""The inference-time encoder: a frozen `VisionTransformer` with its config, that embeds videos.

    >>> encoder = vjepa.load("runs/demo")          # an `Encoder` (see `vjepa.api.load`)
    >>> tokens = encoder.embed("clip.mp4")         # [W, N, D]: one row per window of the video
    >>> pooled = encoder.embed("clip.mp4", pooled=True)  # [W, D]

A video is cut into sliding windows (`window_indices`), each resized, centre-cropped and normalised
as the run's evaluation clips were, and encoded in batches.

Shape legend: B batch, C channels, T frames, H/W pixels, S the model's square input side,
N tokens per clip, D feature width, W windows of a video.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vjepa.config import Config
from vjepa.distributed import resolve_device
from vjepa.models.predictor import Predictor
from vjepa.models.vit import VisionTransformer
from vjepa.precision import autocast, freeze


def window_indices(num_video_frames: int, num_frames: int, frame_step: int, stride: int | None = None) -> np.ndarray:
    """Frame indices of the sliding windows that cover a video.

    A window is `num_frames` frames `frame_step` apart. Windows start every `stride` source frames
    (default `num_frames * frame_step`: back to back, no overlap); when the video's length is not a
    whole number of strides, one more window ends exactly at the last frame, so the whole video is
    seen. A video shorter than one window gives one window with the largest step that fits (down
    to 1), padded by repeating the last frame.

    Args:
        num_video_frames: frames in the video (>= 1).
        num_frames: frames per window.
        frame_step: source frames between consecutive window frames.
        stride: source frames between window starts.

    Returns:
        int64 [W, num_frames]; column 0 holds the window starts.
    """
    if num_video_frames < 1 or num_frames < 1 or frame_step < 1 or (stride is not None and stride < 1):
        raise ValueError(f"need >= 1 frames, num_frames, frame_step and stride; got "
                         f"{num_video_frames}, {num_frames}, {frame_step}, {stride}")
    span = (num_frames - 1) * frame_step + 1  # source frames one window covers
    offsets = np.arange(num_frames, dtype=np.int64)
    if num_video_frames < span:  # one window, the largest step that fits, the last frame repeated
        step = max(1, (num_video_frames - 1) // max(num_frames - 1, 1))
        return np.minimum(offsets * step, num_video_frames - 1)[None]
    starts = list(range(0, num_video_frames - span + 1, stride or num_frames * frame_step))
    if starts[-1] != num_video_frames - span:
        starts.append(num_video_frames - span)
    return np.asarray(starts, dtype=np.int64)[:, None] + offsets[None] * frame_step


class Encoder:
    """A frozen V-JEPA encoder ready for inference (eval mode, no gradients), with its config.

    Attributes:
        model: the `VisionTransformer`.
        config: the run's `Config` (for official checkpoints: inferred from the weights). Clip
            size (`data.num_frames`, `data.crop_size`), sampling (`data.frame_step`) and
            normalisation (`data.mean`, `data.std`) come from here.
        predictor: the `Predictor` when the checkpoint has one (frozen too), else None.
        which: the network loaded ("target_encoder", "encoder", "init" for the run's initial
            weights, or "random" for a preset).
        source: where the weights came from.
        precision: "fp32", or "bf16" for bfloat16 autocast (outputs are float32 either way).
    """

    def __init__(
        self,
        model: VisionTransformer,
        config: Config,
        predictor: Predictor | None = None,
        which: str = "target_encoder",
        source: str = "",
        precision: str = "fp32",
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={precision!r}; choose fp32 or bf16")
        self.model, self.config, self.predictor = freeze(model), config, predictor and freeze(predictor)
        self.which, self.source, self.precision = which, source, precision

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Encoder({self.which} of {self.source or '?'}: ViT D={m.embed_dim} depth={m.depth} "
                f"heads={m.num_heads}, clip {self.num_frames}x{self.img_size}x{self.img_size}, "
                f"patch {m.patch_size}, tubelet {m.tubelet_size}, device {self.device})")

    @property
    def num_frames(self) -> int:
        """Frames per clip the model was built for."""
        return self.config.data.num_frames

    @property
    def img_size(self) -> int:
        """Side of the square frames the model was built for, pixels."""
        return self.config.data.crop_size

    @property
    def frame_step(self) -> int:
        """Default source frames between clip frames (the run's `data.frame_step`)."""
        return self.config.data.frame_step

    @property
    def embed_dim(self) -> int:
        """D, the feature width."""
        return self.model.embed_dim

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.model.patch_embed.proj.weight.device

    def grid(self, num_frames: int | None = None) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip of `num_frames` frames (default: the model's)."""
        return self.model.patch_embed.grid(num_frames or self.num_frames, self.img_size, self.img_size)

    def to(self, device: str | torch.device) -> Encoder:
        """Move the model (and predictor) to `device`; returns self."""
        device = resolve_device(device)
        self.model.to(device)
        if self.predictor is not None:
            self.predictor.to(device)
        return self

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Encode normalised clips: float [B, C, T, H, W] -> float32 [B, N, D] on the model's device."""
        clips = clips.to(self.device, torch.float32)
        with torch.no_grad(), autocast(self.device, self.precision):
            return self.model(clips).float()

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw frames -> one model input: uint8 [T, H, W, C] (C 1 or 3) -> float [3, T, S, S].

        The short side is resized to S (the model's `img_size`), the centre crop kept, and the
        pixels normalised with the config's mean and std (ImageNet's by default).
        """
        from vjepa.data.transforms import EvalTransform

        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if frames.dtype != torch.uint8:
            raise ValueError(f"raw frames must be uint8 [T, H, W, C], got {frames.dtype}")
        data = self.config.data
        transform = EvalTransform(self.img_size, resize_ratio=1.0, num_crops=1, mean=data.mean, std=data.std)
        return transform(frames)[0]  # [3, T, S, S]

    def _iter_file_clips(self, path: str | Path, window: int, frame_step: int, stride: int | None,
                         chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        """`iter_clips` of a file: decodes `chunk` windows' frames per read (each frame once)."""
        from vjepa.data.decode import probe_video, read_frames

        windows = window_indices(probe_video(path).num_frames, window, frame_step, stride)
        for first in range(0, len(windows), chunk):
            part = windows[first : first + chunk]  # [w, window]
            wanted, position = np.unique(part, return_inverse=True)
            frames = read_frames(path, wanted)[position.reshape(part.shape)]  # [w, window, H, W, 3]
            for indices, clip in zip(part, frames):
                yield int(indices[0]), self.preprocess(clip)

    def iter_clips(
        self,
        video: str | Path | np.ndarray | torch.Tensor,
        window: int | None = None,
        frame_step: int | None = None,
        stride: int | None = None,
        chunk: int = 8,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start frame, preprocessed clip float [3, window, S, S]) for each window of a video.

        Args:
            video: a video file / frame folder / TIFF stack path, or uint8 frames [T, H, W, C].
            window, frame_step, stride: see `embed`.
            chunk: windows decoded per read (a path is opened once per chunk).
        """
        window, frame_step = window or self.num_frames, frame_step or self.frame_step
        if isinstance(video, (str, Path)):
            yield from self._iter_file_clips(video, window, frame_step, stride, chunk)
            return
        frames = _as_uint8_video(video)
        for indices in window_indices(len(frames), window, frame_step, stride):
            yield int(indices[0]), self.preprocess(frames[indices])

    def embed(
        self,
        video: str | Path | np.ndarray | torch.Tensor,
        pooled: bool = False,
        batch_size: int = 8,
        window: int | None = None,
        frame_step: int | None = None,
        stride: int | None = None,
    ) -> torch.Tensor:
        """Features of a video or of ready clips.

        Args:
            video: one of
                - a path (video file, frame folder, TIFF stack), decoded here;
                - uint8 frames [T, H, W, C] (numpy or torch; C = 1 or 3);
                - normalised float clips [B, C, T, H, W] (or one clip [C, T, H, W]), used as given
                  (other sizes than the model's work: positions are interpolated).
                Paths and uint8 frames are resized (short side, centre crop) and normalised, then
                cut into sliding windows (see `window_indices`).
            pooled: average over tokens: [.., D] instead of [.., N, D].
            batch_size: clips per forward pass.
            window: frames per window (default: the model's num_frames; a multiple of the tubelet).
            frame_step: source frames between window frames (default: the run's data.frame_step).
            stride: source frames between window starts (default: window * frame_step, no overlap).

        Returns:
            float32 on the CPU: [W, N, D] (or [W, D]) for a video, one row per window in time
            order; [B, N, D] (or [B, D]) for float clips.
        """
        if isinstance(video, torch.Tensor) and video.is_floating_point():
            clips = video.unsqueeze(0) if video.ndim == 4 else video
            if clips.ndim != 5:
                raise ValueError(f"float clips must be [B, C, T, H, W] or [C, T, H, W], got {tuple(video.shape)}")
            batches: Iterator[torch.Tensor] = iter(clips.split(batch_size))
        else:
            windows = (clip for _, clip in self.iter_clips(video, window, frame_step, stride, chunk=batch_size))
            batches = (torch.stack(group) for group in _groups(windows, batch_size))
        outputs = [self._features(batch, pooled) for batch in batches]
        return torch.cat(outputs)

    def _features(self, clips: torch.Tensor, pooled: bool) -> torch.Tensor:
        features = self(clips)  # [B, N, D]
        return (features.mean(dim=1) if pooled else features).cpu()


def _groups(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _as_uint8_video(video: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    array = video if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.dtype not in (np.uint8, torch.uint8) or array.ndim not in (3, 4):
        raise ValueError(
            f"expected a path, uint8 frames [T, H, W, C] or normalised float clips [B, C, T, H, W]; "
            f"got {array.dtype} {tuple(array.shape)}"
        )
    return array
