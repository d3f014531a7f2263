"""Fine-tuning: an encoder and a classification head trained end to end on labelled clips.

    vjepa finetune runs/demo                         # built-in set, motion labels, from the demo encoder
    vjepa finetune ENC --data videos/ --preset k400  # class folders (or a CSV), K400-style settings
    vjepa finetune ENC --from scratch                # the same run from random weights (the baseline)

The encoder starts from any file `vjepa.load` reads (its target encoder; `model.init_from`
records the file and its sha256) or, with `--from scratch`, from the run's seeded random init.
The head is the probe library's attentive or linear classifier (`vjepa.models.probe.build_probe`).
Layer-wise LR decay, drop-path (`model.drop_path`), label smoothing and bf16 autocast
(`run.dtype`) follow common ViT fine-tuning practice; the schedules are the pretraining ones
(`cfg.optim`, pure functions of the step). Data order, augmentation and drop-path draws are pure
functions of (seed, step), so a resumed run (same command, same `run.out_dir`) repeats the
uninterrupted one exactly. Under torchrun the encoder and head are wrapped in DDP.

The run directory: config.yaml (the `Config`, what `vjepa.load` needs), finetune.json (the
settings below), metrics.jsonl, latest.pt (`encoder`, `classifier`, `head`, `opt`, `step`,
`config`, `finetune`), result.json (top-1 on the evaluation split). `vjepa.load(run_dir,
which="encoder")` gives the fine-tuned encoder; `latest.pt["classifier"]` is the head in the probe
layout, described by `latest.pt["head"]`.

Shapes: B batch, C channels, T frames, H/W pixels, N tokens, D width, K classes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vjepa import distributed as dist_utils
from vjepa.checkpoint import (
    CheckpointError,
    atomic_write,
    check_resume_config,
    check_resume_step,
    describe_nonfinite,
    load_checkpoint,
    load_state_strict,
    nonfinite_tensors,
    remove_stale_temps,
    save_checkpoint,
)
from vjepa.config import Config, ConfigError, apply_overrides, merge, to_dict, validate
from vjepa.data.loader import build_train_loader
from vjepa.data.transforms import normalise
from vjepa.init_from import load_target_into, prepare_init
from vjepa.jepa import adamw, param_groups, set_schedules
from vjepa.models.factory import build_encoder, init_seed
from vjepa.models.probe import PROBE_KINDS, build_probe
from vjepa.models.vit import VisionTransformer
from vjepa.precision import allow_tf32, autocast, resolve_dtype
from vjepa.rundir import announce_resume, run_dir_lock, write_config
from vjepa.runlog import RunLog, trim_metrics
from vjepa.seeds import mix_seed

HEADS = PROBE_KINDS  # a fine-tuning head is a probe module


@dataclass
class FinetuneSettings:
    """What a fine-tune adds to a `Config` (kept in finetune.json and the checkpoint)."""

    source: str = ""  # the encoder: a checkpoint / run directory / export / preset name
    scratch: bool = False  # random init (the supervised baseline) instead of the source's weights
    head: str = "attentive"  # attentive (the paper's probe) | linear (average-pool + linear)
    head_depth: int = 1
    task: str = ""  # built-in set: motion | appearance; labelled video: label ("" picks by data.source)
    layer_decay: float = 0.75  # block i's LR is lr * layer_decay**(depth - i); 1 turns it off
    label_smoothing: float = 0.1
    eval_split: str = "test"  # scored after training ("" skips)
    preset: str = ""


# Settings per named recipe: ours for small runs, in the spirit of ViT video fine-tuning (VideoMAE:
# AdamW, layer decay 0.75, drop-path 0.1, label smoothing 0.1, warmup then cosine, weight decay
# 0.05); not the paper's numbers (V-JEPA reports frozen evaluation). k400 flips clips; ssv2 does not,
# as its labels name directions ("left to right").
_COMMON: dict[str, Any] = {
    "model": {"drop_path": 0.1},
    "optim": {"steps": 1000, "warmup_steps": 100, "schedule_scale": 1.0, "start_lr": 1e-6, "lr": 5e-4,
              "final_lr": 1e-6, "weight_decay": 0.05, "final_weight_decay": 0.05, "grad_clip": 0.0},
    "finetune": {"layer_decay": 0.75, "label_smoothing": 0.1, "head": "attentive"},
}
FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "k400": {**_COMMON, "data": {"frame_step": 4, "horizontal_flip": True}},
    "ssv2": {**_COMMON, "data": {"frame_step": 4, "horizontal_flip": False}},
}
# run.* settings of the encoder's own run that make no sense for a fine-tune
_RUN_RESET = {"out_dir": "runs/finetune", "probe_after": False, "keep_every": 0}


class Classifier(nn.Module):
    """Encoder then head: clips [B, C, T, H, W] -> logits [B, K]. Keys `encoder.*`, `head.*`."""

    def __init__(self, encoder: VisionTransformer, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, K]."""
        return self.head(self.encoder(video))  # [B, N, D] -> [B, K]


