"""The masks of one training step: a pure function of (run.seed, step), sliced per rank.

Shapes: B batch (per rank), T/H/W token grid, N = T*H*W tokens, K selected tokens.
"""

from __future__ import annotations

import torch

from vjepa.config import Config
from vjepa.masks.collate import MaskBatch, collate_masks
from vjepa.masks.sample import target_masks
from vjepa.seeds import mix_seed


def masks_for_step(
    cfg: Config, grid: tuple[int, int, int], batch_size: int, step: int, rank: int = 0, world_size: int = 1
) -> list[MaskBatch]:
    """This rank's masks for one step: rows rank*B..(rank+1)*B-1 of the global batch's masks.

    The global batch's masks are a pure function of (seed, step), drawn with one generator, so N
    ranks x B clips see exactly the masks of one process with N*B clips (truncation, a property of
    the whole batch, is applied before slicing).
    """
    generator = torch.Generator().manual_seed(mix_seed(cfg.run.seed, step, 0, 7))  # the 0: pre-slicing seeds
    masks = target_masks(cfg.mask, grid, batch_size * world_size, generator, cfg.model.tubelet_size)
    rows = slice(rank * batch_size, (rank + 1) * batch_size)
    if cfg.mask.collate == "truncate":
        return [select_rows(collate_masks(mask, "truncate"), rows) for mask in masks]
    return [collate_masks(mask[rows], cfg.mask.collate) for mask in masks]


def select_rows(masks: MaskBatch, rows: slice) -> MaskBatch:
    """The MaskBatch of a slice of the batch's rows."""

    def pick(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[rows]

    return MaskBatch(pick(masks.context_idx), pick(masks.target_idx), pick(masks.context_valid), pick(masks.target_valid))
