"""Start pretraining from weights in a file: continued pretraining and resolution/length cooldown.

`model.init_from=PATH` makes a run's context encoder, target encoder and (when the file has one)
predictor start from any checkpoint `vjepa.load` reads: a run directory, our .pt or .safetensors,
an official V-JEPA 1 / V-JEPA 2 .pth.tar, a Hugging Face V-JEPA 2 folder. The optimiser, its
moments and every schedule start fresh (step 0). Loading is strict: a key or shape the config's
architecture does not have is an error naming it (`model.init_from_arch=true` takes the
architecture from the file instead). The run records the file's sha256 in its config.

A cooldown is the same thing at a larger clip (more frames or pixels): sin-cos position tables are
resampled trilinearly to the new token grid, exactly as the encoder does at run time for a clip of
another size, so at step 0 the new model computes what the old one computes on the larger clip.
RoPE models have no table: nothing changes.

Shapes: T', H', W' token grid, N = T'*H'*W' tokens, D width.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vjepa.checkpoint import CheckpointError, load_state_strict
from vjepa.config import PRESETS, Config, ConfigError, to_dict, validate
from vjepa.masks.sample import num_mask_tokens
from vjepa.models.factory import token_grid
from vjepa.models.pos_embed import interpolate_3d

# The model keys that describe the architecture (what `init_from_arch` copies from the file).
ENCODER_ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "tubelet_size", "in_chans",
                     "uniform_power", "pos_embed")
PREDICTOR_ARCH_KEYS = ("predictor_embed_dim", "predictor_depth", "predictor_num_heads", "predictor_mlp_ratio",
                       "predictor_num_mask_tokens")
# position tables of each network (buffers, resampled when the token grid changes)
POSITION_TABLES = {"encoder": "pos_embed", "target_encoder": "pos_embed", "predictor": "predictor_pos_embed"}


@dataclass
class InitWeights:
    """The networks read from `model.init_from`, and the token grid their position tables were built for."""

    networks: dict[str, dict[str, torch.Tensor]]
    grid: tuple[int, int, int]
    source: str
    arch_differences: tuple[str, ...] = ()  # "model.depth: file 2, config 1", named in a load error
    arch_from_file: bool = False  # model.init_from_arch was on: the error must not suggest it


def weights_file(source: str | Path) -> Path:
    """The file whose bytes identify `model.init_from` (`vjepa.formats.checkpoint_path`: a run
    directory's latest.pt, a Hugging Face folder's model.safetensors, or the file itself).

    Raises:
        ConfigError: one line naming `source` and what `model.init_from` takes, when it names no
            weights (a missing path or a folder without them).
    """
    from vjepa.formats import checkpoint_path

    try:
        return checkpoint_path(source)
    except CheckpointError as err:
        raise ConfigError(_not_weights(source, "no such file or folder" if not Path(source).exists() else err)) from None


def _not_weights(value: str | Path, why: Any) -> str:
    """The one-line refusal of a `model.init_from` that names no weights."""
    return (f"model.init_from={value}: {why}; it takes a checkpoint or weights file (.pt, .pth.tar, "
            ".safetensors), a run directory or a Hugging Face folder")


def _recorded_path(value: str) -> str:
    """`model.init_from` as the run records it: absolute, valid from any working directory.

    Raises:
        ConfigError: for a preset name (it has no weights to start from).
    """
    if value in PRESETS and not Path(value).exists():
        raise ConfigError(_not_weights(value, "a preset name, which has no weights"))
    return str(Path(value).expanduser().resolve())


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (a multi-GB checkpoint never sits in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _copy_arch(cfg: Config, model_values: dict[str, Any], with_predictor: bool) -> None:
    keys = ENCODER_ARCH_KEYS + (PREDICTOR_ARCH_KEYS if with_predictor else ())
    for key in keys:
        if key in model_values:
            setattr(cfg.model, key, model_values[key])


def prepare_init(cfg: Config, saved_config: dict[str, Any] | None = None) -> tuple[Config, InitWeights | None]:
    """Resolve `model.init_from` before a run starts: read the file, fill in what the run records.

    Args:
        cfg: the run's config (a changed copy is returned).
        saved_config: the config stored in the run's latest.pt when the run resumes; then the file
            is not read again (it may be gone): its architecture and fingerprint come from there.

    Returns:
        (cfg, the weights to start from), or (cfg, None) without init_from or when resuming.

    Raises:
        ConfigError: the file is missing, or its sha256 differs from a pinned `model.init_from_sha256`.
        CheckpointError: the file cannot be read as weights.
    """
    if not cfg.model.init_from:
        return cfg, None
    cfg = copy.deepcopy(cfg)  # the caller's config stays as given
    m = cfg.model
    m.init_from = _recorded_path(m.init_from)
    if saved_config is not None:  # a resume: latest.pt holds the weights; keep what the run recorded
        _keep_recorded(cfg, saved_config.get("model", {}))
        return cfg, None
    from vjepa.formats import numbered, read_weights  # the one reader: every format `vjepa.load` takes

    digest = sha256_of(weights_file(m.init_from))
    if m.init_from_sha256 and m.init_from_sha256 != digest:
        raise ConfigError(f"model.init_from={m.init_from} has sha256 {digest}, not the pinned "
                          f"model.init_from_sha256={m.init_from_sha256}: the file changed")
    file_cfg, networks, description = read_weights(m.init_from)
    networks = {k: v for k, v in networks.items() if k in POSITION_TABLES}  # drop a classifier head
    if not networks:
        raise ConfigError(f"model.init_from={m.init_from} is a preset or holds no encoder weights")
    file_model, keys = to_dict(file_cfg.model), ENCODER_ARCH_KEYS + PREDICTOR_ARCH_KEYS * ("predictor" in networks)
    if "predictor" in networks:  # the count the weights hold (a stored 0 means one per generator of that run)
        file_model["predictor_num_mask_tokens"] = numbered(networks["predictor"], "mask_tokens.",
                                                           f"model.init_from={m.init_from} [predictor]")
    if m.init_from_arch:
        _copy_arch(cfg, file_model, with_predictor="predictor" in networks)
        validate(cfg)
    m.init_from_sha256 = digest
    ours = {**to_dict(m), "predictor_num_mask_tokens": num_mask_tokens(cfg)}  # 0 -> the count it builds
    differences = tuple(f"model.{k}: file {file_model[k]!r}, config {ours[k]!r}" for k in keys
                        if file_model[k] != ours[k])
    return cfg, InitWeights(networks, token_grid(file_cfg), description, differences, m.init_from_arch)



def _keep_recorded(cfg: Config, saved_model: dict[str, Any]) -> None:
    """On resume from the same `init_from`: take the architecture (with `init_from_arch`) and the
    file's fingerprint the run recorded, as the file is not read again (it may be gone)."""
    m = cfg.model
    if saved_model.get("init_from") == m.init_from:
        if m.init_from_arch:
            _copy_arch(cfg, saved_model, with_predictor=True)
        m.init_from_sha256 = m.init_from_sha256 or saved_model.get("init_from_sha256", "")


