"""Video Vision Transformer encoder (no [CLS] token), state-dict compatible with facebookresearch/jepa
(V-JEPA 1, fixed 3D sin-cos positions) and facebookresearch/vjepa2 (3D RoPE in every attention layer).

Shapes: B batch, C channels, T frames, H/W pixels, N tokens in the full clip, K kept tokens,
D width. Padding-aware: rows of `keep_idx` may be padded, with `keep_valid` marking real tokens;
padded tokens never act as attention keys.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vjepa.config import ModelConfig
from vjepa.masks.collate import PackedTokens
from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import interpolate_3d, sincos_3d
from vjepa.models.rope import RoPETable, apply_rope, rope_table

ATTENTION_KERNELS = ("auto", "sdpa", "manual")
PACKED_ATTENTION = ("auto", "loop", "padded", "nested")


@dataclass(frozen=True)
class Kernels:
    """How the blocks compute: speed only, never results beyond float rounding.

    Every `Attention` and `VisionTransformer` holds one (constructor argument `kernels`, or
    `set_kernels(model, kernels)` afterwards), so the benchmark can time other choices, e.g. the
    official code's structure, in one process without touching module globals.

    Measured A/B in one process (`vjepa bench`, demo64 preset, CPU, bf16): keeping the attention core
    in fp32 gained nothing (1.00-1.01x) over bf16 SDPA and cost memory, so it is off; for sequences up
    to ~768 tokens, attention as two bf16 batched matmuls beat PyTorch's CPU flash kernel 1.15-1.4x
    (fwd+bwd; equal at 1024, slower beyond), at the price of O(K^2) saved activations.

    Attributes:
        attention: "auto" (SDPA; on CPU in bf16, sequences up to `matmul_max_tokens` as two batched
            matmuls), "sdpa" (always `F.scaled_dot_product_attention`, as the official configs'
            `use_sdpa: true`) or "manual" (softmax(q k^T) v in plain ops, scores materialised).
        cpu_fp32_attention: CPU bf16 with "auto": run the SDPA core in fp32.
        matmul_max_tokens: the "auto" threshold for `matmul_attention` (CPU bf16 only).
        conv3d_patch_embed: tubelet embedding through nn.Conv3d (the official code) instead of one GEMM.
        packed_attention: how packed sequences (`Segments`) attend within their rows: "loop" (one
            unmasked call per row), "padded" (rows padded to a multiple of 8 inside attention only,
            one masked call), "nested" (nested jagged tensors + SDPA) or "auto" ("loop" on CPU,
            "padded" elsewhere). Measured on CPU (fp32, demo64 rows, fwd+bwd, 1 thread): loop 234 ms,
            padded 267, nested 629 (no fused CPU kernel for jagged SDPA); flex_attention has no CPU
            backward without compilation.
    """

    attention: str = "auto"
    cpu_fp32_attention: bool = False
    matmul_max_tokens: int = 768
    conv3d_patch_embed: bool = False
    packed_attention: str = "auto"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel {self.attention!r}; choose one of {', '.join(ATTENTION_KERNELS)}")
        if self.packed_attention not in PACKED_ATTENTION:
            raise ValueError(f"packed attention {self.packed_attention!r}; choose one of {', '.join(PACKED_ATTENTION)}")


def set_kernels(model: nn.Module, kernels: Kernels) -> None:
    """Make every submodule of `model` that holds a `kernels` attribute use `kernels`."""
    for module in model.modules():
        if isinstance(getattr(module, "kernels", None), Kernels):
            module.kernels = kernels


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Select tokens by index: x [B, N, D], idx [B, K] -> [B, K, D] (one torch.gather)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def key_padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """[B, K] bool (True = real token) -> SDPA boolean mask [B, 1, 1, K], or None if nothing is padded."""
    if valid is None:
        return None
    return valid[:, None, None, :]


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The official attention core, scores materialised: q, k, v [B, h, K, d] -> softmax(q k^T / sqrt(d)) v."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # [B, h, K, K]
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`manual_attention` with the scale folded into q (a [B, h, K, d] multiply, not [B, h, K, K])."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [B, h, K, K]
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def attention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, kernels: Kernels
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v by the kernel `kernels` picks: q, k, v [B, h, K, d] -> [B, h, K, d]."""
    cpu_bf16 = q.device.type == "cpu" and q.dtype == torch.bfloat16 and kernels.attention == "auto"
    if kernels.attention == "manual":
        return manual_attention(q, k, v, attn_mask)
    if cpu_bf16 and k.shape[-2] <= kernels.matmul_max_tokens:  # see `Kernels`
        return matmul_attention(q, k, v, attn_mask)
    if cpu_bf16 and kernels.cpu_fp32_attention:
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def round_up(length: int, multiple: int = 8) -> int:
    """The smallest multiple of `multiple` >= `length` (padded lengths: aligned attention biases)."""
    return -(-length // multiple) * multiple


@dataclass
class Segments:
    """Variable-length rows packed into one sequence [1, T, ...]: row r owns tokens
    offsets[r]:offsets[r+1]; attention stays within each row (a block-diagonal mask).

    Passed to the blocks in place of an attention mask, so linear layers, norms and the MLP run on
    the T valid tokens only.
    """

    lengths: list[int]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        """Block-diagonal attention: q, k, v [1, h, T, d] -> [1, h, T, d]."""
        kind = kernels.packed_attention
        if kind == "auto":
            kind = "loop" if q.device.type == "cpu" else "padded"
        if kind == "loop":
            parts = zip(*(x.split(self.lengths, dim=2) for x in (q, k, v)))
            return torch.cat([attention_core(qr, kr, vr, None, kernels) for qr, kr, vr in parts], dim=2)
        if kind == "nested":
            offsets = torch.tensor([0, *itertools.accumulate(self.lengths)], device=q.device)  # [R+1]

            def jagged(x: torch.Tensor) -> torch.Tensor:  # [1, h, T, d] -> nested [R, h, j, d]
                values = x[0].transpose(0, 1).contiguous()  # [T, h, d]
                return torch.nested.nested_tensor_from_jagged(values, offsets).transpose(1, 2)

            out = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v))  # [R, h, j, d]
            return out.transpose(1, 2).values().transpose(0, 1)[None]  # [1, h, T, d]
        return self._padded(q, k, v, kernels)

    def _padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        """Pad rows to a multiple of 8 inside attention only (one masked call): [1, h, T, d] -> same."""
        lengths = torch.tensor(self.lengths, device=q.device)  # [R]
        rows, width, (_, heads, total, dim) = len(self.lengths), round_up(max(self.lengths)), q.shape
        starts = torch.cumsum(lengths, 0) - lengths  # [R]
        position = torch.arange(total, device=q.device) - starts.repeat_interleave(lengths, output_size=total)
        slot = torch.arange(rows, device=q.device).repeat_interleave(lengths, output_size=total) * width + position

        def pad(x: torch.Tensor) -> torch.Tensor:  # [1, h, T, d] -> [R, h, width, d]
            out = x.new_zeros(rows * width, heads, dim).index_copy(0, slot, x[0].transpose(0, 1))
            return out.view(rows, width, heads, dim).transpose(1, 2)

        keys = (torch.arange(width, device=q.device)[None] < lengths[:, None])[:, None, None, :]  # [R, 1, 1, width]
        out = attention_core(pad(q), pad(k), pad(v), keys, kernels)  # [R, h, width, d]
        return out.transpose(1, 2).reshape(rows * width, heads, dim)[slot].transpose(0, 1)[None]


