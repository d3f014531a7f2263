"""Typed configuration: nested dataclasses, named presets, YAML and dotted overrides.

Every default lives here and only here. A misspelled key (in YAML or on the command line) is an
error that names the key and the keys that would have been valid, never a silent default.

Example:
    >>> cfg = preset("demo")
    >>> cfg = apply_overrides(cfg, ["optim.steps=50", "data.batch_size=4"])
    >>> print(to_yaml(cfg))
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# width, depth, heads of the official ViT sizes (facebookresearch/jepa src/models/vision_transformer.py)
ENCODER_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1408, 40, 16),
    # V-JEPA 2 (facebookresearch/vjepa2): the released ViT-g is `vit_giant_xformers`, 22 heads of 64
    "giant_v2": (1408, 40, 22),
    "gigantic": (1664, 48, 16),
}
# MLP hidden width / embed_dim where it is not 4. Giant: 48/11 (hidden 6144). The official
# `vit_gigantic` passes `mpl_ratio=64/13` (a typo swallowed by **kwargs), so it builds ratio 4; we match.
ENCODER_MLP_RATIOS: dict[str, float] = {"giant": 48 / 11, "giant_v2": 48 / 11}


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


class VJEPAWarning(UserWarning):
    """The library's warnings (skipped videos, a probe on another encoder, an old file read, ...);
    the CLI prints them on one line."""


@dataclass
class ModelConfig:
    """Encoder and predictor architecture."""

    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 16
    img_size: int = 224
    in_chans: int = 3
    uniform_power: bool = True  # official 3D sin-cos table layout
    # sincos: fixed 3D table added to the tokens (V-JEPA 1) | rope: 3D rotary positions in every
    # attention layer, encoder and predictor (V-JEPA 2; docs/vjepa2.md says what we match)
    pos_embed: str = "sincos"
    predictor_embed_dim: int = 384
    predictor_depth: int = 12
    predictor_num_heads: int = 0  # 0: same as the encoder (V-JEPA 1; V-JEPA 2 uses 12)
    predictor_mlp_ratio: float = 4.0  # its own (official: always 4, even behind a giant encoder)
    # Which predictor mask token each mask generator's targets get. generator: token g for generator
    # g (V-JEPA 1). clip_length: one token per clip-length group, as V-JEPA 2's training picks it; a
    # run has one clip length, so every generator uses token 0 (docs/vjepa2.md)
    predictor_mask_token: str = "generator"
    # How many mask tokens the predictor holds. 0: one per mask generator (V-JEPA 1). Released V-JEPA 2
    # predictors hold 10 (the official training makes generators x clip-length groups); with
    # model.init_from_arch=true a run takes the file's count, so every token loads and is saved again
    predictor_num_mask_tokens: int = 0
    # Keep the 1/sqrt(2*layer) rescaling of residual projections. The official training script
    # re-initialises every Linear afterwards, undoing it; set False to reproduce that.
    rescale_residual: bool = True
    drop_path: float = 0.0
    # Keep the tubelet embedding at its random init (MoCo v3's fix for unstable ViT training; off in
    # the official code). Why it matters on short CPU runs: docs/results/2026-11-30-tubelet-embedding.md
    freeze_patch_embed: bool = False
    # Start from the weights in this file (anything `vjepa.load` reads) instead of random ones:
    # continued pretraining, or a cooldown stage at more frames/pixels (docs/finetune.md). The
    # optimiser and schedules start fresh; a resume of the run restores latest.pt, not this file.
    init_from: str = ""
    init_from_arch: bool = False  # take the architecture keys from init_from's file, not this config
    # sha256 of the init_from file, recorded by the run (config.yaml); set it to pin the file
    init_from_sha256: str = ""


@dataclass
class MaskGeneratorConfig:
    """One multi-block mask generator: `num_blocks` blocks of a sampled size, unioned."""

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)


def _default_generators() -> list[MaskGeneratorConfig]:
    return [
        MaskGeneratorConfig(num_blocks=8, spatial_scale=(0.15, 0.15)),  # short-range
        MaskGeneratorConfig(num_blocks=2, spatial_scale=(0.7, 0.7)),  # long-range
    ]


@dataclass
class MaskConfig:
    """Which tokens the context encoder sees and which the predictor must predict."""

    kind: str = "multiblock"  # multiblock | tube | causal
    generators: list[MaskGeneratorConfig] = field(default_factory=_default_generators)
    tube_ratio: float = 0.9  # kind=tube: fraction of spatial positions hidden through all time
    causal_context_frames: int = 6  # kind=causal: context comes from the first this-many frames only
    collate: str = "pad"  # pad (keep every token, attention masks) | truncate (official)

    @property
    def num_generators(self) -> int:
        """How many mask batches (and, by default, predictor mask tokens) a step samples: one for
        `tube`, else one per generator."""
        return 1 if self.kind == "tube" else len(self.generators)


@dataclass
class SyntheticConfig:
    """The built-in procedural video set (no download)."""

    seed: int = 0
    num_train: int = 2048
    num_val: int = 256
    num_test: int = 512
    size: int = 64  # frame height = width, pixels
    num_frames: int = 16  # frames rendered per clip
    max_sprites: int = 1  # each clip shows 1..max_sprites sprites, all sharing its shape and motion class
    sprite_size: tuple[float, float] = (0.25, 0.45)  # diameter range, fraction of `size` (16-29 px at 64)
    translate_speed: tuple[float, float] = (1.0, 2.0)  # pixels per frame at size 64 (scaled with `size`)
    rotate_speed: tuple[float, float] = (0.1, 0.2)  # radians per frame
    scale_speed: tuple[float, float] = (0.025, 0.045)  # log-diameter change per frame (grow / shrink)
    background_contrast: float = 0.1  # amplitude of the background texture (colours lie in [0, 1])


@dataclass
class DataConfig:
    """Where clips come from and how they are sampled and augmented."""

    source: str = "synthetic"  # synthetic | csv | folder | frames | tiff | mixture | cache | images
    path: str = ""  # csv file, folder, or cache folder; mixture: comma-separated list
    weights: list[float] = field(default_factory=list)  # mixture: one weight per path
    num_frames: int = 16
    frame_step: int = 4
    fps: float = 0.0  # > 0: sample at this frame rate instead of frame_step
    num_clips: int = 1
    allow_clip_overlap: bool = False
    min_frames: int = 0  # videos with fewer decodable frames are filtered (0: one clip's worth)
    max_frames: int = 0  # videos with more frames are filtered (0: no limit)
    short_video_policy: str = "skip"  # skip | loop | pad
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.75, 1.35)
    horizontal_flip: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    batch_size: int = 24
    num_workers: int = -1  # DataLoader workers; -1: auto (0 on CPU, on CUDA from the CPUs per GPU)
    decoder: str = "pyav"  # pyav | torchcodec
    strict: bool = False  # stop at the first bad file instead of skipping it
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ObjectiveConfig:
    """What the predictor learns to predict, and the loss on its predictions."""

    kind: str = "jepa"  # jepa (predict target-encoder features) | pixel (predict normalised pixels)
    loss_exp: float = 1.0  # 1: L1 (V-JEPA), 2: L2
    # Target features: layer (official: LayerNorm over D) | layer_center (then subtract each clip's
    # mean token, so the clip-level part of the target, such as its colours, is not predicted) |
    # layer_instance (then normalise each dimension over the clip's tokens, as data2vec does)
    target_norm: str = "layer"
    reg_coeff: float = 0.0  # variance regulariser on predictions (off in the paper)


@dataclass
class OptimConfig:
    """Optimiser and the step-indexed schedules (all pure functions of the step)."""

    steps: int = 1000
    warmup_steps: int = 100
    # The official schedules run for ipe_scale=1.25 x the training length, so the LR never reaches
    # final_lr and the EMA never reaches 1.0. Kept for fidelity; 1.0 makes them end where they say.
    schedule_scale: float = 1.25
    start_lr: float = 2e-4
    lr: float = 6.25e-4
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: tuple[float, float] = (0.998, 1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 10.0
    # The predictor's LR is lr x this (official: 1). Short runs: the predictor learns to place its
    # predictions far more slowly than the encoder finds clip-level codes
    # (docs/results/2026-11-29-predictor-shortcut.md).
    predictor_lr_scale: float = 1.0


@dataclass
class RunConfig:
    """Where a run writes, how often, and on what hardware."""

    out_dir: str = "runs/demo"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 where the device has native bf16, else fp32) | bf16 (autocast) | fp32
    threads: int = 0  # torch intra-op threads (0: leave PyTorch's default)
    log_every: int = 10
    monitor_every: int = 50  # collapse monitor (target std, effective rank)
    checkpoint_every: int = 200  # overwrite latest.pt
    keep_every: int = 0  # also keep step_N.pt every this many steps (0: never)
    compile: bool = False
    activation_checkpointing: bool = False
    tensorboard: bool = False
    progress: bool = True
    probe_after: bool = False  # when training ends, probe motion on the target encoder and its random init
    probe_after_clips: int = 1024  # training clips of that probe (0: the whole train split)
    distributed: str = "ddp"  # ddp | fsdp | hsdp (sharded per node, replicated across nodes); torchrun only
    async_checkpoint: bool = False  # rank 0 writes checkpoints on a thread (a CPU copy) while training goes on
    dist_timeout_s: float = 1800.0  # how long a collective waits (e.g. for rank 0's checkpoint write) before failing


# The networks a checkpoint can be read as: the EMA target encoder (what the paper evaluates), the
# online encoder, or "init": the encoder as training initialised it, rebuilt from the run's seed
# (the run's own random-init baseline; `vjepa.models.factory.initial_encoder`)
ENCODER_NETWORKS = ("target_encoder", "encoder", "init")


@dataclass
class ProbeConfig:
    """Frozen-encoder evaluation: which probe, how it trains on cached features, how clips are viewed.

    Views: every clip is cut into `num_segments` temporal windows of `frames_per_segment` frames,
    each seen through `num_crops` spatial crops (left/centre/right); training uses centre crops.
    """

    kind: str = "attentive"  # attentive (the paper's probe) | linear (average-pool + linear)
    task: str = "motion"  # synthetic: motion (the SSv2 role) | appearance (the K400 role); other data: label
    encoder: str = "target_encoder"  # checkpoint network to probe (runs without one fall back to encoder)
    epochs: int = 100  # on cached (unaugmented) features 20-30 epochs left the attentive probe at chance
    batch_size: int = 16  # small batches: 4x the updates of 64 at the same CPU cost per clip
    lr: float = 1e-3
    final_lr: float = 0.0
    warmup_epochs: int = 10  # linear warmup from 0 (capped at a tenth of the epochs), then cosine to final_lr
    weight_decay: float = 0.01
    depth: int = 1  # attentive probe blocks: 1 cross-attention block (+ depth-1 self-attention blocks)
    variant: str = "vjepa1"  # vjepa1: extra blocks on the query, after; vjepa2: on the tokens, before (V-JEPA 2: depth 4)
    num_heads: int = 0  # 0: the encoder's
    label_fraction: float = 1.0  # < 1: class-balanced low-shot subset of the training labels
    max_train_clips: int = 0  # 0: the whole train split (quick probes use fewer)
    eval_split: str = "test"
    num_segments: int = 1
    num_crops: int = 1  # 1 (centre) or 3 (left/centre/right) at test time
    frames_per_segment: int = 0  # 0: model.num_frames
    attend_across_segments: bool = False  # one probe reads all segments' tokens at once
    resize_ratio: float = 1.0  # short side resized to crop_size * ratio before cropping
    feature_batch_size: int = 32
    feature_dtype: str = "bf16"  # cached tokens: bf16 (the attentive probe then trains under bf16 autocast) | fp32
    cache_dir: str = ""  # if set, token features are saved/loaded there (.safetensors)
    device: str = "auto"
    seed: int = 0
    # The probe's own clip sampling and data (never the pretraining run's: a run at frame_step=4 says
    # nothing about how long the clips to classify are). See vjepa.eval.presets for the paper's protocols.
    frame_step: int = 4  # source frames between clip frames (the official evaluation's 4)
    fps: float = 0.0  # > 0: sample at this frame rate instead of frame_step
    source: str = ""  # data source of `data` (csv, folder, frames, tiff, cache, images); "" guesses from the path
    data: str = ""  # labelled data to probe on (a CSV, class folders, ...; {split} allowed); "" the run's data
    streaming: bool = False  # run the frozen encoder on every batch (memory bounded by the batch) instead of caching
    augment: bool = False  # streaming: train on augmented clips as the official evaluation does
    num_workers: int = 0  # DataLoader workers decoding clips
    final_weight_decay: float = -1.0  # >= 0: weight decay follows a cosine from weight_decay to this
    grad_clip: float = 0.0  # > 0: clip the probe's gradient norm (official: 1.0)
    folds: int = 0  # >= 2: K-fold cross-validation on the train split, video-wise
    group_by: str = "file"  # cross-validation groups: file (each video) | folder (clips of one folder together)
    preset: str = ""  # the named protocol these settings came from (k400, ssv2, in1k), for the record
    checkpoint_every: int = 0  # > 0: save the probe's training state every this many steps (exact resume)
    state_file: str = ""  # where; "" with checkpoint_every: beside the result JSON (<output>.state.pt)


@dataclass
class Config:
    """A whole pretraining run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------
