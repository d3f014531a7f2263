"""The built-in procedural video set: textured sprites whose motion shows only over time.

Each clip shows 1..`max_sprites` sprites of one shape (the `appearance` label) over a textured
background, all moving the same way (the `motion` label). The two labels are drawn independently,
and each run of 8 (motion) or 6 (appearance) consecutive clips holds every class once.

No single frame reveals the motion class. At every frame index, each sprite's position,
orientation and size have the same distribution whatever the motion class:
- position: uniform on the torus at the start; translation wraps around the frame edges, so it
  stays uniform (sprites are drawn toroidally, for every class);
- orientation: uniform at the start, so rotation keeps it uniform (sprite textures carry a
  colour ramp, so rotation is visible even for circles and rings);
- size: the log-diameter is uniform on [log smallest, log largest); grow/shrink move it as a
  sawtooth that wraps inside that range (as translation wraps inside the frame), so it stays
  uniform; every other class keeps a constant size drawn from the same law.
Colours, textures, backgrounds and sprite counts are drawn independently of the motion class.

Clip `i` of split `s` depends only on (`cfg.seed`, `s`, `i`), so any worker can render any clip.

Shape legend: T frames, H = W = `cfg.size` pixels, C = 3 colour channels, P patch side (pixels)
around one sprite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vjepa.config import SyntheticConfig

MOTION_CLASSES: list[str] = [
    "translate_left",
    "translate_right",
    "translate_up",
    "translate_down",
    "rotate_cw",  # clockwise as seen on screen (image y points down)
    "rotate_ccw",
    "grow",
    "shrink",
]
APPEARANCE_CLASSES: list[str] = ["circle", "square", "triangle", "cross", "star", "ring"]
# MOTION_HFLIP[m] is the motion label of clip m after a horizontal flip (left <-> right, cw <-> ccw)
MOTION_HFLIP: list[int] = [1, 0, 2, 3, 5, 4, 6, 7]
SPLITS: tuple[str, ...] = ("train", "val", "test")

# per motion class: (x direction, y direction, spin, growth), each in {-1, 0, 1}
_DYNAMICS: dict[str, tuple[int, int, int, int]] = {
    "translate_left": (-1, 0, 0, 0),
    "translate_right": (1, 0, 0, 0),
    "translate_up": (0, -1, 0, 0),
    "translate_down": (0, 1, 0, 0),
    "rotate_cw": (0, 0, 1, 0),
    "rotate_ccw": (0, 0, -1, 0),
    "grow": (0, 0, 0, 1),
    "shrink": (0, 0, 0, -1),
}
_STREAMS = {"render": 0, "motion": 1, "appearance": 2}
# motion type -> its two classes, ordered (negative, positive) as the signs in _DYNAMICS
MOTION_TYPES: dict[str, tuple[str, str]] = {
    "horizontal": ("translate_left", "translate_right"),
    "vertical": ("translate_up", "translate_down"),
    "rotation": ("rotate_ccw", "rotate_cw"),
    "scale": ("shrink", "grow"),
}


def motion_type(name: str) -> str:
    """The motion type (a key of MOTION_TYPES) of a motion class name, e.g. rotate_cw -> rotation."""
    for kind, pair in MOTION_TYPES.items():
        if name in pair:
            return kind
    raise ValueError(f"unknown motion class {name!r}; choose one of {', '.join(MOTION_CLASSES)}")


# ---------------------------------------------------------------------------------------------
# seeding and labels


def split_size(cfg: SyntheticConfig, split: str) -> int:
    """Number of clips in `split` (train / val / test)."""
    _split_id(split)
    return {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def _rng(cfg: SyntheticConfig, split: str, stream: str, index: int) -> np.random.Generator:
    """An independent generator for one (seed, split, stream, index)."""
    key = [cfg.seed % 2**63, _split_id(split), _STREAMS[stream], index]
    return np.random.default_rng(key)


def _block_labels(cfg: SyntheticConfig, split: str, stream: str, num_clips: int) -> np.ndarray:
    """Labels of clips 0..num_clips-1: a fresh permutation of the classes per block of clips."""
    num_classes = len(MOTION_CLASSES if stream == "motion" else APPEARANCE_CLASSES)
    num_blocks = -(-num_clips // num_classes)
    blocks = [_rng(cfg, split, stream, b).permutation(num_classes) for b in range(num_blocks)]
    return np.concatenate(blocks or [np.zeros(0, int)])[:num_clips].astype(np.int64)


def clip_labels(cfg: SyntheticConfig, split: str, index: int) -> tuple[int, int]:
    """(motion, appearance) labels of one clip, without rendering it."""
    labels = []
    for stream, classes in (("motion", MOTION_CLASSES), ("appearance", APPEARANCE_CLASSES)):
        block, slot = divmod(index, len(classes))
        labels.append(int(_rng(cfg, split, stream, block).permutation(len(classes))[slot]))
    return labels[0], labels[1]


def split_labels(cfg: SyntheticConfig, split: str) -> dict[str, np.ndarray]:
    """All labels of a split, without rendering: dict(motion=[N], appearance=[N]) int64 arrays."""
    num_clips = split_size(cfg, split)
    return {stream: _block_labels(cfg, split, stream, num_clips) for stream in ("motion", "appearance")}


# ---------------------------------------------------------------------------------------------
# sprite dynamics


@dataclass
class _Sprite:
    """One sprite's per-frame state and look. Arrays are [T]; colours are [2, 3] in [0, 1]."""

    x: np.ndarray  # centre column, pixels (wraps modulo the frame size)
    y: np.ndarray  # centre row, pixels
    angle: np.ndarray  # radians; the sprite's local u axis points along (cos, sin) in (x, y)
    diameter: np.ndarray  # pixels
    colours: np.ndarray  # ramp end colours along the local u axis
    pattern: int  # 0 plain ramp, 1 stripes, 2 checker
    frequency: float  # pattern frequency, radians per sprite radius
    phase: float