class Attention(nn.Module):
    """Multi-head self-attention on `F.scaled_dot_product_attention`. Keys `qkv.*`, `proj.*`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, kernels: Kernels | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.kernels = kernels or Kernels()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope: RoPETable | None = None
    ) -> torch.Tensor:
        """x [B, K, D], attn_mask bool [B, 1, 1, K] (True = attend) or `Segments` (x is [1, T, D],
        packed rows), rope: cos/sin from `rope_table` (queries and keys rotated, V-JEPA 2) or None
        -> [B, K, D]."""
        b, k, d = x.shape
        qkv = self.qkv(x).reshape(b, k, 3, self.num_heads, d // self.num_heads)
        q, key, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, K, D/heads]
        if rope is not None:
            q, key = apply_rope(q, rope), apply_rope(key, rope)
        if isinstance(attn_mask, Segments):  # packed rows: attention within each row only
            x = attn_mask.attend(q, key, v, self.kernels)
        else:
            x = attention_core(q, key, v, attn_mask, self.kernels)
        return self.proj(x.transpose(1, 2).reshape(b, k, d))


class MLP(nn.Module):
    """fc1 -> GELU -> fc2. Keys `fc1.*`, `fc2.*`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, D] -> [B, K, D]."""
        return self.fc2(F.gelu(self.fc1(x)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples' residual branch with probability `rate` (train only)."""
    if rate == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= rate
    return x * keep.to(x.dtype) / (1.0 - rate)