# presets


def _encoder(cfg: Config, size: str) -> None:
    cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads = ENCODER_SIZES[size]
    cfg.model.mlp_ratio = ENCODER_MLP_RATIOS.get(size, 4.0)


def _debug() -> Config:
    """Runs in seconds on a CPU: tiny encoder, tiny clips, a few steps."""
    cfg = Config()
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads = 64, 2, 2
    m.patch_size, m.num_frames, m.img_size = 8, 8, 32
    m.predictor_embed_dim, m.predictor_depth = 32, 2
    cfg.data.num_frames, cfg.data.crop_size, cfg.data.batch_size = 8, 32, 4
    cfg.data.synthetic = SyntheticConfig(num_train=64, num_val=16, num_test=32, size=32, num_frames=8)
    cfg.optim.steps, cfg.optim.warmup_steps = 20, 5
    cfg.run.out_dir = "runs/debug"
    cfg.run.log_every, cfg.run.monitor_every, cfg.run.checkpoint_every = 5, 10, 10
    return cfg


def _demo64() -> Config:
    """The first CPU demo: a narrow ViT on 16x64x64 synthetic clips, a few minutes on 2 cores.

    Kept for the studies that used it; `demo` moved to 32 px clips because a CPU run affords too
    few 64 px clips (docs/results/2026-11-29-demo64-seeds.md).
    """
    cfg = Config()
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads = 192, 6, 3
    m.patch_size, m.num_frames, m.img_size = 8, 16, 64
    m.predictor_embed_dim, m.predictor_depth = 96, 4
    cfg.data.num_frames, cfg.data.crop_size, cfg.data.batch_size = 16, 64, 8
    # 300 steps (not 600) and a 4x lower LR than the paper's (which is for batch 3072, and
    # collapsed the features at batch 8): docs/results/2026-11-29-demo64-diagnosis.md
    cfg.optim.steps, cfg.optim.warmup_steps = 300, 30
    cfg.optim.start_lr, cfg.optim.lr = 3e-5, 1.5e-4
    # Motion as a large part of every clip: 1-3 sprites that sweep across the frame (4-6 px per
    # frame), turn and resize fast; why: docs/results/2026-11-29-demo64-diagnosis.md
    syn = cfg.data.synthetic
    syn.max_sprites, syn.translate_speed = 3, (4.0, 6.0)
    syn.rotate_speed, syn.scale_speed = (0.35, 0.55), (0.06, 0.09)
    cfg.run.out_dir = "runs/demo64"
    cfg.run.probe_after = True
    return cfg


