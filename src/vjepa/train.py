"""Pretraining: one readable loop, deterministic by step, resumable bit for bit.

Data order, augmentation seeds and masks are pure functions of (seed, step), so a resumed run
sees exactly the batches the uninterrupted one would have seen.
Shapes: B batch, C channels, T frames, H/W pixels, N tokens.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vjepa import distributed as dist_utils
from vjepa.checkpoint import (
    BackgroundSaver,
    CheckpointError,
    check_resume_config,
    check_resume_step,
    describe_nonfinite,
    load_checkpoint,
    nonfinite_tensors,
    remove_stale_temps,
    restore_networks,
    save_step,
)
from vjepa.config import Config, validate
from vjepa.data.loader import build_train_loader
from vjepa.data.transforms import normalise
from vjepa.init_from import load_initial_weights, prepare_init
from vjepa.jepa import (
    JEPA,
    CollapseMonitor,
    build_optimizer,
    ema_init_share,
    ema_momentum,
    ema_update,
    set_schedules,
)
from vjepa.masks import MaskBatch, num_generators
from vjepa.models.factory import init_seed, token_grid
from vjepa.precision import allow_tf32, autocast, resolve_dtype
from vjepa.rundir import StopRequest, announce_resume, run_dir_lock, write_config
from vjepa.runlog import RunLog, trim_metrics


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM (a scheduler's pre-emption) arrived: a checkpoint was saved and the run stopped.

    `exit_code` is 143 (128 + SIGTERM), what a process killed by SIGTERM reports, so schedulers
    (SLURM `--requeue`, Kubernetes restart policies) treat the run as interrupted, not finished.
    """

    exit_code = 128 + signal.SIGTERM


# ---------------------------------------------------------------------------------------------
# devices and precision


def compile_blocks(model: JEPA, backend: str = "inductor") -> None:
    """`torch.compile` every transformer block in place, with dynamic shapes (K changes every step).

    Block by block, as torchtitan does: a few small graphs (grad or not, padding mask or not, per
    width) and the mask bookkeeping stays eager. Compiling the whole JEPA instead returned a loss
    without a gradient in torch 2.13. Apply before wrapping for DDP/FSDP. `backend` "eager" or
    "aot_eager" traces the same graphs without generating code (checks without a C++ toolchain).
    """
    for network in (model.encoder, model.target_encoder, model.predictor):
        for block in getattr(network, "blocks", getattr(network, "predictor_blocks", [])):
            block.compile(dynamic=True, backend=backend)


# ---------------------------------------------------------------------------------------------
# one step


@dataclass
class StepResult:
    """What one optimisation step reports (tensors stay on device until logged)."""

    loss: torch.Tensor
    generator_losses: torch.Tensor
    targets: torch.Tensor
    lr: float
    weight_decay: float
    momentum: float


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    video: torch.Tensor,
    masks: list[MaskBatch],
    step: int,
    cfg: Config,
    device: torch.device,
) -> StepResult:
    """Forward, backward, clip, AdamW step and EMA update for one batch (no host sync)."""
    jepa = dist_utils.unwrap(model)
    lr, wd = set_schedules(optimizer, step, cfg.optim)
    with autocast(device, cfg.run.dtype):
        out = model(video, masks)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if cfg.optim.grad_clip > 0:  # per model, as the official code clips encoder and predictor apart
        torch.nn.utils.clip_grad_norm_(jepa.encoder.parameters(), cfg.optim.grad_clip, foreach=True)
        torch.nn.utils.clip_grad_norm_(jepa.predictor.parameters(), cfg.optim.grad_clip, foreach=True)
    optimizer.step()
    momentum = ema_momentum(step + 1, cfg.optim)
    if jepa.target_encoder is not None:
        ema_update(jepa.target_encoder, jepa.encoder, momentum)
    return StepResult(out["prediction_loss"], out["generator_losses"], out["targets"], lr, wd, momentum)