class Block(nn.Module):
    """Pre-norm transformer block. Keys `norm1`, `attn`, `norm2`, `mlp` as in the official code."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        kernels: Kernels | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, kernels)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope: RoPETable | None = None
    ) -> torch.Tensor:
        """[B, K, D] -> [B, K, D] (`rope` as in `Attention.forward`)."""
        x = x + drop_path(self.attn(self.norm1(x), attn_mask, rope), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def init_weights(module: nn.Module) -> None:
    """Official init: truncated normal (std 0.02) for Linear/Conv, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def rescale_residuals(blocks: nn.ModuleList) -> None:
    """Divide each block's residual projections (attn.proj, mlp.fc2) by sqrt(2 * layer), layer from 1."""
    with torch.no_grad():
        for layer, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    attn_mask: torch.Tensor | Segments | None,
    ckpt: bool,
    rope: RoPETable | None = None,
) -> torch.Tensor:
    """Apply blocks in order, optionally with activation checkpointing (recompute in backward).

    `rope` (cos/sin for the sequence's tokens) is computed once by the caller and shared by all blocks.
    """
    extra = () if rope is None else (rope,)  # blocks without RoPE keep the (x, attn_mask) signature
    for block in blocks:
        if ckpt and torch.is_grad_enabled():
            x = checkpoint(block, x, attn_mask, *extra, use_reentrant=False)
        else:
            x = block(x, attn_mask, *extra)
    return x


