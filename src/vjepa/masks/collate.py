"""Turn per-sample boolean masks into batched index tensors (`MaskBatch`).

Two collation modes:

- ``"truncate"`` reproduces the official collator: indices sorted ascending, every sample cut to the
  batch minimum length. The earliest indices survive and the rest are silently dropped, so some
  tokens end up in neither the context nor the target (official issue #50).
- ``"pad"`` keeps every token: each row is padded to the batch maximum length, rounded up to a
  multiple of 8, by repeating the row's last (largest) valid index, and a `*_valid` flag marks the
  real slots. (The training step packs valid tokens instead; see `pack_masks`.)

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
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> MaskBatch:
        """A copy in pinned host memory (the DataLoader's pin-memory thread calls this), so the copy
        to the GPU can overlap compute."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, fn) -> MaskBatch:
        def apply(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else fn(x)

        return MaskBatch(apply(self.context_idx), apply(self.target_idx), apply(self.context_valid), apply(self.target_valid))


def mask_to_indices(
    mask: torch.Tensor, mode: str = "pad", multiple: int = 8
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convert a boolean token mask to sorted index rows of equal length.

    Args:
        mask: BoolTensor [B, N], True where a token is selected. Every row needs at least one token.
        mode: ``"pad"`` (pad to the longest row, keep every token) or ``"truncate"`` (cut every row
            to the shortest row, keeping the smallest indices, as the official collator does).
        multiple: in pad mode, padded rows are this long a multiple of (8: an SDPA attention bias
            must be aligned to 8 for the memory-efficient kernel under torch.compile).

    Returns:
        idx: LongTensor [B, K] of selected indices, ascending per row (padding repeats the row's
            largest index, so rows stay non-decreasing).
        valid: BoolTensor [B, K], False on padding slots; None when no row needed padding (always
            None in truncate mode; K is then the common row length, whatever its alignment).
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
    longest = int(counts.max())
    if longest == int(counts.min()):
        return order[:, :longest], None
    length = -(-longest // multiple) * multiple  # rounded up to the multiple
    idx = order[:, : min(length, mask.shape[1])]  # [B, K]
    if idx.shape[1] < length:  # more slots than grid tokens: extend (the slots become padding below)
        idx = torch.cat([idx, idx[:, -1:].expand(-1, length - idx.shape[1])], dim=1)
    valid = torch.arange(length, device=mask.device)[None, :] < counts[:, None]  # [B, K]
    last = order.gather(1, (counts - 1)[:, None])  # [B, 1] largest valid index of each row
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


@dataclass
class PackedTokens:
    """One side (context or target) of every row's valid tokens, packed into one flat sequence.

    Rows are generator-major (row r = g*B + b: generator g, sample b); tokens keep their row's
    ascending order, rows follow each other. T = the total of valid tokens, R = G*B rows.

    Attributes:
        rows: LongTensor [T], the row each packed token belongs to.
        idx: LongTensor [T], each token's index in the (t, h, w) grid.
        source: LongTensor [T], b*N + idx: where to read the token from a [B*N, ...] clip tensor.
        slot: LongTensor [T], r*N + idx: where to write it into a [R*N, ...] grid-ordered tensor.
        lengths: tokens per row (host ints), R of them.
    """

    rows: torch.Tensor
    idx: torch.Tensor
    source: torch.Tensor
    slot: torch.Tensor
    lengths: list[int]


@dataclass
class PackedMasks:
    """Every generator's context and target tokens without padding (see `pack_masks`).

    Attributes:
        context, target: the two sides, each a `PackedTokens`.
        mask_index: LongTensor [R], the mask token (generator) of each row.
        batch_size: B; num_generators: G; num_tokens: N.
    """

    context: PackedTokens
    target: PackedTokens
    mask_index: torch.Tensor
    batch_size: int
    num_generators: int
    num_tokens: int


def _pack_side(indices: list[tuple[torch.Tensor, torch.Tensor | None]], num_tokens: int) -> PackedTokens:
    """Pack [B, K] index rows (with valid flags or None) of every generator: see `PackedTokens`."""
    rows, idx, counts = [], [], []
    for g, (index, valid) in enumerate(indices):
        b, k = index.shape
        valid = torch.ones_like(index, dtype=torch.bool) if valid is None else valid
        row = (g * b + torch.arange(b, device=index.device))[:, None].expand(b, k)  # [B, K]
        rows.append(row[valid])  # boolean selection keeps row-major order: row by row, ascending
        idx.append(index[valid])
        counts.append(valid.sum(dim=1))  # [B]
    rows_t, idx_t = torch.cat(rows), torch.cat(idx)  # [T]
    batch = indices[0][0].shape[0]
    lengths = torch.cat(counts).tolist()  # the segment lengths live on the host: one read per side
    return PackedTokens(rows_t, idx_t, (rows_t % batch) * num_tokens + idx_t, rows_t * num_tokens + idx_t, lengths)


def pack_masks(masks: list[MaskBatch], num_tokens: int, mask_index: torch.Tensor | None = None) -> PackedMasks:
    """Pack the valid context and target tokens of every generator's `MaskBatch` (no padding slots).

    Args:
        masks: one `MaskBatch` per generator, all with the same batch size B.
        num_tokens: N, tokens in the clip's grid.
        mask_index: LongTensor [G*B], each row's predictor mask token (default: generator g's rows
            use token g).

    Returns:
        A `PackedMasks` whose context holds sum(valid Kc) tokens and target sum(valid Kt) tokens.
    """
    batch = masks[0].context_idx.shape[0]
    context = _pack_side([(m.context_idx, m.context_valid) for m in masks], num_tokens)
    target = _pack_side([(m.target_idx, m.target_valid) for m in masks], num_tokens)
    if mask_index is None:
        mask_index = torch.arange(len(masks), device=context.idx.device).repeat_interleave(batch)  # [R]
    return PackedMasks(context, target, mask_index, batch, len(masks), num_tokens)