def resample_positions(state: dict[str, torch.Tensor], key: str, src_grid: tuple[int, int, int],
                       dst_grid: tuple[int, int, int], what: str) -> dict[str, torch.Tensor]:
    """A copy of `state` whose position table `key` [1, N, D] is resampled from src_grid to dst_grid.

    Trilinear, as `VisionTransformer.positions` resamples at run time for another clip size. States
    without the table (RoPE) or already at dst_grid come back unchanged.

    Raises:
        CheckpointError: when the table does not hold src_grid's N tokens.
    """
    table = state.get(key)
    if table is None or tuple(src_grid) == tuple(dst_grid):
        return state
    num_tokens = src_grid[0] * src_grid[1] * src_grid[2]
    if table.ndim != 3 or table.shape[1] != num_tokens:
        raise CheckpointError(f"{what}: {key} has shape {tuple(table.shape)}, not the {num_tokens} tokens "
                              f"of its stored token grid {tuple(src_grid)}")
    resampled = interpolate_3d(table.float(), src_grid, dst_grid).to(table.dtype)  # [1, N', D]
    return {**state, key: resampled}


def _load(module: nn.Module, state: dict[str, torch.Tensor], name: str, init: InitWeights,
          dst_grid: tuple[int, int, int]) -> None:
    what = f"model.init_from={init.source} [{name}]"
    state = resample_positions(state, POSITION_TABLES[name], init.grid, dst_grid, what)
    differ = f"the architectures differ: {'; '.join(init.arch_differences)}" if init.arch_differences else ""
    if init.arch_from_file:  # the flag is on: suggesting it again would send the user in a circle
        advice = ("model.init_from_arch=true took the architecture from the file, so these keys come from "
                  "settings it does not copy (e.g. objective.kind)")
    else:
        advice = "Make the config's architecture match the file, or set model.init_from_arch=true to take it from the file"
    load_state_strict(module, state, what, differ, advice)