def stochastic_depth_rates(rate: float, depth: int) -> list[float]:
    """Drop-path rate per block, linear from 0 to `rate` (plain floats: no tensor, so it runs on meta)."""
    return [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


POS_EMBEDS = ("sincos", "rope")


class VisionTransformer(nn.Module):
    """The V-JEPA encoder: tubelet embedding + positions + blocks + final norm.

    Positions are a fixed 3D sin-cos table added to the tokens (`pos_embed="sincos"`, V-JEPA 1; key
    `pos_embed`), or 3D RoPE inside every attention layer (`"rope"`, V-JEPA 2; no table, and the
    input's own token grid gives the positions, so other clip sizes need no interpolation).

    `forward(x, keep_idx)` embeds the whole clip, keeps only the tokens in `keep_idx` and runs the
    blocks on those alone (the context encoder); with `keep_idx=None` it encodes every token (the
    target encoder, feature extraction).
    """

    def __init__(self, cfg: ModelConfig, img_size: int | None = None, num_frames: int | None = None,
                 kernels: Kernels | None = None):
        """Build from the model section of the config; `img_size` / `num_frames` (default `cfg`'s)
        fix the built token grid (the sin-cos table's size; other clip sizes are interpolated);
        `kernels` picks the attention and embedding kernels (default: ours)."""
        super().__init__()
        img_size, num_frames = img_size or cfg.img_size, num_frames or cfg.num_frames
        self.kernels = kernels or Kernels()
        self.embed_dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.activation_checkpointing = False
        self.patch_embed = PatchEmbed3D(cfg.patch_size, cfg.tubelet_size, cfg.in_chans, cfg.embed_dim)
        self.grid = self.patch_embed.grid(num_frames, img_size, img_size)
        self._init_positions(cfg)
        rates = stochastic_depth_rates(cfg.drop_path, cfg.depth)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, True, rate, self.kernels)  # qkv bias: always
            for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.apply(init_weights)
        if cfg.rescale_residual:
            rescale_residuals(self.blocks)

    def _init_positions(self, cfg: ModelConfig) -> None:
        """RoPE (positions rotate q/k in attention: no table) or the fixed sin-cos table [1, N, D] of
        the built grid, a buffer saved under the official key `pos_embed`."""
        if cfg.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={cfg.pos_embed!r}; choose one of {', '.join(POS_EMBEDS)}")
        self.use_rope = cfg.pos_embed == "rope"
        if not self.use_rope:
            table = sincos_3d(cfg.embed_dim, self.grid[1], self.grid[0], cfg.uniform_power)
            self.register_buffer("pos_embed", table[None], persistent=True)  # [1, N, D], key `pos_embed`

    def positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Position table for a token grid, interpolated if it differs from the built one: [1, N, D]."""
        return interpolate_3d(self.pos_embed, self.grid, grid)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tubelet embedding plus positions: clip [B, C, T, H, W] -> tokens [B, N, D].

        With RoPE nothing is added here: positions enter every attention layer (see `encode`).
        """
        if self.kernels.conv3d_patch_embed:  # [B, D, T', H', W'] -> [B, N, D], tokens ordered (t, h, w)
            tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        else:
            tokens = self.patch_embed(x)
        if self.use_rope:
            return tokens
        return tokens + self.positions(self.patch_embed.grid(*x.shape[2:])).to(x.dtype)

    def rope(self, idx: torch.Tensor, grid: tuple[int, int, int], dtype: torch.dtype) -> RoPETable:
        """cos/sin for tokens at indices idx ([N] or [B, K]) of the input's own grid (as the official
        encoder does with `handle_nonsquare_inputs`)."""
        return rope_table(idx, grid, self.embed_dim // self.num_heads, dtype)

    def encode(
        self,
        tokens: torch.Tensor,
        keep_idx: torch.Tensor | None = None,
        keep_valid: torch.Tensor | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Run the blocks and final norm on embedded tokens [B, N, D] (kept ones only if keep_idx).

        `grid` is the (T', H', W') token grid of the clip the tokens came from (RoPE needs it; default
        the built grid, which must then hold N tokens).
        """
        grid = grid or self.grid
        if self.use_rope and grid[0] * grid[1] * grid[2] != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens do not fill the token grid {grid}: pass the clip's grid")
        mask = None
        if keep_idx is not None:
            tokens = gather_tokens(tokens, keep_idx)  # [B, K, D]
            mask = key_padding_mask(keep_valid)
        rope = None
        if self.use_rope:
            idx = torch.arange(tokens.shape[1], device=tokens.device) if keep_idx is None else keep_idx
            rope = self.rope(idx, grid, tokens.dtype)
        tokens = run_blocks(self.blocks, tokens, mask, self.activation_checkpointing, rope)
        return self.norm(tokens)

    def encode_packed(self, tokens: torch.Tensor, packed: PackedTokens, grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Run the blocks and final norm on every row's valid tokens only, packed into one sequence.

        Args:
            tokens: embedded clips [B, N, D] (`embed`).
            packed: the tokens to keep (`vjepa.masks.pack_masks(...).context`); its rows may repeat
                a clip (one row per mask generator and sample).
            grid: the clips' (T', H', W') token grid (default the built one).

        Returns:
            Features [T, D] of the T packed tokens, in `packed` order (row by row).
        """
        grid = grid or self.grid
        x = tokens.reshape(-1, tokens.shape[-1])[packed.source][None]  # [1, T, D]
        rope = self.rope(packed.idx, grid, x.dtype) if self.use_rope else None  # [1, 1, T, 3s]
        x = run_blocks(self.blocks, x, Segments(packed.lengths), self.activation_checkpointing, rope)
        return self.norm(x[0])  # [T, D]

    def forward(
        self,
        x: torch.Tensor,
        keep_idx: torch.Tensor | None = None,
        keep_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode a clip.

        Args:
            x: clip [B, C, T, H, W] (normalised pixels).
            keep_idx: LongTensor [B, K] of tokens to keep (context), or None for all N tokens.
            keep_valid: BoolTensor [B, K], False marks padding slots of `keep_idx` (never attended to).

        Returns:
            Features [B, K, D] (or [B, N, D]) after the final LayerNorm.
        """
        return self.encode(self.embed(x), keep_idx, keep_valid, self.patch_embed.grid(*x.shape[2:]))
