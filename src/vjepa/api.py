"""Use an encoder as a library: load weights from anywhere into an `Encoder`, export them.

    >>> import vjepa
    >>> encoder = vjepa.load("runs/demo")          # run dir, .pt, .safetensors, official .pth.tar, preset
    >>> tokens = encoder.embed("clip.mp4")         # [W, N, D]: one row per window of the video
    >>> pooled = encoder.embed("clip.mp4", pooled=True)  # [W, D]

`Encoder` (embedding videos) lives in `vjepa.encoder`. `load` always loads strictly (a missing,
unexpected or mis-shaped key is an error listing them) and never runs code from a file
(`torch.load(weights_only=True)`, or safetensors).

Shape legend: N tokens per clip, D feature width, P predictor width, W windows of a video.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from vjepa.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_safetensors,
    load_state_strict,
    read_safetensors_metadata,
    save_safetensors,
)
from vjepa.config import ENCODER_NETWORKS, PRESETS, Config, config_from_stored, load_yaml, preset, to_dict
from vjepa.encoder import Encoder
from vjepa.formats import (
    drop_unused_tables,
    hf_model_config,
    hf_to_networks,
    infer_model_config,
    is_hf,
    mask_token_count,
    networks_to_hf,
    read_hf,
    split_networks,
)
from vjepa.masks.sample import num_generators
from vjepa.models.factory import build_encoder, initial_encoder
from vjepa.models.predictor import Predictor, build_predictor
from vjepa.models.vit import VisionTransformer

EXPORT_FORMAT = "vjepa-weights-1"  # metadata "format" of files written by `export`
WHICH = ENCODER_NETWORKS  # which network `load` returns (see its docstring)


# ---------------------------------------------------------------------------------------------
# loading


def read_weights(
    source: str | Path,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str]:
    """Read a checkpoint of any supported kind without building a model.

    Args:
        source: a run directory (its latest.pt), our .pt checkpoint, a .safetensors export, an
            official .pth.tar, or a preset name (then there are no weights).
        num_frames, img_size, num_heads: architecture hints for checkpoints without a config.

    Returns:
        (config, {network name: state dict without wrapper prefixes}, a description of the source).

    Raises:
        CheckpointError: for a missing or unreadable file, or hints that contradict a stored config.
    """
    cfg, networks, description, _ = _read_weights(source, num_frames, img_size, num_heads)
    return cfg, networks, description


def checkpoint_path(source: str | Path) -> Path:
    """The file `load` reads for `source`: a run directory's latest.pt, or the file itself.

    Raises:
        CheckpointError: naming `source` when there is no such file (or the folder has no latest.pt).
    """
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {source} (and it is not a preset: {', '.join(PRESETS)})")
    if path.is_dir():
        path = path / "latest.pt"
        if not path.is_file():
            raise CheckpointError(f"{source} is a folder without latest.pt (pass a run directory or a file)")
    return path


def _read_hf(path: Path) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str, bool] | None:
    """A Hugging Face V-JEPA 2 folder or file as (config, networks incl. `probe` if any, file, False); else None."""
    if is_hf(path):
        hf_config, tensors, where = read_hf(path)
        networks, probe = hf_to_networks(hf_config, tensors, where)
        if probe:
            networks["probe"] = probe
        return hf_model_config(hf_config), networks, f"Hugging Face {where}", False
    return None


def _read_weights(
    source: str | Path, num_frames: int | None, img_size: int | None, num_heads: int | None,
    pos_embed: str | None = None,
) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str, bool]:
    """`read_weights` plus whether the config is the run's own (stored, or a preset's) rather
    than inferred from tensor shapes (official checkpoints, bare state dicts, Hugging Face)."""
    if not Path(source).exists() and str(source) in PRESETS:
        return preset(str(source)), {}, f"preset {source!r} (random init)", True
    foreign = _read_hf(Path(source)) if Path(source).exists() else None
    if foreign:
        return foreign
    path = checkpoint_path(source)
    if path.suffix == ".safetensors":
        tensors, config = load_safetensors(path)
        which = read_safetensors_metadata(path).get("which", "encoder")
        networks = {which: {k: v for k, v in tensors.items() if not k.startswith("predictor.")}}
        predictor = {k[len("predictor."):]: v for k, v in tensors.items() if k.startswith("predictor.")}
        networks.update({"predictor": predictor} if predictor else {})
    else:
        state = load_checkpoint(path)
        networks = split_networks(state)
        config = state.get("config") if isinstance(state.get("config"), dict) else None
    if not config:
        cfg = infer_model_config(networks, num_frames, img_size, num_heads, str(path), pos_embed)
        if cfg.model.pos_embed == "rope":
            drop_unused_tables(networks)  # released V-JEPA 2 files still carry a sin-cos table
        return cfg, networks, str(path), False
    cfg = config_from_stored(config, str(path))
    hints = {"num_frames": (num_frames, cfg.data.num_frames), "img_size": (img_size, cfg.data.crop_size),
             "num_heads": (num_heads, cfg.model.num_heads)}
    wrong = [f"{name}={given} (stored {stored})" for name, (given, stored) in hints.items() if given not in (None, stored)]
    if wrong:
        raise CheckpointError(f"{path} stores its config; these hints contradict it: {', '.join(wrong)}")
    return cfg, networks, str(path), True


def _choose_network(networks: dict[str, Any], which: str, description: str, warn: bool = True) -> str | None:
    if which not in WHICH:
        raise ValueError(f"which={which!r}; choose one of {', '.join(WHICH)}")
    if not networks:  # a preset: nothing to load
        return None
    if which in networks:
        return which
    if which == "target_encoder" and "encoder" in networks:
        if warn:
            warnings.warn(f"{description} has no target_encoder; using its encoder", stacklevel=3)
        return "encoder"
    raise CheckpointError(f"{description} has no {which!r} weights (it has: {', '.join(sorted(networks))})")


def _load_predictor(
    cfg: Config, state: dict[str, torch.Tensor], grid: tuple[int, int, int], what: str, expected: int | None = None
) -> Predictor:
    num_mask_tokens = mask_token_count(state, what, expected)
    out_dim = state["predictor_proj.weight"].shape[0] if "predictor_proj.weight" in state else None
    predictor = build_predictor(cfg.model, num_mask_tokens, grid, out_dim=out_dim)
    load_state_strict(predictor, state, what)
    return predictor


def load(
    source: str | Path,
    which: str = "target_encoder",
    device: str | torch.device = "auto",
    *,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    with_predictor: bool = True,
    precision: str = "fp32",
    warn_fallback: bool = True,
    pos_embed: str | None = None,
) -> Encoder:
    """Load an encoder for inference from a checkpoint of any supported kind, or a preset.

    Args:
        source: a run directory (uses latest.pt); our .pt checkpoint; a .safetensors file written
            by `export` (config embedded); an official facebookresearch/jepa checkpoint
            (`.pth.tar` with `encoder`/`target_encoder`/`predictor` entries, `module.backbone.`
            prefixes; architecture inferred from tensor shapes); an official facebookresearch/vjepa2
            checkpoint (same layout, RoPE: see `pos_embed`); a Hugging Face `VJEPA2Model` /
            `VJEPA2ForVideoClassification` folder (config.json + model.safetensors) or its
            .safetensors (local only); a bare encoder state dict; or a preset name
            (`vjepa.config.PRESETS`) for a randomly initialised encoder.
        which: "target_encoder" (the EMA encoder, what the paper evaluates), "encoder", or
            "init": the encoder as training initialised it, rebuilt from the stored config's
            seed (the run's own random-init baseline; no weights are read, no predictor). A
            checkpoint without a target encoder falls back to its encoder with a warning.
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:N" or a torch.device.
        num_frames, img_size, num_heads: hints for official checkpoints where shapes cannot tell
            (an unofficial width needs num_heads; an unusual clip size may need the other two).
        with_predictor: also load the predictor when the checkpoint has one.
        precision: "fp32" or "bf16" (bfloat16 autocast for the forward pass).
        warn_fallback: warn when which="target_encoder" falls back to the encoder (callers that
            expect it, such as probes of pixel or supervised runs, pass False).
        pos_embed: "sincos" (V-JEPA 1) or "rope" (V-JEPA 2) for files without a config, when the
            detection (`vjepa.formats.detect_pos_embed`) cannot tell, e.g. a bare V-JEPA 2 encoder.

    Returns:
        An `Encoder` in eval mode with gradients off.

    Raises:
        CheckpointError: missing/unreadable file, or weights that do not match the architecture
            (the message lists every missing, unexpected and mis-shaped key).
    """
    cfg, networks, description, stored = _read_weights(source, num_frames, img_size, num_heads, pos_embed)
    if which == "init":
        if not stored:  # its seed is unknown: a seed-0 encoder would pose as the run's own init
            raise CheckpointError(f"{description} stores no config, so its run's initial weights are unknown; "
                                  "which='init' needs a vjepa checkpoint, run directory, export or preset")
        return Encoder(_initial_model(cfg), cfg, None, "init", description, precision).to(device)
    encoders = {k: v for k, v in networks.items() if k not in ("predictor", "probe")}
    hf = description.startswith("Hugging Face")  # one encoder by design: no fallback warning
    name = _choose_network(encoders, which, description, warn_fallback and not hf)
    if name is None:  # a preset: its seeded random init, the same on every call and in every process
        model = _initial_model(cfg)
    else:
        model = build_encoder(cfg)
        load_state_strict(model, networks[name], f"{description} [{name}]")
    predictor = None
    if with_predictor and networks.get("predictor"):
        expected = num_generators(cfg.mask) if stored else None  # a run's own: one token per generator
        predictor = _load_predictor(cfg, networks["predictor"], model.grid, f"{description} [predictor]", expected)
    encoder = Encoder(model, cfg, predictor, name or "random", description, precision)
    return encoder.to(device)


def _initial_model(cfg: Config) -> VisionTransformer:
    """The encoder `train(cfg)` starts from, drawn without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):  # initial_encoder seeds only the CPU generator
        return initial_encoder(cfg)


