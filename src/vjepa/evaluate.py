"""Frozen evaluation: clip -> frozen encoder -> cached token features -> probe -> top-1.

The encoder runs once per split (no gradients, eval mode, optionally bf16) and its token
features are kept, so every probe on one encoder (attentive or linear, motion or appearance,
all or 5% of the labels) trains on the same cache. Cached features carry no augmentation.

Multi-view testing: each clip is cut into S temporal segments of F frames, each seen through C
spatial crops (left/centre/right); a view is one [C_in, F, h, w] clip. The probe either reads each
view alone, or (`attend_across_segments`) one crop's S segments at once, and the softmax
probabilities of a clip's views are averaged (as the official evaluation does).

Shape legend: M clips, V = S*C views per clip (segment-major: view s*C + c), N tokens per view,
D width, G view groups the probe reads (S*C, or C when attending across segments), L tokens per
group (N, or S*N), K classes.

Example:
    >>> result = quick_probe("runs/demo", task="motion")       # ~1-3 min on a laptop CPU
    >>> encoder, cfg = load_encoder("runs/demo")
    >>> probe_encoder(encoder, cfg, task="appearance", probe="linear", label_fraction=0.05)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vjepa.api import load
from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.config import Config, ConfigError, ProbeConfig, to_dict
from vjepa.distributed import resolve_device
from vjepa.models.probe import PROBE_VARIANTS, build_probe
from vjepa.models.vit import VisionTransformer, build_encoder

SYNTHETIC_TASKS = ("motion", "appearance")
PROBE_KINDS = ("attentive", "linear")

# ---------------------------------------------------------------------------------------------
# loading a frozen encoder


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (-> its latest.pt) or a checkpoint file -> the checkpoint path."""
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (pass a run directory or a .pt file)")
    return path


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and requires_grad False on every parameter; returns the module."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_encoder(
    path: str | Path, which: str = "target_encoder", device: str | torch.device = "cpu"
) -> tuple[VisionTransformer, Config]:
    """Load a trained encoder, frozen, from anything `vjepa.load` reads (run directory, .pt
    checkpoint, .safetensors export, official .pth.tar).

    Args:
        path: run directory (uses latest.pt) or checkpoint file (`latest.pt`, `step_N.pt`, ...).
        which: "target_encoder" (the EMA encoder the paper evaluates), "encoder", or "init" (the
            encoder as the run's training initialised it: its own random-init baseline).
            Checkpoints without a target encoder (pixel objective, supervised baseline) fall back
            to "encoder".
        device: where the encoder lives.

    Returns:
        (encoder in eval mode with requires_grad False, the run's Config).
    """
    # the target -> encoder fallback is expected here (pixel and supervised runs have no target)
    encoder = load(resolve_checkpoint(path), which, device, with_predictor=False, warn_fallback=False)
    return freeze(encoder.model), encoder.config