def _demo32() -> Config:
    """`demo64`'s data and objective at 8x32x32 (64 tokens per clip): many more, cheaper clips.

    The paper's multi-block masks (blocks over all frames); `demo` is this with causal masks.
    12,000 steps of batch 32 (384,000 clips) on a CPU; the frozen tubelet embedding and the 10x
    predictor LR keep the features from collapsing within clips. Why each choice, with the
    figures: docs/results/2026-11-30-demo32.md and docs/results/2026-11-30-tubelet-embedding.md.
    """
    cfg = _demo64()
    m = cfg.model
    m.embed_dim, m.depth, m.num_heads = 128, 4, 4
    m.patch_size, m.num_frames, m.img_size = 8, 8, 32
    m.predictor_embed_dim, m.predictor_depth = 64, 2
    m.freeze_patch_embed = True
    cfg.data.num_frames, cfg.data.crop_size, cfg.data.batch_size = 8, 32, 32
    syn = cfg.data.synthetic
    syn.size, syn.num_frames = 32, 8
    syn.num_train = 32768  # 384,000 presentations: ~12 passes, not 190 over the default 2048
    cfg.optim.steps, cfg.optim.warmup_steps = 12000, 300
    cfg.optim.predictor_lr_scale = 10.0
    cfg.run.out_dir = "runs/demo32"
    cfg.run.keep_every = 3000
    cfg.run.probe_after_clips = 4096  # 1024 left every probe short of labels (docs/results/2026-11-30-demo32.md)
    return cfg


def _demo() -> Config:
    """The CPU demo (about half an hour on 2 cores): `demo32` with causal masks.

    The context is what the multi-block masks leave visible in the first 4 of the 8 frames; the
    predictor fills in every other token, the whole second half included (the paper's causal
    multi-block variant; its default, blocks over all frames and no causal cut, is `demo32`).
    How it compares with its own random init and with `demo32`: docs/results/2026-11-30-demo-causal.md.
    """
    cfg = _demo32()
    cfg.mask.kind, cfg.mask.causal_context_frames = "causal", 4
    cfg.run.out_dir = "runs/demo"
    return cfg


def _paper(size: str) -> Config:
    """The paper's recipe at 16x224x224 (batch per process; the paper used 3072 in total)."""
    cfg = Config()
    _encoder(cfg, size)
    cfg.data.source = "csv"
    cfg.data.batch_size = 24 if size == "large" else 10
    cfg.optim.steps, cfg.optim.warmup_steps = 90000, 12000  # 300 ep x 300 ipe; 40 warmup epochs
    cfg.run.out_dir = f"runs/vit{size[0]}16"
    cfg.run.checkpoint_every, cfg.run.keep_every = 1000, 10000
    return cfg


def _small() -> Config:
    """ViT-S/16 at 16x224x224 on the synthetic set upsampled: the benchmark size."""
    cfg = _paper("large")
    _encoder(cfg, "small")
    cfg.data.source = "synthetic"
    cfg.data.batch_size = 4
    cfg.run.out_dir = "runs/vits16"
    return cfg


