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
from vjepa.jepa import param_groups
from vjepa.models.probe import PROBE_KINDS, PROBE_VARIANTS, build_probe
from vjepa.precision import autocast


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
    members = [(labels == c).nonzero().squeeze(1) for c in classes]  # classes in ascending order
    return torch.cat([m[torch.randperm(len(m), generator=generator)[:per_class]] for m in members]).sort().values


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
    """AdamW over `vjepa.jepa.param_groups` (biases, norms and the query tokens get no weight decay);
    group 0 is the decayed one, whose decay `probe_step` schedules."""
    groups = param_groups(probe)
    for group in groups:
        group.setdefault("weight_decay", probe_cfg.weight_decay)  # the no-decay group holds 0.0
    return torch.optim.AdamW(groups, lr=probe_cfg.lr)


def probe_weight_decay(step: int, total_steps: int, probe_cfg: ProbeConfig) -> float:
    """Cosine from `weight_decay` to `final_weight_decay` over training (constant when it is < 0)."""
    final = probe_cfg.final_weight_decay
    if final < 0:
        return probe_cfg.weight_decay
    progress = min(step / max(1, total_steps), 1.0)
    return final + (probe_cfg.weight_decay - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_lengths(probe_cfg: ProbeConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, warmup steps): warmup is at most a tenth of the epochs."""
    warmup = min(probe_cfg.warmup_epochs, probe_cfg.epochs // 10) * steps_per_epoch
    return probe_cfg.epochs * steps_per_epoch, warmup


def probe_step(
    probe: nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor | None, labels: torch.Tensor | None,
    layout: tuple[int, int], probe_cfg: ProbeConfig, schedule: tuple[int, int, int], shard: tuple[Any, int] = (None, 0),
) -> float:
    """One AdamW step on a batch of view tokens; returns the loss.

    Every view group of a clip is a training sample with the clip's label (the official loss: the
    mean over groups of the cross-entropy).

    Args:
        tokens: [b, V, N, D] on the probe's device (bf16 tokens train under bf16 autocast); None for
            a rank whose share of the batch is empty.
        labels: int64 [b].
        layout: (S segments, C crops) of the V views.
        schedule: (step, total steps, warmup steps).
        shard: (a `distributed.DistEnv`, clips in the whole batch) when each rank holds a share of
            the batch: each rank's summed loss over the global count, gradients summed over ranks,
            so the step is the whole batch's.
    """
    step, total, warmup = schedule
    optimizer.param_groups[0]["weight_decay"] = probe_weight_decay(step, total, probe_cfg)
    for group in optimizer.param_groups:
        group["lr"] = probe_lr(step, total, warmup, probe_cfg.lr, probe_cfg.final_lr)
    env, global_clips = shard
    optimizer.zero_grad(set_to_none=True)
    loss = _probe_loss(probe, tokens, labels, layout, probe_cfg, global_clips if env is not None else 0)
    if loss is not None:
        loss.backward()
    if env is not None:
        loss = _sum_over_ranks(probe, loss, env)
    if probe_cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(probe.parameters(), probe_cfg.grad_clip)
    optimizer.step()
    return loss.item()


def _probe_loss(probe: nn.Module, tokens: torch.Tensor | None, labels: torch.Tensor | None, layout: tuple[int, int],
                probe_cfg: ProbeConfig, global_clips: int) -> torch.Tensor | None:
    """Cross-entropy over view groups: the mean, or (global_clips > 0) the sum over global_clips * G."""
    if tokens is None:
        return None
    tokens = tokens if tokens.dtype == torch.bfloat16 else tokens.float()
    x = probe_inputs(tokens, *layout, probe_cfg.attend_across_segments).flatten(0, 1)  # [b*G, L, D]
    groups = x.shape[0] // len(labels)
    y = labels.to(x.device).repeat_interleave(groups)
    with autocast(x.device, x.dtype == torch.bfloat16):  # bf16 features: bf16 matmuls (2x on CPU)
        logits = probe(x).float()
    if not global_clips:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits, y, reduction="sum") / (global_clips * groups)


def _sum_over_ranks(probe: nn.Module, loss: torch.Tensor | None, env: Any) -> torch.Tensor:
    """All-reduce (sum) the probe's gradients and the loss over ranks; a rank without clips adds zeros."""
    import torch.distributed as dist

    for p in probe.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    total = (loss.detach() if loss is not None else torch.zeros((), device=next(probe.parameters()).device)).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def train_probe(
    probe: nn.Module, features: Features, labels: torch.Tensor, probe_cfg: ProbeConfig, device: torch.device,
    progress: bool = False,
) -> list[float]:
    """Train `probe` on cached features: AdamW, warmup + cosine LR, cosine weight decay, cross-entropy.

    Args:
        probe: an `AttentiveClassifier` or `LinearProbe` (trained in place, on `device`).
        features: training features [M, V, N, D].
        labels: int64 [M].
        probe_cfg: epochs, batch size, lr, final_lr, warmup_epochs, weight decay, grad_clip, seed;
            with `state_file` and `checkpoint_every` it checkpoints and resumes exactly.
        device: where the probe trains.
        progress: show a tqdm bar of the epochs.

    Returns:
        The mean training loss of each epoch.
    """
    from vjepa.eval.progress import ProbeProgress, epoch_batches

    probe.to(device).train()
    optimizer = probe_optimizer(probe, probe_cfg)
    steps_per_epoch = math.ceil(len(features) / probe_cfg.batch_size)
    total, warmup = schedule_lengths(probe_cfg, steps_per_epoch)
    layout = (features.num_segments, features.num_crops)
    # resumes from probe_cfg.state_file if there
    tracker = ProbeProgress(probe_cfg, probe, optimizer, steps_per_epoch, show=progress)
    for epoch, step, index in epoch_batches(len(features), probe_cfg, tracker.step):
        tokens = features.tokens[index].to(device)  # [b, V, N, D]
        tracker.record(epoch, probe_step(probe, optimizer, tokens, labels[index], layout, probe_cfg,
                                         (step, total, warmup)))
    return tracker.finish()


