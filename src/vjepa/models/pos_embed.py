"""Fixed sin-cos position tables (pure functions), laid out as the official V-JEPA code does.

Shapes: T' time steps (frames / tubelet), H', W' token rows / columns, D width, N = T'*H'*W'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1D sin-cos table: [M] positions -> [M, dim] (sines then cosines, frequencies 1/10000^(2i/dim))."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """2D table for a grid_size x grid_size grid: [grid_size**2, dim] ([height | width] halves)."""
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1).float()


def sincos_3d(dim: int, grid_size: int, grid_depth: int, uniform_power: bool = True) -> torch.Tensor:
    """3D table for a (grid_depth, grid_size, grid_size) token grid: [N, dim], row-major over (t, h, w).

    Matches the official `get_3d_sincos_pos_embed`: the columns are [time | height | width]; with
    `uniform_power` each axis gets 2*ceil(dim/6) columns and the concatenation is cut to `dim`;
    otherwise time gets dim/2 and height and width dim/4 each.
    """
    t, h, w = torch.meshgrid(
        torch.arange(grid_depth, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        indexing="ij",
    )
    if uniform_power:
        dim_t = dim_h = dim_w = int(math.ceil(dim / 6) * 2)
    else:
        dim_t, dim_h, dim_w = dim // 2, dim // 4, dim // 4
    table = torch.cat([sincos_1d(dim_t, t), sincos_1d(dim_h, h), sincos_1d(dim_w, w)], dim=1)
    return table[:, :dim].float()


def interpolate_3d(table: torch.Tensor, src_grid: tuple[int, int, int], dst_grid: tuple[int, int, int]) -> torch.Tensor:
    """Resample a [.., N, D] table from grid (T', H', W') to another grid by trilinear interpolation."""
    if tuple(src_grid) == tuple(dst_grid):
        return table
    dim = table.shape[-1]
    volume = table.reshape(1, *src_grid, dim).permute(0, 4, 1, 2, 3)  # [1, D, T', H', W']
    volume = F.interpolate(volume, size=dst_grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, dim)  # [1, N', D]