def load_initial_weights(model: nn.Module, init: InitWeights, grid: tuple[int, int, int]) -> list[str]:
    """Copy the file's networks into a fresh JEPA (unwrapped), strictly.

    The context encoder takes the file's `encoder` (its only encoder for exports and Hugging Face
    files); the target encoder takes its `target_encoder`, else the same weights as the context
    encoder; the predictor takes the file's predictor when there is one (else keeps its init).

    Args:
        model: a `vjepa.jepa.JEPA` (or anything with encoder / target_encoder / predictor).
        init: from `prepare_init`.
        grid: the run's token grid (T', H', W'); sin-cos tables are resampled to it.

    Returns:
        What each network started from, e.g. ["encoder <- encoder", "target_encoder <- target_encoder"].
    """
    done = []
    for module_name, file_name in start_pairs(init.networks):
        module = getattr(model, module_name, None)
        if module is not None:
            _load(module, init.networks[file_name], file_name, init, grid)
            done.append(f"{module_name} <- {file_name}")
    return done


def start_pairs(networks: dict[str, Any]) -> list[tuple[str, str]]:
    """(model network, file network) pairs: the context encoder from the file's `encoder` (else its
    `target_encoder`), the target encoder from `target_encoder` (else the same as the context
    encoder), the predictor from `predictor` where the file has one."""
    context = "encoder" if "encoder" in networks else "target_encoder"
    target = "target_encoder" if "target_encoder" in networks else context
    pairs = [("encoder", context), ("target_encoder", target), ("predictor", "predictor")]
    return [(module, name) for module, name in pairs if name in networks]


def initial_weights_into(encoder: nn.Module, cfg: Config) -> None:
    """Load the encoder an init_from run's target encoder started from (for `which="init"` probes).

    Raises:
        CheckpointError: the file is gone, changed since the run recorded it, or does not fit.
    """
    m = cfg.model
    pinned = type(m)(init_from=m.init_from, init_from_sha256=m.init_from_sha256)  # prepare_init checks the pin
    try:  # one read of the file: prepare_init hashes it and refuses a changed one
        _, init = prepare_init(Config(model=pinned, data=cfg.data))
    except (ConfigError, OSError) as err:
        raise CheckpointError(f"the run started from {m.init_from}, so its initial weights are unknown now: "
                              f"{err}") from None
    load_target_into(encoder, init, token_grid(cfg))


def load_target_into(encoder: nn.Module, init: InitWeights, grid: tuple[int, int, int]) -> None:
    """Load the file's target encoder (else its only encoder) into one encoder, strictly (fine-tuning
    and `which="init"` start from the network the paper evaluates)."""
    holder = nn.Module()
    holder.target_encoder = encoder
    load_initial_weights(holder, init, grid)