@torch.no_grad()
def predict_tokens(probe: nn.Module, tokens: torch.Tensor, layout: tuple[int, int], probe_cfg: ProbeConfig) -> torch.Tensor:
    """Multi-view prediction of one batch: tokens [b, V, N, D] -> softmax averaged over view groups [b, K]."""
    tokens = tokens if tokens.dtype == torch.bfloat16 else tokens.float()
    x = probe_inputs(tokens, *layout, probe_cfg.attend_across_segments).flatten(0, 1)  # [b*G, L, D]
    with autocast(x.device, x.dtype == torch.bfloat16):
        logits = probe(x).float()  # [b*G, K]
    return aggregate_views(logits.view(len(tokens), -1, logits.shape[-1])).cpu()


def predict(
    probe: nn.Module, features: Features, probe_cfg: ProbeConfig, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """Multi-view prediction: every view group's logits, softmax-averaged per clip -> probs [M, K]."""
    probe.to(device).eval()
    layout = (features.num_segments, features.num_crops)
    return torch.cat([predict_tokens(probe, features.tokens[index].to(device), layout, probe_cfg)
                      for index in torch.arange(len(features)).split(batch_size)])


def probe_features(
    train: Features,
    test: Features,
    task: str,
    probe_cfg: ProbeConfig,
    embed_dim: int,
    num_heads: int,
    return_probe: bool = False,
    progress: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Train one probe on `train` features and score it on `test` features.

    Args:
        train, test: features from one encoder (test may have more crops than train).
        task: the label to predict (a key of `Features.labels`).
        probe_cfg: probe kind, optimisation, label_fraction (class-balanced low-shot), seed.
        embed_dim, num_heads: the encoder's width and heads (the probe's heads default to them).
        return_probe: also return the trained probe (on the CPU), e.g. to save it.
        progress: show a tqdm bar of the probe's epochs.

    Returns:
        dict with top1 and train_top1 (percent), per_class_top1 (percent per true class, None where
        the test split has none), confusion ([K, K] counts, row = true class), class_names (K labels:
        class folder names, the built-in set's names, or indices), num_train, num_test, num_classes,
        num_heads, final_loss, probe_seconds; with return_probe, (that dict, the trained probe).

    Raises:
        DataError: for unlabelled training clips or test labels outside the training classes.
    """
    if task not in train.labels:
        raise ConfigError(f"task {task!r} not available; these features carry {', '.join(train.labels)}")
    start = time.perf_counter()
    train = train.subset(balanced_subset(train.labels[task], probe_cfg.label_fraction, probe_cfg.seed))
    if probe_cfg.kind == "linear":  # the linear probe only sees token means: pool once
        train, test = pool_tokens(train), pool_tokens(test)
    test_labels = align_labels(train.class_names, test.class_names, test.labels[task], task)
    num_classes = check_labels(train.labels[task], test_labels, task, train.class_names, train.paths, test.paths)
    probe = new_probe(probe_cfg, embed_dim, num_heads, num_classes)
    device = resolve_device(probe_cfg.device)
    history = train_probe(probe, train, train.labels[task], probe_cfg, device, progress)
    result = score(predict(probe, test, probe_cfg, device), test_labels, num_classes, task, train.class_names)
    result = {**result, "train_top1": top1(predict(probe, train, probe_cfg, device), train.labels[task]),
              "num_train": len(train), "num_test": len(test), "final_loss": history[-1] if history else float("nan"),
              "probe_seconds": time.perf_counter() - start, "num_heads": probe_cfg.num_heads or num_heads}
    return (result, probe.cpu()) if return_probe else result


def new_probe(probe_cfg: ProbeConfig, embed_dim: int, num_heads: int, num_classes: int) -> nn.Module:
    """The probe `probe_cfg` names (kind, depth, variant), initialised from its seed (heads default to the
    encoder's)."""
    torch.manual_seed(probe_cfg.seed)
    return build_probe(probe_cfg.kind, embed_dim, probe_cfg.num_heads or num_heads, num_classes, probe_cfg.depth,
                       probe_cfg.variant)


def score(probs: torch.Tensor, labels: torch.Tensor, num_classes: int, task: str, names: list[str]) -> dict[str, Any]:
    """top1, per_class_top1, confusion, class_names and num_classes of predictions [M, K] against labels [M]."""
    confusion = confusion_matrix(probs, labels, num_classes)
    return {"top1": top1(probs, labels), "per_class_top1": per_class_top1(confusion),
            "confusion": confusion.tolist(), "num_classes": num_classes,
            "class_names": class_names(task, num_classes, names if task == "label" else ())}


def align_labels(train_names: list[str], test_names: list[str], labels: torch.Tensor, task: str = "label",
                 split: str = "test") -> torch.Tensor:
    """Test labels re-indexed to the training classes by name (class folders of two splits may
    differ: a test split without `cats` numbers `dogs` 0).

    Raises:
        DataError: naming a test class that the training split does not have.
    """
    from vjepa.data.datasets import DataError

    if task != "label" or not train_names or not test_names or train_names == test_names:
        return labels
    unknown = sorted(set(test_names) - set(train_names))
    if unknown:
        raise DataError(f"the {split} split has classes the train split lacks: {', '.join(unknown)} "
                        f"(train classes: {', '.join(train_names)})")
    mapping = torch.tensor([train_names.index(name) for name in test_names], dtype=torch.int64)
    return mapping[labels]


def check_labels(train: torch.Tensor, test: torch.Tensor, task: str, names: list[str] = (),
                 train_paths: list[str] = (), test_paths: list[str] = ()) -> int:
    """The number of classes K; raise a clear error for labels a probe cannot learn or score.

    Real data (`task` "label"): every training clip needs a label in [0, K) and every test label
    must be one of those K classes (K = the class names' count where known, else max train label + 1)
    that has training clips.

    Raises:
        DataError: for an empty split, an unlabelled (-1) clip, or a label outside the classes,
            naming the first such clip.
    """
    from vjepa.data.datasets import DataError

    if len(train) == 0 or len(test) == 0:
        raise DataError(f"the {'train' if len(train) == 0 else 'test'} split has no clips")
    if task != "label":  # the built-in set: labels are its class indices by construction
        return int(max(train.max(), test.max())) + 1
    num_classes = len(names) or int(train.max()) + 1
    for split, labels, paths in (("train", train, train_paths), ("test", test, test_paths)):
        _check_label_range(split, labels, paths, num_classes)
    # class folders number the union of both splits' classes: a test class may have no training clip
    untrained = sorted(set(test.tolist()) - set(train.tolist()))
    if untrained:
        lacking = ", ".join(names[k] if k < len(names) else str(k) for k in untrained)
        raise DataError(f"the test split has classes the train split lacks: {lacking} (no training clips)")
    return num_classes


def _check_label_range(split: str, labels: torch.Tensor, paths: list[str], num_classes: int) -> None:
    """DataError naming the first clip of `split` whose label is not in [0, num_classes) (-1: unlabelled)."""
    from vjepa.data.datasets import DataError

    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        first = int(bad[0])
        where = f" ({paths[first]})" if len(paths) > first else ""
        raise DataError(f"{len(bad)} {split} clips have labels outside the {num_classes} training classes "
                        f"0..{num_classes - 1}, e.g. label {int(labels[first])}{where}; unlabelled clips are -1")


def class_balance(train: Any, test: Any, probe_cfg: ProbeConfig) -> tuple[Any, int, list[str]]:
    """Datasets for a streaming probe: the class-balanced low-shot train subset, test classes aligned
    to train's by name, and the label checks of `check_labels`; returns (train, K, class names)."""
    from torch.utils.data import Subset

    from vjepa.eval.views import dataset_labels

    task, names = probe_cfg.task, [str(c) for c in getattr(train, "classes", [])]
    train_labels, test_labels = dataset_labels(train, task), dataset_labels(test, task)
    test_names = [str(c) for c in getattr(test, "classes", [])]
    aligned = align_labels(names, test_names, test_labels, task, probe_cfg.eval_split)
    if not torch.equal(aligned, test_labels):
        test.records = [dataclasses.replace(r, label=int(k)) for r, k in zip(test.records, aligned)]
        test.classes = names
    paths = [r.path for r in getattr(train, "records", [])]
    num_classes = check_labels(train_labels, aligned, task, names, paths, [r.path for r in getattr(test, "records", [])])
    index = balanced_subset(train_labels, probe_cfg.label_fraction, probe_cfg.seed)
    if probe_cfg.max_train_clips:
        index = index[: probe_cfg.max_train_clips]
    return (train if len(index) == len(train) else Subset(train, index.tolist())), num_classes, names


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
    if probe_cfg.variant not in PROBE_VARIANTS:
        raise ConfigError(f"probe variant {probe_cfg.variant!r}; choose one of {', '.join(PROBE_VARIANTS)}")
    if probe_cfg.depth < 1:
        raise ConfigError(f"probe depth must be >= 1, got {probe_cfg.depth}")
    if probe_cfg.epochs < 1 or probe_cfg.batch_size < 1 or probe_cfg.num_segments < 1:
        raise ConfigError("epochs, batch_size and num_segments must be >= 1")
    if probe_cfg.frame_step < 1 or probe_cfg.fps < 0:
        raise ConfigError(f"probe frame_step must be >= 1 and fps >= 0, got {probe_cfg.frame_step}, {probe_cfg.fps}")
    if probe_cfg.folds == 1 or probe_cfg.folds < 0:
        raise ConfigError(f"folds must be 0 (no cross-validation) or >= 2, got {probe_cfg.folds}")
    if probe_cfg.group_by not in ("file", "folder"):
        raise ConfigError(f"group_by must be file or folder, got {probe_cfg.group_by!r}")
    return probe_cfg
