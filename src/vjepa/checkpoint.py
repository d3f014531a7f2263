"""Checkpoints: atomic save, safe (weights-only) load, resume, safetensors export, official import.

A training checkpoint is a dict with the official top-level names (`encoder`, `predictor`,
`target_encoder`, `opt`) plus `step`, `config` and `loss`; model keys carry no `module.` prefix.
Official facebookresearch/jepa checkpoints (`.pth.tar`, keys `module.backbone.*`) are read by
stripping the wrapper prefixes and inferring the architecture from tensor shapes
(`split_networks`, `infer_model_config`). Loading never executes code from a file:
`torch.load(..., weights_only=True)`, and every network loads strictly (`load_state_strict`).
"""

from __future__ import annotations

import json
import math
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
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError ...
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
    from vjepa.config import ENCODER_SIZES, Config
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
