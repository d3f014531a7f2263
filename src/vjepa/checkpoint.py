"""Checkpoints: atomic save, safe (weights-only) load, resume, safetensors export, official import.

A training checkpoint is a dict with the official top-level names (`encoder`, `predictor`,
`target_encoder`, `opt`) plus `step`, `config` and `loss`; model keys carry no `module.` prefix.
Official facebookresearch/jepa checkpoints (`.pth.tar`, keys `module.backbone.*`) are read by
stripping the wrapper prefixes and inferring the architecture from tensor shapes
(`split_networks`, `infer_model_config`). Loading never executes code from a file:
`torch.load(..., weights_only=True)`, and every network loads strictly (`load_state_strict`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vjepa.config import ENCODER_SIZES, Config, ConfigError, to_dict
from vjepa.distributed import full_state_dicts

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_failure(err, path) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
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


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically `torch.save` a checkpoint dict to `path` (StorageError when the disk is full)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (`weights_only=True`: no pickled code is ever run).

    Raises:
        CheckpointError: a missing or unreadable file; a file that contains code (a pickle that
            calls functions): it is not loaded; or one whose tensors hold NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
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


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)`, but the error lists every missing, unexpected and mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(problems))
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
# official facebookresearch/jepa checkpoints
#
# `app/vjepa/train.py` saves {encoder, predictor, target_encoder, opt, scaler, epoch, loss, ...}, each
# network's keys prefixed by the DDP and multi-mask wrappers: `module.backbone.blocks.0.attn.qkv.weight`.
# Below the prefixes the names are ours (`vit.py` and `predictor.py` keep the official names), so
# importing is: strip the prefixes, read the architecture off the tensor shapes, load strictly.

NETWORKS = ("encoder", "target_encoder", "predictor")
WRAPPER_PREFIXES = ("module.", "backbone.", "_orig_mod.")  # DDP, MultiMaskWrapper, torch.compile


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `backbone.`, `_orig_mod.`, in any order) from every key."""
    stripped = {}
    for key, value in state.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in stripped:
            raise CheckpointError(f"keys {key!r} and another both become {name!r} without wrapper prefixes")
        stripped[name] = value
    return stripped


