"""Pretraining: one readable loop, deterministic by step, resumable bit for bit.

Data order, augmentation seeds and masks are pure functions of (seed, step), so a resumed run
sees exactly the batches the uninterrupted one would have seen.
Shapes: B batch, C channels, T frames, H/W pixels, N tokens.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa import distributed as dist_utils
from vjepa.checkpoint import (
    atomic_write,
    describe_nonfinite,
    load_checkpoint,
    load_state_strict,
    nonfinite_tensors,
    remove_stale_temps,
    save_checkpoint,
    write_failure,
)
from vjepa.config import Config, ConfigError, to_dict, to_yaml, validate
from vjepa.init_from import initial_weights_into, load_initial_weights, prepare_init
from vjepa.jepa import (
    JEPA,
    collapse_stats,
    collapse_warning,
    ema_init_share,
    ema_momentum,
    ema_update,
    param_groups,
    set_schedules,
)
from vjepa.masks import MaskBatch, collate_masks, num_generators, target_masks
from vjepa.models.vit import build_encoder
from vjepa.precision import autocast


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM (a scheduler's pre-emption) arrived: a checkpoint was saved and the run stopped.

    `exit_code` is 143 (128 + SIGTERM), what a process killed by SIGTERM reports, so schedulers
    (SLURM `--requeue`, Kubernetes restart policies) treat the run as interrupted, not finished.
    """

    exit_code = 128 + signal.SIGTERM


class RunDirLocked(RuntimeError):
    """Another live process is training in the same run directory; the message names its pid."""


# ---------------------------------------------------------------------------------------------
# devices and precision


def compile_blocks(model: JEPA) -> None:
    """`torch.compile` every transformer block in place, with dynamic shapes (K changes every step).

    Block by block, as torchtitan does: a few small graphs (grad or not, padding mask or not, per
    width) and the mask bookkeeping stays eager. Compiling the whole JEPA instead returned a loss
    without a gradient in torch 2.13. Apply before wrapping for DDP/FSDP.
    """
    for network in (model.encoder, model.target_encoder, model.predictor):
        for block in getattr(network, "blocks", getattr(network, "predictor_blocks", [])):
            block.compile(dynamic=True)


# ---------------------------------------------------------------------------------------------
# deterministic data order


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix-style), stable across runs and platforms."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & (2**64 - 1)
        value = (value * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    return value >> 1


def init_seed(cfg: Config) -> int:
    """The torch seed `train(cfg)` sets right before building the model (the encoder comes first)."""
    return mix_seed(cfg.run.seed, 1)


def initial_encoder(cfg: Config) -> torch.nn.Module:
    """The encoder exactly as `train(cfg)` initialises it, before any step (the random-init baseline,
    or for a `model.init_from` run the file's target encoder it started from).

    `train` seeds every generator and builds the encoder on the CPU, so seeding the CPU generator
    alone draws the same weights and leaves a GPU's random stream as it was.
    """
    torch.random.default_generator.manual_seed(init_seed(cfg))
    encoder = build_encoder(cfg.model, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames)
    if cfg.model.init_from:  # the run started from a file: its init is that file's target encoder
        initial_weights_into(encoder, cfg)
    return encoder


class StepBatchSampler(Sampler):
    """Yields, for steps start_step, start_step+1, ..., this rank's list of (index, item_seed).

    Sample k of global step s is element (s*G + k) mod n of the epoch's permutation (G = global
    batch), so the order depends only on (seed, step) and resuming at any step is exact.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise ValueError("the training dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.num_items, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (index, item_seed) pairs for global step `step`."""
        global_batch = self.batch_size * self.world_size
        items = []
        for k in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):
            flat = step * global_batch + k
            index = int(self._perm(flat // self.num_items)[flat % self.num_items])
            items.append((index, mix_seed(self.seed, step, k)))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class SeededItems(Dataset):
    """Wraps a dataset so item (index, seed) is drawn with the global RNG seeded by `seed`.

    Augmentations that use torch's global RNG become reproducible, in any worker, without
    disturbing the caller's RNG state.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def build_train_loader(cfg: Config, start_step: int, rank: int, world_size: int) -> tuple[DataLoader, Dataset]:
    """The training DataLoader: deterministic step batches from the configured source."""
    from vjepa.data import build_dataset, collate

    dataset = build_dataset(cfg.data, split="train", train=True)
    sampler = StepBatchSampler(len(dataset), cfg.data.batch_size, cfg.run.seed, start_step, rank, world_size)
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0,
    )
    return loader, dataset


def masks_for_step(
    cfg: Config, grid: tuple[int, int, int], batch_size: int, step: int, rank: int = 0, world_size: int = 1
) -> list[MaskBatch]:
    """This rank's masks for one step: rows rank*B..(rank+1)*B-1 of the global batch's masks.

    The global batch's masks are a pure function of (seed, step), drawn with one generator, so N
    ranks x B clips see exactly the masks of one process with N*B clips (truncation, a property of
    the whole batch, is applied before slicing).
    """
    generator = torch.Generator().manual_seed(mix_seed(cfg.run.seed, step, 0, 7))  # the 0: pre-slicing seeds
    masks = target_masks(cfg.mask, grid, batch_size * world_size, generator, cfg.model.tubelet_size)
    rows = slice(rank * batch_size, (rank + 1) * batch_size)
    if cfg.mask.collate == "truncate":
        return [select_rows(collate_masks(mask, "truncate"), rows) for mask in masks]
    return [collate_masks(mask[rows], cfg.mask.collate) for mask in masks]


def select_rows(masks: MaskBatch, rows: slice) -> MaskBatch:
    """The MaskBatch of a slice of the batch's rows."""

    def pick(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[rows]

    return MaskBatch(pick(masks.context_idx), pick(masks.target_idx), pick(masks.context_valid), pick(masks.target_valid))


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


# ---------------------------------------------------------------------------------------------
# run directory


@dataclass
class RunLog:
    """Appends metrics to metrics.jsonl (and TensorBoard if enabled) on rank 0 only."""

    out_dir: Path
    enabled: bool = True
    tensorboard: bool = False
    _writer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.enabled and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard=true needs the tensorboard package: pip install 'vjepa[tensorboard]'") from None
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (must contain `step`)."""
        if not self.enabled:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise write_failure(err, path) from None
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, record["step"])
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard output."""
        if self._writer is not None:
            self._writer.close()


def checkpoint_state(model: JEPA, optimizer: torch.optim.Optimizer, step: int, cfg: Config, loss: float) -> dict[str, Any]:
    """Everything needed to resume at `step` (official top-level key names).

    Under FSDP every rank must call this (it gathers the shards); rank 0 gets the full state.
    """
    networks, opt = dist_utils.full_state_dicts(model, optimizer)
    return {**networks, "opt": opt, "step": step, "loss": loss, "config": to_dict(cfg)}


def restore_networks(model: JEPA, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's encoder, predictor and target encoder into the (unwrapped) model, strictly."""
    load_state_strict(model.encoder, state["encoder"], f"{path} [encoder]")
    load_state_strict(model.predictor, state["predictor"], f"{path} [predictor]")
    if model.target_encoder is not None:
        load_state_strict(model.target_encoder, state["target_encoder"], f"{path} [target_encoder]")


# Settings a resume may change: how the run executes, not what it learns. `optim.steps` may grow (a
# longer schedule) and `data.batch_size` is per process, so it changes with the number of processes.
RESUME_MAY_CHANGE = ("run.", "optim.steps", "data.batch_size", "data.num_workers", "data.decoder", "data.strict")
RESUME_MUST_MATCH = ("run.seed", "run.objective")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_mismatches(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Settings of `cfg` that differ from a checkpoint's saved config, as "key: old -> new" lines.

    Only settings that change what the run learns count (`RESUME_MAY_CHANGE` lists those that may
    change on resume), and only keys both configs have: a checkpoint written before a setting
    existed is not refused for lacking it.
    """
    old, new = _flatten(saved), _flatten(to_dict(cfg))
    changed = []
    for key in sorted(old.keys() & new.keys()):
        free = key.startswith(RESUME_MAY_CHANGE) and key not in RESUME_MUST_MATCH
        if not free and old[key] != new[key]:
            changed.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return changed


def check_resume_config(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse to resume `path` with a config that would train a different run (ConfigError).

    Without this check, `vjepa pretrain data.source=csv ...` after the demo in the same
    `run.out_dir` would resume the finished demo run and train nothing on the new data.
    """
    changed = resume_mismatches(saved, cfg)
    if changed:
        shown = "; ".join(changed[:8]) + (f"; ... ({len(changed)} in all)" if len(changed) > 8 else "")
        raise ConfigError(
            f"{path} is a checkpoint of a different run ({shown}). Resuming would continue that run "
            f"under the new settings. Pick another run.out_dir, or delete {path} to start this "
            "directory over."
        )


def write_config(cfg: Config, out_dir: Path) -> None:
    """Write the resolved config to `out_dir/config.yaml` atomically (a full disk leaves the old one)."""
    atomic_write(out_dir / "config.yaml", lambda tmp: Path(tmp).write_text(to_yaml(cfg)))


def prepare_run_dir(cfg: Config, is_main: bool) -> Path:
    """Create the run directory and write the resolved config there (for runs that never resume)."""
    out_dir = Path(cfg.run.out_dir)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, out_dir)
    return out_dir


def trim_metrics(out_dir: Path, step: int) -> int:
    """Drop metrics.jsonl records past `step` (a resumed run logs those steps again). Returns how many."""
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            keep = int(json.loads(line).get("step", 0)) <= step
        except (ValueError, AttributeError):  # a line cut short by a kill: drop it
            keep = False
        if keep:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))
    return len(lines) - len(kept)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: `out_dir/.lock`, holding the owner's pid.

    On POSIX an `flock` on the file (the kernel drops it when the process dies, however it dies);
    elsewhere the file's existence plus a liveness check of the pid in it. A lock file left by a
    dead process is taken over.

    Raises:
        RunDirLocked: naming the directory and the live holder's pid.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self._fd: int | None = None

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def _refuse(self) -> None:
        holder = self._holder()
        who = f"process {holder}" if holder else "another process"
        raise RunDirLocked(
            f"{self.path.parent} is in use by {who} (lock {self.path}): two runs in one run.out_dir would "
            "overwrite each other's checkpoints and log every step twice. Wait for it, stop it, or pick "
            "another run.out_dir"
        )

    def acquire(self) -> RunLock:
        """Take the lock (RunDirLocked if a live process holds it)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): trust a pid file whose process is alive
            holder = self._holder()
            if holder and holder != os.getpid() and _pid_alive(holder):
                self._refuse()
            self.path.write_text(f"{os.getpid()}\n")
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                self._refuse()
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its pid is stale and the next run takes it over)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class StopRequest:
    """Turns SIGTERM into a flag the loop checks at every step boundary (main thread only).

    The previous handler is restored on exit, so library callers keep their own signal handling.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        """Catch SIGTERM from now on (signals can only be caught in the main thread)."""
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def restore(self) -> None:
        """Put back the handler that was there before `install`."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


# ---------------------------------------------------------------------------------------------
# the loop


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
    env = dist_utils.setup(cfg.run.device)
    is_main = env.rank == 0
    out_dir = Path(cfg.run.out_dir)
    lock, stop = None, StopRequest()
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out_dir).acquire()  # before any file in it is read or cleaned
    stop.install()
    try:
        summary = _train_locked(cfg, env, out_dir, stop)
    finally:
        stop.restore()
        if lock is not None:
            lock.release()
    dist_utils.teardown(env)
    return summary


def _train_locked(cfg: Config, env: dist_utils.DistEnv, out_dir: Path, stop: StopRequest) -> dict[str, Any]:
    """`train` once the run directory is locked: restore, check, set up, loop."""
    device, is_main = env.device, env.rank == 0
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(init_seed(cfg))  # model init: identical on every rank
    latest = out_dir / "latest.pt"
    if is_main:
        remove_stale_temps(out_dir)  # left by a save that was killed (safe: we hold the lock)
    state = load_checkpoint(latest) if latest.exists() else None  # any world size wrote it
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
    wrapped = dist_utils.wrap(model, env, cfg.run.distributed)
    # built after wrapping: FSDP2 swaps the parameters for sharded ones
    optimizer = torch.optim.AdamW(
        param_groups(model.encoder, model.predictor, lr_scales=(1.0, cfg.optim.predictor_lr_scale)),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
    )
    start, saved_loss = 0, float("nan")
    if state is not None:
        dist_utils.load_optimizer_state(model, optimizer, state["opt"])
        start, saved_loss = int(state["step"]), float(state.get("loss", float("nan")))
    del state
    loader, dataset = build_train_loader(cfg, start, env.rank, env.world_size)
    grid = model.encoder.patch_embed.grid(cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    if is_main:  # the settings are accepted: only now is the run directory changed
        write_config(cfg, out_dir)
        trim_metrics(out_dir, start)
    log = RunLog(out_dir, enabled=is_main, tensorboard=cfg.run.tensorboard)
    if is_main:
        log.write({"step": start, "event": "start" if start == 0 else "resume", "world_size": env.world_size})
    try:
        summary = run_loop(cfg, wrapped, model, optimizer, loader, dataset, grid, start, env, log, stop)
    finally:
        log.close()
    if start == cfg.optim.steps and math.isnan(summary["final_loss"]):
        summary["final_loss"] = saved_loss  # a finished run started again: report what it ended with
    return {**summary, "rank": env.rank, "world_size": env.world_size}  # the CLI probes on rank 0 only


def check_resume_step(step: int, cfg: Config, path: Path) -> None:
    """Refuse to resume a checkpoint already past `optim.steps` (ConfigError; nothing is written).

    `optim.steps` may grow on resume (a longer schedule) but not shrink below what was trained:
    the run cannot be un-trained, and continuing would train nothing while claiming a result.
    """
    if step > cfg.optim.steps:
        raise ConfigError(
            f"{path} already finished at step {step}, past optim.steps={cfg.optim.steps}: nothing to train. "
            f"Use optim.steps={step} or more to continue it, or another run.out_dir for a new run"
        )


def run_loop(cfg, wrapped, model, optimizer, loader, dataset, grid, start, env, log, stop=None) -> dict[str, Any]:
    """Iterate steps start..steps-1: train, log, monitor collapse, checkpoint; stop on NaN/inf.

    A checkpoint is written only when every tensor in it is finite. When `stop.requested` turns
    true (SIGTERM), the step in flight finishes, a checkpoint is saved and TrainingInterrupted raised.
    """
    is_main, device = env.rank == 0, env.device
    out_dir = Path(cfg.run.out_dir)
    bar = make_progress(cfg, start, is_main)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, found without syncing
    loss_sum, loss_count, clips, t0 = torch.zeros((), device=device), 0, 0, time.perf_counter()
    initial_stats, last_stats, last_loss, last_good = None, None, float("nan"), None
    batches = iter(loader)
    for step in range(start, cfg.optim.steps):
        batch = next(batches)
        video = batch["video"].to(device, non_blocking=True)
        masks = [m.to(device, non_blocking=True) for m in masks_for_step(cfg, grid, video.shape[0], step, env.rank, env.world_size)]
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
            check_finite(first_bad, out_dir, last_good, cfg)
        if is_log:
            mean_loss = dist_utils.all_reduce_mean(loss_sum / max(loss_count, 1), env).item()
            rate = clips * env.world_size / max(time.perf_counter() - t0, 1e-9)
            record = {"step": done, "loss": mean_loss, "lr": result.lr, "weight_decay": result.weight_decay,
                      "momentum": result.momentum, "clips_per_s": rate,
                      "generator_losses": [round(v, 5) for v in dist_utils.all_reduce_mean(result.generator_losses, env).tolist()]}
            last_loss = mean_loss
            skipped = getattr(dataset, "skipped", None)  # bad files replaced so far, by reason
            if skipped:
                record["skipped_files"] = dict(skipped)
            loss_sum, loss_count, clips, t0 = torch.zeros((), device=device), 0, 0, time.perf_counter()
            if initial_stats is None or done % cfg.run.monitor_every == 0 or done == cfg.optim.steps:
                last_stats = collapse_stats(result.targets)
                initial_stats = initial_stats or last_stats
                record.update(target_std=last_stats.std, effective_rank=last_stats.effective_rank,
                              within_clip=last_stats.within_clip)
                warning = collapse_warning(last_stats, initial_stats)
                if warning and is_main:
                    record["warning"] = warning
                    bar.write(f"WARNING step {done}: {warning}")
            log.write(record)
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{result.lr:.2e}", clips_s=f"{rate:.1f}")
        bar.update(1)
        if is_ckpt:
            check_weights_finite(model, optimizer, done, out_dir, last_good, cfg, env)
            state = checkpoint_state(model, optimizer, done, cfg, last_loss)  # a collective under FSDP
            path = out_dir / "latest.pt"
            if is_main:
                save_checkpoint(path, state)
                if is_keep:
                    save_checkpoint(out_dir / f"step_{done}.pt", state)
            last_good, state = (path, done), None
        if is_ckpt:
            dist_utils.barrier(env)
        if stopping:
            bar.close()
            message = (f"received SIGTERM: saved {out_dir / 'latest.pt'} at step {done} of {cfg.optim.steps}; "
                       f"stopping with exit status {TrainingInterrupted.exit_code}. Run the same command again "
                       "to resume exactly from there")
            if is_main:
                print(message, file=sys.stderr, flush=True)
            raise TrainingInterrupted(message)
    bar.close()
    summary = {"steps": cfg.optim.steps, "final_loss": last_loss, "out_dir": str(out_dir)}
    if initial_stats and last_stats:
        summary.update(effective_rank_start=initial_stats.effective_rank, effective_rank_end=last_stats.effective_rank,
                       target_std_end=last_stats.std, within_clip_start=initial_stats.within_clip,
                       within_clip_end=last_stats.within_clip)
    if model.target_encoder is not None:
        summary["target_init_share"] = ema_init_share(cfg.optim.steps, cfg.optim)
    return summary


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
                 cfg: Config | None = None) -> None:
    """Raise TrainingDiverged (naming the step and the last good checkpoint) if a loss was NaN/inf."""
    bad_step = int(first_bad.item())
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


def final_effective_rank_ok(summary: dict[str, Any]) -> bool:
    """True when the run's effective rank stayed above a quarter of its start (no collapse)."""
    start, end = summary.get("effective_rank_start"), summary.get("effective_rank_end")
    return bool(start and end and not math.isnan(end) and end >= 0.25 * start)