def _vjepa2(size: str, img_size: int = 256) -> Config:
    """A V-JEPA 2 encoder and predictor (facebookresearch/vjepa2 hub models): 3D RoPE, 256 px, 16
    frames (the pretraining clip; the released files were cooled down at 64 frames), predictor 384
    wide, 12 deep, 12 heads, MLP ratio 4 whatever the encoder's."""
    cfg = _paper("large")
    _encoder(cfg, size)
    m = cfg.model
    m.pos_embed, m.uniform_power, m.img_size = "rope", False, img_size
    m.predictor_num_heads, m.predictor_mlp_ratio, m.predictor_mask_token = 12, 4.0, "clip_length"
    cfg.data.crop_size = img_size
    cfg.run.out_dir = f"runs/vit{size[0]}16_v2" + ("" if img_size == 256 else f"_{img_size}")
    return cfg


PRESETS: dict[str, typing.Callable[[], Config]] = {
    "debug": _debug,
    "demo": _demo,
    "demo32": _demo32,
    "demo64": _demo64,
    "vits16": _small,
    "vitl16": lambda: _paper("large"),
    "vith16": lambda: _paper("huge"),
    "vitl16_v2": lambda: _vjepa2("large"),
    "vith16_v2": lambda: _vjepa2("huge"),
    "vitg16_v2": lambda: _vjepa2("giant_v2"),
    "vitg16_384_v2": lambda: _vjepa2("giant_v2", 384),
}