def split_networks(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The network state dicts in a loaded checkpoint, prefixes stripped.

    A dict with `encoder` / `target_encoder` / `predictor` entries (ours or the official layout)
    gives those entries (empty or None ones are left out); a bare state dict (tensor values only,
    e.g. `torch.save(model.state_dict())`) is taken as an `encoder`.

    Raises:
        CheckpointError: when the dict holds neither.
    """
    networks = {name: state[name] for name in NETWORKS if isinstance(state.get(name), dict) and state[name]}
    if networks:
        return {name: strip_prefixes(sub) for name, sub in networks.items()}
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return {"encoder": strip_prefixes(state)}
    raise CheckpointError(
        f"no network weights found: expected entries {', '.join(NETWORKS)} or a bare state dict, "
        f"got keys {sorted(state)[:12]}"
    )


def _grid_candidates(num_tokens: int, tubelet: int, patch: int) -> list[tuple[int, int]]:
    """Every (num_frames, img_size) whose square token grid has `num_tokens` tokens."""
    found = []
    for steps in range(1, num_tokens + 1):
        if num_tokens % steps == 0:
            side = math.isqrt(num_tokens // steps)
            if side * side == num_tokens // steps:
                found.append((steps * tubelet, side * patch))
    return found


def infer_clip_size(
    pos_embed: torch.Tensor,
    tubelet: int,
    patch: int,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> tuple[int, int, bool | None]:
    """Find the clip size a position table was built for.

    A fixed sin-cos table fixes its grid: the candidate grids with the right number of tokens are
    rebuilt and compared with the stored one, so the answer is exact for official checkpoints. A
    table that matches none (learned positions) falls back to 16 frames, the official clip length.

    Args:
        pos_embed: the stored table [1, N, D].
        tubelet, patch: frames and pixels per token side.
        num_frames, img_size: known values (restrict the candidates); None to infer.

    Returns:
        (num_frames, img_size, uniform_power), uniform_power None when no sin-cos table matched.

    Raises:
        CheckpointError: when no square grid with the given sizes has N tokens.
    """
    from vjepa.models.pos_embed import sincos_3d

    num_tokens, dim = pos_embed.shape[-2:]
    candidates = [
        (frames, size)
        for frames, size in _grid_candidates(num_tokens, tubelet, patch)
        if num_frames in (None, frames) and img_size in (None, size)
    ]
    if not candidates:
        options = ", ".join(f"{f}x{s}x{s}" for f, s in _grid_candidates(num_tokens, tubelet, patch))
        raise CheckpointError(
            f"pos_embed has {num_tokens} tokens, which no clip of num_frames={num_frames}, "
            f"img_size={img_size} gives (tubelet {tubelet}, patch {patch}); possible clips: {options}"
        )
    stored = pos_embed.reshape(num_tokens, dim).float()
    for frames, size in candidates:
        for uniform_power in (True, False):
            table = sincos_3d(dim, size // patch, frames // tubelet, uniform_power)
            if torch.allclose(table, stored, atol=1e-4):
                return frames, size, uniform_power
    frames, size = min(candidates, key=lambda c: (c[0] != 16, abs(c[0] - 16)))
    return frames, size, None


def infer_model_config(
    networks: dict[str, dict[str, torch.Tensor]],
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    source: str = "checkpoint",
    pos_embed: str | None = None,
):
    """Build a `Config` whose model matches checkpoint tensors (official or ours), from shapes alone.

    Reads: embed_dim, in_chans, tubelet and patch from `patch_embed.proj.weight` [D, C, t, p, p];
    depth from the number of `blocks.N`; MLP ratio from `blocks.0.mlp.fc1.weight`; num_heads from
    the official size table by width (tiny 192/3, small 384/6, base 768/12, large 1024/16, huge
    1280/16, giant 1408/16, or 22 heads for a V-JEPA 2 ViT-g); RoPE or sin-cos (`vjepa.formats.detect_pos_embed`); num_frames and img_size from `pos_embed` (see `infer_clip_size`); the
    predictor's width and depth from `predictor_embed.weight` and `predictor_blocks.N`.

    Args:
        networks: from `split_networks`.
        num_frames, img_size, num_heads: overrides for what the shapes cannot tell.
        source: the file, named in errors.
        pos_embed: "sincos" or "rope" if known; else detected (`vjepa.formats.detect_pos_embed`).

    Returns:
        A `vjepa.config.Config` (data.num_frames / crop_size set to the clip size, the rest default).

    Raises:
        CheckpointError: naming what is missing or ambiguous (e.g. an unknown width without num_heads).
    """
    from vjepa.formats import block_width, check_encoders_agree, detect_pos_embed, numbered

    check_encoders_agree(networks, source)  # the architecture is read from one: the other must agree
    name = "target_encoder" if networks.get("target_encoder") else "encoder"
    encoder = networks.get(name)
    if not encoder or "patch_embed.proj.weight" not in encoder:
        raise CheckpointError("cannot infer the architecture: no encoder with a patch_embed.proj.weight")
    weight = encoder["patch_embed.proj.weight"]
    if weight.ndim != 5:
        raise CheckpointError(
            f"patch_embed.proj.weight has shape {tuple(weight.shape)}; a video encoder's is 5-D "
            "[D, C, tubelet, patch, patch] (image checkpoints such as I-JEPA are not supported)"
        )
    cfg = Config()
    m = cfg.model
    m.embed_dim, m.in_chans, m.tubelet_size, m.patch_size = (int(s) for s in weight.shape[:4])
    where = f"{source} [{name}]"
    m.depth = numbered(encoder, "blocks.", where)
    m.mlp_ratio = block_width(encoder, "blocks.", where) / m.embed_dim
    seen_size = img_size
    if "pos_embed" in encoder and img_size is None:  # a table built for 256 px marks V-JEPA 2
        seen_size = infer_clip_size(encoder["pos_embed"], m.tubelet_size, m.patch_size, num_frames, None)[1]
    m.pos_embed = detect_pos_embed(networks, seen_size, pos_embed)
    rope = m.pos_embed == "rope"
    heads_by_width = {width: heads for size, (width, _, heads) in ENCODER_SIZES.items() if not size.endswith("_v2")}
    if rope:
        heads_by_width[ENCODER_SIZES["giant_v2"][0]] = ENCODER_SIZES["giant_v2"][2]  # released ViT-g: 22 heads
    m.num_heads = num_heads or heads_by_width.get(m.embed_dim, 0)
    if not m.num_heads:
        raise CheckpointError(
            f"embed_dim {m.embed_dim} is not an official ViT width ({sorted(heads_by_width)}): pass num_heads"
        )
    if "pos_embed" in encoder:
        if rope and img_size is None:  # the unused table of a V-JEPA 2 file: try its release sizes first
            for size in (256, 384):
                try:
                    num_frames, img_size, _ = infer_clip_size(encoder["pos_embed"], m.tubelet_size, m.patch_size,
                                                              num_frames, size)
                    break
                except CheckpointError:
                    continue
        num_frames, img_size, uniform = infer_clip_size(
            encoder["pos_embed"], m.tubelet_size, m.patch_size, num_frames, img_size
        )
        m.uniform_power = m.uniform_power if uniform is None else uniform
    m.num_frames, m.img_size = num_frames or 16, img_size or (256 if rope else 224)
    cfg.data.num_frames, cfg.data.crop_size = m.num_frames, m.img_size
    predictor = networks.get("predictor")
    if predictor and "predictor_embed.weight" in predictor:
        m.predictor_embed_dim = int(predictor["predictor_embed.weight"].shape[0])
        m.predictor_depth = numbered(predictor, "predictor_blocks.", f"{source} [predictor]")
        m.predictor_mlp_ratio = block_width(predictor, "predictor_blocks.", f"{source} [predictor]") / m.predictor_embed_dim
        m.predictor_num_heads = 12 if rope else 0  # V-JEPA 2's predictor: 12 heads; V-JEPA 1: the encoder's
    return cfg


# ---------------------------------------------------------------------------------------------
# resume policy: what a training checkpoint holds, and when a run directory may be resumed


def checkpoint_state(model: JEPA, optimizer: torch.optim.Optimizer, step: int, cfg: Config, loss: float) -> dict[str, Any]:
    """Everything needed to resume at `step` (official top-level key names).

    Under FSDP every rank must call this (it gathers the shards); rank 0 gets the full state.
    """
    networks, opt = full_state_dicts(model, optimizer)
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