# ---------------------------------------------------------------------------------------------
# settings


def finetune_config(
    source: str, overrides: list[str] = (), preset: str = "", scratch: bool = False, data: str = "",
    data_source: str = "",
) -> tuple[Config, FinetuneSettings]:
    """The Config and settings of `vjepa finetune SOURCE ...`.

    Order: the source's own config (architecture, clip size, normalisation; a preset name gives
    that preset), then the fine-tune preset, then `data`, then `overrides` (`section.key=value`;
    `finetune.key=value` sets a `FinetuneSettings` field).

    Raises:
        ConfigError: an unknown preset or key, or a bad value.
        CheckpointError: an unreadable source.
    """
    from vjepa.api import load_config
    from vjepa.config import PRESETS

    if not scratch and str(source) in PRESETS and not Path(source).exists():
        raise ConfigError(f"{source} is a preset: it has no weights to fine-tune; add --from scratch")
    cfg = load_config(source)
    cfg.run = merge(cfg.run, _RUN_RESET)
    cfg.model = merge(cfg.model, {"init_from": "", "init_from_arch": False, "init_from_sha256": ""})
    settings = FinetuneSettings(source=str(source), scratch=scratch, preset=preset)
    if preset:
        if preset not in FINETUNE_PRESETS:
            raise ConfigError(f"unknown fine-tune preset {preset!r}; choose one of {', '.join(FINETUNE_PRESETS)}")
        values = dict(FINETUNE_PRESETS[preset])
        settings = merge(settings, values.pop("finetune"), "finetune")
        cfg = merge(cfg, values)
    if data:
        from vjepa.data.datasets import guess_source

        cfg.data.path, cfg.data.source = data, data_source or guess_source(data)
    ours = [item for item in overrides if item.startswith("finetune.")]
    cfg = apply_overrides(cfg, [item for item in overrides if not item.startswith("finetune.")])
    settings = apply_overrides(settings, [item.split(".", 1)[1] for item in ours]) if ours else settings
    settings.task = settings.task or ("motion" if cfg.data.source == "synthetic" else "label")
    if not scratch:  # the encoder starts from the file: recorded like a pretraining run's start
        cfg.model.init_from, cfg.model.init_from_arch = str(source), True
    return cfg, settings


def check_settings(cfg: Config, settings: FinetuneSettings) -> None:
    """Raise ConfigError naming the first bad fine-tune setting."""
    if settings.head not in HEADS:
        raise ConfigError(f"finetune.head={settings.head!r}; choose one of {', '.join(HEADS)}")
    if not 0 < settings.layer_decay <= 1:
        raise ConfigError(f"finetune.layer_decay={settings.layer_decay}: must be in (0, 1]")
    if not 0 <= settings.label_smoothing < 1:
        raise ConfigError(f"finetune.label_smoothing={settings.label_smoothing}: must be in [0, 1)")
    if settings.head_depth < 1:
        raise ConfigError(f"finetune.head_depth={settings.head_depth}: must be >= 1")
    if cfg.data.horizontal_flip and settings.task == "motion":
        raise ConfigError("data.horizontal_flip swaps left/right motion labels: turn it off for motion")
    if cfg.run.distributed != "ddp":
        raise ConfigError("fine-tuning runs under torchrun with run.distributed=ddp only")