def preset(name: str) -> Config:
    """Return a fresh copy of the named preset (see `PRESETS`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# dict / YAML conversion


def to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a config dataclass to plain dicts/lists (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(cfg: Any) -> str:
    """Render a config as YAML (the format `load_yaml` reads back)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _coerce_sequence(value: Any, origin: type, args: tuple, where: str) -> list | tuple:
    """A list or tuple (`origin`) of the item types `args` from a YAML list or a CLI "[a,b]" string."""
    if isinstance(value, str):
        value = [v for v in value.strip("[]()").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce_bool(value: Any, where: str) -> bool:
    """A bool from a YAML bool or a CLI word (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _coerce_scalar(value: Any, kind: type, where: str) -> int | float | str:
    """An int, float or str; an int refuses fractions ("1e3" and 2.0 are whole, 2.5 is not)."""
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if kind is int and isinstance(value, str):
            value = float(value) if any(c in value for c in ".eE") else int(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type `kind`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where)
    if origin in (list, tuple):
        return _coerce_sequence(value, origin, typing.get_args(kind), where)
    if kind is bool:
        return _coerce_bool(value, where)
    if kind in (int, float, str):
        return _coerce_scalar(value, kind, where)
    return value


# Keys that moved, old -> new. User input (a YAML file, an override) naming an old key is refused
# with the new name; a stored config (a checkpoint's, an export's, a run directory's config.yaml) is
# read with the keys renamed and a warning, so old runs still load and resume.
MOVED_KEYS = {
    "run.objective": "objective.kind",
    "optim.loss_exp": "objective.loss_exp",
    "optim.target_norm": "objective.target_norm",
    "optim.reg_coeff": "objective.reg_coeff",
}


def _refuse_moved(path: str) -> None:
    """ConfigError naming the new key when `path` (e.g. "optim.loss_exp") is a key that moved."""
    if path in MOVED_KEYS:
        raise ConfigError(f"{path} is now {MOVED_KEYS[path]} (the objective settings have their own "
                          f"section, objective:); write {MOVED_KEYS[path]} instead")


def migrate_stored(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of a stored config dict with moved keys (`MOVED_KEYS`) renamed, warning once if any.

    Args:
        tree: nested dict as `to_dict` wrote it, possibly before a key moved.
        where: the file it came from, named in the warning.
    """
    tree = copy.deepcopy(tree)
    moved = []
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = tree.get(old_section)
        if isinstance(section, dict) and old_key in section:
            value = section.pop(old_key)
            target = tree.setdefault(new_section, {})
            if isinstance(target, dict) and new_key not in target:  # a stored new key wins
                target[new_key] = value
            moved.append(f"{old} -> {new}")
    if moved:
        warnings.warn(f"{where} was written before the objective settings moved; read with {', '.join(moved)}",
                      VJEPAWarning, stacklevel=2)
    return tree


def config_from_stored(tree: dict[str, Any], where: str) -> Config:
    """The `Config` a checkpoint or export stored (`to_dict` output), old key names migrated."""
    return from_dict(Config, migrate_stored(tree, where))


def from_dict(kind: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `kind` from a (possibly partial) dict; unknown keys are errors."""
    hints = typing.get_type_hints(kind)
    names = [f.name for f in dataclasses.fields(kind)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        _refuse_moved(f"{prefix}{unknown[0]}")
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r}; valid keys here: {', '.join(names)}"
        )
    values = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return kind(**values)


def merge(cfg: Any, data: dict[str, Any], where: str = "") -> Any:
    """Return a copy of `cfg` with the (nested, partial) dict `data` applied on top."""
    cfg = copy.deepcopy(cfg)
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            _refuse_moved(path)
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {', '.join(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            setattr(cfg, key, merge(current, value, path))
        else:
            setattr(cfg, key, _coerce(value, hints[key], path))
    return cfg


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ConfigError naming the file when it is a folder,
    missing, unreadable, not UTF-8, not YAML or not a mapping."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a YAML file (e.g. {path}/config.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}); is it a YAML file?") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_yaml(path: str | Path, base: Config | None = None, stored: bool = False) -> Config:
    """Read a YAML config file on top of `base` (default: the default Config).

    A top-level `preset: NAME` key starts from that preset instead. With `stored=True` the file is
    a run directory's config.yaml, written by an earlier version maybe: moved keys are renamed
    (`migrate_stored`) instead of refused.
    """
    path = Path(path)
    data = _read_yaml_mapping(path)
    if stored:
        data = migrate_stored(data, str(path))
    if "preset" in data:
        base = preset(str(data.pop("preset")))
    try:
        return merge(base or Config(), data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` overrides (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        nested: dict[str, Any] = {}
        node = nested
        keys = dotted.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        cfg = merge(cfg, nested)
    return cfg


# ---------------------------------------------------------------------------------------------
# validation

# (lowest, highest, whether lowest itself is allowed) per numeric field; None: unbounded that side.
# Every number a run reads is listed, so a value out of range fails here with a message naming the
# key, not as a ZeroDivisionError (or a silent nonsense run) deep inside training.
AT_LEAST_1 = (1, None, True)
AT_LEAST_0 = (0, None, True)
POSITIVE = (0, None, False)
FRACTION = (0, 1, False)  # (0, 1]
UNIT = (0, 1, True)  # [0, 1]
RANGES: dict[str, dict[str, tuple[float | None, float | None, bool]]] = {
    "model": {
        "embed_dim": AT_LEAST_1, "depth": AT_LEAST_1, "num_heads": AT_LEAST_1, "mlp_ratio": POSITIVE,
        "patch_size": AT_LEAST_1, "tubelet_size": AT_LEAST_1, "num_frames": AT_LEAST_1, "img_size": AT_LEAST_1,
        "in_chans": AT_LEAST_1, "predictor_embed_dim": AT_LEAST_1, "predictor_depth": AT_LEAST_1,
        "predictor_num_heads": AT_LEAST_0, "predictor_num_mask_tokens": AT_LEAST_0, "drop_path": (0, 1, True),
    },
    "mask": {"tube_ratio": (0, 1, True), "causal_context_frames": AT_LEAST_1},
    "mask.generators": {"num_blocks": AT_LEAST_1, "spatial_scale": FRACTION, "temporal_scale": FRACTION,
                        "aspect_ratio": POSITIVE},
    "data": {
        "num_frames": AT_LEAST_1, "frame_step": AT_LEAST_1, "fps": AT_LEAST_0, "num_clips": AT_LEAST_1,
        "min_frames": AT_LEAST_0, "max_frames": AT_LEAST_0, "crop_size": AT_LEAST_1, "crop_scale": FRACTION,
        "crop_aspect": POSITIVE, "std": POSITIVE, "batch_size": AT_LEAST_1, "num_workers": (-1, None, True),
        "weights": AT_LEAST_0,
    },
    "data.synthetic": {
        "num_train": AT_LEAST_1, "num_val": AT_LEAST_0, "num_test": AT_LEAST_0, "size": AT_LEAST_1,
        "num_frames": AT_LEAST_1, "max_sprites": AT_LEAST_1, "sprite_size": FRACTION,
        "translate_speed": AT_LEAST_0, "rotate_speed": AT_LEAST_0, "scale_speed": AT_LEAST_0,
        "background_contrast": AT_LEAST_0,
    },
    "optim": {
        "steps": AT_LEAST_1, "warmup_steps": AT_LEAST_0, "schedule_scale": POSITIVE, "start_lr": AT_LEAST_0,
        "lr": AT_LEAST_0, "final_lr": AT_LEAST_0, "weight_decay": AT_LEAST_0, "final_weight_decay": AT_LEAST_0,
        "ema": UNIT, "betas": (0, 1, True), "grad_clip": AT_LEAST_0, "predictor_lr_scale": POSITIVE,
    },
    "objective": {"loss_exp": POSITIVE, "reg_coeff": AT_LEAST_0},
    "run": {
        "threads": AT_LEAST_0, "log_every": AT_LEAST_1, "monitor_every": AT_LEAST_1,
        "checkpoint_every": AT_LEAST_1, "keep_every": AT_LEAST_0, "probe_after_clips": AT_LEAST_0,
        "dist_timeout_s": POSITIVE,
    },
}
# pairs that are a (low, high) range: low must not exceed high
ORDERED_PAIRS = ("crop_scale", "crop_aspect", "spatial_scale", "temporal_scale", "aspect_ratio", "sprite_size",
                 "translate_speed", "rotate_speed", "scale_speed", "ema")
RUN_DEVICES = "auto, cpu, cuda or cuda:N"


def _describe_range(low: float | None, high: float | None, closed: bool) -> str:
    if high is None:
        return f"{'>=' if closed else '>'} {low}"
    return f"in {'[' if closed else '('}{low}, {high}]"


def _check_range(key: str, value: Any, bounds: tuple[float | None, float | None, bool]) -> None:
    low, high, closed = bounds
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in values:
        bad = math.isnan(item)
        bad = bad or (low is not None and (item < low or (item == low and not closed)))
        bad = bad or (high is not None and item > high)
        if bad:
            each = " (each value)" if isinstance(value, (list, tuple)) else ""
            raise ConfigError(f"{key}={_show(value)}: must be {_describe_range(low, high, closed)}{each}")
    name = key.rsplit(".", 1)[-1]
    if name in ORDERED_PAIRS and len(values) == 2 and values[0] > values[1]:
        raise ConfigError(f"{key}={_show(value)}: the first value (start/low) must not exceed the second")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def check_output_path(path: str | Path, flag: str) -> None:
    """Refuse an output path that cannot be written (a folder, a missing or read-only parent folder)
    before any work, without creating the file.

    Raises:
        ConfigError: "FLAG PATH: cannot write (why)".
    """
    target = Path(path)
    parent = target.parent  # Path("x.json").parent is Path(".")
    reason = ("it is a folder" if target.is_dir() else "its folder does not exist" if not parent.is_dir()
              else "its folder is not writable" if not os.access(parent, os.W_OK) else "")
    if reason:
        raise ConfigError(f"{flag} {path}: cannot write ({reason})")


def check_device(name: str, key: str = "run.device", allowed: str = RUN_DEVICES) -> str:
    """Check that a device string is well formed and present on this machine; return it.

    Args:
        name: "auto", "cpu", "cuda" or "cuda:N" (and "mps" where `allowed` says so).
        key: the config key or flag named in the error.
        allowed: the choices listed in the error.

    Raises:
        ConfigError: a malformed name ("potato"), or CUDA (or device N) missing on this machine,
            which would otherwise silently run on the CPU.
    """
    import torch  # here: reading a config needs no torch

    if name == "auto":
        return name
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{key}={name!r} is not a device; choose {allowed}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"{key}={name!r}, but this machine has no usable CUDA device (torch "
                              f"{torch.__version__}); use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={name!r}, but this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and "mps" in allowed:
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key}={name!r}, but MPS is not available on this machine; use cpu or auto")
    elif device.type != "cpu":
        raise ConfigError(f"{key}={name!r} is not supported; choose {allowed}")
    return name


def _check_ranges(cfg: Config) -> None:
    sections = {"model": cfg.model, "mask": cfg.mask, "data": cfg.data, "data.synthetic": cfg.data.synthetic,
                "objective": cfg.objective, "optim": cfg.optim, "run": cfg.run}
    for section, fields in RANGES.items():
        if section == "mask.generators":
            for number, generator in enumerate(cfg.mask.generators):
                for name, bounds in fields.items():
                    _check_range(f"mask.generators[{number}].{name}", getattr(generator, name), bounds)
            continue
        for name, bounds in fields.items():
            _check_range(f"{section}.{name}", getattr(sections[section], name), bounds)


def _check_data_settings(cfg: Config) -> None:
    """Mask generators present, one clip per video, a data.path only with a source that reads it,
    one mixture weight per path, frame limits in order."""
    d = cfg.data
    if d.num_clips > 1:  # the training loader and the step take one clip per video
        raise ConfigError(f"data.num_clips={d.num_clips}: training takes one clip per video per step; several "
                          "clips per video are an evaluation protocol (vjepa probe --segments)")
    if d.source == "synthetic" and d.path.strip():
        raise ConfigError(f"data.path={d.path!r} is set but data.source=synthetic (the built-in set) ignores it: "
                          "add data.source=csv|folder|frames|tiff|images|cache|mixture, or clear it with data.path=")
    if not cfg.mask.generators and cfg.mask.kind != "tube":
        raise ConfigError(f"mask.generators is empty; mask.kind={cfg.mask.kind} needs at least one generator")
    if d.source == "mixture" and d.weights and len(d.weights) != len([p for p in d.path.split(",") if p.strip()]):
        raise ConfigError(f"data.weights has {len(d.weights)} values for {d.path!r}: give one per path")
    if d.max_frames and d.max_frames < d.min_frames:
        raise ConfigError(f"data.max_frames={d.max_frames} is below data.min_frames={d.min_frames}")


def _check_shapes(m: ModelConfig, d: DataConfig) -> None:
    """Widths divisible by the head counts (RoPE heads wide enough), the clip a whole number of tokens."""
    if m.embed_dim % m.num_heads:
        raise ConfigError(f"model.embed_dim={m.embed_dim} is not divisible by model.num_heads={m.num_heads}")
    heads = m.predictor_num_heads or m.num_heads
    if m.predictor_embed_dim % heads:
        raise ConfigError(
            f"model.predictor_embed_dim={m.predictor_embed_dim} is not divisible by {heads} predictor heads"
        )
    if m.pos_embed == "rope" and min(m.embed_dim // m.num_heads, m.predictor_embed_dim // heads) < 6:
        raise ConfigError("model.pos_embed=rope needs heads at least 6 wide (2 channels per axis) in encoder and predictor")
    if d.num_frames % m.tubelet_size:
        raise ConfigError(f"data.num_frames={d.num_frames} is not a multiple of model.tubelet_size")
    if d.crop_size % m.patch_size:
        raise ConfigError(f"data.crop_size={d.crop_size} is not a multiple of model.patch_size={m.patch_size}")


def _check_choices(cfg: Config) -> None:
    """Every setting with a fixed set of values holds one of them."""
    m, d = cfg.model, cfg.data
    choices = {
        "model.pos_embed": (m.pos_embed, ("sincos", "rope")),
        "model.predictor_mask_token": (m.predictor_mask_token, ("generator", "clip_length")),
        "mask.kind": (cfg.mask.kind, ("multiblock", "tube", "causal")),
        "mask.collate": (cfg.mask.collate, ("pad", "truncate")),
        "run.dtype": (cfg.run.dtype, ("auto", "bf16", "fp32")),
        "objective.kind": (cfg.objective.kind, ("jepa", "pixel")),
        "objective.target_norm": (cfg.objective.target_norm, ("layer", "layer_center", "layer_instance")),
        "run.distributed": (cfg.run.distributed, ("ddp", "fsdp", "hsdp")),
        "data.short_video_policy": (d.short_video_policy, ("skip", "loop", "pad")),
        "data.source": (d.source, ("synthetic", "csv", "folder", "frames", "tiff", "mixture", "cache")),
        "data.decoder": (d.decoder, ("pyav", "torchcodec")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(allowed)}")


def _check_mask_tokens(cfg: Config) -> None:
    """`model.predictor_mask_token=generator` needs a mask token for every generator."""
    count, generators = cfg.model.predictor_num_mask_tokens, cfg.mask.num_generators
    if count and cfg.model.predictor_mask_token == "generator" and count < generators:
        source = (f" (taken from {cfg.model.init_from} by model.init_from_arch=true: start from a file with enough "
                  "tokens, or turn init_from_arch off)") if cfg.model.init_from_arch else " (0: one per generator)"
        raise ConfigError(f"model.predictor_num_mask_tokens={count} is fewer than the {generators} mask generators "
                          f"that model.predictor_mask_token=generator gives a token each{source}")


def validate(cfg: Config) -> Config:
    """Check every setting's range or choice and the cross-field constraints.

    Raises:
        ConfigError: one line naming the offending key and what it must be.
    """
    _check_ranges(cfg)
    _check_data_settings(cfg)
    _check_shapes(cfg.model, cfg.data)
    if not cfg.run.out_dir.strip():
        raise ConfigError("run.out_dir is empty; name the run directory")
    _check_choices(cfg)
    if cfg.objective.target_norm != "layer" and cfg.objective.kind != "jepa":
        raise ConfigError(f"objective.target_norm={cfg.objective.target_norm!r} needs objective.kind=jepa "
                          "(pixel targets are normalised per tubelet)")
    _check_mask_tokens(cfg)
    if cfg.model.init_from_arch and not cfg.model.init_from.strip():
        raise ConfigError("model.init_from_arch=true needs model.init_from=PATH (the file to take the architecture from)")
    check_device(cfg.run.device, "run.device")
    return cfg
