"""Multi-block 3D masking (V-JEPA): hide the union of a few spatio-temporal blocks.

Per batch and generator, ONE block size (t, h, w) is drawn; per sample, `num_blocks` positions are
drawn uniformly over every valid placement, so every grid position can be hidden (no edge bias).
The target is the union of the blocks; the context is the complement. A sample whose context comes
out empty is redrawn (same block size), as in the official sampler.

The causal variant additionally hides every time step from `context_steps` on, so the context lies
only in the first `context_steps` token time steps.

Shapes: B batch, T/H/W token grid (time, height, width), N = T*H*W tokens, n blocks per sample.
"""

from __future__ import annotations

import math

import torch

from vjepa.config import MaskGeneratorConfig

Grid = tuple[int, int, int]
MAX_REDRAWS = 1000  # rounds of redrawing samples with an empty context before giving up


def _uniform(low_high: tuple[float, float], generator: torch.Generator) -> float:
    low, high = low_high
    return low + torch.rand(1, generator=generator).item() * (high - low)


def sample_block_size(spec: MaskGeneratorConfig, grid: Grid, generator: torch.Generator) -> Grid:
    """Draw one block size for a whole batch, as the official sampler does.

    Args:
        spec: the generator's scales and aspect-ratio range.
        grid: (T, H, W) token grid.
        generator: source of randomness (three draws: temporal scale, spatial scale, aspect ratio).

    Returns:
        (t, h, w) block extent in tokens, each at least 1 and at most the grid's extent.
    """
    num_steps, height, width = grid
    t = max(1, int(num_steps * _uniform(spec.temporal_scale, generator)))
    num_spatial = int(height * width * _uniform(spec.spatial_scale, generator))
    aspect = _uniform(spec.aspect_ratio, generator)
    h = round(math.sqrt(num_spatial * aspect))
    w = round(math.sqrt(num_spatial / aspect))
    # the official code clips to the grid; the lower bound of 1 only matters on tiny grids
    return min(t, num_steps), min(max(h, 1), height), min(max(w, 1), width)


def sample_block_starts(
    size: Grid, grid: Grid, num_samples: int, num_blocks: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw block corners uniformly over all placements that fit inside the grid.

    Args:
        size: (t, h, w) block extent.
        grid: (T, H, W) token grid.
        num_samples: B, samples to draw for.
        num_blocks: n, blocks per sample.
        generator: source of randomness.

    Returns:
        LongTensor [B, n, 3] of (start, top, left) corners; start in [0, T-t], top in [0, H-h],
        left in [0, W-w].
    """
    corners = [
        torch.randint(0, extent - block + 1, (num_samples, num_blocks), generator=generator)
        for extent, block in zip(grid, size)
    ]
    return torch.stack(corners, dim=-1)  # [B, n, 3]


def blocks_to_mask(starts: torch.Tensor, size: Grid, grid: Grid) -> torch.Tensor:
    """Rasterise the union of each sample's blocks.

    Args:
        starts: LongTensor [B, n, 3] of (start, top, left) corners.
        size: (t, h, w) block extent, shared by all blocks.
        grid: (T, H, W) token grid.

    Returns:
        BoolTensor [B, T, H, W], True inside any of the sample's blocks.
    """
    inside = []  # per axis: [B, n, extent], True where that coordinate lies inside the block
    for axis, (extent, block) in enumerate(zip(grid, size)):
        coord = torch.arange(extent)[None, None, :]  # [1, 1, extent]
        first = starts[:, :, axis, None]  # [B, n, 1]
        inside.append((coord >= first) & (coord < first + block))
    in_t, in_h, in_w = inside
    blocks = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]  # [B,n,T,H,W]
    return blocks.any(dim=1)


def _draw_hidden(
    size: Grid, grid: Grid, num_samples: int, num_blocks: int, context_steps: int, g: torch.Generator
) -> torch.Tensor:
    """Hidden tokens [B, T, H, W] for `num_samples` fresh samples (may have an empty context)."""
    starts = sample_block_starts(size, grid, num_samples, num_blocks, g)
    hidden = blocks_to_mask(starts, size, grid)
    hidden[:, context_steps:] = True  # causal: no context after the first context_steps steps
    return hidden


def sample_multiblock_mask(
    spec: MaskGeneratorConfig,
    grid: Grid,
    batch_size: int,
    generator: torch.Generator,
    context_steps: int | None = None,
) -> torch.Tensor:
    """Sample one generator's target mask for a batch.

    Args:
        spec: number of blocks, scales and aspect-ratio range.
        grid: (T, H, W) token grid.
        batch_size: B.
        generator: source of randomness; the result is a pure function of its state.
        context_steps: if set, the context is restricted to the first this-many token time steps
            (causal masking); every later token is a target. None: no restriction.

    Returns:
        BoolTensor [B, N] with N = T*H*W, True on target (hidden) tokens, in (t, h, w) order.
        Every row has at least one context and one target token.

    Raises:
        ValueError: if the block size leaves no context possible.
        RuntimeError: if some sample still has an empty context after `MAX_REDRAWS` redraws.
    """
    steps = grid[0] if context_steps is None else max(1, min(context_steps, grid[0]))
    size = sample_block_size(spec, grid, generator)
    if size == tuple(grid):
        raise ValueError(f"mask generator {spec} draws blocks covering the whole grid {grid}")
    hidden = _draw_hidden(size, grid, batch_size, spec.num_blocks, steps, generator)
    for _ in range(MAX_REDRAWS):
        empty = hidden.flatten(1).all(dim=1)  # [B] samples whose context is empty
        if not bool(empty.any()):
            return hidden.flatten(1)  # [B, N]
        hidden[empty] = _draw_hidden(size, grid, int(empty.sum()), spec.num_blocks, steps, generator)
    raise RuntimeError(f"mask generator {spec} left an empty context {MAX_REDRAWS} times on grid {grid}")