def train(cfg: Config) -> dict[str, Any]:
    """Pretrain per `cfg`, resuming from `<out_dir>/latest.pt` if present. Returns a summary dict.

    Raises:
        ConfigError: a bad setting, a checkpoint of another run, or one already past `optim.steps`
            (nothing in the run directory is changed then).
        RunDirLocked: another live process trains in `run.out_dir`.
        TrainingDiverged: the loss or the weights became NaN/inf (nothing non-finite is saved).
        TrainingInterrupted: SIGTERM arrived; a checkpoint of the last whole step was saved first.
        StorageError: a checkpoint, config or log write failed (e.g. the disk is full).
    """
    validate(cfg)
    env = dist_utils.setup(cfg.run.device, cfg.run.dist_timeout_s)
    is_main = env.rank == 0
    out_dir, stop = Path(cfg.run.out_dir), StopRequest()
    with run_dir_lock(out_dir, is_main):
        stop.install()
        try:
            summary = _train_locked(cfg, env, out_dir, stop)
        finally:
            stop.restore()
    dist_utils.teardown(env)
    return summary


def _train_locked(cfg: Config, env: dist_utils.DistEnv, out_dir: Path, stop: StopRequest) -> dict[str, Any]:
    """`train` once the run directory is locked: restore, check, set up, loop."""
    device, is_main = env.device, env.rank == 0
    # "auto" becomes what runs on this device, so config.yaml, FSDP and the logs state it
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dtype=resolve_dtype(cfg.run.dtype, device)))
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(init_seed(cfg))  # model init: identical on every rank
    allow_tf32(device)
    latest = out_dir / "latest.pt"
    if is_main:
        remove_stale_temps(out_dir)  # left by a save that was killed (safe: we hold the lock)
    # rank 0 decides (a node-local run.out_dir may lack it elsewhere); any world size wrote it
    state = dist_utils.resume_state(latest, env, lambda path: load_checkpoint(path, mmap=True), CheckpointError)
    cfg, init = prepare_init(cfg, state.get("config", {}) if state is not None else None)
    if state is not None:  # checked before anything is written, so a refused resume changes nothing
        check_resume_config(state.get("config", {}), cfg, latest)
        check_resume_step(int(state["step"]), cfg, latest)
    model = JEPA(cfg, num_generators(cfg.mask)).to(device)
    if state is not None:
        restore_networks(model, state, latest)
    elif init is not None:  # model.init_from: start from the file's weights (fresh optimiser, step 0)
        load_initial_weights(model, init, model.encoder.grid)
    if cfg.run.activation_checkpointing:
        model.encoder.activation_checkpointing = model.predictor.activation_checkpointing = True
    if cfg.run.compile:
        compile_blocks(model)
    param_dtype = torch.bfloat16 if cfg.run.dtype == "bf16" else None  # FSDP gathers bf16 weights
    wrapped = dist_utils.wrap(model, env, cfg.run.distributed, param_dtype)
    # built after wrapping: FSDP2 swaps the parameters for sharded ones
    optimizer = build_optimizer(model.encoder, model.predictor, cfg.optim, device)
    start, saved_loss, rng = 0, float("nan"), None
    if state is not None:
        dist_utils.load_optimizer_state(model, optimizer, state["opt"])
        start, saved_loss, rng = int(state["step"]), float(state.get("loss", float("nan"))), state.get("rng")
    del state
    grid = token_grid(cfg)
    loader, dataset = build_train_loader(cfg, start, env.rank, env.world_size, device, grid)
    if rng is not None:  # drop path continues the interrupted run's random stream
        dist_utils.set_rng_state(rng, device)
    if is_main:  # the settings are accepted: only now is the run directory changed
        write_config(cfg, out_dir)
        trim_metrics(out_dir, start)
    log = RunLog(out_dir, enabled=is_main, tensorboard=cfg.run.tensorboard)
    if is_main:
        log.write({"step": start, "event": "start" if start == 0 else "resume", "world_size": env.world_size})
        announce_resume(out_dir, start, cfg.optim.steps)
    saver = BackgroundSaver(background=cfg.run.async_checkpoint and is_main)
    try:
        summary = run_loop(cfg, wrapped, model, optimizer, loader, dataset, start, env, log, stop, saver)
    finally:
        log.close()
        saver.wait()  # a checkpoint in flight reaches the disk whatever stopped the loop
    if start == cfg.optim.steps and math.isnan(summary["final_loss"]):
        summary["final_loss"] = saved_loss  # a finished run started again: report what it ended with
    return {**summary, "rank": env.rank, "world_size": env.world_size}  # the CLI probes on rank 0 only


