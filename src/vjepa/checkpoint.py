"""Checkpoints: atomic save, safe (weights-only) load, resume, and safetensors export.

A training checkpoint is a dict with the official top-level names (`encoder`, `predictor`,
`target_encoder`, `opt`) plus `step`, `config` and `loss`; model keys carry no `module.` prefix.
Loading never executes code from a file: `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not match the model; the message says how."""


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically `torch.save` a checkpoint dict to `path`."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (`weights_only=True`: no pickled code is ever run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint: {err}") from None


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


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write weights to a .safetensors file with the run's config embedded as JSON metadata."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata={"config": json.dumps(config)}))


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a .safetensors file written by `save_safetensors`: (tensors, config dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    return tensors, json.loads(metadata.get("config", "{}"))