def random_encoder(cfg: Config, seed: int = 0) -> VisionTransformer:
    """A frozen, untrained encoder shaped as `cfg` would train it (the random-init baseline)."""
    torch.manual_seed(seed)
    return freeze(build_encoder(cfg.model, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames))


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A short hash of every parameter and buffer: names cached features of this exact encoder."""
    digest = hashlib.sha1()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# views: segments x crops per clip


def segment_starts(total_frames: int, frames_per_segment: int, num_segments: int) -> list[int]:
    """First frame of each of `num_segments` windows of `frames_per_segment`, evenly spaced.

    The first window starts at 0 and the last ends at `total_frames`; windows overlap when the
    clip is shorter than S*F frames (with S = 1 the window is the clip's start).
    """
    if frames_per_segment > total_frames:
        raise ConfigError(f"segments of {frames_per_segment} frames do not fit in {total_frames}-frame clips")
    if num_segments == 1:
        return [0]
    span = total_frames - frames_per_segment
    return [round(i * span / (num_segments - 1)) for i in range(num_segments)]


def image_clip(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Probe images as videos: [B, C, H, W] -> clips of the repeated frame [B, C, num_frames, H, W]."""
    return images.unsqueeze(2).expand(-1, -1, num_frames, -1, -1).contiguous()


def frames_per_segment(cfg: Config, probe_cfg: ProbeConfig) -> int:
    """F: `probe_cfg.frames_per_segment`, or the frames the encoder was trained on."""
    return probe_cfg.frames_per_segment or cfg.data.num_frames


class SyntheticViews(Dataset):
    """The built-in set as evaluation views: item `video` [S*C, 3, F, h, w], plus its labels.

    Segments are temporal windows of the rendered clip (`data.synthetic.num_frames` frames);
    crops are those of `EvalTransform` after resizing the short side to crop_size * resize_ratio.
    """

    def __init__(self, cfg: Config, probe_cfg: ProbeConfig, split: str, num_crops: int):
        from vjepa.data.synthetic import SyntheticVideoDataset
        from vjepa.data.transforms import EvalTransform

        d = cfg.data
        self.clips = SyntheticVideoDataset(d.synthetic, split, transform=None, cache=False)
        self.transform = EvalTransform(d.crop_size, probe_cfg.resize_ratio, num_crops, d.mean, d.std)
        self.length = frames_per_segment(cfg, probe_cfg)
        self.starts = segment_starts(d.synthetic.num_frames, self.length, probe_cfg.num_segments)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frames, motion, appearance = self.clips.clip(index)  # [T, H, W, 3] uint8
        frames = torch.from_numpy(frames)
        views = [self.transform(frames[s : s + self.length]) for s in self.starts]  # each [C, 3, F, h, w]
        return {"video": torch.cat(views), "motion": motion, "appearance": appearance}


def view_dataset(cfg: Config, probe_cfg: ProbeConfig, split: str, num_crops: int) -> Dataset:
    """Evaluation views of `split`: the synthetic set, or `data.datasets.build_dataset` for real video.

    Real video: `data.num_clips` = S segments of F frames, `num_crops` crops each; items carry
    `video` [S*C, 3, F, h, w] and `label`.
    """
    if cfg.data.source == "synthetic":
        return SyntheticViews(cfg, probe_cfg, split, num_crops)
    from vjepa.data.datasets import build_dataset
    from vjepa.data.transforms import build_transform

    frames = frames_per_segment(cfg, probe_cfg)
    data = dataclasses.replace(cfg.data, num_clips=probe_cfg.num_segments, num_frames=frames)
    transform = build_transform(data, train=False, num_crops=num_crops, resize_ratio=probe_cfg.resize_ratio)
    return build_dataset(data, split, False, transform)


# ---------------------------------------------------------------------------------------------
# the feature cache


@dataclass
class Features:
    """Frozen-encoder token features of one split.

    Attributes:
        tokens: [M, V, N, D] (bf16 or fp32), V = num_segments * num_crops, segment-major.
        labels: task name -> int64 [M] (e.g. motion, appearance; `label` for real video).
        num_segments: S.
        num_crops: C.
        class_names: names of the `label` classes (index = label) where the dataset knows them
            (class folders, prepared caches); empty otherwise.
    """

    tokens: torch.Tensor
    labels: dict[str, torch.Tensor]
    num_segments: int = 1
    num_crops: int = 1
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, index: torch.Tensor) -> Features:
        """The features and labels of clips `index` [M'] only."""
        labels = {k: v[index] for k, v in self.labels.items()}
        return Features(self.tokens[index], labels, self.num_segments, self.num_crops, self.class_names)


