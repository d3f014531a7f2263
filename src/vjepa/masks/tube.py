"""Random tube masking: hide a random subset of spatial positions through all time.

As in the official `random_tube.py`, ``int(H*W*(1 - ratio))`` spatial positions are kept per sample
(chosen uniformly at random) and the rest are hidden at every time step.

Shapes: B batch, T/H/W token grid (time, height, width), N = T*H*W tokens.
"""

from __future__ import annotations

import torch

Grid = tuple[int, int, int]


def sample_tube_mask(ratio: float, grid: Grid, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Sample a tube target mask for a batch.

    Args:
        ratio: fraction of spatial positions to hide through all time, e.g. 0.9.
        grid: (T, H, W) token grid.
        batch_size: B.
        generator: source of randomness; the result is a pure function of its state.

    Returns:
        BoolTensor [B, N] with N = T*H*W, True on target (hidden) tokens, in (t, h, w) order. Every
        row hides the same number of tokens.

    Raises:
        ValueError: if `ratio` keeps no spatial position or hides none.
    """
    num_steps, height, width = grid
    num_spatial = height * width
    num_keep = int(num_spatial * (1.0 - ratio))
    if not 0 < num_keep < num_spatial:
        raise ValueError(f"tube ratio {ratio} keeps {num_keep} of {num_spatial} positions; need 1 to N-1")
    # a random permutation per row: rank of each position under i.i.d. uniform scores
    scores = torch.rand(batch_size, num_spatial, generator=generator)  # [B, H*W]
    rank = scores.argsort(dim=1).argsort(dim=1)  # [B, H*W]
    hidden = rank >= num_keep  # [B, H*W]
    return hidden[:, None, :].expand(batch_size, num_steps, num_spatial).reshape(batch_size, -1)  # [B, N]
