"""Turn per-sample boolean masks into batched index tensors (`MaskBatch`).

Two collation modes:

- ``"truncate"`` reproduces the official collator: indices sorted ascending, every sample cut to the
  batch minimum length. The earliest indices survive and the rest are silently dropped, so some
  tokens end up in neither the context nor the target (official issue #50).
- ``"pad"`` keeps every token: each row is padded to the batch maximum length by repeating the
  row's last (largest) valid index, and a `*_valid` flag marks the real slots.

Shapes: B batch, N tokens in the flattened (t, h, w) grid, K selected tokens per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COLLATE_MODES = ("pad", "truncate")


@dataclass
class MaskBatch:
    """Context and target token indices of one mask generator for a whole batch.

    Attributes:
        context_idx: LongTensor [B, Kc] of token indices the context encoder sees, sorted ascending
            per row (non-decreasing where padded).
        target_idx: LongTensor [B, Kt] of token indices the predictor must predict, sorted likewise.
        context_valid: BoolTensor [B, Kc], False on padding slots; None when no row is padded.
        target_valid: BoolTensor [B, Kt], False on padding slots; None when no row is padded.
    """

    context_idx: torch.Tensor
    target_idx: torch.Tensor
    context_valid: torch.Tensor | None = None
    target_valid: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MaskBatch:
        """Return a copy with every tensor moved to `device`."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device, non_blocking=non_blocking)

        return MaskBatch(
            context_idx=move(self.context_idx),
            target_idx=move(self.target_idx),
            context_valid=move(self.context_valid),
            target_valid=move(self.target_valid),
        )


def mask_to_indices(mask: torch.Tensor, mode: str = "pad") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convert a boolean token mask to sorted index rows of equal length.

    Args:
        mask: BoolTensor [B, N], True where a token is selected. Every row needs at least one token.
        mode: ``"pad"`` (pad to the longest row, keep every token) or ``"truncate"`` (cut every row
            to the shortest row, keeping the smallest indices, as the official collator does).

    Returns:
        idx: LongTensor [B, K] of selected indices, ascending per row (padding repeats the row's
            largest index, so rows stay non-decreasing).
        valid: BoolTensor [B, K], False on padding slots; None when no row needed padding (always
            None in truncate mode).
    """
    if mode not in COLLATE_MODES:
        raise ValueError(f"collate mode {mode!r}; choose one of {', '.join(COLLATE_MODES)}")
    counts = mask.sum(dim=1)  # [B]
    if bool((counts == 0).any()):
        raise ValueError("every row of the mask must select at least one token")
    # stable sort of ~mask puts the selected tokens first, in ascending index order
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # [B, N]
    if mode == "truncate":
        return order[:, : int(counts.min())], None
    idx = order[:, : int(counts.max())]  # [B, K]
    valid = torch.arange(idx.shape[1], device=mask.device)[None, :] < counts[:, None]  # [B, K]
    if bool(valid.all()):
        return idx, None
    last = idx.gather(1, (counts - 1)[:, None])  # [B, 1] largest valid index of each row
    return torch.where(valid, idx, last), valid


def indices_to_mask(idx: torch.Tensor, valid: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
    """Scatter index rows back to a boolean token mask (inverse of `mask_to_indices`).

    Args:
        idx: LongTensor [B, K] of token indices.
        valid: BoolTensor [B, K] or None (all slots valid).
        num_tokens: N, the number of tokens in the grid.

    Returns:
        BoolTensor [B, N], True at every valid index.
    """
    src = torch.ones_like(idx) if valid is None else valid.long()  # [B, K]
    hits = torch.zeros(idx.shape[0], num_tokens, dtype=torch.long, device=idx.device)
    return hits.scatter_add(1, idx, src) > 0  # [B, N]


def collate_masks(target_mask: torch.Tensor, mode: str = "pad") -> MaskBatch:
    """Build a `MaskBatch` from a target mask; the context is its complement.

    Args:
        target_mask: BoolTensor [B, N], True on hidden (target) tokens.
        mode: ``"pad"`` or ``"truncate"``; see `mask_to_indices`.

    Returns:
        The batch's context and target indices (and valid flags in pad mode).
    """
    context_idx, context_valid = mask_to_indices(~target_mask, mode)
    target_idx, target_valid = mask_to_indices(target_mask, mode)
    return MaskBatch(context_idx, target_idx, context_valid, target_valid)
