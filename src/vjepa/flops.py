"""Analytic FLOP count of one V-JEPA training step: the "model FLOPs" behind MFU.

Conventions (the usual ones for MFU, e.g. PaLM / nanoGPT):

- A matmul [m, k] x [k, n] costs 2*m*n*k FLOPs (one multiply and one add per term).
- One transformer block of width D, MLP hidden width H, on a sequence of L tokens, forward:
  qkv 2*L*D*3D + scores q k^T 2*L*L*D + weighted values (softmax) v 2*L*L*D + output projection
  2*L*D*D + MLP 2*L*D*H*2, i.e. 8*L*D^2 + 4*L*D*H + 4*L^2*D (24*L*D^2 + 4*L^2*D when H = 4D).
- Tubelet embedding 2*N*(C*t*p*p)*D; predictor input projection 2*Kc*D*P; output projection
  2*Kt*P*D_out (only target tokens are projected).
- Backward = 2 x forward (gradients with respect to inputs and to weights) for every part that
  trains: the context encoder and the predictor. The target encoder runs forward only.
- Not counted: layer norms, GELU, softmax exponentials, residual adds, gathers, the loss, the
  optimiser and the EMA update (all O(L*D), a few percent at most).
- Token counts come from the masks actually used, per sample and per mask generator: the context
  encoder runs on each sample's *valid* context tokens and the predictor on its valid context plus
  target tokens. Padding slots (pad collation) are implementation overhead, not model FLOPs; the
  clip is embedded once (re-embedding per generator, as the official code does, is overhead too).

Shapes: B batch, N tokens in the clip, Kc / Kt context / target tokens, D encoder width,
P predictor width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from vjepa.config import Config, ModelConfig
from vjepa.masks import MaskBatch


def block_flops(tokens: int, width: int, mlp_hidden: int) -> int:
    """Forward FLOPs of one transformer block on one sequence of `tokens` tokens.

    Args:
        tokens: L, the sequence length.
        width: D, the model width.
        mlp_hidden: H, the MLP hidden width.

    Returns:
        8*L*D^2 + 4*L*D*H + 4*L^2*D.
    """
    L, D, H = tokens, width, mlp_hidden  # the formula's names
    return 2 * L * D * 3 * D + 2 * L * L * D + 2 * L * L * D + 2 * L * D * D + 2 * L * D * H * 2


def encoder_flops(tokens: int, width: int, depth: int, mlp_hidden: int) -> int:
    """Forward FLOPs of `depth` blocks on one sequence (no embedding).

    Args:
        tokens: L, the sequence length.
        width: D; depth: number of blocks; mlp_hidden: H.

    Returns:
        depth * `block_flops(tokens, width, mlp_hidden)`.
    """
    return depth * block_flops(tokens, width, mlp_hidden)


def mask_token_counts(masks: MaskBatch) -> tuple[list[int], list[int]]:
    """Valid context and target tokens of each sample: ([Kc_b], [Kt_b]) over the batch."""

    def counts(idx, valid) -> list[int]:
        if valid is None:
            return [idx.shape[1]] * idx.shape[0]
        return [int(c) for c in valid.sum(dim=1).tolist()]

    return counts(masks.context_idx, masks.context_valid), counts(masks.target_idx, masks.target_valid)


@dataclass
class StepFlops:
    """Model FLOPs of one training step, by part (floats, summed over the batch)."""

    target_forward: float = 0.0
    context_forward: float = 0.0
    context_backward: float = 0.0
    predictor_forward: float = 0.0
    predictor_backward: float = 0.0

    @property
    def total(self) -> float:
        """Sum of all parts."""
        return (
            self.target_forward
            + self.context_forward
            + self.context_backward
            + self.predictor_forward
            + self.predictor_backward
        )

    def as_dict(self) -> dict[str, float]:
        """The parts and the total, for JSON."""
        return {**asdict(self), "total": self.total}


def _masked_forward_flops(m: ModelConfig, masks: Sequence[MaskBatch], out_dim: int, embed: int) -> tuple[int, int]:
    """Forward FLOPs of the context encoder (plus `embed`, the clips' embedding) and of the
    predictor over every sample of every generator, from the masks' token counts."""
    D, P = m.embed_dim, m.predictor_embed_dim
    mlp, predictor_mlp = int(D * m.mlp_ratio), int(P * m.predictor_mlp_ratio)
    context, predictor = embed, 0
    for mask in masks:
        for num_context, num_target in zip(*mask_token_counts(mask)):
            context += encoder_flops(num_context, D, m.depth, mlp)
            predictor += 2 * num_context * D * P  # predictor_embed
            predictor += encoder_flops(num_context + num_target, P, m.predictor_depth, predictor_mlp)
            predictor += 2 * num_target * P * out_dim  # predictor_proj
    return context, predictor


def step_flops(cfg: Config, masks: Sequence[MaskBatch], num_tokens: int) -> StepFlops:
    """Model FLOPs of one training step (see the module docstring for the formula).

    Args:
        cfg: the run's config (model widths and depths, objective).
        masks: the step's masks, one `MaskBatch` per generator (token counts are read from them).
        num_tokens: N, tokens in the clip (for the target encoder and the embedding).

    Returns:
        A `StepFlops` summed over the batch.
    """
    m = cfg.model
    D = m.embed_dim
    patch_dim = m.in_chans * m.tubelet_size * m.patch_size**2
    embed = 2 * num_tokens * patch_dim * D  # tubelet embedding of one clip
    flops = StepFlops()
    batch = masks[0].context_idx.shape[0]
    if cfg.objective.kind == "jepa":
        flops.target_forward = batch * (embed + encoder_flops(num_tokens, D, m.depth, int(D * m.mlp_ratio)))
    out_dim = patch_dim if cfg.objective.kind == "pixel" else D
    # the clip is embedded once for every generator
    context, predictor = _masked_forward_flops(m, masks, out_dim, batch * embed)
    flops.context_forward, flops.context_backward = float(context), 2.0 * context
    flops.predictor_forward, flops.predictor_backward = float(predictor), 2.0 * predictor
    flops.target_forward = float(flops.target_forward)
    return flops