def save_features(path: str | Path, features: Features) -> None:
    """Write features to a .safetensors file (tokens, labels.<task>; view counts and class names
    in the metadata)."""
    from safetensors.torch import save_file

    from vjepa.checkpoint import atomic_write

    tensors = {"tokens": features.tokens.contiguous()}
    tensors.update({f"labels.{k}": v.contiguous() for k, v in features.labels.items()})
    meta = {"num_segments": str(features.num_segments), "num_crops": str(features.num_crops),
            "class_names": json.dumps(features.class_names)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_features(path: str | Path) -> Features:
    """Read features written by `save_features`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    labels = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("labels.")}
    segments, crops = int(meta.get("num_segments", 1)), int(meta.get("num_crops", 1))
    names = json.loads(meta.get("class_names", "[]"))
    return Features(tensors["tokens"], labels, segments, crops, names)


def _batch_labels(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    keys = [k for k in (*SYNTHETIC_TASKS, "label") if k in batch]
    return {k: torch.as_tensor(batch[k]).long() for k in keys}


def _autocast(device: torch.device, enabled: bool):
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    num_segments: int = 1,
    num_crops: int = 1,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    bf16: bool = True,
    store_dtype: torch.dtype = torch.bfloat16,
    num_workers: int = 0,
    progress: bool = False,
) -> Features:
    """Run the frozen encoder once over a dataset of view stacks and keep every token.

    Args:
        encoder: a `VisionTransformer` (put in eval mode here; its weights are not touched).
        dataset: items with `video` [V, 3, F, h, w] (or [3, F, h, w] for V = 1) and int labels.
        num_segments, num_crops: the view layout, V = S * C.
        batch_size: clips per encoder call (times V views).
        device: where the encoder runs; features are stored on the CPU.
        bf16: bf16 autocast for the encoder (CPU or CUDA).
        store_dtype: dtype of the stored tokens (bf16 halves the memory).
        num_workers: DataLoader workers rendering / decoding clips.
        progress: show a tqdm bar.

    Returns:
        `Features` with tokens [M, V, N, D] and the dataset's `classes` (if it has them) as class_names.
    """
    from tqdm.auto import tqdm

    from vjepa.data import collate

    device = torch.device(device)
    encoder.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    tokens, labels, filled = None, {}, 0
    for batch in tqdm(loader, desc="features", unit="batch", disable=not progress, leave=False):
        video = batch["video"]
        video = video.unsqueeze(1) if video.ndim == 5 else video  # [b, V, 3, F, h, w]
        b, v = video.shape[:2]
        with _autocast(device, bf16):
            out = encoder(video.flatten(0, 1).to(device))  # [b*V, N, D]
        out = out.view(b, v, *out.shape[1:]).to("cpu", store_dtype)
        if tokens is None:
            tokens = torch.empty(len(dataset), *out.shape[1:], dtype=store_dtype)
        tokens[filled : filled + b] = out
        for key, value in _batch_labels(batch).items():
            labels.setdefault(key, []).append(value)
        filled += b
    if tokens is None:
        raise ValueError("cannot extract features of an empty dataset")
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    names = [str(name) for name in getattr(base, "classes", [])]
    return Features(tokens[:filled], {k: torch.cat(v) for k, v in labels.items()}, num_segments, num_crops,
                    names)


class FeatureCache:
    """Token features of one frozen encoder, computed once per split and view layout.

    Training splits are viewed through the centre crop only (C = 1), evaluation splits through
    `probe_cfg.num_crops` crops; both through `probe_cfg.num_segments` segments. With
    `probe_cfg.cache_dir` the features also go to disk, named by a hash of the encoder's weights and
    of the data config, so a later process reuses them.

    Args:
        encoder: the frozen encoder.
        cfg: the run's Config (data and model sections).
        probe_cfg: view layout, batch size, dtype, max_train_clips, cache_dir, device.
        progress: show tqdm bars while extracting.
    """

    def __init__(
        self, encoder: nn.Module, cfg: Config, probe_cfg: ProbeConfig | None = None, progress: bool = False
    ):
        self.encoder, self.cfg = freeze(encoder), cfg
        self.probe_cfg = probe_cfg or ProbeConfig()
        self.progress = progress
        self.seconds = 0.0  # time spent running the encoder
        self._store: dict[tuple, Features] = {}
        self._fingerprint: str | None = None

    def _key(self, split: str, train: bool) -> tuple:
        p = self.probe_cfg
        crops = 1 if train else p.num_crops
        limit = p.max_train_clips if train else 0
        return split, p.num_segments, crops, frames_per_segment(self.cfg, p), p.resize_ratio, limit

    def _path(self, key: tuple) -> Path | None:
        if not self.probe_cfg.cache_dir:
            return None
        if self._fingerprint is None:  # this encoder's weights on this data
            data = hashlib.sha1(json.dumps(to_dict(self.cfg.data), sort_keys=True).encode()).hexdigest()[:6]
            self._fingerprint = f"{encoder_fingerprint(self.encoder)}-{data}"
        split, segments, crops, frames, ratio, limit = key
        name = f"{self._fingerprint}_{split}_s{segments}c{crops}f{frames}r{ratio:g}m{limit}.safetensors"
        return Path(self.probe_cfg.cache_dir) / name

    def get(self, split: str, train: bool) -> Features:
        """Features of `split` (train=True: centre crop, at most max_train_clips clips)."""
        key = self._key(split, train)
        if key not in self._store:
            path = self._path(key)
            if path is not None and path.is_file():
                self._store[key] = load_features(path)
            else:
                self._store[key] = self._extract(key)
                if path is not None:
                    save_features(path, self._store[key])
        return self._store[key]

    def _extract(self, key: tuple) -> Features:
        split, segments, crops, _, _, limit = key
        p = self.probe_cfg
        dataset = view_dataset(self.cfg, p, split, crops)
        if limit and limit < len(dataset):
            dataset = Subset(dataset, range(limit))
        start = time.perf_counter()
        store = torch.bfloat16 if p.feature_dtype == "bf16" else torch.float32
        features = extract_features(self.encoder, dataset, segments, crops, p.feature_batch_size,
                                    resolve_device(p.device), self.cfg.run.dtype == "bf16", store,
                                    self.cfg.data.num_workers, self.progress)
        self.seconds += time.perf_counter() - start
        return features


# ---------------------------------------------------------------------------------------------
# probe inputs, low-shot subsets, view aggregation


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


def aggregate_views(logits: torch.Tensor) -> torch.Tensor:
    """A clip's prediction from its view groups' logits: mean of softmax probabilities.

    Args:
        logits: [M, G, K].

    Returns:
        probabilities [M, K].
    """
    return logits.float().softmax(dim=-1).mean(dim=1)


def top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of predictions [M, K] against labels [M]."""
    return 100.0 * (probs.argmax(dim=-1) == labels).float().mean().item()


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [K, K]: row = true class, column = predicted class (argmax of probs [M, K])."""
    index = labels.long() * num_classes + probs.argmax(dim=-1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_top1(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 in percent of each true class (a row of `confusion`); None for a class with no clips."""
    totals = confusion.sum(dim=1)
    return [100.0 * confusion[k, k].item() / n if n else None for k, n in enumerate(totals.tolist())]


def direction_given_type(confusion: list[list[int]] | torch.Tensor) -> dict[str, float | None]:
    """Built-in motion task: per motion type (`MOTION_TYPES`), of the clips of that type that the
    probe put in one of the type's two classes, the share with the right direction (percent,
    chance 50; None where there were none). Separates "which kind of motion" from "which way"."""
    from vjepa.data.synthetic import MOTION_CLASSES, MOTION_TYPES

    confusion = torch.as_tensor(confusion)
    index = {name: k for k, name in enumerate(MOTION_CLASSES)}
    out: dict[str, float | None] = {}
    for kind, (negative, positive) in MOTION_TYPES.items():
        a, b = index[negative], index[positive]
        right = int(confusion[a, a] + confusion[b, b])
        within = right + int(confusion[a, b] + confusion[b, a])
        out[kind] = 100.0 * right / within if within else None
    return out


def class_names(task: str, num_classes: int, known: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`num_classes` labels for `task`: `known` names if given (a real dataset's class folders),
    else the built-in set's class names (motion, appearance); the class index as a string for
    classes beyond the names."""
    from vjepa.data.synthetic import APPEARANCE_CLASSES, MOTION_CLASSES

    names = list(known) or {"motion": MOTION_CLASSES, "appearance": APPEARANCE_CLASSES}.get(task, [])
    return [names[k] if k < len(names) else str(k) for k in range(num_classes)]


def pool_tokens(features: Features, chunk: int = 256) -> Features:
    """Average each view's tokens: [M, V, N, D] -> [M, V, 1, D] (fp32). Exact input for a linear probe.

    Segments all have N tokens, so averaging the pooled views of one crop equals pooling the
    concatenated S*N tokens: attend_across_segments stays exact.
    """
    pooled = torch.cat([features.tokens[i : i + chunk].float().mean(dim=2, keepdim=True)
                        for i in range(0, len(features), chunk)])
    return dataclasses.replace(features, tokens=pooled)


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
            with _autocast(device, x.dtype == torch.bfloat16):  # bf16 features: bf16 matmuls (2x on CPU)
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
        with _autocast(device, x.dtype == torch.bfloat16):
            logits = probe(x).float()  # [b*G, K]
        out.append(aggregate_views(logits.view(len(index), -1, logits.shape[-1])).cpu())
    return torch.cat(out)


def probe_features(
    train: Features,
    test: Features,
    task: str,
    probe_cfg: ProbeConfig,
    embed_dim: int,
    num_heads: int,
    return_probe: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Train one probe on `train` features and score it on `test` features.

    Args:
        train, test: features from one encoder (test may have more crops than train).
        task: the label to predict (a key of `Features.labels`).
        probe_cfg: probe kind, optimisation, label_fraction (class-balanced low-shot), seed.
        embed_dim, num_heads: the encoder's width and heads (the probe's heads default to them).
        return_probe: also return the trained probe (on the CPU), e.g. to save it.

    Returns:
        dict with top1 and train_top1 (percent), per_class_top1 (percent per true class, None where
        the test split has none), confusion ([K, K] counts, row = true class), class_names (K labels:
        class folder names, the built-in set's names, or indices), num_train, num_test, num_classes,
        num_heads, final_loss, probe_seconds; with return_probe, (that dict, the trained probe).
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
    probe = build_probe(probe_cfg.kind, embed_dim, heads, num_classes, probe_cfg.depth, probe_cfg.variant)
    device = resolve_device(probe_cfg.device)
    history = train_probe(probe, train, train.labels[task], probe_cfg, device)
    test_probs = predict(probe, test, probe_cfg, device)
    confusion = confusion_matrix(test_probs, test.labels[task], num_classes)
    result = {
        "top1": top1(test_probs, test.labels[task]),
        "per_class_top1": per_class_top1(confusion), "confusion": confusion.tolist(),
        "class_names": class_names(task, num_classes, train.class_names if task == "label" else ()),
        "train_top1": top1(predict(probe, train, probe_cfg, device), train.labels[task]),
        "num_train": len(train), "num_test": len(test), "num_classes": num_classes,
        "final_loss": history[-1] if history else float("nan"),
        "probe_seconds": time.perf_counter() - start, "num_heads": heads,
    }
    return (result, probe.cpu()) if return_probe else result


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
    return probe_cfg


def probe_encoder(
    encoder: nn.Module,
    cfg: Config,
    task: str = "motion",
    probe: str = "attentive",
    label_fraction: float = 1.0,
    probe_cfg: ProbeConfig | None = None,
    cache: FeatureCache | None = None,
    return_probe: bool = False,
    **overrides: Any,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Probe a frozen encoder (trained or random-init) on the run's data; report held-out top-1.

    Args:
        encoder: a `VisionTransformer`; frozen here (eval mode, no gradients), never modified.
        cfg: the Config it was trained with (data and model sections are used).
        task: motion | appearance (built-in set) or label (real video).
        probe: attentive | linear.
        label_fraction: share of training labels used, class-balanced (e.g. 0.05).
        probe_cfg: further settings (epochs, views, eval_split, ...); defaults `ProbeConfig()`.
        cache: a `FeatureCache` of this encoder to reuse across calls (made if None).
        return_probe: also return the trained probe (see `probe_features`).
        **overrides: any `ProbeConfig` field, e.g. epochs=50, num_crops=3.

    Returns:
        dict with task, probe, top1 (percent, on `eval_split`), train_top1, label_fraction, sizes,
        seconds (feature_seconds for the encoder, probe_seconds for the probe) and the settings.
    """
    settings = {"kind": probe, "task": task, "label_fraction": label_fraction, **overrides}
    probe_cfg = make_probe_config(probe_cfg, **settings)
    if cache is None:
        cache = FeatureCache(encoder, cfg, probe_cfg)
    cache.probe_cfg = dataclasses.replace(cache.probe_cfg, **_view_settings(probe_cfg))
    before = cache.seconds
    train, test = cache.get("train", train=True), cache.get(probe_cfg.eval_split, train=False)
    result = probe_features(train, test, task, probe_cfg, encoder.embed_dim, encoder.num_heads, return_probe)
    result, module = result if return_probe else (result, None)
    result = {"task": task, "probe": probe, "label_fraction": label_fraction, **result,
              "eval_split": probe_cfg.eval_split, "feature_seconds": cache.seconds - before,
              "settings": to_dict(probe_cfg)}
    return (result, module) if return_probe else result


def _view_settings(probe_cfg: ProbeConfig) -> dict[str, Any]:
    """The ProbeConfig fields that decide which features a cache holds."""
    keys = ("num_segments", "num_crops", "frames_per_segment", "resize_ratio", "max_train_clips",
            "feature_batch_size", "feature_dtype", "cache_dir", "device")
    return {k: getattr(probe_cfg, k) for k in keys}


# quick_probe's protocol (also used by benchmarks that probe a random-init baseline beside it)
QUICK_TRAIN_CLIPS = 1024
QUICK_EVAL_SPLIT = "val"


def quick_probe(
    run_dir: str | Path,
    task: str = "motion",
    epochs: int = 100,
    probe: str = "attentive",
    max_train_clips: int = QUICK_TRAIN_CLIPS,
    eval_split: str = QUICK_EVAL_SPLIT,
    which: str = "target_encoder",
    threads: int = 0,
    verbose: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Probe a finished run fast: a train subset, the val split, one view per clip.

    `demo64` on one busy CPU core: ~70 s to encode 1024 + 256 clips (once per checkpoint: later
    calls on the same file reuse the features, see `recent_cache`), then ~60 s per attentive probe
    and a few seconds per linear one; `demo` (32 px) with 4096 clips: ~100 s per encoder in all. For reported numbers use `probe_encoder` / `vjepa probe`
    (all training clips, the test split).

    Args:
        run_dir: run directory or checkpoint file.
        task: motion | appearance.
        epochs: probe epochs on cached features.
        probe: attentive | linear.
        max_train_clips: training clips used (0: all).
        eval_split: split scored (val by default, leaving test for final numbers).
        which: checkpoint network to probe (target_encoder, encoder, or init: the run's own random init).
        threads: torch threads (0: leave as is).
        verbose: print a one-line summary.
        **overrides: any `ProbeConfig` field.

    Returns:
        `probe_encoder`'s dict plus `checkpoint` and `step`.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    cache = recent_cache(run_dir, which)
    result = probe_encoder(cache.encoder, cache.cfg, task, probe, cache=cache, epochs=epochs,
                           max_train_clips=max_train_clips, eval_split=eval_split, **overrides)
    result.update(checkpoint=str(resolve_checkpoint(run_dir)), step=_probed_step(run_dir, which))
    if verbose:
        print(describe(result))
    return result


_RECENT: dict[tuple, FeatureCache] = {}


def recent_cache(path: str | Path, which: str = "target_encoder") -> FeatureCache:
    """The feature cache of the checkpoint `quick_probe` saw last, kept while that file is unchanged.

    So `quick_probe(run, "motion")` then `quick_probe(run, "appearance")` runs the encoder once.
    Only the most recent checkpoint's features are kept in memory.
    """
    checkpoint = resolve_checkpoint(path)
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns, which)
    if key not in _RECENT:
        _RECENT.clear()
        encoder, cfg = load_encoder(checkpoint, which)
        _RECENT[key] = FeatureCache(encoder, cfg)
    return _RECENT[key]


def checkpoint_step(path: str | Path) -> int | None:
    """The training step stored in a checkpoint (None if it has none)."""
    step = load_checkpoint(resolve_checkpoint(path)).get("step")
    return None if step is None else int(step)


def describe_classes(result: dict[str, Any]) -> str:
    """One line of per-class top-1, labelled by the result's class_names (folder names, the built-in
    set's names, or indices)."""
    accuracies = result.get("per_class_top1", [])
    names = class_names(result["task"], len(accuracies), result.get("class_names", ()))
    return "per class: " + ", ".join(f"{name} {'-' if acc is None else f'{acc:.1f}'}"
                                     for name, acc in zip(names, accuracies))


def describe(result: dict[str, Any]) -> str:
    """One line: task, probe, label share, top-1 on the scored split, and the time taken."""
    seconds = result.get("feature_seconds", 0.0) + result.get("probe_seconds", 0.0)
    return (f"{result['task']:<10} {result['probe']:<9} labels {100 * result['label_fraction']:>5.1f}%  "
            f"top-1 {result['top1']:5.1f}% on {result['eval_split']} ({result['num_test']} clips; "
            f"train {result['train_top1']:.1f}%)  {seconds:.0f}s")


# ---------------------------------------------------------------------------------------------
# the standard set and its outputs


def evaluate_encoder(
    encoder: nn.Module,
    cfg: Config,
    probe_cfg: ProbeConfig | None = None,
    tasks: tuple[str, ...] = SYNTHETIC_TASKS,
    kinds: tuple[str, ...] = PROBE_KINDS,
    label_fractions: tuple[float, ...] = (1.0,),
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Every (task, probe kind, label fraction) combination on one shared feature cache."""
    probe_cfg = validate_probe(copy.deepcopy(probe_cfg or ProbeConfig()))
    cache = FeatureCache(encoder, cfg, probe_cfg)
    results = []
    for task in tasks:
        for kind in kinds:
            for fraction in label_fractions:
                results.append(probe_encoder(encoder, cfg, task, kind, fraction, probe_cfg, cache))
                if verbose:
                    print(describe(results[-1]), flush=True)
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of probe results: task, probe, labels, top-1, train top-1, clips."""
    lines = ["| task | probe | labels | top-1 (%) | train top-1 (%) | train clips | test clips |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['probe']} | {100 * r['label_fraction']:g}% | {r['top1']:.1f} | "
                     f"{r['train_top1']:.1f} | {r['num_train']} | {r['num_test']} |")
    return "\n".join(lines)


def write_json(path: str | Path, payload: Any) -> Path:
    """Write `payload` as indented JSON (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# what the `vjepa probe` / `vjepa eval` commands call


def default_tasks(cfg: Config) -> tuple[str, ...]:
    """motion and appearance on the built-in set; the dataset's `label` otherwise."""
    return SYNTHETIC_TASKS if cfg.data.source == "synthetic" else ("label",)


def _result_dir(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


def _file_suffix(probe_cfg: ProbeConfig) -> str:
    """"" for the target encoder scored on test; "_<split>" and "_<network>" otherwise, so those
    probes keep their own result files."""
    split = "" if probe_cfg.eval_split == "test" else f"_{probe_cfg.eval_split}"
    return split + ("" if probe_cfg.encoder == "target_encoder" else f"_{probe_cfg.encoder}")


def _probed_step(path: str | Path, which: str) -> int | None:
    """The training step of the weights probed: 0 for a run's init, else the checkpoint's step."""
    return 0 if which == "init" else checkpoint_step(path)


def probe_checkpoint(
    path: str | Path,
    probe_cfg: ProbeConfig,
    overrides: list[str] = (),
    output: str | Path | None = None,
    save_probe: str | Path | bool = True,
) -> dict[str, Any]:
    """Load a checkpoint's encoder, run one probe, write the JSON result and the trained probe.

    Args:
        path: run directory or checkpoint file.
        probe_cfg: the probe (kind, task, label_fraction, epochs, views, eval_split, ...).
        overrides: `section.key=value` changes to the run's Config (e.g. data.source=csv data.path=...).
        output: JSON path (default: <run dir>/probe_<task>_<kind>_<labels>.json, with `_<split>`
            before `.json` when not scoring the test split and `_encoder` / `_init` when probing
            that network; `step` is 0 for an init).
        save_probe: where to write the trained probe (`vjepa.classify` probe file: weights, view
            protocol, class names); True: beside the JSON, with `.safetensors` for `.json`; False: not.

    Returns:
        The result; `output` and (if saved) `probe_file` name the files written.
    """
    from vjepa.config import apply_overrides

    validate_probe(probe_cfg)
    encoder, cfg = load_encoder(path, probe_cfg.encoder, resolve_device(probe_cfg.device))
    cfg = apply_overrides(cfg, list(overrides))
    result, module = probe_encoder(encoder, cfg, probe_cfg.task, probe_cfg.kind, probe_cfg.label_fraction,
                                   probe_cfg, return_probe=True)
    result.update(checkpoint=str(resolve_checkpoint(path)), step=_probed_step(path, probe_cfg.encoder))
    name = f"probe_{probe_cfg.task}_{probe_cfg.kind}_{100 * probe_cfg.label_fraction:g}pct{_file_suffix(probe_cfg)}.json"
    output = Path(output or _result_dir(path) / name)
    if save_probe:
        from vjepa.classify import save_trained_probe

        probe_file = output.with_suffix(".safetensors") if save_probe is True else Path(save_probe)
        record = {"source": str(Path(result["checkpoint"]).resolve()), "which": probe_cfg.encoder,
                  "fingerprint": encoder_fingerprint(encoder)}
        result["probe_file"] = str(save_trained_probe(probe_file, module, probe_cfg, cfg, record,
                                                      result["class_names"], result["num_heads"], result))
    result["output"] = str(write_json(output, result))
    return result


def evaluate_checkpoint(
    path: str | Path,
    probe_cfg: ProbeConfig,
    label_fractions: tuple[float, ...] = (1.0,),
    overrides: list[str] = (),
    output: str | Path | None = None,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """The standard set on one checkpoint: every task x (attentive, linear) x label fraction.

    Writes all results to `output` (default: <run dir>/eval.json, suffixed like `probe_checkpoint`'s
    files for another split or network) and returns them.
    """
    from vjepa.config import apply_overrides

    encoder, cfg = load_encoder(path, probe_cfg.encoder, resolve_device(probe_cfg.device))
    cfg = apply_overrides(cfg, list(overrides))
    tasks = default_tasks(cfg)
    results = evaluate_encoder(encoder, cfg, probe_cfg, tasks, PROBE_KINDS, label_fractions, verbose)
    step = _probed_step(path, probe_cfg.encoder)
    for r in results:
        r.update(checkpoint=str(resolve_checkpoint(path)), step=step)
    write_json(output or _result_dir(path) / f"eval{_file_suffix(probe_cfg)}.json", results)
    return results