def _trajectory(rng: np.random.Generator, cfg: SyntheticConfig, motion: int) -> tuple[np.ndarray, ...]:
    """Per-frame (x, y, angle, diameter), each [T], for one sprite of motion class `motion`.

    Every random number is drawn for every class, in the same order, so only the dynamics differ.
    """
    size, t = cfg.size, np.arange(cfg.num_frames, dtype=np.float64)
    x0, y0 = rng.uniform(0.0, size, 2)
    angle0 = rng.uniform(0.0, 2 * np.pi)
    log_low, log_high = np.log(np.asarray(cfg.sprite_size) * size)
    log_phase = rng.uniform(0.0, log_high - log_low)
    speed = rng.uniform(*cfg.translate_speed) * size / 64
    spin_speed = rng.uniform(*cfg.rotate_speed)
    growth_speed = rng.uniform(*cfg.scale_speed)
    move_x, move_y, spin, growth = _DYNAMICS[MOTION_CLASSES[motion]]
    x = (x0 + move_x * speed * t) % size
    y = (y0 + move_y * speed * t) % size
    angle = angle0 + spin * spin_speed * t
    # sawtooth in log-diameter: wraps inside [log_low, log_high) so every frame stays log-uniform
    log_diameter = log_low + (log_phase + growth * growth_speed * t) % (log_high - log_low)
    return x, y, angle, np.exp(log_diameter)