def run_loop(cfg, wrapped, model, optimizer, loader, dataset, start, env, log, stop=None,
             saver: BackgroundSaver | None = None) -> dict[str, Any]:
    """Iterate steps start..steps-1: train, log, monitor collapse, checkpoint; stop on NaN/inf.

    A checkpoint is written only when every tensor in it is finite. When `stop.requested` turns
    true (SIGTERM), the step in flight finishes, a checkpoint is saved and TrainingInterrupted raised.
    """
    is_main, device = env.rank == 0, env.device
    out_dir, saver = Path(cfg.run.out_dir), saver or BackgroundSaver()
    bar = make_progress(cfg, start, is_main)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, found without syncing
    loss_sum, loss_count, clips, t0 = torch.zeros((), device=device), 0, 0, time.perf_counter()
    monitor, last_loss, last_good = CollapseMonitor(), float("nan"), None
    batches = iter(loader)
    for step in range(start, cfg.optim.steps):
        batch = next(batches)  # clips as uint8 and the step's masks, from the loader's workers
        video = normalise(batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
        masks = [m.to(device, non_blocking=True) for m in batch["masks"]]
        result = train_step(wrapped, optimizer, video, masks, step, cfg, device)
        finite = torch.isfinite(result.loss)
        first_bad = torch.where((~finite) & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
        loss_sum, loss_count, clips = loss_sum + result.loss.detach(), loss_count + 1, clips + video.shape[0]
        done = step + 1
        stopping = stop_requested(stop, env)
        is_log = done % cfg.run.log_every == 0 or done == cfg.optim.steps
        is_keep = bool(cfg.run.keep_every) and done % cfg.run.keep_every == 0
        is_ckpt = done % cfg.run.checkpoint_every == 0 or done == cfg.optim.steps or is_keep or stopping
        if is_log or is_ckpt:
            check_finite(first_bad, out_dir, last_good, cfg, env)
        if is_log:
            last_loss = dist_utils.all_reduce_mean(loss_sum / max(loss_count, 1), env).item()
            rate = clips * env.world_size / max(time.perf_counter() - t0, 1e-9)
            record = log_record(done, last_loss, rate, result, env, dataset)
            loss_sum, loss_count, clips, t0 = torch.zeros((), device=device), 0, 0, time.perf_counter()
            if monitor.due(done, cfg):
                fields, warning = monitor.update(result.targets)
                record.update(fields)
                if warning and is_main:
                    record["warning"] = warning
                    bar.write(f"WARNING step {done}: {warning}")
            log.write(record)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{result.lr:.2e}", clips_s=f"{rate:.1f}")
        bar.update(1)
        if is_ckpt:
            check_weights_finite(model, optimizer, done, out_dir, last_good, cfg, env)
            last_good = (save_step(model, optimizer, done, cfg, last_loss, env, is_keep, saver), done)
            dist_utils.barrier(env)
        if stopping:
            saver.wait()  # the message says the checkpoint is saved
            bar.close()
            raise interrupted(cfg, done, is_main)
    bar.close()
    summary = {"steps": cfg.optim.steps, "final_loss": last_loss, "out_dir": str(out_dir), **monitor.summary(),
               **skipped_files(dataset)}
    if model.target_encoder is not None:
        summary["target_init_share"] = ema_init_share(cfg.optim.steps, cfg.optim)
    return summary


def log_record(done: int, mean_loss: float, rate: float, result: StepResult, env: dist_utils.DistEnv,
               dataset: Any) -> dict[str, Any]:
    """The metrics.jsonl record of step `done`: loss averaged over ranks and steps since the last
    record, schedules, speed, per-generator losses, and the bad files skipped so far."""
    generator_losses = dist_utils.all_reduce_mean(result.generator_losses, env).tolist()
    record = {"step": done, "loss": mean_loss, "lr": result.lr, "weight_decay": result.weight_decay,
              "momentum": result.momentum, "clips_per_s": rate,
              "generator_losses": [round(v, 5) for v in generator_losses]}
    return {**record, **skipped_files(dataset)}


def skipped_files(dataset: Any) -> dict[str, dict[str, int]]:
    """{"skipped_files": {reason: count}} of the bad files the dataset replaced so far, or {} if none."""
    skipped = getattr(dataset, "skipped", None)
    return {"skipped_files": dict(skipped)} if skipped else {}


def interrupted(cfg: Config, done: int, is_main: bool) -> TrainingInterrupted:
    """The TrainingInterrupted to raise after SIGTERM's checkpoint at step `done` (rank 0 also prints it)."""
    message = (f"received SIGTERM: saved {Path(cfg.run.out_dir) / 'latest.pt'} at step {done} of {cfg.optim.steps}; "
               f"stopping with exit status {TrainingInterrupted.exit_code}. Run the same command again "
               "to resume exactly from there")
    if is_main:
        print(message, file=sys.stderr, flush=True)
    return TrainingInterrupted(message)


def stop_requested(stop: StopRequest | None, env: dist_utils.DistEnv) -> bool:
    """Whether any rank received SIGTERM (all ranks must stop at the same step to save together)."""
    local = bool(stop is not None and stop.requested)
    if not env.distributed:
        return local
    flag = torch.tensor(float(local), device=env.device)
    return bool(dist_utils.all_reduce_mean(flag, env).item() > 0)


def divergence_advice(cfg: Config) -> str:
    """What to do after a divergence, limited to what `check_resume_config` accepts.

    Resuming under the same settings replays the same steps (the run is deterministic) and diverges
    again; run.* settings may change on resume, learning settings only in a new run directory.
    """
    resume = " Resume it with run.dtype=fp32 (a resume may change run.* settings), or start" \
        if cfg.run.dtype != "fp32" else " Start"
    return (f"{resume} a new run (another run.out_dir) with a lower optim.lr or a smaller optim.grad_clip; "
            "resuming under the same settings replays the same steps and diverges again.")


def _last_good_text(out_dir: Path, last_good: tuple[Path, int] | None) -> str:
    if last_good:
        return f"{last_good[0]} (step {last_good[1]})"
    if (out_dir / "latest.pt").exists():
        return f"{out_dir / 'latest.pt'} (from before this start)"
    return "none written yet"


def check_finite(first_bad: torch.Tensor, out_dir: Path, last_good: tuple[Path, int] | None,
                 cfg: Config | None = None, env: dist_utils.DistEnv | None = None) -> None:
    """Raise TrainingDiverged (naming the step and the last good checkpoint) if a loss was NaN/inf.

    Under torchrun (`env`) the ranks first agree on the earliest bad step of any rank (a
    collective), so all of them raise this message together instead of the healthy ranks dying
    in the next all-reduce when one rank stops.
    """
    bad_step = dist_utils.agreed_first_bad_step(first_bad, env or dist_utils.DistEnv())
    if bad_step < 0:
        return
    raise TrainingDiverged(
        f"the loss became NaN or infinite at step {bad_step + 1}; stopped. Last good checkpoint: "
        f"{_last_good_text(out_dir, last_good)}." + (divergence_advice(cfg) if cfg is not None else "")
    )


def check_weights_finite(model: JEPA, optimizer: torch.optim.Optimizer, step: int, out_dir: Path,
                         last_good: tuple[Path, int] | None, cfg: Config, env: dist_utils.DistEnv) -> None:
    """Raise TrainingDiverged if any weight or optimiser moment is NaN/inf, before it could be saved.

    The loss is computed before the step's update, so an update that overflows leaves a finite loss
    and poisoned weights; this check is what keeps a "last good" checkpoint good. Every rank checks
    its own (possibly sharded) tensors, and all ranks agree before any of them raises.
    """
    def local(t: torch.Tensor) -> torch.Tensor:  # an FSDP shard (DTensor) is checked where it lives
        return t.to_local() if hasattr(t, "to_local") else t

    tensors: dict[str, Any] = {f"model.{k}": local(v) for k, v in model.state_dict().items()}
    tensors["opt"] = [local(t) for per_param in optimizer.state.values() for t in per_param.values()
                      if isinstance(t, torch.Tensor)]
    found = nonfinite_tensors(tensors)
    bad = float(bool(found))
    if env.distributed:
        bad = dist_utils.all_reduce_mean(torch.tensor(bad, device=env.device), env).item()
    if bad > 0:
        where = f": {describe_nonfinite(found)}" if found else " (on another rank)"
        raise TrainingDiverged(
            f"the weights became NaN or infinite in the update of step {step}{where}; stopped without "
            f"saving them. Last good checkpoint: {_last_good_text(out_dir, last_good)}." + divergence_advice(cfg)
        )


def make_progress(cfg: Config, start: int, is_main: bool):
    """A tqdm bar over the steps (silent on other ranks or with run.progress=false)."""
    from tqdm.auto import tqdm

    return tqdm(total=cfg.optim.steps, initial=start, desc="pretrain", unit="step",
                disable=not (is_main and cfg.run.progress), dynamic_ncols=True, mininterval=1.0)
