"""Probes read out a frozen encoder: the attentive probe of the paper and an average-pool linear probe.

The attentive probe computes what the official one computes (facebookresearch/jepa and
facebookresearch/vjepa2, `src/models/attentive_pooler.py` + `src/models/utils/modules.py`):
- LayerNorms use PyTorch's default eps 1e-5 (the encoder's use 1e-6);
- the cross-attention output is *not* passed through `xattn.proj`: the official forward skips it
  (jepa re-added it in Feb 2024 and reverted it a year later because released probes were trained
  without it; vjepa2 comments the layer out). V-JEPA 1 checkpoints still carry `xattn.proj.*`, so
  the "vjepa1" variant keeps that parameter, frozen and unused;
- GELU MLP with ratio 4, qkv biases, one learned query (truncated normal, std 0.02), Linear layers
  truncated normal 0.02 with zero biases, residual projections divided by sqrt(2 * layer) as each
  official version does, and the linear head with PyTorch's default Linear init (the official
  classifier never re-initialises it).

Variants (`variant`):
- "vjepa1": query <- cross-attention block(query, tokens), then `depth - 1` self-attention blocks on
  the query. The paper's probe is depth 1.
- "vjepa2": `depth - 1` self-attention blocks on the tokens first, then the cross-attention block.
  V-JEPA 2 evaluates with depth 4 (`num_probe_blocks: 4` in its eval configs).

Shapes: B batch, L tokens the probe reads (N per clip, or S*N when segments are concatenated),
n learned queries, D width, h heads, K classes.

State-dict keys follow the official layout: `pooler.query_tokens`,
`pooler.cross_attention_block.{norm1,xattn.q,xattn.kv,norm2,mlp.fc1,mlp.fc2}` (+ `xattn.proj` in
"vjepa1"), `pooler.blocks.i.*` (depth > 1), `linear`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vjepa.models.vit import MLP, Block, init_weights, key_padding_mask

PROBE_KINDS = ("attentive", "linear")  # what `build_probe` builds (probes and fine-tuning heads)
PROBE_VARIANTS = ("vjepa1", "vjepa2")
LAYER_NORM_EPS = 1e-5  # the official pooler's nn.LayerNorm default


class CrossAttention(nn.Module):
    """Learned queries attend to tokens. Keys `q.*`, `kv.*` (k then v, heads contiguous), and
    `proj.*` when `keep_proj` (V-JEPA 1 checkpoints carry it; the official forward never applies it,
    so it is stored frozen and unused here too).

    `forward` never projects the L tokens to keys and values. With few queries it is cheaper to
    move the projections onto the query side (same result up to float rounding):
        q . (W_k y_j + b_k) = (W_k^T q) . y_j + const,
        sum_j a_j (W_v y_j + b_v) = W_v (sum_j a_j y_j) + b_v,
    so each head costs O(L*D) instead of O(L*D^2), which is most of a one-query probe's training
    time on cached tokens; `forward_reference` is the textbook form (used in tests).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, keep_proj: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if keep_proj:
            self.proj = nn.Linear(dim, dim)
            self.proj.requires_grad_(False)  # unused by the forward: it must not look trainable

    def _split_heads(self, query: torch.Tensor) -> torch.Tensor:
        """[B, n, D] -> per-head queries [B, h, n, D/h]."""
        b, n, d = query.shape
        return self.q(query).reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        x: torch.Tensor,
        valid: torch.Tensor | None = None,
        norm: nn.LayerNorm | None = None,
    ) -> torch.Tensor:
        """Factorised cross-attention to `norm(x)` (or to `x` if norm is None).

        With `norm`, its affine part is folded onto the query side too: scores use gamma * u and the
        weighted token sums become gamma * sum_j a_j x_hat_j + beta. The normalised tokens x_hat then
        need no gradient, so backward never writes an [B, L, D] tensor.

        Args:
            query: [B, n, D] queries.
            x: [B, L, D] tokens.
            valid: optional BoolTensor [B, L], False marks tokens never attended to.
            norm: the LayerNorm applied to the tokens first (e.g. the block's `norm1`).

        Returns:
            [B, n, D]: the heads' outputs concatenated (no output projection, as in the official code).
        """
        b, n, d = query.shape
        h, dh = self.num_heads, d // self.num_heads
        q = self._split_heads(query) * dh**-0.5  # [B, h, n, dh]
        w_k, w_v = self.kv.weight[:d].view(h, dh, d), self.kv.weight[d:].view(h, dh, d)
        u = torch.einsum("bhnc,hcd->bhnd", q, w_k).reshape(b, h * n, d)  # queries moved to token space
        if norm is not None:
            x = F.layer_norm(x, (d,), eps=norm.eps)  # x_hat, no parameters
            u = u * norm.weight  # beta . u is the same for every token: it cancels in the softmax
        scores = torch.bmm(u, x.transpose(1, 2))  # [B, h*n, L]; the k-bias also cancels
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        mixed = torch.bmm(scores.softmax(dim=-1), x)  # [B, h*n, D] weighted token sums
        if norm is not None:
            mixed = mixed * norm.weight + norm.bias  # the weights sum to one
        out = torch.einsum("bhnd,hcd->bnhc", mixed.view(b, h, n, d), w_v).reshape(b, n, d)  # [B, n, h*dh]
        if self.kv.bias is not None:
            out = out + self.kv.bias[d:]
        return out

    def forward_reference(
        self, query: torch.Tensor, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Textbook cross-attention (every token projected to k, v); same arguments as `forward`."""
        b, length, d = x.shape
        q = self._split_heads(query)  # [B, h, n, dh]
        kv = self.kv(x).reshape(b, length, 2, self.num_heads, d // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, L, dh]
        mask = None if valid is None else valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, n, dh]
        return out.transpose(1, 2).reshape(b, query.shape[1], d)


class CrossAttentionBlock(nn.Module):
    """queries + xattn(queries, norm1(tokens)), then queries + mlp(norm2(queries)) (official layout)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, keep_proj: bool = False
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, keep_proj)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(
        self, query: torch.Tensor, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query [B, n, D], tokens x [B, L, D], valid [B, L] or None -> [B, n, D]."""
        query = query + self.xattn(query, x, valid, norm=self.norm1)  # = xattn(query, norm1(x))
        return query + self.mlp(self.norm2(query))


def _probe_block(dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> Block:
    """The encoder's pre-norm block with the probe's LayerNorm eps (the official probe's default)."""
    block = Block(dim, num_heads, mlp_ratio, qkv_bias)
    block.norm1.eps = block.norm2.eps = LAYER_NORM_EPS
    return block


class AttentivePooler(nn.Module):
    """Learned query tokens read all tokens through a cross-attention block; `depth - 1` self-attention
    blocks run on the queries after it ("vjepa1") or on the tokens before it ("vjepa2").

    Args:
        embed_dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
        depth: 1 = the cross-attention block alone; more adds self-attention blocks.
        num_queries: learned queries n (the classifier uses one).
        qkv_bias: biases on the q / kv projections.
        init_std: std of the truncated-normal init of queries and Linear weights.
        variant: "vjepa1" or "vjepa2" (see the module docstring).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        depth: int = 1,
        num_queries: int = 1,
        qkv_bias: bool = True,
        init_std: float = 0.02,
        variant: str = "vjepa1",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"probe depth must be >= 1, got {depth}")
        if variant not in PROBE_VARIANTS:
            raise ValueError(f"probe variant {variant!r}; choose one of {', '.join(PROBE_VARIANTS)}")
        self.variant = variant
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(
            embed_dim, num_heads, mlp_ratio, qkv_bias, keep_proj=variant == "vjepa1"
        )
        blocks = [_probe_block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth - 1)]
        self.blocks = nn.ModuleList(blocks)
        nn.init.trunc_normal_(self.query_tokens, std=init_std)
        self.apply(init_weights)  # truncated normal 0.02, zero biases, unit LayerNorm
        self._rescale_residuals()

    @torch.no_grad()
    def _rescale_residuals(self) -> None:
        """Divide residual projections by sqrt(2 * layer), numbering layers as each official version does.

        vjepa1: the cross-attention block is layer 1 and block i (from 1) is layer i + 1.
        vjepa2: block i (from 1) is layer i, and the cross-attention MLP shares the last block's
        layer (1 when there are no blocks); its output has no projection to rescale.
        """
        cross = self.cross_attention_block
        if self.variant == "vjepa1":
            cross.xattn.proj.weight.div_(math.sqrt(2.0))
            cross.mlp.fc2.weight.div_(math.sqrt(2.0))
            first = 2
        else:
            cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(len(self.blocks), 1)))
            first = 1
        for layer, block in enumerate(self.blocks, start=first):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, L, D] (valid [B, L] or None) -> pooled queries [B, n, D]."""
        if self.variant == "vjepa2":
            mask = key_padding_mask(valid)  # padded tokens are never keys
            for block in self.blocks:
                x = block(x, mask)  # [B, L, D]
        query = self.query_tokens.expand(x.shape[0], -1, -1)
        query = self.cross_attention_block(query, x, valid)
        if self.variant == "vjepa1":
            for block in self.blocks:
                query = block(query)
        return query


class AttentiveClassifier(nn.Module):
    """The paper's attentive probe: an `AttentivePooler` with one query, then a linear head.

    Args:
        embed_dim: token width D.
        num_heads: attention heads of the pooler.
        num_classes: K.
        depth: pooler depth (1: one cross-attention block, as in the V-JEPA paper; 4 in V-JEPA 2).
        mlp_ratio: MLP hidden width / D.
        variant: "vjepa1" (self-attention blocks on the query, after the cross-attention) or
            "vjepa2" (self-attention blocks on the tokens, before it).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_classes: int,
        depth: int = 1,
        mlp_ratio: float = 4.0,
        variant: str = "vjepa1",
    ):
        super().__init__()
        self.pooler = AttentivePooler(embed_dim, num_heads, mlp_ratio, depth, num_queries=1, variant=variant)
        self.linear = nn.Linear(embed_dim, num_classes)  # PyTorch's default init, as in the official code

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, L, D] -> logits [B, K]."""
        return self.linear(self.pooler(x, valid).squeeze(1))


class LinearProbe(nn.Module):
    """The paper's weaker baseline: average-pool the tokens, standardise, then one linear layer.

    The standardisation is a BatchNorm without affine parameters (as in MAE's linear probe): it
    fixes the scale of the pooled features so one learning rate suits every encoder. Keys `norm.*`,
    `linear.*`.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(embed_dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(embed_dim, num_classes)
        init_weights(self.linear)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens [B, L, D] (valid [B, L] or None) -> logits [B, K]."""
        if valid is None:
            pooled = x.mean(dim=1)
        else:
            weights = valid.to(x.dtype).unsqueeze(-1)  # [B, L, 1]
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.linear(self.norm(pooled))


def build_probe(
    kind: str, embed_dim: int, num_heads: int, num_classes: int, depth: int = 1, variant: str = "vjepa1"
) -> nn.Module:
    """`AttentiveClassifier` (kind "attentive", of `depth` and `variant`) or `LinearProbe` (kind "linear")."""
    if kind == "attentive":
        return AttentiveClassifier(embed_dim, num_heads, num_classes, depth, variant=variant)
    if kind == "linear":
        return LinearProbe(embed_dim, num_classes)
    raise ValueError(f"unknown probe {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
