"""Mask samplers: pure functions of (generator, grid, config) -> context and target token indices.

Token indices address the flattened (t, h, w) token grid: ``idx = t*H*W + h*W + w``.

Shapes: B batch, T/H/W token grid (time, height, width), N = T*H*W tokens, K selected tokens.

Example:
    >>> import torch
    >>> from vjepa.config import MaskConfig
    >>> from vjepa.masks import sample_masks
    >>> g = torch.Generator().manual_seed(0)
    >>> short, long = sample_masks(MaskConfig(), (8, 14, 14), batch_size=4, generator=g)
    >>> short.context_idx.shape[0], short.context_valid.shape == short.context_idx.shape
    (4, True)
"""

from vjepa.masks.collate import (
    MaskBatch,
    PackedMasks,
    PackedTokens,
    collate_masks,
    indices_to_mask,
    mask_to_indices,
    pack_masks,
)
from vjepa.masks.multiblock import (
    blocks_to_mask,
    sample_block_size,
    sample_block_starts,
    sample_multiblock_mask,
)
from vjepa.masks.sample import num_generators, num_mask_tokens, sample_masks, target_masks
from vjepa.masks.tube import sample_tube_mask

__all__ = [
    "MaskBatch",
    "PackedMasks",
    "PackedTokens",
    "blocks_to_mask",
    "collate_masks",
    "indices_to_mask",
    "mask_to_indices",
    "num_generators",
    "num_mask_tokens",
    "pack_masks",
    "sample_block_size",
    "sample_block_starts",
    "sample_masks",
    "sample_multiblock_mask",
    "sample_tube_mask",
    "target_masks",
]
