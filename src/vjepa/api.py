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
    load_state_strict,
    save_safetensors,
)
from vjepa.config import ENCODER_NETWORKS, Config, VJEPAWarning, load_yaml, to_dict
from vjepa.encoder import Encoder
from vjepa.formats import (
    _read_weights,
    checkpoint_path,
    mask_token_count,
    networks_to_hf,
    read_weights,
)
from vjepa.masks.sample import num_mask_tokens
from vjepa.models.factory import build_encoder, initial_encoder
from vjepa.models.predictor import Predictor, build_predictor
from vjepa.models.vit import VisionTransformer
from vjepa.precision import freeze

EXPORT_FORMAT = "vjepa-weights-1"  # metadata "format" of files written by `export`
WHICH = ENCODER_NETWORKS  # which network `load` returns (see its docstring)


# ---------------------------------------------------------------------------------------------
# loading


def _choose_network(networks: dict[str, Any], which: str, description: str, warn: bool = True) -> str | None:
    if which not in WHICH:
        raise ValueError(f"which={which!r}; choose one of {', '.join(WHICH)}")
    if not networks:  # a preset: nothing to load
        return None
    if which in networks:
        return which
    if which == "target_encoder" and "encoder" in networks:
        if warn:
            warnings.warn(f"{description} has no target_encoder; using its encoder", VJEPAWarning, stacklevel=3)
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
        return _run_init_encoder(cfg, stored, description, precision).to(device)
    encoders = {k: v for k, v in networks.items() if k not in ("predictor", "probe")}
    hf = description.startswith("Hugging Face")  # one encoder by design: no fallback warning
    name = _choose_network(encoders, which, description, warn_fallback and not hf)
    model = _network_model(cfg, networks, name, description)
    predictor = None
    if with_predictor and networks.get("predictor"):
        expected = num_mask_tokens(cfg) if stored else None  # a run's own: as many tokens as it trained
        predictor = _load_predictor(cfg, networks["predictor"], model.grid, f"{description} [predictor]", expected)
    encoder = Encoder(model, cfg, predictor, name or "random", description, precision)
    return encoder.to(device)


def _run_init_encoder(cfg: Config, stored: bool, description: str, precision: str) -> Encoder:
    """`load(which="init")`: the encoder as the run's training initialised it (no weights read, no
    predictor); refused for files without a stored config, whose seed is unknown."""
    if not stored:  # a seed-0 encoder would pose as the run's own init
        raise CheckpointError(f"{description} stores no config, so its run's initial weights are unknown; "
                              "which='init' needs a vjepa checkpoint, run directory, export or preset")
    return Encoder(_initial_model(cfg), cfg, None, "init", description, precision)


def _network_model(cfg: Config, networks: dict[str, Any], name: str | None,
                   description: str) -> VisionTransformer:
    """The encoder network `name` of a file with its weights loaded strictly; for a preset (`name`
    None) its seeded random init, the same on every call and in every process."""
    if name is None:
        return _initial_model(cfg)
    model = build_encoder(cfg)
    load_state_strict(model, networks[name], f"{description} [{name}]")
    return model


def _initial_model(cfg: Config) -> VisionTransformer:
    """The encoder `train(cfg)` starts from, drawn without disturbing the caller's random state: a
    seeded random init, or for a `model.init_from` run the file's target encoder it started from."""
    with torch.random.fork_rng(devices=[]):  # initial_encoder seeds only the CPU generator
        encoder = initial_encoder(cfg)
    if cfg.model.init_from:
        from vjepa.init_from import initial_weights_into

        initial_weights_into(encoder, cfg)
    return encoder


def load_config(source: str | Path) -> Config:
    """The `Config` of a run directory (config.yaml), checkpoint, export or preset name."""
    path = Path(source)
    if path.is_dir() and (path / "config.yaml").is_file():
        return load_yaml(path / "config.yaml", stored=True)
    return read_weights(source)[0]


def _predictor_tensors(encoder: Encoder, source: str | Path) -> dict[str, torch.Tensor]:
    """The loaded predictor's weights under `predictor.` keys, as an export stores them."""
    if encoder.predictor is None:
        raise CheckpointError(f"{source} has no predictor to export")
    return {f"predictor.{k}": v for k, v in encoder.predictor.state_dict().items()}


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
    tensors = {**encoder.model.state_dict(), **(_predictor_tensors(encoder, source) if with_predictor else {})}
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
        ValueError: for a sin-cos (V-JEPA 1) model, which `VJEPA2Model` cannot express, or an
            `output` that is a file (the export is a folder).
        CheckpointError: when the source has no predictor (`VJEPA2Model` always holds one).
    """
    from safetensors.torch import save_file

    if Path(output).is_file():  # checked before the weights are read
        raise ValueError(f"{output} is a file; --format hf writes a folder (config.json + model.safetensors): "
                         "name a folder")
    encoder = load(source, which, device="cpu", with_predictor=True)
    if encoder.predictor is None:
        raise CheckpointError(f"{source} has no predictor, and a Hugging Face VJEPA2Model always holds one")
    tensors, config = networks_to_hf(encoder.config, encoder.model.state_dict(), encoder.predictor.state_dict())
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder


def load_head(source: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The classification head of a `vjepa finetune` run (directory or checkpoint), strictly loaded, in eval mode.

    Returns:
        (the probe module of `vjepa.models.probe.build_probe`, its description: kind, depth,
        embed_dim, num_heads, num_classes, class_names, task), what a probe file needs; the
        encoder is `vjepa.load(source, which="encoder")`.

    Raises:
        CheckpointError: a missing file, or a checkpoint that is not a fine-tune's.
    """
    path = checkpoint_path(source)
    return head_from_checkpoint(load_checkpoint(path), path)


def head_from_checkpoint(state: dict[str, Any], path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`load_head` of a fine-tune checkpoint already read (`state`, from the file `path`, named in errors).

    Raises:
        CheckpointError: when `state` is not a fine-tune's (no `head` and `classifier` entries).
    """
    from vjepa.models.probe import build_probe

    info = state.get("head")
    if not isinstance(info, dict) or "classifier" not in state:
        raise CheckpointError(f"{path} holds no fine-tuned head (expected `head` and `classifier` entries)")
    head = build_probe(info["kind"], info["embed_dim"], info["num_heads"], info["num_classes"], info["depth"])
    load_state_strict(head, state["classifier"], f"{path} [classifier]")
    return freeze(head), info