def num_classes_for(cfg: Config, task: str, dataset: Any) -> tuple[int, list[str]]:
    """Classes of `task`: the built-in set's class lists; for real video the dataset's `classes`
    (class folders), or for a CSV of `path label` lines classes 0..max label named by their index
    (as `vjepa probe` counts them)."""
    from vjepa.data.datasets import resolve_split_path

    if cfg.data.source == "synthetic":
        from vjepa.data.synthetic import APPEARANCE_CLASSES, MOTION_CLASSES

        if task not in ("motion", "appearance"):
            raise ConfigError(f"finetune.task={task!r}: the built-in set has motion and appearance labels")
        names = list(MOTION_CLASSES if task == "motion" else APPEARANCE_CLASSES)
        return len(names), names
    if task != "label":
        raise ConfigError(f"finetune.task={task!r}: real video (data.source={cfg.data.source}) has one task, label")
    classes = list(getattr(dataset, "classes", None) or [])
    if not classes:
        records = list(getattr(dataset, "records", []))
        unlabelled = [record.path for record in records if record.label < 0]
        if not records or unlabelled:
            where = f"{unlabelled[0]} has no label" if unlabelled else "no videos"
            listing = resolve_split_path(cfg.data.path, "train")
            raise ConfigError(f"fine-tuning needs labelled videos: in {listing}, {where} (use class folders, "
                              "or a CSV of `path label` lines with integer labels)")
        classes = [str(k) for k in range(max(record.label for record in records) + 1)]
    return len(classes), classes


def layer_decay_groups(encoder: VisionTransformer, head: nn.Module, decay: float) -> list[dict]:
    """AdamW groups with layer-wise LR decay (BEiT / VideoMAE): block i gets lr_scale decay**(L - i)
    with L = depth, the patch embedding decay**(L + 1), the final norm and the head 1 (weight-decay
    split as `param_groups`)."""
    depth = len(encoder.blocks)
    modules = [encoder.patch_embed, *encoder.blocks, encoder.norm, head]
    scales = [decay ** (depth + 1)] + [decay ** (depth - i) for i in range(depth)] + [1.0, 1.0]
    return param_groups(*modules, lr_scales=tuple(scales))


# ---------------------------------------------------------------------------------------------
# one step