def _sprite_colours(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Two ramp colours [2, 3]: in every channel, both lie away from the background colour.

    `background` [3] lies in [0.1, 0.4] or [0.6, 0.9] per channel, so neither needs clipping.
    """
    away = np.where(background < 0.5, 1.0, -1.0)
    near = background + away * rng.uniform(0.2, 0.3, 3)
    far = background + away * rng.uniform(0.55, 0.6, 3)
    return np.stack([near, far])[rng.permutation(2)]


def _sample_sprite(
    rng: np.random.Generator, cfg: SyntheticConfig, motion: int, background: np.ndarray
) -> _Sprite:
    x, y, angle, diameter = _trajectory(rng, cfg, motion)
    colours = _sprite_colours(rng, background)
    pattern = int(rng.integers(3))
    frequency, phase = rng.uniform(2.0, 5.0), rng.uniform(0.0, 2 * np.pi)
    return _Sprite(x, y, angle, diameter, colours, pattern, frequency, phase)


# ---------------------------------------------------------------------------------------------
# drawing


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape's outline, in sprite radii (negative inside).

    Args:
        shape: one of APPEARANCE_CLASSES; every shape fits in the unit disc.
        u, v: [...] local coordinates in sprite radii.
    """
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.72
    if shape == "triangle":  # equilateral, circumradius 1, a vertex along +u
        return np.maximum(np.maximum(-u, 0.5 * u + 0.866 * v), 0.5 * u - 0.866 * v) - 0.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 0.95, av - 0.32), np.maximum(au - 0.32, av - 0.95))
    radius = np.sqrt(u * u + v * v)
    if shape == "ring":
        return np.abs(radius - 0.7) - 0.3
    if shape == "star":  # five points: outline radius follows a triangle wave in angle
        turn = (np.arctan2(v, u) * (5 / (2 * np.pi))) % 1.0
        outline = 0.42 + 0.58 * np.abs(2 * turn - 1.0)
        return 0.6 * (radius - outline)  # 0.6: radial distance overstates the true distance
    raise ValueError(f"unknown shape {shape!r}")


