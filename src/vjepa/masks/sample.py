"""`sample_masks`: one `MaskBatch` per mask generator, chosen by `MaskConfig.kind`.

Shapes: B batch, T/H/W token grid (time, height, width), N = T*H*W tokens, K selected tokens.
"""

from __future__ import annotations

import torch

from vjepa.config import Config, MaskConfig
from vjepa.masks.collate import MaskBatch, collate_masks
from vjepa.masks.multiblock import sample_multiblock_mask
from vjepa.masks.tube import sample_tube_mask

Grid = tuple[int, int, int]


def num_generators(cfg: MaskConfig) -> int:
    """How many mask batches (and predictor mask tokens) `target_masks` gives per step."""
    return cfg.num_generators  # the rule lives with the config, whose validation needs it too


def num_mask_tokens(cfg: Config) -> int:
    """How many mask tokens a run's predictor holds: `model.predictor_num_mask_tokens`, or (0) one per
    mask generator."""
    return cfg.model.predictor_num_mask_tokens or num_generators(cfg.mask)


def target_masks(
    cfg: MaskConfig, grid: Grid, batch_size: int, generator: torch.Generator, tubelet_size: int = 2
) -> list[torch.Tensor]:
    """Sample the boolean target masks, one per generator, before collation.

    Args:
        cfg: the masking strategy (kind, generators, tube ratio, causal context length).
        grid: (T, H, W) token grid, e.g. (8, 14, 14) for 16x224x224 clips, tubelet 2, patch 16.
        batch_size: B.
        generator: source of randomness; the result is a pure function of its state.
        tubelet_size: frames per token time step, to convert `cfg.causal_context_frames` to steps.

    Returns:
        One BoolTensor [B, N] per generator (a single one for kind="tube"), True on target tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if cfg.kind == "tube":
        return [sample_tube_mask(cfg.tube_ratio, grid, batch_size, generator)]
    if cfg.kind not in ("multiblock", "causal"):
        raise ValueError(f"mask.kind={cfg.kind!r}; choose one of multiblock, tube, causal")
    steps = max(1, cfg.causal_context_frames // tubelet_size) if cfg.kind == "causal" else None
    return [sample_multiblock_mask(spec, grid, batch_size, generator, steps) for spec in cfg.generators]


def sample_masks(
    cfg: MaskConfig, grid: Grid, batch_size: int, generator: torch.Generator, *, tubelet_size: int = 2
) -> list[MaskBatch]:
    """Sample context and target indices for a batch, one `MaskBatch` per mask generator.

    Args:
        cfg: the masking strategy; `cfg.collate` picks "pad" (keep every token, valid flags) or
            "truncate" (the official collator: cut every row to the batch minimum).
        grid: (T, H, W) token grid.
        batch_size: B.
        generator: source of randomness; the result is a pure function of its state.
        tubelet_size: frames per token time step (kind="causal" only).

    Returns:
        kind="multiblock" or "causal": len(cfg.generators) batches; kind="tube": one batch. Each holds
        context_idx [B, Kc] and target_idx [B, Kt], sorted ascending per row, indexing the flattened
        (t, h, w) grid.
    """
    masks = target_masks(cfg, grid, batch_size, generator, tubelet_size)
    return [collate_masks(mask, cfg.collate) for mask in masks]
