"""The V-JEPA objective: target features, prediction loss, EMA update, schedules, collapse monitor.

Shapes: B batch, C channels, T frames, H/W pixels, N tokens, Kc/Kt context/target tokens,
D encoder width. Every schedule is a pure function of the step, so resuming is "restore the step".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vjepa.config import Config, OptimConfig
from vjepa.masks import MaskBatch, pack_masks
from vjepa.models.factory import build_encoder, token_grid
from vjepa.models.patch_embed import patchify
from vjepa.models.predictor import build_predictor
from vjepa.models.vit import Kernels, gather_tokens, set_kernels


@dataclass(frozen=True)
class StepOptions:
    """How `JEPA.forward` lays the step out: speed only, the losses agree to float rounding.

    `vjepa.bench` builds models with other options to time the official code's structure next to
    ours in one process (`official_options()`).

    Attributes:
        pack: pad collation: every generator's valid context tokens packed into one sequence
            (attention within each row), so the encoder's linear layers, norms, the predictor's
            output projection and the loss run on valid tokens only (`JEPA.packed_losses`).
        batch_generators: pad collation without `pack`: every generator's predictor pass in one
            [G*B, N] batch (contexts padded to the batch's longest row).
        reembed_per_generator: the official structure: each generator re-embeds the whole clip.
        kernels: attention and embedding kernels of every encoder and predictor block.
    """

    pack: bool = True
    batch_generators: bool = True
    reembed_per_generator: bool = False
    kernels: Kernels = field(default_factory=Kernels)


def official_options() -> StepOptions:
    """The official code's step as its pretraining configs run it: SDPA (`use_sdpa: true`) in every
    block, Conv3d tubelet embedding, the whole clip re-embedded and one predictor pass per generator."""
    return StepOptions(False, False, True, Kernels(attention="sdpa", conv3d_patch_embed=True))

# ---------------------------------------------------------------------------------------------
# schedules (pure functions of the step)


def schedule_length(optim: OptimConfig) -> int:
    """Steps the schedules span: the run length times `schedule_scale` (official ipe_scale)."""
    return max(1, int(optim.steps * optim.schedule_scale))


def learning_rate(step: int, optim: OptimConfig) -> float:
    """Linear warmup start_lr -> lr over warmup_steps, then cosine lr -> final_lr."""
    if step < optim.warmup_steps:
        return optim.start_lr + (optim.lr - optim.start_lr) * step / max(1, optim.warmup_steps)
    progress = (step - optim.warmup_steps) / max(1, schedule_length(optim) - optim.warmup_steps)
    progress = min(progress, 1.0)
    return optim.final_lr + (optim.lr - optim.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weight_decay(step: int, optim: OptimConfig) -> float:
    """Cosine weight decay from weight_decay to final_weight_decay over the schedule length."""
    progress = min(step / schedule_length(optim), 1.0)
    start, end = optim.weight_decay, optim.final_weight_decay
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, optim: OptimConfig) -> float:
    """Linear EMA momentum ema[0] -> ema[1] over the schedule length."""
    start, end = optim.ema
    return start + (end - start) * min(step / schedule_length(optim), 1.0)


def ema_init_share(steps: int, optim: OptimConfig) -> float:
    """Weight the EMA target still gives its initial (random) weights after `steps` updates.

    Update k (k = 1..steps, as `train_step` applies them) keeps a `ema_momentum(k)` share of the old
    target, so the initial weights keep the product of the momenta. The paper's 90k steps leave ~0;
    a few hundred steps leave most of it, which is why a short run's target encoder is partly its
    random init (docs/results/2026-11-29-demo64-seeds.md).
    """
    return math.exp(sum(math.log(ema_momentum(k, optim)) for k in range(1, steps + 1)))


# ---------------------------------------------------------------------------------------------
# losses and targets


def layer_norm_targets(features: torch.Tensor) -> torch.Tensor:
    """Official target normalisation: LayerNorm over D without affine parameters (eps 1e-5)."""
    return F.layer_norm(features, features.shape[-1:])


def center_tokens(features: torch.Tensor) -> torch.Tensor:
    """Subtract each clip's mean token: [B, N, D] -> [B, N, D] with zero mean over N per clip.

    With `objective.target_norm=layer_center` the predictor regresses what sets a token apart from the
    rest of its clip; the clip-level part of the target (its colours, its background) carries no
    loss, so an encoder cannot lower the loss by broadcasting clip-level codes
    (docs/results/2026-11-29-predictor-shortcut.md).
    """
    return features - features.mean(dim=1, keepdim=True)


def instance_norm_tokens(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each feature over its clip's tokens: [B, N, D] -> [B, N, D], zero mean and unit
    variance over N for every (clip, dimension), as data2vec normalises its teacher's outputs.

    With `objective.target_norm=layer_instance` the predictor regresses how each token differs from
    the rest of its clip, at a fixed scale: a target encoder whose tokens converge on one code per
    clip cannot make the targets easier (with `layer_center` it could: centred targets of a
    clip-constant encoder are all zero).
    """
    normed = F.instance_norm(features.float().transpose(1, 2), eps=eps)  # over N, per (clip, dimension)
    return normed.transpose(1, 2).to(features.dtype)


def pixel_targets(video: torch.Tensor, tubelet_size: int, patch_size: int) -> torch.Tensor:
    """VideoMAE-style targets: each tubelet's pixels normalised by its own mean/std: [B, N, C*t*p*p]."""
    patches = patchify(video.float(), tubelet_size, patch_size)
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (var + 1e-6).sqrt()


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Per-row mean of [B, K] values over the slots where `valid` [B, K] is True (all if None): [B]."""
    if valid is None:
        return values.mean(dim=1)
    weights = valid.to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def token_losses(pred: torch.Tensor, target: torch.Tensor, exponent: float = 1.0) -> torch.Tensor:
    """Each token's mean |pred - target|^exponent over D, in fp32: [..., D] x2 -> [...]. The one
    definition of the regression loss; the padded and packed layouts only average it differently."""
    return (pred.float() - target.float()).abs().pow(exponent).mean(dim=-1)


def sample_losses(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, exponent: float = 1.0) -> torch.Tensor:
    """Each sample's mean `token_losses` over its valid target tokens: [B, Kt, D] x2 -> [B]."""
    return masked_mean(token_losses(pred, target, exponent), valid)


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, exponent: float = 1.0) -> torch.Tensor:
    """Mean over samples of `sample_losses`: [B, Kt, D] x2 -> scalar. exponent 1: L1 (V-JEPA), 2: L2.

    Every sample weighs the same (as in the official code, whose truncated rows are all equally
    long), so a batch's loss is the mean of its parts' losses: N ranks x B clips give exactly the
    loss and gradient of one process with N*B clips.
    """
    return sample_losses(pred, target, valid, exponent).mean()


