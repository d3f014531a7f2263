"""Training a probe on frozen features: low-shot subsets, view grouping, AdamW + warmup-cosine, predict.

Shape legend: M clips, V = S*C views per clip, N tokens per view, D width, G view groups the
probe reads (S*C, or C when attending across segments), L tokens per group (N, or S*N), K classes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vjepa.config import ConfigError, ProbeConfig
from vjepa.distributed import resolve_device
from vjepa.eval.features import Features, pool_tokens
from vjepa.eval.metrics import aggregate_views, class_names, confusion_matrix, per_class_top1, top1
from vjepa.models.probe import build_probe
from vjepa.precision import autocast

PROBE_KINDS = ("attentive", "linear")


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced low-shot subset: the same number of clips from every class.

    Each class keeps round(fraction * M / K) clips (at least one; all it has if fewer), drawn
    without replacement by a generator seeded with `seed`. fraction >= 1 keeps everything.

    Args:
        labels: int64 [M].
        fraction: share of the M labels to keep, e.g. 0.05.
        seed: draw seed.

    Returns:
        Sorted int64 indices [M'].
    """
    if fraction >= 1.0:
        return torch.arange(len(labels))
    if fraction <= 0.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    classes = labels.unique()
    per_class = max(1, round(fraction * len(labels) / len(classes)))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = (labels == c).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def probe_inputs(
    tokens: torch.Tensor, num_segments: int, num_crops: int, attend_across_segments: bool
) -> torch.Tensor:
    """Group a batch's views for the probe: [b, V, N, D] -> [b, G, L, D].

    Without `attend_across_segments` every view is its own group (G = S*C, L = N); with it, the
    S segments of each crop are concatenated along the tokens (G = C, L = S*N).
    """
    b, _, n, d = tokens.shape
    if not attend_across_segments:
        return tokens
    views = tokens.view(b, num_segments, num_crops, n, d)
    return views.transpose(1, 2).reshape(b, num_crops, num_segments * n, d)  # [b, C, S*N, D]



# ---------------------------------------------------------------------------------------------
# training a probe