def _texture(sprite: _Sprite, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sprite colour [T, P, P, 3]: a ramp along u (breaks rotational symmetry) times a pattern."""
    mix = np.clip(0.5 + 0.5 * u, 0.0, 1.0)
    if sprite.pattern == 1:
        mix = 0.6 * mix + 0.2 + 0.2 * np.sin(sprite.frequency * v + sprite.phase)
    elif sprite.pattern == 2:
        mix = 0.6 * mix + 0.2 + 0.2 * np.sin(sprite.frequency * u) * np.sin(sprite.frequency * v)
    near, far = sprite.colours.astype(np.float32)
    return near + mix[..., None] * (far - near)


def _patch_coordinates(sprite: _Sprite, half: int) -> tuple[np.ndarray, ...]:
    """Pixel indices and local coordinates of the (2*half+1)^2 patch around each frame's sprite.

    Returns:
        rows, cols: [T, P] integer pixel indices (not yet wrapped).
        u, v: [T, P, P] float32 local coordinates in sprite radii.
        radius: [T, 1, 1] sprite radius, pixels.
    """
    offsets = np.arange(-half, half + 1)
    col0, row0 = np.floor(sprite.x).astype(np.int64), np.floor(sprite.y).astype(np.int64)
    # pixel j covers [j, j + 1): its centre lies 0.5 right of j
    dx = (offsets + 0.5 - (sprite.x - col0)[:, None]).astype(np.float32)[:, None, :]  # [T, 1, P]
    dy = (offsets + 0.5 - (sprite.y - row0)[:, None]).astype(np.float32)[:, :, None]  # [T, P, 1]
    radius = (sprite.diameter / 2).astype(np.float32)[:, None, None]
    cos = (np.cos(sprite.angle).astype(np.float32)[:, None, None]) / radius
    sin = (np.sin(sprite.angle).astype(np.float32)[:, None, None]) / radius
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # [T, P, P]
    return row0[:, None] + offsets, col0[:, None] + offsets, u, v, radius


def _draw_sprite(
    frames: np.ndarray, sprite: _Sprite, shape: str, half: int, mask: np.ndarray | None
) -> None:
    """Alpha-composite one sprite over uint8 `frames` [T, H, W, 3] in place, wrapping at the edges.

    `mask` [T, H, W], if given, accumulates the sprite coverage (max over sprites).
    """
    num_frames, size = frames.shape[:2]
    rows, cols, u, v, radius = _patch_coordinates(sprite, half)
    alpha = np.clip(0.5 - _shape_distance(shape, u, v) * radius, 0.0, 1.0)  # 1-pixel antialiasing
    colour = _texture(sprite, u, v) * 255.0
    # flat pixel index of every patch position: [T, P, P]
    frame_start = (np.arange(num_frames) * size * size)[:, None, None]
    where = frame_start + (rows % size)[:, :, None] * size + (cols % size)[:, None, :]
    pixels = frames.reshape(-1, 3)  # [T * H * W, 3] view
    under = pixels[where].astype(np.float32)  # [T, P, P, 3]
    pixels[where] = (under + alpha[..., None] * (colour - under) + 0.5).astype(np.uint8)
    if mask is not None:
        flat_mask = mask.reshape(-1)
        flat_mask[where] = np.maximum(flat_mask[where], alpha)


@functools.lru_cache(maxsize=32)
def _upsample_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] linear interpolation weights from a coarse grid to `size` pixel centres."""
    position = np.clip((np.arange(size) + 0.5) / size * grid - 0.5, 0.0, grid - 1.0)
    low = np.minimum(np.floor(position).astype(int), grid - 2)
    weight = position - low
    matrix = np.zeros((size, grid), np.float32)
    matrix[np.arange(size), low] = 1.0 - weight
    matrix[np.arange(size), low + 1] = weight
    return matrix


def _background_pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A [H, W] texture in about [-1, 1]: smooth noise, stripes or plaid."""
    kind = int(rng.integers(3))
    grid = int(rng.integers(3, 9))
    coarse = rng.uniform(-1.0, 1.0, (grid, grid)).astype(np.float32)
    angles, frequencies, phases = rng.uniform(0, np.pi, 2), rng.uniform(1.5, 5.0, 2), rng.uniform(0, 6.3, 2)
    if kind == 0:
        matrix = _upsample_matrix(size, grid)
        return matrix @ coarse @ matrix.T
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size
    waves = [
        np.sin(2 * np.pi * f * (pixel[None, :] * np.cos(a) + pixel[:, None] * np.sin(a)) + p)
        for a, f, p in zip(angles, frequencies, phases)
    ]
    return waves[0] if kind == 1 else 0.5 * (waves[0] + waves[1])


def _background(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour [3] and image [H, W, 3] float32 of a moderately textured background."""
    colour = rng.uniform(0.1, 0.4, 3) + 0.5 * rng.integers(2, size=3)  # dark or light per channel
    tint = rng.uniform(0.4, 1.0, 3)
    pattern = _background_pattern(rng, cfg.size)
    image = colour + (cfg.background_contrast * pattern[..., None]) * tint
    return colour, image.astype(np.float32)


def _scene(cfg: SyntheticConfig, split: str, index: int) -> tuple[int, int, np.ndarray, list[_Sprite]]:
    """Labels, background image [H, W, 3] float32 and sprites of one clip (nothing drawn yet)."""
    if not 0 <= index < split_size(cfg, split):
        raise IndexError(f"clip {index} out of range for split {split!r} of {split_size(cfg, split)}")
    motion, appearance = clip_labels(cfg, split, index)
    rng = _rng(cfg, split, "render", index)
    colour, image = _background(rng, cfg)
    num_sprites = int(rng.integers(1, cfg.max_sprites + 1))
    sprites = [_sample_sprite(rng, cfg, motion, colour) for _ in range(num_sprites)]
    return motion, appearance, image, sprites


def sprite_states(cfg: SyntheticConfig, split: str, index: int) -> list[dict[str, np.ndarray]]:
    """Ground truth of clip `index`: per sprite, its per-frame state as drawn by `render_clip`.

    Returns:
        one dict per sprite with x, y (centre column / row, pixels, wrapped into the frame), angle
        (radians; increasing is clockwise on screen) and diameter (pixels), each float64 [T].
    """
    _, _, _, sprites = _scene(cfg, split, index)
    return [{"x": s.x, "y": s.y, "angle": s.angle, "diameter": s.diameter} for s in sprites]


def _render(
    cfg: SyntheticConfig, split: str, index: int, with_mask: bool
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Frames [T, H, W, 3] uint8, sprite mask [T, H, W] float32 (or None), motion, appearance."""
    motion, appearance, image, sprites = _scene(cfg, split, index)
    background = np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    frames = np.repeat(background[None], cfg.num_frames, axis=0)  # [T, H, W, 3] uint8
    mask = np.zeros(frames.shape[:3], np.float32) if with_mask else None
    half = min(int(np.ceil(cfg.sprite_size[1] * cfg.size / 2)) + 1, (cfg.size - 1) // 2)
    for sprite in sprites:
        _draw_sprite(frames, sprite, APPEARANCE_CLASSES[appearance], half, mask)
    return frames, mask, motion, appearance


def render_clip(cfg: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, int, int]:
    """Render clip `index` of `split`.

    Returns:
        frames: [T, H, W, 3] uint8.
        motion: index into MOTION_CLASSES.
        appearance: index into APPEARANCE_CLASSES.
    """
    frames, _, motion, appearance = _render(cfg, split, index, with_mask=False)
    return frames, motion, appearance


def render_clip_with_mask(
    cfg: SyntheticConfig, split: str, index: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Like `render_clip`, plus the sprites' coverage [T, H, W] float32 in [0, 1]."""
    frames, mask, motion, appearance = _render(cfg, split, index, with_mask=True)
    assert mask is not None
    return frames, mask, motion, appearance


# ---------------------------------------------------------------------------------------------
# dataset and export


class SyntheticVideoDataset(torch.utils.data.Dataset):
    """Clips of the procedural set, rendered on demand (and kept in memory if `cache`).

    Each item is a dict: `video` (transform(uint8 [T, H, W, C]) or, without a transform, float
    [C, T, H, W] in [0, 1]), `label` (= `motion`), `motion`, `appearance`, `index`.
    """

    def __init__(
        self,
        cfg: SyntheticConfig,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: bool = True,
    ) -> None:
        self.cfg, self.split, self.transform, self.cache = cfg, split, transform, cache
        self._num_clips = split_size(cfg, split)
        self._clips: dict[int, tuple[np.ndarray, int, int]] = {}

    def __len__(self) -> int:
        return self._num_clips

    def clip(self, index: int) -> tuple[np.ndarray, int, int]:
        """(frames [T, H, W, 3] uint8, motion, appearance) of one clip, from the cache if there."""
        if index in self._clips:
            return self._clips[index]
        item = render_clip(self.cfg, self.split, index)
        if self.cache:
            self._clips[index] = item
        return item

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        frames, motion, appearance = self.clip(index)
        video = torch.from_numpy(frames)  # [T, H, W, C] uint8
        if self.transform is not None:
            video = self.transform(video)
        else:
            video = video.permute(3, 0, 1, 2).float() / 255.0  # [C, T, H, W]
        return {"video": video, "label": motion, "motion": motion, "appearance": appearance, "index": index}

    def labels(self, split: str | None = None) -> dict[str, np.ndarray]:
        """dict(motion=[N], appearance=[N]) of this dataset's split (or `split`), without rendering."""
        return split_labels(self.cfg, split or self.split)


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, crf: int = 18) -> None:
    """Encode frames [T, H, W, 3] (or [T, H, W] grey) uint8 as an H.264 mp4 with PyAV.

    Odd heights/widths are padded by one edge pixel (yuv420p needs even sizes).
    """
    import av  # imported here: only export and real-video tests need it

    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    frames = np.repeat(frames, 3 // frames.shape[-1], axis=-1)
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    frames = np.ascontiguousarray(np.pad(frames, pad, mode="edge"))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
