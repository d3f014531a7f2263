"""Streaming probes: the frozen encoder runs on every batch, so memory is bounded by the batch.

Nothing is cached: each epoch decodes (in DataLoader workers), augments and encodes its clips
again, as the official frozen evaluation does. The cost is an encoder pass per clip and epoch;
the gain is that a Kinetics-sized set needs no terabytes of token cache and training clips can
be augmented.

Shape legend: b clips per batch, V = S*C views per clip, N tokens per view, D width, K classes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vjepa.config import ProbeConfig
from vjepa.eval.features import encode_batches
from vjepa.eval.probe_train import predict_tokens, probe_optimizer, probe_step, schedule_lengths
from vjepa.eval.progress import EpochSeeded, ProbeProgress, epoch_batches
from vjepa.precision import resolve_dtype


def train_probe_streaming(
    probe: nn.Module,
    encoder: nn.Module,
    dataset: Dataset,
    task: str,
    probe_cfg: ProbeConfig,
    device: torch.device,
    bf16: bool = True,
    env: Any = None,
    progress: bool = False,
) -> list[float]:
    """Train `probe` on clips encoded on the fly: the same steps as `train_probe` on cached features.

    Under torchrun (`env`, a `distributed.DistEnv` of several ranks) each rank encodes its share
    of every batch (clips rank, rank + W, ...) and the probe's gradients are summed over ranks, so
    every rank takes the single-process step.

    An unreadable clip (None from an evaluation dataset) is left out of its batch, which is then
    smaller (its loss the mean over the clips that remain, over all ranks); a step whose clips are
    all unreadable changes nothing but still counts, so the step order stays that of `epoch_batches`.

    Args:
        probe: trained in place on `device`.
        encoder: the frozen encoder (no gradients, eval mode).
        dataset: training views: items `video` [S, 3, F, h, w] (or [3, F, h, w]) and `task` labels.
        task: the label key of the items.
        probe_cfg: optimisation (epochs, batch_size, lr, weight decay, grad_clip), seed, the view layout.
        device: where encoder and probe run.
        bf16: bf16 autocast for the encoder.
        env: the process group's `DistEnv`, or None for one process.
        progress: show tqdm bars: the probe's epochs, and each epoch's feature batches.

    Returns:
        The mean training loss of each epoch.
    """
    probe.to(device).train()
    optimizer = probe_optimizer(probe, probe_cfg)
    steps_per_epoch = math.ceil(len(dataset) / probe_cfg.batch_size)
    total, warmup = schedule_lengths(probe_cfg, steps_per_epoch)
    layout = (probe_cfg.num_segments, 1)  # training views: one crop of every segment
    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)
    distributed = env is not None and env.distributed
    # resumes from probe_cfg.state_file if there
    tracker = ProbeProgress(probe_cfg, probe, optimizer, steps_per_epoch, show=progress)
    seeded = EpochSeeded(dataset, probe_cfg.seed)  # item i of epoch e: the same augmentation, resumed or not
    steps = epoch_batches(len(dataset), probe_cfg, tracker.step)
    for epoch, batches in itertools.groupby(steps, key=lambda item: item[0]):
        batches = list(batches)  # this epoch's remaining steps, in train_probe's order
        seeded.epoch = epoch
        shares = [index[rank::world].tolist() for _, _, index in batches]  # this rank's clips of each batch
        encoded = encode_batches(encoder, seeded, probe_cfg.batch_size, device, bf16, probe_cfg.num_workers,
                                 progress, batches=[share for share in shares if share])
        for (_, step, _), share in zip(batches, shares):
            tokens, labels = next(encoded)[1:] if share else (None, {})
            clips = _clips_over_ranks(0 if tokens is None else len(tokens), env) if distributed else 0
            if tokens is None and not clips:  # every clip of this step unreadable (on every rank)
                tracker.record(epoch, None)
                continue
            tracker.record(epoch, probe_step(probe, optimizer, tokens, labels.get(task), layout, probe_cfg,
                                              (step, total, warmup), (env, clips) if distributed else (None, 0)))
    return tracker.finish()


def _clips_over_ranks(clips: int, env: Any) -> int:
    """The clips of this step on all ranks together (unreadable ones left out), summed over ranks."""
    import torch.distributed as dist

    total = torch.tensor([clips], dtype=torch.int64, device=env.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())


@torch.no_grad()
def predict_streaming(
    probe: nn.Module,
    encoder: nn.Module,
    dataset: Dataset,
    task: str,
    probe_cfg: ProbeConfig,
    device: torch.device,
    bf16: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Multi-view prediction of every readable clip of `dataset`, encoded on the fly.

    Returns:
        (probabilities [M, K], labels [M], the clips' paths where the items carry them); M leaves
        out the clips that could not be read.

    Raises:
        DataError: when not one clip could be read.
    """
    from vjepa.data.datasets import all_skipped_error
    from vjepa.eval.features import skip_summary, skipped_records

    probe.to(device).eval()
    layout = (probe_cfg.num_segments, probe_cfg.num_crops)
    probs, labels, paths = [], [], []
    batches = encode_batches(encoder, dataset, probe_cfg.feature_batch_size, device, bf16, probe_cfg.num_workers,
                             progress, keep=("path",))
    for _, tokens, batch_labels in batches:
        if tokens is None:  # every clip of the batch unreadable
            continue
        probs.append(predict_tokens(probe, tokens, layout, probe_cfg))
        labels.append(batch_labels[task])
        paths += [str(p) for p in batch_labels.get("path", [])]
    if not probs:
        raise all_skipped_error(len(dataset), skip_summary(skipped_records(dataset))["skipped"])
    return torch.cat(probs), torch.cat(labels), paths