def load_config(source: str | Path) -> Config:
    """The `Config` of a run directory (config.yaml), checkpoint, export or preset name."""
    path = Path(source)
    if path.is_dir() and (path / "config.yaml").is_file():
        return load_yaml(path / "config.yaml", stored=True)
    return read_weights(source)[0]


def export(
    source: str | Path, output: str | Path, which: str = "target_encoder", with_predictor: bool = False
) -> Path:
    """Write one encoder (and optionally the predictor) to .safetensors with the config embedded.

    Works for every source `load` accepts, so it also converts official checkpoints. Encoder keys
    are the state-dict names (`blocks.0.attn.qkv.weight`); predictor keys get a `predictor.` prefix;
    the metadata holds the config as JSON (`config`), the network (`which`) and `format`.

    Returns:
        The written path.

    Raises:
        ValueError: for which="init" (an init is rebuilt from its run's config, never stored).
    """
    if which == "init":
        raise ValueError("export takes which='target_encoder' or 'encoder' (an init is rebuilt from its run's config)")
    encoder = load(source, which, device="cpu", with_predictor=with_predictor)
    tensors = dict(encoder.model.state_dict())
    if with_predictor:
        if encoder.predictor is None:
            raise CheckpointError(f"{source} has no predictor to export")
        tensors.update({f"predictor.{k}": v for k, v in encoder.predictor.state_dict().items()})
    stored = encoder.which if encoder.which in WHICH else which  # a preset's random init loads as asked for
    save_safetensors(output, tensors, to_dict(encoder.config), {"which": stored, "format": EXPORT_FORMAT})
    return Path(output)


def export_hf(source: str | Path, output: str | Path, which: str = "target_encoder") -> Path:
    """Write a RoPE encoder and its predictor as a Hugging Face `VJEPA2Model` folder.

    `transformers.VJEPA2Model.from_pretrained(output)` then loads it (local path, no network) and
    gives the same features for clips at the model's crop size (`transformers` decomposes RoPE
    positions on the crop grid; we use the input's grid, as the official encoder does).

    Returns:
        The folder written (config.json + model.safetensors).

    Raises:
        ValueError: for a sin-cos (V-JEPA 1) model, which `VJEPA2Model` cannot express.
        CheckpointError: when the source has no predictor (`VJEPA2Model` always holds one).
    """
    from safetensors.torch import save_file

    encoder = load(source, which, device="cpu", with_predictor=True)
    if encoder.predictor is None:
        raise CheckpointError(f"{source} has no predictor, and a Hugging Face VJEPA2Model always holds one")
    tensors, config = networks_to_hf(encoder.config, encoder.model.state_dict(), encoder.predictor.state_dict())
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder
