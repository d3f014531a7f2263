"""Checkpoints: atomic save, safe (weights-only) load, safetensors files, and the resume policy.

A training checkpoint is a dict with the official top-level names (`encoder`, `predictor`,
`target_encoder`, `opt`) plus `step`, `config` and `loss`; model keys carry no `module.` prefix.
Official checkpoints (`.pth.tar`, keys `module.backbone.*`) are read in `vjepa.formats`
(`split_networks`, `infer_model_config`). Loading never executes code from a file:
`torch.load(..., weights_only=True)`, and every network loads strictly (`load_state_strict`).
The resume policy (`check_resume_config`, `check_resume_step`) decides whether a run directory's
latest.pt may be continued under a given config; `checkpoint_state` / `save_step` write one.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vjepa.config import Config, ConfigError, migrate_stored, to_dict
from vjepa.distributed import DistEnv, full_state_dicts, rng_state

if TYPE_CHECKING:
    from vjepa.jepa import JEPA


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not match the model; the message says how."""


class StorageError(RuntimeError):
    """A file could not be written (disk full, no permission); the message names the file."""


# Disk-full errors as the OS reports them (EDQUOT: a quota, which users meet as "disk full" too)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Below this many free bytes, a failed write is reported as a full disk: torch's zip writer reports
# ENOSPC as "[enforce fail at inline_container.cc] unexpected pos ..." without the errno
_NEARLY_FULL_BYTES = 1 << 20


def _file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the process umask."""
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_path(path: str | Path, directory: bool = False) -> None:
    """Flush a file (or a directory entry list) to stable storage, so a rename survives a crash."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems cannot fsync a directory; the file itself was synced
        if not directory or err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_failure(err: BaseException, path: str | Path, free_dir: str | Path | None = None) -> StorageError | None:
    """The one-line `StorageError` for a failed write of `path`, or None if `err` is not a write error.

    Args:
        err: what the writer raised: an OSError, or torch's RuntimeError from its zip writer.
        path: the file being written (named in the message).
        free_dir: a folder on the same filesystem to measure free space in (default: path's).
    """
    free_dir = Path(free_dir or Path(path).parent)
    if isinstance(err, OSError):
        if err.errno in _DISK_FULL:
            return StorageError(f"no space left on device writing {path}")
        return StorageError(f"cannot write {path}: {err.strerror or err}")
    if isinstance(err, RuntimeError) and any(s in str(err) for s in ("inline_container", "PytorchStreamWriter")):
        try:
            full = shutil.disk_usage(free_dir).free < _NEARLY_FULL_BYTES
        except OSError:
            full = False
        if full:
            return StorageError(f"no space left on device writing {path}")
        return StorageError(f"cannot write {path}: {str(err).splitlines()[0]}")
    return None


TEMP_GLOB = ".*.tmp"  # atomic_write's temporary files: .NAME.RANDOM.tmp next to the target


def _temp_beside(path: Path) -> str:
    """A new empty temporary file in `path`'s folder (created if missing), named after `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_failure(err, path) from None
    os.close(fd)
    return tmp


def _write_durably(tmp: str, path: Path, write) -> None:
    """`write(tmp)`, give it open()'s mode, flush it, rename it onto `path`, flush the directory."""
    write(tmp)
    os.chmod(tmp, _file_mode())
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename onto `path`: a crash never leaves a half-written file.

    The file gets the mode `open()` would give it (0o666 less the umask; mkstemp alone makes 0600),
    and is flushed to disk before the rename and the directory after it, so a power loss leaves
    either the old file or the complete new one.

    Raises:
        StorageError: "no space left on device writing PATH" (or another write failure, named);
            the previous file at `path`, if any, is left intact.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        _write_durably(tmp, path, write)
    except BaseException as err:
        failure = write_failure(err, path)  # measured before the temp file is removed
        if os.path.exists(tmp):
            os.remove(tmp)
        if failure is not None:
            raise failure from None
        raise


