"""Use an encoder as a library: load weights from anywhere, embed videos, export.

    >>> import vjepa
    >>> encoder = vjepa.load("runs/demo")          # run dir, .pt, .safetensors, official .pth.tar, preset
    >>> tokens = encoder.embed("clip.mp4")         # [W, N, D]: one row per window of the video
    >>> pooled = encoder.embed("clip.mp4", pooled=True)  # [W, D]

`load` always loads strictly (a missing, unexpected or mis-shaped key is an error listing them) and
never runs code from a file (`torch.load(weights_only=True)`, or safetensors).

Shape legend: B batch, C channels, T frames, H/W pixels, S the model's square input side,
N tokens per clip, D feature width, W windows of a video, R rows of a feature file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vjepa.checkpoint import (
    CheckpointError,
    atomic_write,
    infer_model_config,
    load_checkpoint,
    load_safetensors,
    load_state_strict,
    read_safetensors_metadata,
    save_safetensors,
    split_networks,
)
from vjepa.config import ENCODER_NETWORKS, PRESETS, Config, from_dict, load_yaml, preset, to_dict
from vjepa.distributed import resolve_device
from vjepa.formats import (
    drop_unused_tables,
    hf_model_config,
    hf_to_networks,
    is_hf,
    mask_token_count,
    networks_to_hf,
    read_hf,
)
from vjepa.masks.sample import num_generators
from vjepa.models.predictor import Predictor, build_predictor
from vjepa.models.vit import VisionTransformer, build_encoder
from vjepa.precision import autocast, freeze

EXPORT_FORMAT = "vjepa-weights-1"  # metadata "format" of files written by `export`
WHICH = ENCODER_NETWORKS  # which network `load` returns (see its docstring)


def window_indices(num_video_frames: int, num_frames: int, frame_step: int, stride: int | None = None) -> np.ndarray:
    """Frame indices of the sliding windows that cover a video.

    A window is `num_frames` frames `frame_step` apart. Windows start every `stride` source frames
    (default `num_frames * frame_step`: back to back, no overlap); when the video's length is not a
    whole number of strides, one more window ends exactly at the last frame, so the whole video is
    seen. A video shorter than one window gives one window with the largest step that fits (down
    to 1), padded by repeating the last frame.

    Args:
        num_video_frames: frames in the video (>= 1).
        num_frames: frames per window.
        frame_step: source frames between consecutive window frames.
        stride: source frames between window starts.

    Returns:
        int64 [W, num_frames]; column 0 holds the window starts.
    """
    if num_video_frames < 1 or num_frames < 1 or frame_step < 1 or (stride is not None and stride < 1):
        raise ValueError(f"need >= 1 frames, num_frames, frame_step and stride; got "
                         f"{num_video_frames}, {num_frames}, {frame_step}, {stride}")
    span = (num_frames - 1) * frame_step + 1  # source frames one window covers
    offsets = np.arange(num_frames, dtype=np.int64)
    if num_video_frames < span:
        step = max(1, (num_video_frames - 1) // max(num_frames - 1, 1))
        return np.minimum(offsets * step, num_video_frames - 1)[None]
    starts = list(range(0, num_video_frames - span + 1, stride or num_frames * frame_step))
    if starts[-1] != num_video_frames - span:
        starts.append(num_video_frames - span)
    return np.asarray(starts, dtype=np.int64)[:, None] + offsets[None] * frame_step


class Encoder:
    """A frozen V-JEPA encoder ready for inference (eval mode, no gradients), with its config.

    Attributes:
        model: the `VisionTransformer`.
        config: the run's `Config` (for official checkpoints: inferred from the weights). Clip
            size (`data.num_frames`, `data.crop_size`), sampling (`data.frame_step`) and
            normalisation (`data.mean`, `data.std`) come from here.
        predictor: the `Predictor` when the checkpoint has one (frozen too), else None.
        which: the network loaded ("target_encoder", "encoder", "init" for the run's initial
            weights, or "random" for a preset).
        source: where the weights came from.
        precision: "fp32", or "bf16" for bfloat16 autocast (outputs are float32 either way).
    """

    def __init__(
        self,
        model: VisionTransformer,
        config: Config,
        predictor: Predictor | None = None,
        which: str = "target_encoder",
        source: str = "",
        precision: str = "fp32",
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={precision!r}; choose fp32 or bf16")
        self.model, self.config, self.predictor = freeze(model), config, predictor and freeze(predictor)
        self.which, self.source, self.precision = which, source, precision

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Encoder({self.which} of {self.source or '?'}: ViT D={m.embed_dim} depth={m.depth} "
                f"heads={m.num_heads}, clip {self.num_frames}x{self.img_size}x{self.img_size}, "
                f"patch {m.patch_size}, tubelet {m.tubelet_size}, device {self.device})")

    @property
    def num_frames(self) -> int:
        """Frames per clip the model was built for."""
        return self.config.data.num_frames

    @property
    def img_size(self) -> int:
        """Side of the square frames the model was built for, pixels."""
        return self.config.data.crop_size

    @property
    def frame_step(self) -> int:
        """Default source frames between clip frames (the run's `data.frame_step`)."""
        return self.config.data.frame_step

    @property
    def embed_dim(self) -> int:
        """D, the feature width."""
        return self.model.embed_dim

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return self.model.patch_embed.proj.weight.device

    def grid(self, num_frames: int | None = None) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip of `num_frames` frames (default: the model's)."""
        return self.model.patch_embed.grid(num_frames or self.num_frames, self.img_size, self.img_size)

    def to(self, device: str | torch.device) -> Encoder:
        """Move the model (and predictor) to `device`; returns self."""
        device = resolve_device(device)
        self.model.to(device)
        if self.predictor is not None:
            self.predictor.to(device)
        return self

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """Encode normalised clips: float [B, C, T, H, W] -> float32 [B, N, D] on the model's device."""
        clips = clips.to(self.device, torch.float32)
        with torch.no_grad(), autocast(self.device, self.precision):
            return self.model(clips).float()

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw frames -> one model input: uint8 [T, H, W, C] (C 1 or 3) -> float [3, T, S, S].

        The short side is resized to S (the model's `img_size`), the centre crop kept, and the
        pixels normalised with the config's mean and std (ImageNet's by default).
        """
        from vjepa.data.transforms import EvalTransform

        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if frames.dtype != torch.uint8:
            raise ValueError(f"raw frames must be uint8 [T, H, W, C], got {frames.dtype}")
        data = self.config.data
        transform = EvalTransform(self.img_size, resize_ratio=1.0, num_crops=1, mean=data.mean, std=data.std)
        return transform(frames)[0]  # [3, T, S, S]

    def iter_clips(
        self,
        video: str | Path | np.ndarray | torch.Tensor,
        window: int | None = None,
        frame_step: int | None = None,
        stride: int | None = None,
        chunk: int = 8,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start frame, preprocessed clip float [3, window, S, S]) for each window of a video.

        Args:
            video: a video file / frame folder / TIFF stack path, or uint8 frames [T, H, W, C].
            window, frame_step, stride: see `embed`.
            chunk: windows decoded per read (a path is opened once per chunk).
        """
        window, frame_step = window or self.num_frames, frame_step or self.frame_step
        if isinstance(video, (str, Path)):
            from vjepa.data.decode import probe_video, read_frames

            windows = window_indices(probe_video(video).num_frames, window, frame_step, stride)
            for first in range(0, len(windows), chunk):
                part = windows[first : first + chunk]  # [w, window]
                wanted, position = np.unique(part, return_inverse=True)
                frames = read_frames(video, wanted)[position.reshape(part.shape)]  # [w, window, H, W, 3]
                for indices, clip in zip(part, frames):
                    yield int(indices[0]), self.preprocess(clip)
            return
        frames = _as_uint8_video(video)
        for indices in window_indices(len(frames), window, frame_step, stride):
            yield int(indices[0]), self.preprocess(frames[indices])

    def embed(
        self,
        video: str | Path | np.ndarray | torch.Tensor,
        pooled: bool = False,
        batch_size: int = 8,
        window: int | None = None,
        frame_step: int | None = None,
        stride: int | None = None,
    ) -> torch.Tensor:
        """Features of a video or of ready clips.

        Args:
            video: one of
                - a path (video file, frame folder, TIFF stack), decoded here;
                - uint8 frames [T, H, W, C] (numpy or torch; C = 1 or 3);
                - normalised float clips [B, C, T, H, W] (or one clip [C, T, H, W]), used as given
                  (other sizes than the model's work: positions are interpolated).
                Paths and uint8 frames are resized (short side, centre crop) and normalised, then
                cut into sliding windows (see `window_indices`).
            pooled: average over tokens: [.., D] instead of [.., N, D].
            batch_size: clips per forward pass.
            window: frames per window (default: the model's num_frames; a multiple of the tubelet).
            frame_step: source frames between window frames (default: the run's data.frame_step).
            stride: source frames between window starts (default: window * frame_step, no overlap).

        Returns:
            float32 on the CPU: [W, N, D] (or [W, D]) for a video, one row per window in time
            order; [B, N, D] (or [B, D]) for float clips.
        """
        if isinstance(video, torch.Tensor) and video.is_floating_point():
            clips = video.unsqueeze(0) if video.ndim == 4 else video
            if clips.ndim != 5:
                raise ValueError(f"float clips must be [B, C, T, H, W] or [C, T, H, W], got {tuple(video.shape)}")
            batches: Iterator[torch.Tensor] = iter(clips.split(batch_size))
        else:
            windows = (clip for _, clip in self.iter_clips(video, window, frame_step, stride, chunk=batch_size))
            batches = (torch.stack(group) for group in _groups(windows, batch_size))
        outputs = [self._features(batch, pooled) for batch in batches]
        return torch.cat(outputs)

    def _features(self, clips: torch.Tensor, pooled: bool) -> torch.Tensor:
        features = self(clips)  # [B, N, D]
        return (features.mean(dim=1) if pooled else features).cpu()


def _groups(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _as_uint8_video(video: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    array = video if isinstance(video, torch.Tensor) else np.asarray(video)
    if array.dtype not in (np.uint8, torch.uint8) or array.ndim not in (3, 4):
        raise ValueError(
            f"expected a path, uint8 frames [T, H, W, C] or normalised float clips [B, C, T, H, W]; "
            f"got {array.dtype} {tuple(array.shape)}"
        )
    return array


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
    cfg = from_dict(Config, config)
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
    model = build_encoder(cfg.model, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames)
    if name is not None:
        load_state_strict(model, networks[name], f"{description} [{name}]")
    predictor = None
    if with_predictor and networks.get("predictor"):
        expected = num_generators(cfg.mask) if stored else None  # a run's own: one token per generator
        predictor = _load_predictor(cfg, networks["predictor"], model.grid, f"{description} [predictor]", expected)
    encoder = Encoder(model, cfg, predictor, name or "random", description, precision)
    return encoder.to(device)


def _initial_model(cfg: Config) -> VisionTransformer:
    """The encoder `train(cfg)` starts from, drawn without disturbing the caller's random state."""
    from vjepa.train import initial_encoder  # here: training code is not needed to load weights

    with torch.random.fork_rng(devices=[]):  # initial_encoder seeds only the CPU generator
        return initial_encoder(cfg)


def load_config(source: str | Path) -> Config:
    """The `Config` of a run directory (config.yaml), checkpoint, export or preset name."""
    path = Path(source)
    if path.is_dir() and (path / "config.yaml").is_file():
        return load_yaml(path / "config.yaml")
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
    save_safetensors(output, tensors, to_dict(encoder.config), {"which": encoder.which, "format": EXPORT_FORMAT})
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


def load_head(source: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The classification head of a `vjepa finetune` run (directory or checkpoint), strictly loaded, in eval mode.

    Returns:
        (the probe module of `vjepa.models.probe.build_probe`, its description: kind, depth,
        embed_dim, num_heads, num_classes, class_names, task), what a probe file needs; the
        encoder is `vjepa.load(source, which="encoder")`.

    Raises:
        CheckpointError: a missing file, or a checkpoint that is not a fine-tune's.
    """
    from vjepa.models.probe import build_probe

    path = checkpoint_path(source)
    state = load_checkpoint(path)
    info = state.get("head")
    if not isinstance(info, dict) or "classifier" not in state:
        raise CheckpointError(f"{path} holds no fine-tuned head (expected `head` and `classifier` entries)")
    head = build_probe(info["kind"], info["embed_dim"], info["num_heads"], info["num_classes"], info["depth"])
    load_state_strict(head, state["classifier"], f"{path} [classifier]")
    return head.eval(), info