def variance_penalty(pred: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Official optional regulariser: mean ReLU(1 - sqrt(Var_tokens(pred) + 1e-4)) per dimension."""
    pred = pred.float()
    if valid is None:
        var = pred.var(dim=1)  # [B, D]
    else:
        weights = valid.float().unsqueeze(-1)  # [B, Kt, 1]
        count = weights.sum(dim=1).clamp_min(2.0)
        mean = (pred * weights).sum(dim=1) / count
        var = (((pred - mean[:, None]) ** 2) * weights).sum(dim=1) / (count - 1)
    return std_hinge(var)


def std_hinge(var: torch.Tensor) -> torch.Tensor:
    """The regulariser given each row's per-dimension token variance [R, D]: mean ReLU(1 - std)."""
    return F.relu(1.0 - (var + 1e-4).sqrt()).mean()


# ---------------------------------------------------------------------------------------------
# the model


def segment_mean(values: torch.Tensor, rows: torch.Tensor, num_rows: int, counts: torch.Tensor) -> torch.Tensor:
    """Per-row mean of packed values: [T, ...] with row ids [T] -> [R, ...] (`counts` [R] tokens per row)."""
    sums = values.new_zeros(num_rows, *values.shape[1:]).index_add(0, rows, values)
    return sums / counts.view(-1, *([1] * (values.dim() - 1))).to(values.dtype)


def pad_rows(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of [B, K, ...] to `length`."""
    pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
    return F.pad(x, pad)


def valid_rows(idx: torch.Tensor, valid: torch.Tensor | None, length: int) -> torch.Tensor:
    """Valid flags [B, K] (all True if None) padded with False to [B, length]."""
    valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid
    return F.pad(valid, (0, length - valid.shape[1]), value=False)


class JEPA(nn.Module):
    """Context encoder, predictor and EMA target encoder, with the V-JEPA (or pixel) objective.

    `options` (a `StepOptions`; default: packed contexts, or the padded batched layout when
    `run.compile` is on) choose how the step is laid out and which kernels run; they change
    speed, never results beyond float rounding. `forward(video, masks)` returns a dict with the scalar `loss` (what backward needs) and the
    detached per-generator losses; `target_encoder` never receives gradients.
    """

    def __init__(self, cfg: Config, num_mask_generators: int, options: StepOptions | None = None):
        super().__init__()
        m = cfg.model
        self.objective = cfg.objective.kind
        self.loss_exp = cfg.objective.loss_exp
        self.reg_coeff = cfg.objective.reg_coeff
        self.target_norm = cfg.objective.target_norm
        self.mask_token_by = m.predictor_mask_token
        self.tubelet_size, self.patch_size = m.tubelet_size, m.patch_size
        self.encoder = build_encoder(cfg)
        pixel_dim = m.in_chans * m.tubelet_size * m.patch_size**2
        out_dim = pixel_dim if self.objective == "pixel" else None
        # one mask token per generator unless the config names a count (a V-JEPA 2 file's 10)
        num_tokens = m.predictor_num_mask_tokens or num_mask_generators
        self.predictor = build_predictor(m, num_tokens, token_grid(cfg), out_dim=out_dim)
        if m.predictor_num_mask_tokens:  # tokens no generator indexes (a V-JEPA 2 file's extra ones) stay as
            # loaded: the official predictor indexes its token, so the rest get no gradient and AdamW skips them
            used = 1 if self.mask_token_by == "clip_length" else num_mask_generators
            for token in list(self.predictor.mask_tokens)[used:]:
                token.requires_grad_(False)
        self.target_encoder = copy.deepcopy(self.encoder) if self.objective == "jepa" else None
        if self.target_encoder is not None:
            self.target_encoder.requires_grad_(False)
        self.full_grid = cfg.mask.collate == "pad"  # context and target partition the grid
        # the packed step's per-row lengths change every step: a compiled block would be re-traced
        # (its Segments carry them), so compiled runs keep the padded batched layout (lengths
        # rounded up to a multiple of 8) unless options say otherwise
        self.set_options(options or StepOptions(pack=not cfg.run.compile))

    def set_options(self, options: StepOptions) -> None:
        """Lay the step out as `options` says from now on (kernels of every block included)."""
        self.options = options
        set_kernels(self, options.kernels)

    def mask_tokens(self, num_generators: int, rows: int, device: torch.device) -> torch.Tensor:
        """The predictor mask token of each generator-major row: LongTensor [G*rows].

        `model.predictor_mask_token=generator` gives generator g token g (V-JEPA 1); `clip_length`
        gives every generator token 0 (V-JEPA 2 picks the token by clip-length group, and a run
        has one clip length).
        """
        tokens = torch.arange(num_generators, device=device)
        if self.mask_token_by == "clip_length":
            tokens = torch.zeros_like(tokens)
        return tokens.repeat_interleave(rows)

    def contexts(self, video: torch.Tensor, masks: list[MaskBatch]) -> list[torch.Tensor]:
        """Context-encoder features of each generator's context tokens: one [B, Kc, D] per generator."""
        if self.options.reembed_per_generator:  # the official structure: the whole clip is embedded per generator
            return [self.encoder(video, m.context_idx, m.context_valid) for m in masks]
        tokens = self.encoder.embed(video)  # [B, N, D], embedded once for every generator
        return [self.encoder.encode(tokens, m.context_idx, m.context_valid) for m in masks]

    def predict_batched(
        self, contexts: list[torch.Tensor], masks: list[MaskBatch], grid: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All generators' predictions in one predictor pass over G*B grid-ordered N-token sequences.

        Rows are generator-major (rows g*B..g*B+B-1 belong to generator g; mask tokens: `mask_tokens`);
        index rows are zero-padded to the longest generator with valid flags False.

        Returns:
            pred [G*B, Kt, D], target_idx [G*B, Kt], target_valid [G*B, Kt].
        """
        num_context = max(c.shape[1] for c in contexts)
        num_target = max(m.target_idx.shape[1] for m in masks)
        context = torch.cat([pad_rows(c, num_context) for c in contexts])  # [G*B, Kc, D]
        context_idx = torch.cat([pad_rows(m.context_idx, num_context) for m in masks])  # [G*B, Kc]
        context_valid = torch.cat([valid_rows(m.context_idx, m.context_valid, num_context) for m in masks])
        target_idx = torch.cat([pad_rows(m.target_idx, num_target) for m in masks])  # [G*B, Kt]
        target_valid = torch.cat([valid_rows(m.target_idx, m.target_valid, num_target) for m in masks])
        b = contexts[0].shape[0]
        mask_index = self.mask_tokens(len(masks), b, context.device)  # [G*B]
        pred = self.predictor(context, context_idx, target_idx, mask_index, context_valid, target_valid, grid, full_grid=True)
        return pred, target_idx, target_valid

    def packed_losses(
        self, video: torch.Tensor, masks: list[MaskBatch], targets: torch.Tensor, grid: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-generator losses [G] and the variance penalty, with no padding slot in any layer.

        Every generator's valid context tokens form one packed sequence through the encoder
        (attention within each row); the predictor lays each row out on the grid (N tokens, as the
        batched pass does) and projects, compares and averages only the valid target tokens. The
        losses equal the padded paths' to float rounding (a mean per sample, then per generator).
        """
        b, n = video.shape[0], targets.shape[1]
        packed = pack_masks(masks, n, self.mask_tokens(len(masks), b, video.device))
        tokens = self.encoder.embed(video)  # [B, N, D], embedded once for every generator
        context = self.encoder.encode_packed(tokens, packed.context, grid)  # [Tc, D]
        pred = self.predictor.forward_packed(context, packed, grid)  # [Tt, D]
        target = targets.reshape(b * n, -1)[packed.target.source]  # [Tt, D]
        per_token = token_losses(pred, target, self.loss_exp)  # [Tt]
        rows, num_rows = packed.target.rows, len(masks) * b
        counts = torch.tensor(packed.target.lengths, device=video.device, dtype=torch.float32)  # [R]
        losses = segment_mean(per_token, rows, num_rows, counts).view(len(masks), b).mean(dim=1)  # [G]
        reg = torch.zeros((), device=video.device)
        if self.reg_coeff > 0:  # as `variance_penalty`: unbiased variance over each row's tokens
            p = pred.float()
            denominator = counts.clamp_min(2.0)
            mean = segment_mean(p, rows, num_rows, denominator)  # [R, D]
            var = segment_mean((p - mean[rows]) ** 2, rows, num_rows, denominator - 1)  # [R, D]
            reg = std_hinge(var)
        return losses, reg

    @torch.no_grad()
    def targets(self, video: torch.Tensor) -> torch.Tensor:
        """Regression targets for every token: [B, C, T, H, W] -> [B, N, D'] (no gradient)."""
        if self.objective == "pixel":
            return pixel_targets(video, self.tubelet_size, self.patch_size)
        return layer_norm_targets(self.target_encoder(video))

    def regression_targets(self, features: torch.Tensor) -> torch.Tensor:
        """What the predictor regresses, from `targets(video)` [B, N, D]: centred per clip with
        `objective.target_norm=layer_center`, normalised per clip and dimension with
        `layer_instance`, else (`layer`, official) unchanged."""
        if self.target_norm == "layer_center":
            return center_tokens(features)
        if self.target_norm == "layer_instance":
            return instance_norm_tokens(features)
        return features

    def forward(self, video: torch.Tensor, masks: list[MaskBatch]) -> dict[str, torch.Tensor]:
        """One objective evaluation: clip [B, C, T, H, W] and one MaskBatch per mask generator.

        With pad collation each generator's valid context and target tokens must partition the
        grid (as `sample_masks` guarantees); the predictor then runs every generator in one pass.
        """
        features = self.targets(video)  # [B, N, D]; the collapse monitor reads these
        targets = self.regression_targets(features)
        grid = self.encoder.patch_embed.grid(*video.shape[2:])
        if self.options.pack and self.full_grid:
            generator_losses, reg = self.packed_losses(video, masks, targets, grid)
            return self.outputs(generator_losses, reg, features)
        contexts = self.contexts(video, masks)  # one [B, Kc, D] per generator
        losses, reg = [], torch.zeros((), device=video.device)
        if self.options.batch_generators and self.full_grid:
            pred, target_idx, target_valid = self.predict_batched(contexts, masks, grid)  # [G*B, Kt, ...]
            b = video.shape[0]  # generator g owns rows g*B..(g+1)*B-1
            for p, idx, valid in zip(pred.split(b), target_idx.split(b), target_valid.split(b)):
                losses.append(prediction_loss(p, gather_tokens(targets, idx), valid, self.loss_exp))
            if self.reg_coeff > 0:
                reg = variance_penalty(pred, target_valid)  # a per-sample mean, so the mean over generators
        else:
            tokens = self.mask_tokens(len(masks), 1, video.device).tolist()
            for token, context, m in zip(tokens, contexts, masks):
                pred = self.predictor(context, m.context_idx, m.target_idx, token, m.context_valid, m.target_valid, grid)
                target = gather_tokens(targets, m.target_idx)  # [B, Kt, D]
                losses.append(prediction_loss(pred, target, m.target_valid, self.loss_exp))
                if self.reg_coeff > 0:
                    reg = reg + variance_penalty(pred, m.target_valid) / len(masks)
        return self.outputs(torch.stack(losses), reg, features)

    def outputs(self, generator_losses: torch.Tensor, reg: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """`forward`'s dict from the per-generator losses [G], the penalty and the target features."""
        prediction = generator_losses.mean()
        return {
            "loss": prediction + self.reg_coeff * reg,
            "prediction_loss": prediction.detach(),
            "generator_losses": generator_losses.detach(),
            "targets": features.detach(),
        }


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter (in place).

    Parameters the online network keeps frozen (`model.freeze_patch_embed`) are skipped: both
    copies hold the same init, and the blend would only add rounding to the target's."""
    pairs = [(t, o.detach()) for t, o in zip(target.parameters(), online.parameters()) if o.requires_grad]
    target_params = [t for t, _ in pairs]
    online_params = [o for _, o in pairs]
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


def build_optimizer(encoder: nn.Module, predictor: nn.Module, optim_cfg: OptimConfig,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW over `param_groups` of the encoder and predictor (predictor LR scaled), as training uses it.

    On CUDA the fused kernel updates every parameter in a few launches (torchtitan's default)
    instead of a loop of foreach kernels; on the CPU the default implementation keeps CPU runs
    bit-identical to earlier ones.

    Args:
        encoder, predictor: the (possibly FSDP-sharded) networks; build after wrapping.
        optim_cfg: `cfg.optim` (lr, betas, predictor_lr_scale).
        device: where the parameters live.
    """
    return adamw(param_groups(encoder, predictor, lr_scales=(1.0, optim_cfg.predictor_lr_scale)), optim_cfg, device)


def adamw(groups: list[dict], optim_cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `groups` with `optim_cfg`'s lr and betas: fused on CUDA, the default elsewhere.
    Pretraining and fine-tuning build theirs here."""
    fused = True if torch.device(device).type == "cuda" else None
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=optim_cfg.betas, fused=fused)


def param_groups(*modules: nn.Module, lr_scales: tuple[float, ...] | None = None) -> list[dict]:
    """AdamW groups as in the official code: biases and 1-D tensors get no weight decay, nor the
    query tokens of an attentive head (as the probe's optimiser; pretraining has none).

    `lr_scales` (one per module) multiply the scheduled LR of that module's parameters (see
    `set_schedules`); modules with equal scales share groups, so the default is the official two.
    """
    scales = lr_scales or (1.0,) * len(modules)
    if len(scales) != len(modules):
        raise ValueError(f"{len(scales)} lr_scales for {len(modules)} modules")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for module, scale in zip(modules, scales):
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith((".bias", "query_tokens"))
            groups.setdefault((float(scale), no_decay), []).append(param)
    out = []
    for (scale, no_decay), params in sorted(groups.items()):
        group = {"params": params, "apply_weight_decay": not no_decay}
        if no_decay:
            group["weight_decay"] = 0.0
        if scale != 1.0:
            group["lr_scale"] = scale
        out.append(group)
    return out


def set_schedules(optimizer: torch.optim.Optimizer, step: int, optim: OptimConfig) -> tuple[float, float]:
    """Write the step's learning rate (times each group's `lr_scale`) and weight decay into the
    optimiser; return the unscaled (lr, wd)."""
    lr, wd = learning_rate(step, optim), weight_decay(step, optim)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if group.get("apply_weight_decay", True):
            group["weight_decay"] = wd
    return lr, wd


# ---------------------------------------------------------------------------------------------
# collapse monitor


@dataclass
class CollapseStats:
    """Health of a batch of target features.

    `std`: feature std across tokens; `effective_rank`: RankMe of the tokens; `within_clip`: the
    share of token variance left after subtracting each clip's mean token (1: tokens of a clip
    differ as much as tokens of different clips; near 0: every token of a clip says the same thing,
    the within-clip collapse that a falling loss can hide). NaN when features carry no clip axis.
    """

    std: float
    effective_rank: float
    dim: int
    within_clip: float = float("nan")


@torch.no_grad()
def collapse_stats(features: torch.Tensor, max_tokens: int = 4096) -> CollapseStats:
    """Feature std across tokens, effective rank exp(H(normalised singular values)) of [.., D], and
    (for [B, N, D] features) the within-clip share of the token variance."""
    within = float("nan")
    if features.dim() == 3 and features.shape[1] > 1:
        f = features.float()
        total = (f - f.mean(dim=(0, 1))).pow(2).mean()
        within = ((f - f.mean(dim=1, keepdim=True)).pow(2).mean() / total.clamp_min(1e-12)).item()
    x = features.reshape(-1, features.shape[-1]).float()
    if x.shape[0] > max_tokens:
        x = x[torch.linspace(0, x.shape[0] - 1, max_tokens).long()]
    std = x.std(dim=0).mean().item()
    singular = torch.linalg.svdvals(x - x.mean(dim=0))
    p = singular / singular.sum().clamp_min(1e-12)
    entropy = -(p * (p + 1e-12).log()).sum()
    return CollapseStats(std=std, effective_rank=entropy.exp().item(), dim=x.shape[1], within_clip=within)


def collapse_warning(stats: CollapseStats, initial: CollapseStats | None) -> str | None:
    """A message when features head toward collapse (tiny std, or rank far below its start), else None."""
    if stats.std < 0.05:
        return f"target features nearly constant across tokens (std {stats.std:.3f}): collapse"
    if stats.within_clip < 0.1:
        return (f"only {100 * stats.within_clip:.0f}% of the target-feature variance is within clips: "
                "tokens of a clip have collapsed onto one clip-level code")
    if initial is not None and stats.effective_rank < 0.25 * initial.effective_rank:
        return (
            f"effective rank fell to {stats.effective_rank:.1f} from {initial.effective_rank:.1f} "
            f"(of {stats.dim} dims): representations are collapsing"
        )
    return None


@dataclass
class CollapseMonitor:
    """The collapse statistics of a run: those of its first monitored step and of the latest one."""

    initial: CollapseStats | None = None
    last: CollapseStats | None = None

    def due(self, done: int, cfg: Config) -> bool:
        """Whether step `done` (1-based) is monitored: the first logged step, every `run.monitor_every`, the last."""
        return self.initial is None or done % cfg.run.monitor_every == 0 or done == cfg.optim.steps

    def update(self, targets: torch.Tensor) -> tuple[dict[str, float], str | None]:
        """Measure a step's targets [B, N, D]: (the fields for its log record, a collapse warning or None)."""
        self.last = collapse_stats(targets)
        self.initial = self.initial or self.last
        fields = {"target_std": self.last.std, "effective_rank": self.last.effective_rank,
                  "within_clip": self.last.within_clip}
        return fields, collapse_warning(self.last, self.initial)

    def summary(self) -> dict[str, float]:
        """Start and end figures for the run's summary (empty when nothing was monitored)."""
        if not (self.initial and self.last):
            return {}
        return {"effective_rank_start": self.initial.effective_rank, "effective_rank_end": self.last.effective_rank,
                "target_std_end": self.last.std, "within_clip_start": self.initial.within_clip,
                "within_clip_end": self.last.within_clip}


def final_effective_rank_ok(summary: dict[str, Any]) -> bool:
    """True when the run's effective rank stayed above a quarter of its start (no collapse)."""
    start, end = summary.get("effective_rank_start"), summary.get("effective_rank_end")
    return bool(start and end and not math.isnan(end) and end >= 0.25 * start)