def finetune_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, video: torch.Tensor, labels: torch.Tensor, step: int,
    cfg: Config, settings: FinetuneSettings, device: torch.device, rank: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW step of label-smoothed cross-entropy on clips [B, C, T, H, W] and labels [B].

    Drop-path draws come from the global RNG seeded by (seed, step), so a resumed run repeats them.

    Returns:
        (loss, number of correct predictions), both 0-d tensors on `device` (no host sync).
    """
    set_schedules(optimizer, step, cfg.optim)
    torch.manual_seed(mix_seed(cfg.run.seed, step, 11, rank))  # each rank its own draws
    with autocast(device, cfg.run.dtype):
        logits = model(video)  # [B, K]
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip, foreach=True)
    optimizer.step()
    return loss.detach(), (logits.argmax(dim=-1) == labels).sum()


# ---------------------------------------------------------------------------------------------
# the run


def build_classifier(cfg: Config, settings: FinetuneSettings, num_classes: int) -> Classifier:
    """The encoder (seeded random init) and a fresh head, on the CPU."""
    torch.manual_seed(init_seed(cfg))  # the encoder comes first, as in pretraining
    encoder = build_encoder(cfg)
    head = build_probe(settings.head, encoder.embed_dim, encoder.num_heads, num_classes, settings.head_depth)
    return Classifier(encoder, head)


def _checkpoint(model: Classifier, optimizer, step: int, loss: float, cfg: Config, settings: FinetuneSettings,
                head_info: dict[str, Any]) -> dict[str, Any]:
    return {"encoder": model.encoder.state_dict(), "classifier": model.head.state_dict(), "head": head_info,
            "opt": optimizer.state_dict(), "step": step, "loss": loss, "config": to_dict(cfg),
            "finetune": dataclasses.asdict(settings)}


def finetune(cfg: Config, settings: FinetuneSettings) -> dict[str, Any]:
    """Fine-tune per `cfg` and `settings`, resuming from `<run.out_dir>/latest.pt` if present.

    Returns:
        dict with steps, final_loss, train_top1 (percent, last logging window), eval_top1 (on
        `settings.eval_split`, rank 0; absent when skipped), seconds, out_dir.

    Raises:
        ConfigError: a bad setting, or a run directory holding another run.
        CheckpointError: an encoder file that does not fit the architecture.
        RunDirLocked: another live process trains in `run.out_dir`.
    """
    validate(cfg)
    check_settings(cfg, settings)
    env = dist_utils.setup(cfg.run.device, cfg.run.dist_timeout_s)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dtype=resolve_dtype(cfg.run.dtype, env.device)))
    out_dir = Path(cfg.run.out_dir)
    with run_dir_lock(out_dir, env.rank == 0):
        summary = _finetune_locked(cfg, settings, env, out_dir)
    dist_utils.teardown(env)
    return summary


def _restore_or_start(cfg: Config, settings: FinetuneSettings, latest: Path,
                      env: dist_utils.DistEnv) -> tuple[Config, dict | None, Any]:
    """(config with init_from resolved, the checkpoint to resume or None, the weights to start from).

    As in pretraining, rank 0 decides the resume and sends its state to ranks without it.
    """
    state = dist_utils.resume_state(latest, env, lambda path: load_checkpoint(path, mmap=True), CheckpointError)
    cfg, init = prepare_init(cfg, state.get("config", {}) if state is not None else None)
    if state is not None:
        check_resume_config(state.get("config", {}), cfg, latest)
        check_resume_step(int(state["step"]), cfg, latest)
        saved = {k: v for k, v in state.get("finetune", {}).items() if k != "eval_split"}
        ours = {k: v for k, v in dataclasses.asdict(settings).items() if k != "eval_split"}
        if saved != ours:
            raise ConfigError(f"{latest} is a checkpoint of a fine-tune with other settings ({saved}); pick "
                              "another run.out_dir, or delete it to start over")
    return cfg, state, init


def _finetune_locked(cfg: Config, settings: FinetuneSettings, env: dist_utils.DistEnv, out_dir: Path) -> dict:
    """`finetune` once the run directory is locked: restore or start, train, score rank 0's model."""
    _prepare_process(cfg, env, out_dir)
    latest = out_dir / "latest.pt"
    cfg, state, init = _restore_or_start(cfg, settings, latest, env)
    start = int(state["step"]) if state is not None else 0
    loader, dataset = build_train_loader(cfg, start, env.rank, env.world_size, env.device)
    num_classes, class_names = num_classes_for(cfg, settings.task, dataset)
    model = _starting_classifier(cfg, settings, num_classes, state, init, latest).to(env.device)
    wrapped = dist_utils.wrap(model, env, "ddp")
    optimizer = finetune_optimizer(model, cfg, settings, env.device)
    if state is not None:
        optimizer.load_state_dict(state["opt"])
    del state
    head_info = _head_info(model, settings, num_classes, class_names)
    log = _start_run_files(cfg, settings, out_dir, start, env)
    if env.rank == 0:
        announce_resume(out_dir, start, cfg.optim.steps)
    t0 = time.perf_counter()
    try:
        summary = _loop(cfg, settings, wrapped, model, optimizer, loader, start, env, log, head_info)
    finally:
        log.close()
    if env.rank == 0 and settings.eval_split:
        _score_and_save(summary, model, cfg, settings, env.device, class_names, out_dir)
    return {**summary, "seconds": time.perf_counter() - t0, "rank": env.rank}


def _prepare_process(cfg: Config, env: dist_utils.DistEnv, out_dir: Path) -> None:
    """Threads and TF32 as configured; rank 0 removes temp files a killed save left (safe: the
    run directory is locked)."""
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    allow_tf32(env.device)
    if env.rank == 0:
        remove_stale_temps(out_dir)


def _starting_classifier(cfg: Config, settings: FinetuneSettings, num_classes: int, state: dict | None,
                         init: Any, latest: Path) -> Classifier:
    """The classifier on the CPU with the weights it starts from: the resumed checkpoint's encoder
    and head, else the source's target encoder (`init`) and a fresh head, else a seeded random init."""
    model = build_classifier(cfg, settings, num_classes)
    if state is not None:
        load_state_strict(model.encoder, state["encoder"], f"{latest} [encoder]")
        load_state_strict(model.head, state["classifier"], f"{latest} [classifier]")
    elif init is not None:
        load_target_into(model.encoder, init, model.encoder.grid)
    return model