def probe_lr(step: int, total_steps: int, warmup_steps: int, lr: float, final_lr: float = 0.0) -> float:
    """Linear warmup 0 -> lr over `warmup_steps`, then cosine lr -> final_lr at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def probe_optimizer(probe: nn.Module, probe_cfg: ProbeConfig) -> torch.optim.Optimizer:
    """AdamW; biases, norms and the query tokens' 1-D parameters get no weight decay."""
    decay = [p for n, p in probe.named_parameters() if p.ndim > 1 and not n.endswith("query_tokens")]
    rest = [p for n, p in probe.named_parameters() if not (p.ndim > 1 and not n.endswith("query_tokens"))]
    groups = [{"params": decay, "weight_decay": probe_cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=probe_cfg.lr)


def _probe_batch(
    features: Features, index: torch.Tensor, probe_cfg: ProbeConfig, device: torch.device
) -> torch.Tensor:
    """Clips `index` as probe inputs [b*G, L, D] on `device`, in the stored dtype (bf16 or fp32)."""
    tokens = features.tokens[index].to(device)  # [b, V, N, D]
    if tokens.dtype != torch.bfloat16:
        tokens = tokens.float()
    groups = probe_inputs(tokens, features.num_segments, features.num_crops, probe_cfg.attend_across_segments)
    return groups.flatten(0, 1)


def train_probe(
    probe: nn.Module, features: Features, labels: torch.Tensor, probe_cfg: ProbeConfig, device: torch.device
) -> list[float]:
    """Train `probe` on cached features: AdamW, warmup + cosine per step, cross-entropy.

    Every view group of a clip is a training sample with the clip's label.

    Args:
        probe: an `AttentiveClassifier` or `LinearProbe` (trained in place, on `device`).
        features: training features [M, V, N, D].
        labels: int64 [M].
        probe_cfg: epochs, batch size, lr, final_lr, warmup_epochs, weight decay, seed.
        device: where the probe trains.

    Returns:
        The mean training loss of each epoch.
    """
    probe.to(device).train()
    optimizer = probe_optimizer(probe, probe_cfg)
    steps_per_epoch = math.ceil(len(features) / probe_cfg.batch_size)
    total = probe_cfg.epochs * steps_per_epoch
    warmup = min(probe_cfg.warmup_epochs, probe_cfg.epochs // 10) * steps_per_epoch  # at most a tenth
    generator = torch.Generator().manual_seed(probe_cfg.seed)
    history, step = [], 0
    for _ in range(probe_cfg.epochs):
        order, losses = torch.randperm(len(features), generator=generator), []
        for index in order.split(probe_cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = probe_lr(step, total, warmup, probe_cfg.lr, probe_cfg.final_lr)
            x = _probe_batch(features, index, probe_cfg, device)  # [b*G, L, D]
            y = labels[index].repeat_interleave(x.shape[0] // len(index)).to(device)
            with autocast(device, x.dtype == torch.bfloat16):  # bf16 features: bf16 matmuls (2x on CPU)
                loss = F.cross_entropy(probe(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        history.append(sum(losses) / len(losses))
    return history


@torch.no_grad()
def predict(
    probe: nn.Module, features: Features, probe_cfg: ProbeConfig, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """Multi-view prediction: every view group's logits, softmax-averaged per clip -> probs [M, K]."""
    probe.to(device).eval()
    out = []
    for index in torch.arange(len(features)).split(batch_size):
        x = _probe_batch(features, index, probe_cfg, device)  # [b*G, L, D]
        with autocast(device, x.dtype == torch.bfloat16):
            logits = probe(x).float()  # [b*G, K]
        out.append(aggregate_views(logits.view(len(index), -1, logits.shape[-1])).cpu())
    return torch.cat(out)


def probe_features(
    train: Features, test: Features, task: str, probe_cfg: ProbeConfig, embed_dim: int, num_heads: int
) -> dict[str, Any]:
    """Train one probe on `train` features and score it on `test` features.

    Args:
        train, test: features from one encoder (test may have more crops than train).
        task: the label to predict (a key of `Features.labels`).
        probe_cfg: probe kind, optimisation, label_fraction (class-balanced low-shot), seed.
        embed_dim, num_heads: the encoder's width and heads (the probe's heads default to them).

    Returns:
        dict with top1 and train_top1 (percent), per_class_top1 (percent per true class, None where
        the test split has none), confusion ([K, K] counts, row = true class), class_names (K labels:
        class folder names, the built-in set's names, or indices), num_train, num_test, num_classes,
        final_loss, probe_seconds.
    """
    if task not in train.labels:
        raise ConfigError(f"task {task!r} not available; these features carry {', '.join(train.labels)}")
    start = time.perf_counter()
    train = train.subset(balanced_subset(train.labels[task], probe_cfg.label_fraction, probe_cfg.seed))
    if probe_cfg.kind == "linear":  # the linear probe only sees token means: pool once
        train, test = pool_tokens(train), pool_tokens(test)
    num_classes = int(max(train.labels[task].max(), test.labels[task].max())) + 1
    torch.manual_seed(probe_cfg.seed)
    heads = probe_cfg.num_heads or num_heads
    probe = build_probe(probe_cfg.kind, embed_dim, heads, num_classes, probe_cfg.depth)
    device = resolve_device(probe_cfg.device)
    history = train_probe(probe, train, train.labels[task], probe_cfg, device)
    test_probs = predict(probe, test, probe_cfg, device)
    confusion = confusion_matrix(test_probs, test.labels[task], num_classes)
    return {
        "top1": top1(test_probs, test.labels[task]),
        "per_class_top1": per_class_top1(confusion), "confusion": confusion.tolist(),
        "class_names": class_names(task, num_classes, train.class_names if task == "label" else ()),
        "train_top1": top1(predict(probe, train, probe_cfg, device), train.labels[task]),
        "num_train": len(train), "num_test": len(test), "num_classes": num_classes,
        "final_loss": history[-1] if history else float("nan"),
        "probe_seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------------
# one call: encoder in, accuracy out


def make_probe_config(probe_cfg: ProbeConfig | None = None, **overrides: Any) -> ProbeConfig:
    """A copy of `probe_cfg` (default: `ProbeConfig()`) with keyword overrides; unknown keys raise."""
    probe_cfg = copy.deepcopy(probe_cfg or ProbeConfig())
    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown probe setting {key!r}; valid: {', '.join(sorted(names))}")
        setattr(probe_cfg, key, value)
    validate_probe(probe_cfg)
    return probe_cfg


def validate_probe(probe_cfg: ProbeConfig) -> ProbeConfig:
    """Check a ProbeConfig's choices; raise ConfigError naming the bad key."""
    if probe_cfg.kind not in PROBE_KINDS:
        raise ConfigError(f"probe kind {probe_cfg.kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    if probe_cfg.num_crops not in (1, 3):
        raise ConfigError(f"num_crops must be 1 or 3, got {probe_cfg.num_crops}")
    if not 0.0 < probe_cfg.label_fraction <= 1.0:
        raise ConfigError(f"label_fraction must be in (0, 1], got {probe_cfg.label_fraction}")
    if probe_cfg.feature_dtype not in ("bf16", "fp32"):
        raise ConfigError(f"feature_dtype must be bf16 or fp32, got {probe_cfg.feature_dtype!r}")
    if probe_cfg.epochs < 1 or probe_cfg.batch_size < 1 or probe_cfg.num_segments < 1:
        raise ConfigError("epochs, batch_size and num_segments must be >= 1")
    return probe_cfg