def _share_skips(dataset: Dataset, env: Any) -> None:
    """Every rank's skip log made the union of all ranks' (each rank read only its share of the clips)."""
    import torch.distributed as dist

    from vjepa.data.datasets import reading_parts

    for part in reading_parts(dataset):
        status = part.skips.status.to(env.device, torch.int64)
        dist.all_reduce(status, op=dist.ReduceOp.MAX)
        part.skips.status.copy_(status.cpu())


def probe_streaming(
    encoder: nn.Module,
    cfg: Any,
    probe_cfg: ProbeConfig,
    embed_dim: int,
    num_heads: int,
    env: Any = None,
    return_probe: bool = False,
    progress: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Train a probe on clips encoded on the fly and score it on `probe_cfg.eval_split` with multi-view.

    Args:
        encoder: the frozen encoder.
        cfg: the encoder's run Config (pixels; its data unless `probe_cfg.data` names other data).
        probe_cfg: the probe, its data and sampling (see `views.probe_data_config`).
        embed_dim, num_heads: the encoder's width and heads.
        env: under torchrun, the `DistEnv`: ranks share the training clips; every rank scores the test split.
        return_probe: also return the trained probe (on the CPU), e.g. to save it.
        progress: show tqdm bars (the probe's epochs, feature batches).

    Returns:
        The dict of `probe_train.probe_features`, plus `skipped` ({split: `features.skip_summary`})
        and `test_paths`; num_train / num_test count the clips used (unreadable ones are left out,
        never replaced); with return_probe, (that dict, the trained probe).
    """
    import time

    from vjepa.data.datasets import all_skipped_error
    from vjepa.distributed import resolve_device
    from vjepa.eval.features import skip_summary, skipped_records
    from vjepa.eval.probe_train import class_balance, new_probe, score
    from vjepa.eval.views import view_dataset

    start, device = time.perf_counter(), resolve_device(probe_cfg.device)
    train = view_dataset(cfg, probe_cfg, "train", 1, augment=probe_cfg.augment)
    test = view_dataset(cfg, probe_cfg, probe_cfg.eval_split, probe_cfg.num_crops)
    train, num_classes, names = class_balance(train, test, probe_cfg)
    probe = new_probe(probe_cfg, embed_dim, num_heads, num_classes)
    bf16 = resolve_dtype(cfg.run.dtype, device) == "bf16"  # the encoder's autocast, as for cached features
    device = env.device if env is not None else device
    history = train_probe_streaming(probe, encoder, train, probe_cfg.task, probe_cfg, device, bf16, env, progress)
    if env is not None and env.distributed:  # each rank met the unreadable files of its own share
        _share_skips(train, env)
    train_failures = skipped_records(train)
    if len(train_failures) == len(train):  # the probe never saw a clip
        raise all_skipped_error(len(train), skip_summary(train_failures)["skipped"])
    probs, labels, paths = predict_streaming(probe, encoder, test, probe_cfg.task, probe_cfg, device, bf16, progress)
    result = score(probs, labels, num_classes, probe_cfg.task, names)
    skipped = {"train": skip_summary(train_failures), probe_cfg.eval_split: skip_summary(skipped_records(test))}
    result = {**result, "num_train": len(train) - len(train_failures), "num_test": len(labels), "train_top1": None,
              "final_loss": history[-1] if history else float("nan"), "probe_seconds": time.perf_counter() - start,
              "skipped": skipped, "test_paths": paths, "num_heads": probe_cfg.num_heads or num_heads}
    return (result, probe.cpu()) if return_probe else result
