"""3D rotary position embedding (RoPE) as V-JEPA 2 computes it (facebookresearch/vjepa2 `RoPEAttention`).

Shapes: B batch, h heads, K tokens in the sequence, d head width, s = `axis_dim(d)` channels per axis.

What the official code does, and so what this module does:
- Each head's channels are cut into [time s | height s | width s | rest], s = 2 * ((d // 3) // 2)
  (d=64: 20/20/20 and 4 channels left unrotated; d=88: 28/28/28 and 4 unrotated). Queries and keys
  are rotated; values are not.
- Positions are token indices decomposed on a (T', H', W') grid: t = n // (H'W'), h = (n mod H'W') // W',
  w = n mod W' (integers; no interpolation table, so any clip size works).
- Within an axis, frequencies are omega_i = 10000^(-i / (s/2)), i < s/2, and channel pairs (2j, 2j+1)
  are rotated as (x_{2j}, x_{2j+1}) -> (x_{2j} cos - x_{2j+1} sin, x_{2j+1} cos + x_{2j} sin). The quirk kept
  for weight compatibility: the cos/sin rows are *tiled* ([omega_0..omega_{s/2-1}, omega_0..omega_{s/2-1}],
  `repeat`), not interleaved, so channel c uses omega_{c mod s/2} and the two members of a pair use
  different frequencies (the rotation is not orthogonal). Released V-JEPA 2 weights were trained so.

One difference, on purpose: angles are computed in float32 and cast to the activations' dtype, where
the official code builds them in the activations' dtype (bf16 under autocast). In fp32 the two agree.
"""

from __future__ import annotations

import torch

RoPETable = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [B or 1, 1, K, 3s]


def axis_dim(head_dim: int) -> int:
    """Channels per rotated axis for a head width: 2 * ((head_dim // 3) // 2) (official `d_dim`)."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(idx: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token indices [..., K] on a (T', H', W') grid -> (time, row, column) indices, each [..., K]."""
    _, height, width = grid
    per_frame = height * width
    frame = idx // per_frame
    row = (idx - frame * per_frame) // width
    col = idx - frame * per_frame - row * width
    return frame, row, col


def _axis_angles(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Positions [..., K] -> angles [..., K, dim] with the official tiled frequency layout."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32, device=pos.device) / half)  # [s/2]
    angles = pos.to(torch.float32)[..., None] * omega  # [..., K, s/2]
    return torch.cat([angles, angles], dim=-1)  # tiled, not interleaved: the official `repeat`


def rope_table(idx: torch.Tensor, grid: tuple[int, int, int], head_dim: int, dtype: torch.dtype) -> RoPETable:
    """cos/sin for tokens at grid indices, computed once and shared by every block.

    Args:
        idx: LongTensor [K] (all samples alike) or [B, K] of token indices in the (T', H', W') grid.
        grid: the grid the indices are decomposed on.
        head_dim: channels per attention head.
        dtype: dtype of the queries/keys the table will multiply.

    Returns:
        (cos, sin), each [1, 1, K, 3s] or [B, 1, K, 3s] (s = `axis_dim(head_dim)`).
    """
    dim = axis_dim(head_dim)
    angles = torch.cat([_axis_angles(p, dim) for p in grid_positions(idx, grid)], dim=-1)  # [.., K, 3s]
    angles = angles[None, None] if angles.dim() == 2 else angles[:, None]  # [B or 1, 1, K, 3s]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x_0, x_1, x_2, x_3, ...) -> (-x_1, x_0, -x_3, x_2, ...) along the last dimension."""
    first, second = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-second, first), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, table: RoPETable) -> torch.Tensor:
    """Rotate queries or keys: x [B, h, K, d] -> [B, h, K, d]; channels past 3s pass unchanged."""
    cos, sin = (t.to(x.dtype) for t in table)  # no-op unless autocast made q/k another dtype
    rotated = cos.shape[-1]
    head, rest = x[..., :rotated], x[..., rotated:]
    # the three axes' pairs never straddle an axis boundary (s is even), so one rotation covers all
    return torch.cat([head * cos + rotate_pairs(head) * sin, rest], dim=-1)
