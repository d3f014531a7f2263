"""The narrow predictor: context features + mask tokens at target positions -> predicted targets.

Shapes: B batch, Kc context tokens, Kt target tokens, N tokens in the clip, D encoder width,
P predictor width. State-dict keys match the official `VisionTransformerPredictor`:
`predictor_embed`, `mask_tokens.i`, `predictor_pos_embed`, `predictor_blocks.j`, `predictor_norm`,
`predictor_proj`. With `pos_embed="rope"` (V-JEPA 2) there is no `predictor_pos_embed`: every
attention layer rotates queries and keys by the tokens' grid positions instead (`vjepa.models.rope`).

Mask tokens: the caller picks one by `mask_index`. Our training passes the mask generator's number
(V-JEPA 1: one token per generator). The official V-JEPA 2 training passes the clip-length group's
number instead (`PredictorMultiSeqWrapper`: mask_index = i over frames-per-clip groups, modulo the 10
stored tokens), so with one clip length every generator uses token 0; `transformers`' predictor
always uses token 1.
"""

from __future__ import annotations

import torch
from torch import nn

from vjepa.masks.collate import PackedMasks, indices_to_mask
from vjepa.models.pos_embed import interpolate_3d, sincos_3d
from vjepa.models.rope import rope_table
from vjepa.models.vit import (
    Block,
    gather_tokens,
    init_weights,
    key_padding_mask,
    rescale_residuals,
    run_blocks,
)


def grid_sequence(
    positions: torch.Tensor,
    embedded: torch.Tensor,
    context_idx: torch.Tensor,
    context_valid: torch.Tensor | None,
    token: torch.Tensor,
    target_idx: torch.Tensor,
    target_valid: torch.Tensor | None,
) -> torch.Tensor:
    """Lay a partitioned grid out in token order: position plus context feature or mask token.

    Args:
        positions: [B, N, P] position table; embedded: [B, Kc, P] projected context features.
        context_idx, context_valid: [B, Kc] context positions and their valid flags (or None).
        token: [B or 1, 1, P] mask token; target_idx, target_valid: [B, Kt] target positions, flags.

    Returns:
        [B, N, P], the same values as the concatenated layout's valid slots, each position once.
    """
    is_target = indices_to_mask(target_idx, target_valid, positions.shape[1]).unsqueeze(-1)  # [B, N, 1]
    x = positions + is_target.to(token.dtype) * token  # mask token at every target position
    if context_valid is not None:  # padding slots repeat a real index: add zeros there
        embedded = embedded * context_valid.unsqueeze(-1).to(embedded.dtype)
    index = context_idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # [B, Kc, P]
    return x.scatter_add(1, index, embedded.to(x.dtype))  # context features added at their positions


def concatenated_valid(
    context_idx: torch.Tensor,
    context_valid: torch.Tensor | None,
    target_idx: torch.Tensor,
    target_valid: torch.Tensor | None,
) -> torch.Tensor | None:
    """Valid flags [B, Kc+Kt] of the context-then-targets layout (a side given None is all valid),
    or None when neither side has padding slots."""
    if context_valid is None and target_valid is None:
        return None
    if context_valid is None:
        context_valid = torch.ones_like(context_idx, dtype=torch.bool)
    if target_valid is None:
        target_valid = torch.ones_like(target_idx, dtype=torch.bool)
    return torch.cat([context_valid, target_valid], dim=1)