def finetune_optimizer(model: Classifier, cfg: Config, settings: FinetuneSettings,
                       device: torch.device) -> torch.optim.AdamW:
    """AdamW over `layer_decay_groups` (the weight-decay split of `vjepa.jepa.param_groups`), fused on
    CUDA as in pretraining (`vjepa.jepa.build_optimizer`); build it after wrapping."""
    return adamw(layer_decay_groups(model.encoder, model.head, settings.layer_decay), cfg.optim, device)


def _head_info(model: Classifier, settings: FinetuneSettings, num_classes: int, class_names: list[str]) -> dict:
    """What a checkpoint records about the head, so `classify` can rebuild it."""
    return {"kind": settings.head, "depth": settings.head_depth, "embed_dim": model.encoder.embed_dim,
            "num_heads": model.encoder.num_heads, "num_classes": num_classes, "class_names": class_names,
            "task": settings.task}


def _start_run_files(cfg: Config, settings: FinetuneSettings, out_dir: Path, start: int,
                     env: dist_utils.DistEnv) -> RunLog:
    """Rank 0 writes config.yaml and finetune.json and trims metrics past `start`; the run log
    (written by rank 0 only) records the start or resume."""
    is_main = env.rank == 0
    if is_main:
        write_config(cfg, out_dir)
        trim_metrics(out_dir, start)  # steps logged after the last checkpoint are trained again
        atomic_write(out_dir / "finetune.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(dataclasses.asdict(settings), indent=2)))
    log = RunLog(out_dir, enabled=is_main)
    if is_main:
        log.write({"step": start, "event": "start" if start == 0 else "resume", "world_size": env.world_size})
    return log


def _score_and_save(summary: dict, model: Classifier, cfg: Config, settings: FinetuneSettings,
                    device: torch.device, class_names: list[str], out_dir: Path) -> None:
    """Add the eval split's top-1 to `summary` and write it to result.json."""
    scored = evaluate(model, cfg, settings, device, class_names)
    summary["eval_top1"] = scored["top1"] if scored else None
    if scored:
        summary.update(eval_clips=scored["clips"], **({"eval_skipped": scored["skipped"]} if scored["skipped"] else {}))
    summary["eval_split"] = settings.eval_split
    atomic_write(out_dir / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))


