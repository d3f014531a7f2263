"""Pictures of what a model sees and learned: PCA of patch features, the masks, training curves.

Image grids are composed with numpy and written with Pillow, so their size is exact: every cell
is `cell` x `cell` pixels with `GAP` white pixels between cells. A `.png` output is one grid; a
`.gif` output animates the clip frame by frame. Curves are drawn with matplotlib (PNG, PDF, SVG).
Uses matplotlib and Pillow (default dependencies of vjepa).

Shape legend: T frames, S model input side, T'/H'/W' token grid, N = T'*H'*W' tokens, D width.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vjepa.config import Config

GAP = 2  # white pixels between grid cells
TARGET_COLOUR = np.array([230, 40, 40], np.float32)  # masks: tokens the predictor must predict
UNUSED_COLOUR = np.array([128, 128, 128], np.float32)  # masks: tokens in neither set (truncate collation)
CURVES = ("loss", "lr", "target_std", "effective_rank")
GIF_FRAME_MS = 200


# ---------------------------------------------------------------------------------------------
# building blocks


def pca_colours(features: torch.Tensor, grid: tuple[int, int, int]) -> np.ndarray:
    """The first three principal components of token features, as RGB over the token grid.

    Each component is projected, its sign fixed (positive skew, so colours do not flip between
    runs), and stretched so its 1st..99th percentiles span [0, 1].

    Args:
        features: [N, D] features of one clip, tokens in (t, h, w) order.
        grid: (T', H', W') with T'*H'*W' = N.

    Returns:
        float32 [T', H', W', 3] in [0, 1].
    """
    x = features.detach().float().cpu()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(x, full_matrices=False)  # right [min(N, D), D]
    projected = x @ right[:3].T  # [N, <=3]
    projected = torch.cat([projected, projected.new_zeros(len(x), 3 - projected.shape[1])], dim=1)
    projected = projected * torch.where((projected**3).sum(dim=0) < 0, -1.0, 1.0)
    low, high = torch.quantile(projected, 0.01, dim=0), torch.quantile(projected, 0.99, dim=0)
    scaled = ((projected - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
    return scaled.reshape(*grid, 3).numpy()


def _cell(image: np.ndarray, cell: int, smooth: bool) -> np.ndarray:
    """Resize one uint8 (or [0, 1] float) image [h, w, 3] to [cell, cell, 3] uint8."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image).resize((cell, cell), resample))


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = GAP) -> np.ndarray:
    """Lay equal-sized uint8 images [h, w, 3] out in a grid with `gap` white pixels between them.

    Returns:
        uint8 [rows*h + (rows-1)*gap, cols*w + (cols-1)*gap, 3] (short rows are padded white).
    """
    height, width = rows[0][0].shape[:2]
    cols = max(len(row) for row in rows)
    out = np.full((len(rows) * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            out[top : top + height, left : left + width] = image
    return out


def save_images(path: str | Path, images: Sequence[np.ndarray], frame_ms: int = GIF_FRAME_MS) -> Path:
    """Write one uint8 image [h, w, 3] (.png, .jpg) or several as an animation (.gif, looping)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.fromarray(image) for image in images]
    if path.suffix.lower() == ".gif":
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    elif len(pictures) == 1:
        pictures[0].save(path)
    else:
        raise ValueError(f"{path}: several frames need a .gif output")
    return path


def crop_frames(frames: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """Resize the short side to `size` and keep the centre crop (as `Encoder.preprocess` does).

    uint8 [T, H, W, C] -> uint8 [T, size, size, 3].
    """
    from vjepa.data.transforms import EvalTransform

    identity = EvalTransform(size, resize_ratio=1.0, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    clip = identity(torch.as_tensor(np.asarray(frames)))[0]  # [3, T, size, size], values 0..255
    return clip.permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def read_clip(video: str | Path | np.ndarray, num_frames: int, frame_step: int, start: int = 0) -> np.ndarray:
    """The window of a video starting at (or after) frame `start`: uint8 [num_frames, H, W, 3].

    Windows are those of `vjepa.encoder.window_indices` (the last one if `start` is past them all).
    """
    from vjepa.encoder import window_indices

    if isinstance(video, (str, Path)):
        from vjepa.data.decode import probe_video, read_frames

        windows = window_indices(probe_video(video).num_frames, num_frames, frame_step)
        chosen = next((w for w in windows if w[0] >= start), windows[-1])
        return read_frames(video, chosen)
    frames = np.asarray(video)
    windows = window_indices(len(frames), num_frames, frame_step)
    return frames[next((w for w in windows if w[0] >= start), windows[-1])]


# ---------------------------------------------------------------------------------------------
# the three pictures


def pca_figure(
    encoder,
    video: str | Path | np.ndarray,
    output: str | Path,
    start: int = 0,
    frame_step: int | None = None,
    cell: int = 128,
) -> Path:
    """Input frames next to the first 3 PCA components of their patch features, as colours.

    PNG: two rows of T' cells (one per token time step): the clip's frame (the first of each
    tubelet) above its PCA map. GIF: one frame per clip frame, [input | PCA map] side by side.
    Tokens with similar features get similar colours, so objects and background separate and
    parts keep their colour as they move when the encoder has learned something.

    Args:
        encoder: a `vjepa.encoder.Encoder`.
        video: a path or uint8 frames [T, H, W, C]; one window of it is shown.
        output: .png or .gif.
        start: first frame of the window to show (the first window starting at or after it).
        frame_step: source frames between clip frames (default: the encoder's).
        cell: pixels per cell side.

    Returns:
        The written path.
    """
    raw = read_clip(video, encoder.num_frames, frame_step or encoder.frame_step, start)
    frames = crop_frames(raw, encoder.img_size)  # [T, S, S, 3], what the model sees
    features = encoder(encoder.preprocess(raw)[None])[0]  # [N, D]
    grid = encoder.grid(len(frames))
    colours = pca_colours(features, grid)  # [T', H', W', 3]
    tubelet = len(frames) // grid[0]
    if Path(output).suffix.lower() == ".gif":
        images = [tile([[_cell(frame, cell, True), _cell(colours[t // tubelet], cell, False)]])
                  for t, frame in enumerate(frames)]
        return save_images(output, images)
    top = [_cell(frames[t * tubelet], cell, True) for t in range(grid[0])]
    bottom = [_cell(colours[t], cell, False) for t in range(grid[0])]
    return save_images(output, [tile([top, bottom])])


def token_mask_pixels(mask: torch.Tensor, grid: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    """A token mask [N] over `grid` blown up to pixels: bool [T, S, S, 1] for frames of `size` (T, S, S)."""
    cube = mask.reshape(grid).numpy()
    for axis, times in enumerate(s // g for s, g in zip(size, grid)):
        cube = np.repeat(cube, times, axis=axis)
    return cube[..., None]


def overlay_masks(
    frames: np.ndarray, target: torch.Tensor, context: torch.Tensor, grid: tuple[int, int, int]
) -> np.ndarray:
    """Tint target tokens red and tokens in neither set grey; context tokens are left as they are.

    Args:
        frames: uint8 [T, S, S, 3].
        target, context: BoolTensor [N] over the token grid.
        grid: (T', H', W').

    Returns:
        uint8 [T, S, S, 3].
    """
    size = frames.shape[:3]
    target_px, unused_px = token_mask_pixels(target, grid, size), token_mask_pixels(~(target | context), grid, size)
    out = frames.astype(np.float32)
    out = np.where(target_px, 0.45 * out + 0.55 * TARGET_COLOUR, out)
    out = np.where(unused_px, 0.3 * out + 0.7 * UNUSED_COLOUR, out)
    return out.round().astype(np.uint8)


def masks_figure(
    config: Config,
    output: str | Path,
    video: str | Path | np.ndarray | None = None,
    seed: int = 0,
    cell: int = 128,
) -> Path:
    """The context and target tokens of one sampled mask per generator, drawn over a clip.

    Masks come from `vjepa.masks.sample_masks` with the run's `MaskConfig`. Red: target tokens
    (hidden from the context encoder, predicted); untouched: context tokens; grey: in neither set.
    PNG: one row per mask generator, one column per token time step. GIF: one frame per clip
    frame, generators side by side.

    Args:
        config: the run's `Config` (model sizes, data sampling, masks).
        output: .png or .gif.
        video: a path or uint8 frames; default: a clip of the built-in synthetic set.
        seed: seeds the mask sampler (and picks the synthetic clip).
        cell: pixels per cell side.

    Returns:
        The written path.
    """
    from vjepa.masks import indices_to_mask, sample_masks

    m, data = config.model, config.data
    if video is None:
        from vjepa.data.synthetic import render_clip

        video = render_clip(data.synthetic, "train", seed)[0]
    frames = crop_frames(read_clip(video, data.num_frames, data.frame_step), data.crop_size)
    grid = (data.num_frames // m.tubelet_size, data.crop_size // m.patch_size, data.crop_size // m.patch_size)
    num_tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator().manual_seed(seed)
    batches = sample_masks(config.mask, grid, 1, generator, tubelet_size=m.tubelet_size)
    overlays = []
    for batch in batches:
        target = indices_to_mask(batch.target_idx, batch.target_valid, num_tokens)[0]
        context = indices_to_mask(batch.context_idx, batch.context_valid, num_tokens)[0]
        overlays.append(overlay_masks(frames, target, context, grid))  # [T, S, S, 3]
    if Path(output).suffix.lower() == ".gif":
        images = [tile([[_cell(o[t], cell, True) for o in overlays]]) for t in range(len(frames))]
        return save_images(output, images)
    rows = [[_cell(o[t * m.tubelet_size], cell, True) for t in range(grid[0])] for o in overlays]
    return save_images(output, [tile(rows)])


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run directory's metrics.jsonl (a torn last line is ignored)."""
    path = Path(run_dir) / "metrics.jsonl" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl at {path}")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial line
    return records


def curves_figure(
    run_dir: str | Path,
    output: str | Path,
    metrics: Sequence[str] = CURVES,
    size: tuple[float, float] = (10.0, 6.0),
    dpi: int = 100,
) -> Path:
    """Training curves (loss, learning rate, target std, effective rank) against the step.

    Target std and effective rank are the collapse monitor: both falling towards zero means the
    encoder is collapsing to a constant. The picture is exactly size x dpi pixels.

    Args:
        run_dir: a run directory (or its metrics.jsonl).
        output: image path (.png, .pdf, .svg).
        metrics: record keys to plot, one panel each.
        size: figure size, inches.
        dpi: pixels per inch.

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure

    records = read_metrics(run_dir)
    cols = 2 if len(metrics) > 1 else 1
    rows = -(-len(metrics) // cols)
    figure = Figure(figsize=size, dpi=dpi, layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, metrics):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
        ax.set_title(key)
        ax.set_xlabel("step")
        if not points:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 30 else None, linewidth=1)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    figure.suptitle(Path(run_dir).name)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
