"""The supervised baseline (the ceiling): our encoder plus an attentive head, trained end to end on labels.

Same encoder, data pipeline, batch size, step count, optimiser groups and LR / weight-decay
schedules as pretraining (`cfg.optim`), so it spends the same compute as a pretraining run of the
same config; only the loss differs (cross-entropy on `task` instead of feature prediction). The
run directory looks like a pretraining run's (config.yaml, metrics.jsonl, latest.pt, step_N.pt with
`encoder`, `classifier`, `opt`, `step`, `config`), so `vjepa.load` and `vjepa probe` read it.
No resume: a rerun starts over.

Shapes: B batch, C channels, T frames, H/W pixels, N tokens, D width, K classes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vjepa.checkpoint import save_checkpoint
from vjepa.config import Config, ConfigError, to_dict, validate
from vjepa.data.loader import build_train_loader
from vjepa.distributed import resolve_device
from vjepa.jepa import param_groups, set_schedules
from vjepa.models.factory import build_encoder, init_seed
from vjepa.models.probe import AttentiveClassifier
from vjepa.precision import autocast
from vjepa.rundir import prepare_run_dir
from vjepa.runlog import RunLog


def num_classes_for(cfg: Config, task: str, dataset: Any) -> int:
    """Classes of `task`: the synthetic class lists, or the dataset's `classes` for real video."""
    if cfg.data.source == "synthetic":
        from vjepa.data.synthetic import APPEARANCE_CLASSES, MOTION_CLASSES

        if task not in ("motion", "appearance"):
            raise ConfigError(f"task {task!r}: the built-in set has motion and appearance labels")
        return len(MOTION_CLASSES if task == "motion" else APPEARANCE_CLASSES)
    classes = getattr(dataset, "classes", None)
    if not classes:
        raise ConfigError("supervised training needs labelled data with class names (data.source=folder)")
    return len(classes)


def supervised_step(
    encoder: torch.nn.Module,
    classifier: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    video: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    cfg: Config,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW step of cross-entropy on clips [B, C, T, H, W] and labels [B]; returns (loss, #correct)."""
    set_schedules(optimizer, step, cfg.optim)
    with autocast(device, cfg.run.dtype):
        logits = classifier(encoder(video))  # [B, N, D] -> [B, K]
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        params = list(encoder.parameters()) + list(classifier.parameters())
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
    optimizer.step()
    return loss.detach(), (logits.argmax(dim=-1) == labels).sum()


def _state(encoder, classifier, optimizer, step: int, cfg: Config, task: str, loss: float) -> dict[str, Any]:
    return {"encoder": encoder.state_dict(), "classifier": classifier.state_dict(),
            "opt": optimizer.state_dict(),
            "step": step, "loss": loss, "task": task, "config": to_dict(cfg)}


def train_supervised(cfg: Config, task: str = "motion") -> dict[str, Any]:
    """Train encoder + attentive head end to end on `task` labels for `cfg.optim.steps` steps.

    Args:
        cfg: the pretraining Config to match (model, data, optim; run.out_dir is the run directory).
        task: motion | appearance (built-in set) or label (real video with class folders).

    Returns:
        dict with steps, final_loss, train_top1 (percent, last logging window), seconds, out_dir.
    """
    validate(cfg)
    if cfg.data.horizontal_flip and task == "motion":
        raise ConfigError("data.horizontal_flip swaps left/right motion labels: turn it off for motion")
    device = resolve_device(cfg.run.device)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(init_seed(cfg))
    out_dir = prepare_run_dir(cfg, is_main=True)
    loader, dataset = build_train_loader(cfg, 0, 0, 1, device)
    encoder = build_encoder(cfg).to(device)
    num_classes = num_classes_for(cfg, task, dataset)
    classifier = AttentiveClassifier(encoder.embed_dim, encoder.num_heads, num_classes).to(device)
    optimizer = torch.optim.AdamW(param_groups(encoder, classifier), lr=cfg.optim.lr, betas=cfg.optim.betas)
    return _loop(cfg, task, encoder, classifier, optimizer, loader, device, out_dir)


def _loop(cfg, task, encoder, classifier, optimizer, loader, device, out_dir: Path) -> dict[str, Any]:
    """Steps 0..steps-1: train, log to metrics.jsonl, keep step_N.pt, write latest.pt at the end."""
    log, batches, start = RunLog(out_dir), iter(loader), time.perf_counter()
    loss_sum, correct, seen, last = 0.0, 0, 0, {"loss": float("nan"), "top1": float("nan")}
    encoder.train()
    classifier.train()
    for step in range(cfg.optim.steps):
        batch = next(batches)
        video, labels = batch["video"].to(device), torch.as_tensor(batch[task]).long().to(device)
        loss, hits = supervised_step(encoder, classifier, optimizer, video, labels, step, cfg, device)
        loss_sum, correct = loss_sum + loss.item() * len(labels), correct + int(hits)
        seen += len(labels)
        done = step + 1
        if done % cfg.run.log_every == 0 or done == cfg.optim.steps:
            last = {"loss": loss_sum / seen, "top1": 100.0 * correct / seen}
            log.write({"step": done, "loss": last["loss"], "train_top1": last["top1"], "task": task})
            loss_sum, correct, seen = 0.0, 0, 0
        if cfg.run.keep_every and done % cfg.run.keep_every == 0:
            state = _state(encoder, classifier, optimizer, done, cfg, task, last["loss"])
            save_checkpoint(out_dir / f"step_{done}.pt", state)
    state = _state(encoder, classifier, optimizer, cfg.optim.steps, cfg, task, last["loss"])
    save_checkpoint(out_dir / "latest.pt", state)
    log.close()
    return {"steps": cfg.optim.steps, "final_loss": last["loss"], "train_top1": last["top1"], "task": task,
            "seconds": time.perf_counter() - start, "out_dir": str(out_dir)}