class Predictor(nn.Module):
    """Project context features to width P, append one learned mask token per target position
    (token `mask_index`, one per mask generator, zero-initialised), add 3D positions to both, run
    the blocks, and project the target slots back to the encoder width D.

    With RoPE the token positions are decomposed on the built (training) grid, as the official
    predictor does (its `grid_size` is the training crop's), whatever grid `forward` is given.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        embed_dim: int,
        predictor_embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_mask_tokens: int = 2,
        uniform_power: bool = True,
        rescale_residual: bool = True,
        out_dim: int | None = None,
        pos_embed: str = "sincos",
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.use_rope = pos_embed == "rope"
        self.head_dim = predictor_embed_dim // num_heads
        self.activation_checkpointing = False
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 1, predictor_embed_dim)) for _ in range(num_mask_tokens)
        )
        if not self.use_rope:
            table = sincos_3d(predictor_embed_dim, self.grid[1], self.grid[0], uniform_power)
            self.register_buffer("predictor_pos_embed", table[None], persistent=True)  # [1, N, P]
        self.predictor_blocks = nn.ModuleList(
            Block(predictor_embed_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.predictor_norm = nn.LayerNorm(predictor_embed_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(predictor_embed_dim, out_dim or embed_dim)
        self.apply(init_weights)
        if rescale_residual:
            rescale_residuals(self.predictor_blocks)

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        mask_index: int | torch.Tensor = 0,
        context_valid: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
        grid: tuple[int, int, int] | None = None,
        full_grid: bool = False,
    ) -> torch.Tensor:
        """Predict target features.

        Args:
            context: context-encoder output [B, Kc, D].
            context_idx: LongTensor [B, Kc] positions of the context tokens in the clip.
            target_idx: LongTensor [B, Kt] positions to predict.
            mask_index: which mask token to use (the mask generator's number), or a LongTensor [B]
                giving one per sample (lets several generators share one batched pass).
            context_valid, target_valid: BoolTensor [B, Kc] / [B, Kt], False on padding slots.
            grid: token grid of the clip if it differs from the built one (positions interpolated).
            full_grid: the valid context and target tokens partition the grid (pad collation). Then
                every sequence is laid out in grid order with exactly N tokens and no padding or
                attention mask (same result: attention does not depend on token order), which lets
                several generators share one pass.

        Returns:
            Predictions [B, Kt, D] (padding slots hold values the loss must ignore).
        """
        embedded = self.predictor_embed(context)  # [B, Kc, P]
        grid = grid or self.grid
        positions = self.positions(grid, context.dtype).expand(context_idx.shape[0], -1, -1)  # [B, N, P]
        token = self.mask_token(mask_index, torch.promote_types(embedded.dtype, positions.dtype))
        predict = self._predict_grid if full_grid else self._predict_concatenated
        return predict(positions, embedded, context_idx, context_valid, token, target_idx, target_valid)

    def mask_token(self, mask_index: int | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The mask token [1, 1, P] of one index, or [B, 1, P] for a LongTensor [B] of indices."""
        if isinstance(mask_index, int):
            return self.mask_tokens[mask_index].to(dtype)
        return torch.cat(list(self.mask_tokens))[mask_index].to(dtype)

    def _predict_grid(
        self,
        positions: torch.Tensor,
        embedded: torch.Tensor,
        context_idx: torch.Tensor,
        context_valid: torch.Tensor | None,
        token: torch.Tensor,
        target_idx: torch.Tensor,
        target_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """`forward(full_grid=True)`: one grid-ordered sequence of N tokens per sample, no attention mask.

        Shapes as in `grid_sequence`; returns [B, Kt, D].
        """
        x = grid_sequence(positions, embedded, context_idx, context_valid, token, target_idx, target_valid)
        rope = self.rope(torch.arange(x.shape[1], device=x.device), x.dtype)
        x = run_blocks(self.predictor_blocks, x, None, self.activation_checkpointing, rope)  # [B, N, P]
        return self.predictor_proj(self.predictor_norm(gather_tokens(x, target_idx)))  # [B, Kt, D]

    def _predict_concatenated(
        self,
        positions: torch.Tensor,
        embedded: torch.Tensor,
        context_idx: torch.Tensor,
        context_valid: torch.Tensor | None,
        token: torch.Tensor,
        target_idx: torch.Tensor,
        target_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """`forward` in the official layout: context tokens then target queries, padding slots masked
        out of attention. Shapes as in `grid_sequence`; returns [B, Kt, D]."""
        x = embedded + gather_tokens(positions, context_idx)  # [B, Kc, P]
        queries = token + gather_tokens(positions, target_idx)  # [B, Kt, P]
        x = torch.cat([x, queries], dim=1)  # [B, Kc+Kt, P]
        valid = concatenated_valid(context_idx, context_valid, target_idx, target_valid)
        rope = self.rope(torch.cat([context_idx, target_idx], dim=1), x.dtype)  # [B, Kc+Kt] positions
        x = run_blocks(self.predictor_blocks, x, key_padding_mask(valid), self.activation_checkpointing, rope)
        x = self.predictor_norm(x[:, context_idx.shape[1]:])  # [B, Kt, P]
        return self.predictor_proj(x)  # [B, Kt, D]

    def forward_packed(self, context: torch.Tensor, packed: PackedMasks, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Predict every row's valid target tokens from packed context features (no padding slots).

        Each row (generator g, sample b; see `vjepa.masks.pack_masks`) is laid out in grid order
        as with `full_grid=True`: position plus projected context feature or the row's mask token,
        exactly N tokens (its valid context and target tokens partition the grid).

        Args:
            context: packed context-encoder features [Tc, D] (`VisionTransformer.encode_packed`).
            packed: the step's packed masks.
            grid: token grid of the clip if it differs from the built one.

        Returns:
            Predictions [Tt, D] of the packed target tokens, in `packed.target` order.
        """
        grid = grid or self.grid
        rows, n = packed.mask_index.shape[0], packed.num_tokens
        embedded = self.predictor_embed(context)  # [Tc, P]
        positions = self.positions(grid, context.dtype)  # [1, N, P]
        dtype = torch.promote_types(embedded.dtype, positions.dtype)
        token = self.mask_token(packed.mask_index, dtype)  # [R, 1, P]
        is_target = torch.zeros(rows * n, 1, dtype=dtype, device=context.device)
        is_target[packed.target.slot] = 1.0  # [R*N, 1]
        x = positions.to(dtype) + is_target.view(rows, n, 1) * token  # [R, N, P]: mask tokens at targets
        x = x.reshape(rows * n, -1).index_add(0, packed.context.slot, embedded.to(dtype))  # context at its slots
        rope = self.rope(torch.arange(n, device=x.device), x.dtype)
        x = run_blocks(self.predictor_blocks, x.view(rows, n, -1), None, self.activation_checkpointing, rope)
        x = x.reshape(rows * n, -1)[packed.target.slot]  # [Tt, P]: valid target tokens only
        return self.predictor_proj(self.predictor_norm(x))  # [Tt, D]

    def positions(self, grid: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
        """Additive position table [1, N, P] for a grid (zeros with RoPE, where positions rotate q/k)."""
        if self.use_rope:
            width = self.predictor_embed.out_features
            return torch.zeros(1, grid[0] * grid[1] * grid[2], width, dtype=dtype, device=self.predictor_embed.weight.device)
        return interpolate_3d(self.predictor_pos_embed, self.grid, grid).to(dtype)

    def rope(self, idx: torch.Tensor, dtype: torch.dtype):
        """cos/sin for grid indices idx ([N] or [B, K]) on the built grid, or None without RoPE."""
        return rope_table(idx, self.grid, self.head_dim, dtype) if self.use_rope else None


def build_predictor(model_cfg, num_mask_tokens: int, grid: tuple[int, int, int], out_dim: int | None = None) -> Predictor:
    """Build a `Predictor` from a `ModelConfig` for the given token grid."""
    return Predictor(
        grid=grid,
        embed_dim=model_cfg.embed_dim,
        predictor_embed_dim=model_cfg.predictor_embed_dim,
        depth=model_cfg.predictor_depth,
        num_heads=model_cfg.predictor_num_heads or model_cfg.num_heads,
        mlp_ratio=model_cfg.predictor_mlp_ratio,
        num_mask_tokens=num_mask_tokens,
        uniform_power=model_cfg.uniform_power,
        rescale_residual=model_cfg.rescale_residual,
        out_dim=out_dim,
        pos_embed=model_cfg.pos_embed,
    )