def _loop(cfg, settings, wrapped, model, optimizer, loader, start, env, log, head_info) -> dict[str, Any]:
    """Steps start..steps-1: train, log, checkpoint (latest.pt every run.checkpoint_every and at the end,
    step_N.pt every run.keep_every)."""
    device, out_dir = env.device, Path(cfg.run.out_dir)
    batches, task = iter(loader), settings.task
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    last = {"loss": float("nan"), "top1": float("nan")}
    wrapped.train()
    for step in range(start, cfg.optim.steps):
        batch = next(batches)
        video = normalise(batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        labels = torch.as_tensor(batch[task]).long().to(device)
        loss, hits = finetune_step(wrapped, optimizer, video, labels, step, cfg, settings, device, env.rank)
        loss_sum, correct, seen = loss_sum + loss * len(labels), correct + hits, seen + len(labels)
        done = step + 1
        if done % cfg.run.log_every == 0 or done == cfg.optim.steps:
            last = _log_window(loss_sum, correct, seen, done, optimizer, log, env)
            loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        _checkpoint_if_due(model, optimizer, done, last["loss"], cfg, settings, head_info, env)
    return {"steps": cfg.optim.steps, "final_loss": last["loss"], "train_top1": last["top1"],
            "task": task, "out_dir": str(out_dir)}


def _log_window(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, done: int,
                optimizer: torch.optim.Optimizer, log: RunLog, env: dist_utils.DistEnv) -> dict[str, float]:
    """Mean loss and top-1 (percent) of the logging window over all ranks, written to the run log;
    a non-finite loss stops the run."""
    totals = dist_utils.all_reduce_mean(torch.stack([loss_sum, correct.float()]) / seen, env)
    last = {"loss": totals[0].item(), "top1": 100.0 * totals[1].item()}
    if not math.isfinite(last["loss"]):
        raise RuntimeError(f"the fine-tuning loss became NaN or infinite by step {done}; lower optim.lr")
    log.write({"step": done, "loss": last["loss"], "train_top1": last["top1"],
               "lr": optimizer.param_groups[-1]["lr"]})
    return last


def _checkpoint_if_due(model: Classifier, optimizer: torch.optim.Optimizer, done: int, loss: float, cfg: Config,
                       settings: FinetuneSettings, head_info: dict[str, Any], env: dist_utils.DistEnv) -> None:
    """After step `done`: save latest.pt every run.checkpoint_every and at the end (rank 0), keeping
    step_N.pt every run.keep_every; weights gone non-finite stop the run instead."""
    out_dir = Path(cfg.run.out_dir)
    is_keep = bool(cfg.run.keep_every) and done % cfg.run.keep_every == 0
    if not (done % cfg.run.checkpoint_every == 0 or done == cfg.optim.steps or is_keep):
        return
    # never save what load_checkpoint would refuse (the last good file stays); DDP replicas
    # hold equal weights, so every rank stops here together
    bad = nonfinite_tensors({"encoder": model.encoder.state_dict(), "classifier": model.head.state_dict()})
    if bad:
        raise RuntimeError(f"the fine-tuned weights became NaN or infinite by step {done} "
                           f"({describe_nonfinite(bad)}); lower optim.lr")
    if env.rank == 0:
        state = _checkpoint(model, optimizer, done, loss, cfg, settings, head_info)
        save_checkpoint(out_dir / "latest.pt", state, keep=out_dir / f"step_{done}.pt" if is_keep else None)
    dist_utils.barrier(env)


def _eval_loader(cfg: Config, settings: FinetuneSettings, device: torch.device, class_names: list[str],
                 batch_size: int) -> Any:
    """A DataLoader of `settings.eval_split` (one centre view per clip), or None when the data has no
    such split apart from the training one.

    Raises:
        ConfigError: when the split's classes differ from the training split's (a CSV's labels:
            when one is not a training class index).
    """
    from torch.utils.data import DataLoader

    from vjepa.data import build_dataset
    from vjepa.data.datasets import collate_clips, drop_bad_items, shared_split_paths
    from vjepa.data.transforms import build_transform
    from vjepa.data.workers import resolve_workers

    d = cfg.data
    if d.source != "synthetic" and shared_split_paths(d.path, d.source, settings.eval_split):
        return None
    transform = build_transform(d, train=False, num_crops=1, resize_ratio=1.0)
    # an unreadable clip is left out (never replaced by another: it would be scored twice)
    dataset = drop_bad_items(build_dataset(d, split=settings.eval_split, train=False, transform=transform))
    classes = getattr(dataset, "classes", None)
    if d.source == "csv":  # labels are class indices: each must be one training knows
        outside = [r for r in dataset.records if r.label not in range(len(class_names))]
        if outside:
            raise ConfigError(f"the {settings.eval_split} split's {outside[0].path} has label {outside[0].label}, not "
                              f"among training's classes 0..{len(class_names) - 1}")
    elif d.source != "synthetic" and list(classes or []) != class_names:
        raise ConfigError(f"the {settings.eval_split} split's classes {classes} differ from training's {class_names}")
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips,
                      num_workers=resolve_workers(d.num_workers, device))


@torch.no_grad()
def evaluate(model: Classifier, cfg: Config, settings: FinetuneSettings, device: torch.device,
             class_names: list[str], batch_size: int = 16) -> dict[str, Any] | None:
    """Top-1 of encoder + head on `settings.eval_split`: one centre view per readable clip.

    Returns:
        {"top1": percent, "clips": clips scored, "skipped": {reason: files} left out}, or None when
        the data has no such split (`data.path` without `{split}`, a `split` sub-folder or a
        `split.csv`): scoring the training videos would pose as a test score.

    Raises:
        ConfigError: when the split's classes differ from the training split's.
    """
    loader = _eval_loader(cfg, settings, device, class_names, batch_size)
    if loader is None:
        return None
    model.eval()
    hits, total = 0, 0
    for batch in loader:
        if batch is None:  # every clip of this batch was unreadable
            continue
        video = batch["video"].to(device)
        video = video[:, 0] if video.ndim == 6 else video  # [B, 1, C, T, H, W] -> one view
        with autocast(device, cfg.run.dtype):
            logits = model(video)
        labels = torch.as_tensor(batch[settings.task]).long().to(device)
        hits, total = hits + int((logits.argmax(dim=-1) == labels).sum()), total + len(labels)
    model.train()
    skipped = dict(getattr(loader.dataset, "skipped", None) or {})
    return {"top1": 100.0 * hits / max(total, 1), "clips": total, "skipped": skipped}

