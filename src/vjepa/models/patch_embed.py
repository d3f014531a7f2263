"""Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch).

Shapes: B batch, C channels, T frames, H/W pixels, N = (T/t)*(H/p)*(W/p) tokens, D width.
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(video: torch.Tensor, tubelet_size: int, patch_size: int) -> torch.Tensor:
    """Cut a clip into flattened tubelets: [B, C, T, H, W] -> [B, N, C*t*p*p], tokens ordered (t, h, w)."""
    b, c, t, h, w = video.shape
    s, p = tubelet_size, patch_size
    x = video.reshape(b, c, t // s, s, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (t // s) * (h // p) * (w // p), c * s * p * p)


def clip_grid(frames: int, height: int, width: int, tubelet_size: int, patch_size: int) -> tuple[int, int, int]:
    """Token grid (T', H', W') of a clip cut into tubelets and patches: the one place this is
    computed (`PatchEmbed3D.grid`, `vjepa.models.factory.token_grid` and `Encoder.grid` call it).

    E.g. 16 frames of 224x224, tubelet 2, patch 16 -> (8, 14, 14), N = 1568 tokens.
    """
    return frames // tubelet_size, height // patch_size, width // patch_size


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, N, D). State-dict key `proj.*` as in the official code.

    Because kernel == stride the convolution is a plain matmul over non-overlapping tubelets; we
    compute it that way (one reshape and one GEMM), which is faster than oneDNN's Conv3d on CPU
    and identical in value.
    """

    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (T', H', W') for a clip of the given size (`clip_grid`)."""
        return clip_grid(frames, height, width, self.tubelet_size, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a clip: [B, C, T, H, W] -> [B, N, D], tokens ordered (t, h, w)."""
        t, h, w = x.shape[2:]
        gt, gh, gw = self.grid(t, h, w)
        if (gt * self.tubelet_size, gh * self.patch_size, gw * self.patch_size) != (t, h, w):
            raise ValueError(
                f"clip {t}x{h}x{w} is not a multiple of the tubelet {self.tubelet_size}x{self.patch_size}"
                f"x{self.patch_size}"
            )
        x = patchify(x, self.tubelet_size, self.patch_size)  # [B, N, C*s*p*p]
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # [D, C*s*p*p]
        return torch.nn.functional.linear(x, weight, self.proj.bias)  # [B, N, D]