def remove_stale_temps(folder: str | Path, names: tuple[str, ...] = ("latest.pt",)) -> list[Path]:
    """Delete temporary files a killed `atomic_write` left in `folder` for the files `names`.

    Call it only while holding the folder's lock (`RunLock`): another live writer's temp file
    would otherwise be removed under it. A `step_N.pt` keep file's temps count too.

    Returns:
        The removed paths.
    """
    removed = []
    for tmp in Path(folder).glob(TEMP_GLOB):
        target = tmp.name[1:].rsplit(".", 2)[0]  # .latest.pt.abc123.tmp -> latest.pt
        if target in names or (target.startswith("step_") and target.endswith(".pt")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_checkpoint(path: str | Path, state: dict[str, Any], keep: str | Path | None = None) -> None:
    """Atomically `torch.save` a checkpoint dict to `path` (StorageError when the disk is full).

    Args:
        path: the file to (over)write, e.g. `latest.pt`.
        state: the checkpoint dict.
        keep: also keep this state as `keep` (e.g. `step_N.pt`). It is written once: `keep` first,
            then `path` is made a hard link to it (a copy of the file where the filesystem has no
            links), so a keep step costs one serialisation, not two (~15 GB each at ViT-g). A later
            save replaces `path` with a new file and leaves `keep` as it was.
    """
    if keep is None:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        return
    atomic_write(keep, lambda tmp: torch.save(state, tmp))
    atomic_write(path, lambda tmp: _link_or_copy(keep, tmp))


def _link_or_copy(source: str | Path, tmp: str | Path) -> None:
    """Put `source`'s file at `tmp` (which `atomic_write` created empty): a hard link, else a copy."""
    os.remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (some network and FUSE filesystems)
        shutil.copyfile(source, tmp)


def _cpu_copy(state: Any) -> Any:
    """A copy of a nested dict/list of tensors whose tensors are new CPU tensors (other values shared)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _cpu_copy(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(value) for value in state)
    return state


class BackgroundSaver:
    """`save_checkpoint` on a thread (run.async_checkpoint), one write at a time; or in line.

    `save` copies the state to CPU memory first (the next step updates the live tensors in place),
    starts the write and returns, so rank 0 goes back to training while ~15 GB (ViT-g) reach the
    disk. The next `save`, and `wait`, first wait for the write in flight and re-raise its error
    (a `StorageError` such as a full disk), so a failed write stops the run one checkpoint later
    at most, and the previous file stays intact (writes are atomic).

    Args:
        background: False writes in line (the default, and what other ranks use: they write nothing).
    """

    def __init__(self, background: bool = False):
        self.background = background
        self._thread: Any = None
        self._error: BaseException | None = None

    def save(self, path: str | Path, state: dict[str, Any], keep: str | Path | None = None) -> None:
        """Write `state` to `path` (and `keep`), in the background when enabled."""
        self.wait()
        if not self.background:
            save_checkpoint(path, state, keep)
            return
        import threading

        snapshot = _cpu_copy(state)

        def write() -> None:
            try:
                save_checkpoint(path, snapshot, keep)
            except BaseException as err:  # noqa: BLE001 - handed to the training thread by wait()
                self._error = err

        self._thread = threading.Thread(target=write, name="vjepa-checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def nonfinite_tensors(state: Any, prefix: str = "") -> list[tuple[str, int]]:
    """(key, number of NaN/inf values) of every floating tensor in a nested dict/list that has any.

    Keys are dotted paths (`encoder.blocks.0.attn.qkv.weight`, `opt.state.3.exp_avg`).
    """
    found = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            bad = int((~torch.isfinite(state)).sum())
            if bad:
                found.append((prefix.rstrip("."), bad))
    elif isinstance(state, dict):
        for key, value in state.items():
            found += nonfinite_tensors(value, f"{prefix}{key}.")
    elif isinstance(state, (list, tuple)):
        for number, value in enumerate(state):
            found += nonfinite_tensors(value, f"{prefix}{number}.")
    return found


def describe_nonfinite(found: list[tuple[str, int]], shown: int = 3) -> str:
    """"N non-finite values in K tensors (first: key (n), ...)" for `nonfinite_tensors`' output."""
    total = sum(n for _, n in found)
    first = ", ".join(f"{key} ({n})" for key, n in found[:shown])
    return f"{total:,} NaN/inf values in {len(found)} tensors (first: {first})"


def refuse_nonfinite(state: Any, what: str) -> None:
    """Raise CheckpointError naming the first few tensors of `state` that hold NaN or inf."""
    found = nonfinite_tensors(state)
    if found:
        raise CheckpointError(
            f"{what} holds {describe_nonfinite(found)}: the run it comes from diverged, and its "
            "features would be NaN; load an earlier checkpoint (a step_N.pt keep file) instead"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict safely (`weights_only=True`: no pickled code is ever run).

    Args:
        path: the file.
        map_location: where tensors go.
        mmap: map the file instead of reading it into private memory (files `torch.save` wrote,
            i.e. zip archives; others are read as usual). When every rank of a node loads the same
            checkpoint to resume, they then share one copy in the page cache instead of each
            holding its own (8 x 15 GB at ViT-g).

    Raises:
        CheckpointError: a missing or unreadable file; a file that contains code (a pickle that
            calls functions): it is not loaded; or one whose tensors hold NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True,
                           mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:  # the weights-only unpickler met a pickled global
        called = re.search(r"GLOBAL ([\w.]+)", str(err))
        if called:  # torch's own text would suggest weights_only=False, i.e. running the code
            raise CheckpointError(
                f"{path} contains code (a pickled call to {called.group(1)}), not only weights; it will not "
                "be loaded: vjepa reads weights-only files, and loading this one would run that code"
            ) from None
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint: "
                              f"{str(err).splitlines()[0]}") from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError ...
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint: {err}") from None
    refuse_nonfinite(state, str(path))
    return state


KEYS_SHOWN = 5  # keys a mismatch error names per list; the rest are counted


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, reason: str = "",
                      advice: str = "") -> None:
    """`load_state_dict(strict=True)`, with a one-line error a reader can act on.

    Args:
        module: the network to fill.
        state: its weights (names below any wrapper prefix).
        what: the file and network, first in the error (e.g. "run/latest.pt [encoder]").
        reason: the caller's explanation, put before the key lists (e.g. which architecture
            settings differ between the file and the config).
        advice: what to do about it, put last.

    Raises:
        CheckpointError: `what`, `reason`, then the missing, unexpected and mis-shaped keys, each
            list capped at its first KEYS_SHOWN ("... and N more"), then `advice`.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = [reason] if reason else []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... and {len(items) - KEYS_SHOWN} more" if len(items) > KEYS_SHOWN else ""
            problems.append(f"{title}: {', '.join(items[:KEYS_SHOWN])}{more}")
    if missing or unexpected or shapes:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems) + (f". {advice}" if advice else ""))
    module.load_state_dict(state, strict=True)


def save_safetensors(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write weights to a .safetensors file with the run's config embedded as JSON metadata.

    Args:
        path: file to write (atomically).
        tensors: name -> tensor.
        config: the config dict, stored as JSON under the metadata key "config".
        metadata: further string entries (see `read_safetensors_metadata`).
    """
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**(metadata or {}), "config": json.dumps(config)}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=meta))


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a .safetensors file written by `save_safetensors`: (tensors, config dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open, not a dict
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one CheckpointError naming it
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    refuse_nonfinite(tensors, str(path))
    return tensors, json.loads(metadata.get("config", "{}"))


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a .safetensors file (without reading its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None


# ---------------------------------------------------------------------------------------------
# resume policy: what a training checkpoint holds, and when a run directory may be resumed


def checkpoint_state(model: JEPA, optimizer: torch.optim.Optimizer, step: int, cfg: Config, loss: float,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Everything needed to resume at `step` (official top-level key names, plus `rng`).

    Under FSDP every rank must call this (it gathers the shards); rank 0 gets the full state.
    `rng` holds the generators drop path draws from (the CPU's, and `device`'s on CUDA).
    """
    networks, opt = full_state_dicts(model, optimizer)
    rng = rng_state(torch.device(device))
    return {**networks, "opt": opt, "step": step, "loss": loss, "config": to_dict(cfg), "rng": rng}


def save_step(model: JEPA, optimizer: torch.optim.Optimizer, done: int, cfg: Config, loss: float,
              env: DistEnv, keep: bool, saver: BackgroundSaver | None = None) -> Path:
    """Save step `done` to latest.pt (and step_N.pt when `keep`) on rank 0; returns latest.pt's path.

    Every rank must call it: under FSDP gathering the full state is a collective. One write per
    save: on keep steps latest.pt becomes a link to step_N.pt. `saver` may write in the background.
    """
    state = checkpoint_state(model, optimizer, done, cfg, loss, env.device)
    path = Path(cfg.run.out_dir) / "latest.pt"
    if env.rank == 0:
        (saver or BackgroundSaver()).save(path, state, keep=path.with_name(f"step_{done}.pt") if keep else None)
    return path


def restore_networks(model: JEPA, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's encoder, predictor and target encoder into the (unwrapped) model, strictly."""
    load_state_strict(model.encoder, state["encoder"], f"{path} [encoder]")
    load_state_strict(model.predictor, state["predictor"], f"{path} [predictor]")
    if model.target_encoder is not None:
        load_state_strict(model.target_encoder, state["target_encoder"], f"{path} [target_encoder]")


# Settings a resume may change: how the run executes, not what it learns. `optim.steps` may grow (a
# longer schedule) and `data.batch_size` is per process, so it changes with the number of processes.
RESUME_MAY_CHANGE = ("run.", "optim.steps", "data.batch_size", "data.num_workers", "data.decoder", "data.strict")
RESUME_MUST_MATCH = ("run.seed",)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_mismatches(saved: dict[str, Any], cfg: Config, where: str = "the checkpoint") -> list[str]:
    """Settings of `cfg` that differ from a checkpoint's saved config, as "key: old -> new" lines.

    Only settings that change what the run learns count (`RESUME_MAY_CHANGE` lists those that may
    change on resume), and only keys both configs have: a checkpoint written before a setting
    existed is not refused for lacking it. Keys that moved since (`config.MOVED_KEYS`) are compared
    under their new names (`where`, the file, is named in the warning that says so).
    """
    old, new = _flatten(migrate_stored(saved, where)), _flatten(to_dict(cfg))
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
    changed = resume_mismatches(saved, cfg, str(path))
    if changed:
        shown = "; ".join(changed[:8]) + (f"; ... ({len(changed)} in all)" if len(changed) > 8 else "")
        raise ConfigError(
            f"{path} is a checkpoint of a different run ({shown}). Resuming would continue that run "
            f"under the new settings. Pick another run.out_dir, or delete {path} to start this "
            "directory over."
        )


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
