"""Trained probes as files, and classifying videos with them: clip -> frozen encoder -> probe -> classes.

A probe trained by `vjepa probe` is saved as one `.safetensors` file: the probe's weights in the
official state-dict layout, and JSON metadata (key "config") holding
- `probe`: kind, variant, depth, embed_dim, num_heads, num_classes;
- `protocol`: how the probe viewed a clip (`ViewProtocol`: frames per segment, segments, crops,
  frame step, crop size, resize ratio, normalisation), so classification views clips the same way;
- `encoder`: which encoder it reads (checkpoint path, network, a fingerprint of its weights, width,
  clip size);
- `class_names`, `task`, the training `settings` and the probe's score.

`load_probe` also reads official probe checkpoints (facebookresearch/jepa saves `{"classifier":
state}`, facebookresearch/vjepa2 `{"classifiers": [state, ...]}`, keys prefixed `module.` by DDP).

Shape legend: B videos, V = S*C views per video (segment-major: view s*C + c), S segments, C crops,
F frames per view, h/w crop pixels, N tokens per view, D width, G view groups the probe reads, K classes.

Example:
    >>> probe = load_probe("runs/demo/probe_label_attentive_100pct.safetensors")  # its encoder too
    >>> probe.predict("clip.mp4").top(5)
    [[('dogs', 0.91), ('cats', 0.09)]]
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vjepa.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_safetensors,
    load_state_strict,
    save_safetensors,
)
from vjepa.config import VJEPAWarning
from vjepa.models.probe import build_probe
from vjepa.precision import freeze

PROBE_FORMAT = "vjepa-probe-1"  # metadata "format" of probe files
OFFICIAL_SUFFIXES = (".pt", ".pth", ".tar")


@dataclass
class ViewProtocol:
    """How a probe views a video: S segments of F frames, each seen through C crops.

    Mirrors the evaluation's real-video views (`ClipSpec` sampling at evaluation positions, then
    `EvalTransform`): segment i is taken at the start of the i-th of S equal parts of the video.

    Attributes:
        frames_per_segment: F.
        num_segments: S.
        num_crops: C (1 centre, 3 left/centre/right).
        attend_across_segments: the probe reads a crop's S segments at once (G = C) instead of each
            view alone (G = S*C).
        frame_step: source frames between a segment's frames.
        fps: > 0: sample at this frame rate instead of frame_step (where the video says its rate).
        crop_size: view side, pixels (the encoder's input size).
        resize_ratio: the short side is resized to crop_size * resize_ratio before cropping.
        mean, std: per-channel normalisation of pixels in [0, 1].
        allow_clip_overlap, short_video_policy: as `data.*` (see `vjepa.data.sampling.ClipSpec`).
    """

    frames_per_segment: int = 16
    num_segments: int = 1
    num_crops: int = 1
    attend_across_segments: bool = False
    frame_step: int = 4
    fps: float = 0.0
    crop_size: int = 224
    resize_ratio: float = 1.0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    allow_clip_overlap: bool = False
    short_video_policy: str = "skip"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ViewProtocol:
        """A protocol from stored JSON; unknown keys are an error naming them."""
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown view protocol keys {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in values.items()})

    @property
    def num_views(self) -> int:
        """V = S * C."""
        return self.num_segments * self.num_crops

    def clip_spec(self):
        """The `ClipSpec` that cuts the S segments."""
        from vjepa.data.sampling import ClipSpec

        return ClipSpec(
            frames_per_clip=self.frames_per_segment,
            frame_step=self.frame_step,
            fps=self.fps,
            num_clips=self.num_segments,
            allow_clip_overlap=self.allow_clip_overlap,
            short_video_policy=self.short_video_policy,
        )

    def transform(self):
        """The `EvalTransform` (resize, C crops, normalise) applied to every segment."""
        from vjepa.data.transforms import EvalTransform

        return EvalTransform(self.crop_size, self.resize_ratio, self.num_crops, self.mean, self.std)

    def views(self, frames: np.ndarray | torch.Tensor, fps: float = 0.0) -> torch.Tensor:
        """A raw video's views: uint8 [T, H, W, 3] -> float [V, 3, F, h, w] (segment-major).

        Raises:
            ValueError: when the video is too short for one segment (short_video_policy=skip).
        """
        from vjepa.data.sampling import frame_step_for, sample_clip_indices

        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if frames.dtype != torch.uint8 or frames.ndim != 4:
            raise ValueError(
                f"a raw video must be uint8 [T, H, W, C], got {frames.dtype} {tuple(frames.shape)}"
            )
        spec = self.clip_spec()
        indices = sample_clip_indices(len(frames), spec, False, None, frame_step_for(spec, fps))
        if indices is None:
            raise ValueError(
                f"a {len(frames)}-frame video is too short for {self.frames_per_segment}-frame "
                f"segments {self.frame_step} frames apart"
            )
        return self._transform_segments(frames[torch.from_numpy(indices)])

    def read_views(self, path: str | Path, decoder: str = "pyav") -> torch.Tensor:
        """Decode only the frames the views need: a video file (frame folder, TIFF stack) -> [V, 3, F, h, w].

        Raises:
            DecodeError: naming the file and the reason (missing, corrupt, too_short, ...).
        """
        from vjepa.data.datasets import read_clip_frames

        return self._transform_segments(read_clip_frames(path, self.clip_spec(), decoder))  # from [S, F, H, W, 3]

    def _transform_segments(self, segments: torch.Tensor) -> torch.Tensor:
        """uint8 [S, F, H, W, 3] -> float [S*C, 3, F, h, w]."""
        transform = self.transform()
        return torch.cat([transform(segment) for segment in segments])


def protocol_of_run(cfg: Any, probe_cfg: Any) -> ViewProtocol:
    """The views an evaluation with `probe_cfg` on the run `cfg` gave its test clips.

    The probe's own sampling (`probe_cfg.frame_step` / `fps`, see `vjepa.eval.views.probe_data_config`)
    decides the frames; the built-in synthetic set renders clips frame by frame, so its probes saw
    consecutive frames (frame_step 1).
    """
    from vjepa.eval.views import probe_data_config

    synthetic = cfg.data.source == "synthetic" and not probe_cfg.data and probe_cfg.source in ("", "synthetic")
    data = probe_data_config(cfg, probe_cfg)
    return ViewProtocol(
        frames_per_segment=data.num_frames,
        num_segments=probe_cfg.num_segments,
        num_crops=probe_cfg.num_crops,
        attend_across_segments=probe_cfg.attend_across_segments,
        frame_step=1 if synthetic else data.frame_step,
        fps=0.0 if synthetic else data.fps,
        crop_size=data.crop_size,
        resize_ratio=probe_cfg.resize_ratio,
        mean=tuple(data.mean),
        std=tuple(data.std),
        allow_clip_overlap=data.allow_clip_overlap,
        short_video_policy=data.short_video_policy,
    )


@dataclass
class Prediction:
    """Class probabilities of B videos (softmax averaged over each video's views).

    Attributes:
        probs: float [B, K].
        class_names: K names (index = class).
    """

    probs: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per video, the k most probable (class name, probability) pairs, best first."""
        return [[(c["class"], c["prob"]) for c in row] for row in self.top_entries(k)]

    def top_entries(self, k: int = 5) -> list[list[dict[str, Any]]]:
        """Per video, the k most probable classes as {class, index, prob} dicts, best first."""
        values, indices = self.probs.topk(min(k, self.probs.shape[-1]), dim=-1)
        return [
            [{"class": self.class_names[i], "index": i, "prob": p} for p, i in zip(row_p, row_i)]
            for row_p, row_i in zip(values.tolist(), indices.tolist())
        ]

    @property
    def labels(self) -> list[str]:
        """The most probable class name of each video."""
        return [self.class_names[i] for i in self.probs.argmax(dim=-1).tolist()]


class TrainedProbe:
    """A trained probe with everything needed to classify videos: its encoder, views and class names.

    Attributes:
        module: the probe (`AttentiveClassifier` or `LinearProbe`), eval mode, no gradients.
        spec: kind, variant, depth, embed_dim, num_heads, num_classes.
        protocol: the `ViewProtocol` of its evaluation.
        class_names: K names.
        encoder: a `vjepa.Encoder`, or None (then only `predict_tokens` works).
        info: the rest of the file's metadata (encoder record, task, settings, result, source).
    """

    def __init__(
        self,
        module: nn.Module,
        spec: dict[str, Any],
        protocol: ViewProtocol,
        class_names: list[str],
        encoder: Any = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.module, self.spec, self.protocol = freeze(module), spec, protocol
        self.class_names = list(class_names) or [str(k) for k in range(spec["num_classes"])]
        self.encoder, self.info = encoder, info or {}
        if self.encoder is not None:
            self.module.to(self.encoder.device)

    def __repr__(self) -> str:
        s, p = self.spec, self.protocol
        return (
            f"TrainedProbe({s['kind']} {s.get('variant', '')} depth {s.get('depth', 1)}, {s['num_classes']} "
            f"classes, views {p.frames_per_segment}f x {p.num_segments} segments x {p.num_crops} crops)"
        )

    @torch.no_grad()
    def predict_tokens(self, tokens: torch.Tensor) -> Prediction:
        """Classify from encoder tokens: [B, V, N, D] (V = S*C views, segment-major) or [B, N, D]."""
        from vjepa.eval.metrics import aggregate_views
        from vjepa.eval.probe_train import probe_inputs

        tokens = tokens.unsqueeze(1) if tokens.ndim == 3 else tokens
        b, v = tokens.shape[:2]
        p = self.protocol
        if v == p.num_views:
            groups = probe_inputs(
                tokens, p.num_segments, p.num_crops, p.attend_across_segments
            )  # [B, G, L, D]
        else:
            groups = tokens  # views of another layout: each read alone
        device = next(self.module.parameters()).device
        logits = self.module(groups.flatten(0, 1).to(device, torch.float32)).float()  # [B*G, K]
        return Prediction(aggregate_views(logits.view(b, -1, logits.shape[-1])).cpu(), self.class_names)

    def encode(self, views: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Normalised views [B, V, 3, F, h, w] -> tokens [B, V, N, D] (float32, CPU), `batch_size` views
        per encoder call."""
        if self.encoder is None:
            raise ValueError("this probe has no encoder: pass encoder= to load_probe (a run dir or checkpoint)")
        flat = views.flatten(0, 1)
        tokens = torch.cat([self.encoder(chunk).cpu() for chunk in flat.split(batch_size)])  # [B*V, N, D]
        return tokens.view(*views.shape[:2], *tokens.shape[1:])

    def predict(self, clips: Any, batch_size: int = 16) -> Prediction:
        """Classify videos; softmax probabilities are averaged over each video's views.

        Args:
            clips: one of
                - a path (video file, frame folder, TIFF stack): decoded and viewed by `protocol`;
                - a raw video, uint8 [T, H, W, C] (numpy or torch): viewed by `protocol`;
                - normalised float clips [B, 3, T, h, w] (one view each) or views [B, V, 3, T, h, w]
                  (V = S*C, segment-major), used as given.
            batch_size: views per encoder call.

        Returns:
            `Prediction` with probs [B, K] (B = 1 for a path or a raw video).
        """
        return self.predict_tokens(self.encode(self._as_views(clips), batch_size))

    def _as_views(self, clips: Any) -> torch.Tensor:
        """`predict`'s input as normalised views [B, V, 3, F, h, w]: a path or raw video viewed by
        `protocol` (B = 1), float clips [B, 3, T, h, w] as one view each, or views as given."""
        if isinstance(clips, (str, Path)):
            return self.protocol.read_views(clips)[None]
        if isinstance(clips, np.ndarray) or (isinstance(clips, torch.Tensor) and not clips.is_floating_point()):
            return self.protocol.views(clips)[None]  # [1, V, 3, F, h, w]
        if clips.ndim in (5, 6):
            return clips.unsqueeze(1) if clips.ndim == 5 else clips
        raise ValueError(f"clips must be a path, uint8 [T, H, W, C], or float [B, 3, T, H, W] / "
                         f"[B, V, 3, T, H, W]; got {tuple(clips.shape)}")

    def save(self, path: str | Path) -> Path:
        """Write this probe as a `.safetensors` probe file; returns the path."""
        config = {
            "probe": self.spec,
            "protocol": _plain(asdict(self.protocol)),
            "class_names": self.class_names,
            **{k: v for k, v in self.info.items() if k != "source"},
        }
        save_safetensors(path, self.module.state_dict(), config, {"format": PROBE_FORMAT})
        return Path(path)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def save_trained_probe(
    path: str | Path,
    module: nn.Module,
    probe_cfg: Any,
    cfg: Any,
    encoder_record: dict[str, Any],
    class_names: list[str],
    num_heads: int,
    result: dict[str, Any] | None = None,
) -> Path:
    """Save a probe trained by the evaluation as a probe file.

    Args:
        path: the .safetensors file to write.
        module: the trained probe.
        probe_cfg: its `ProbeConfig` (kind, variant, depth, views, training settings).
        cfg: the encoder's run `Config` (data section: frame step, crop size, normalisation).
        encoder_record: source (checkpoint path), which, fingerprint (see
            `vjepa.eval.encoder_fingerprint`).
        class_names: K names.
        num_heads: the probe's attention heads.
        result: the evaluation result (its top1, eval_split, num_train are kept).

    Returns:
        The path written.
    """
    from vjepa.config import to_dict

    num_classes = len(class_names)
    embed_dim = cfg.model.embed_dim
    spec = {
        "kind": probe_cfg.kind,
        "variant": probe_cfg.variant,
        "depth": probe_cfg.depth,
        "embed_dim": embed_dim,
        "num_heads": num_heads,
        "num_classes": num_classes,
    }
    encoder = {
        **encoder_record,
        "embed_dim": embed_dim,
        "num_frames": cfg.data.num_frames,
        "img_size": cfg.data.crop_size,
        "patch_size": cfg.model.patch_size,
        "tubelet_size": cfg.model.tubelet_size,
    }
    kept = {k: result[k] for k in ("top1", "eval_split", "num_train", "num_test") if result and k in result}
    info = {"encoder": encoder, "task": probe_cfg.task, "settings": to_dict(probe_cfg), "result": kept}
    probe = TrainedProbe(module.cpu(), spec, protocol_of_run(cfg, probe_cfg), class_names, None, info)
    return probe.save(path)


# ---------------------------------------------------------------------------------------------
# loading


def load_probe(
    path: str | Path,
    encoder: Any = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    **official: Any,
) -> TrainedProbe:
    """Load a probe file (`.safetensors` from `vjepa probe`), an official probe checkpoint, or the
    classifier of a Hugging Face `VJEPA2ForVideoClassification` folder.

    Args:
        path: the probe file, an official `.pt` / `.pth.tar` (see `load_official_probe`), or a Hugging
            Face classifier folder / its model.safetensors (see `load_hf_probe`; its encoder is the
            folder's own backbone unless `encoder` is given).
        encoder: the encoder the probe reads: a `vjepa.Encoder`, or anything `vjepa.load` reads
            (run dir, checkpoint, export). Default: the checkpoint the probe file names, if it still
            exists (else the probe has no encoder and only `predict_tokens` works).
        device: where encoder and probe run, when the encoder is loaded here.
        precision: "fp32" or "bf16" (encoder autocast), when the encoder is loaded here.
        **official: for official checkpoints, `load_official_probe`'s keyword arguments.

    Returns:
        A `TrainedProbe`.

    Raises:
        CheckpointError: naming the file, if it is unreadable or its weights do not fit the probe.
    """
    from vjepa.formats import is_hf

    path = Path(path)
    checkpoint = None
    if is_hf(path):
        probe = load_hf_probe(path, official.get("class_names"))
    elif path.is_dir() or path.suffix in OFFICIAL_SUFFIXES:  # a fine-tune run or an official probe: read once
        checkpoint = _read_checkpoint(path)
        if isinstance(checkpoint.get("head"), dict):
            probe = finetuned_probe(checkpoint, path)
            # keep only what the encoder check needs: the run's encoder is loaded again below, and the
            # rest (optimiser state: GBs at ViT-L) must not be held meanwhile
            checkpoint = {"encoder": checkpoint["encoder"]} if encoder is not None else None
        else:
            probe = _official_probe(checkpoint, path, **official)
    else:
        probe = _load_probe_file(path)
    probe.encoder = _resolve_encoder(encoder, probe, device, precision)
    if probe.encoder is not None:
        _check_encoder(probe, path)
        if encoder is not None and probe.info.get("finetuned"):
            _check_finetuned_encoder(probe, checkpoint["encoder"], path)
        probe.module.to(probe.encoder.device)
        if probe.info.get(
            "official"
        ):  # official files carry no protocol: the encoder's clip, then the caller's
            probe.protocol = _official_protocol(probe.encoder, official.get("protocol"))
    return probe


def _hf_pooler(state: dict[str, torch.Tensor], config: dict[str, Any], path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The V-JEPA 2 attentive probe of a Hugging Face classifier state (official layout), loaded
    strictly with the config's heads, pooler depth and LayerNorm eps; and its probe spec."""
    embed_dim, num_classes = state["pooler.query_tokens"].shape[-1], state["linear.weight"].shape[0]
    depth, heads = 1 + int(config.get("num_pooler_layers", 3)), int(config["num_attention_heads"])
    module = build_probe("attentive", embed_dim, heads, num_classes, depth, "vjepa2")
    for norm in module.modules():
        if isinstance(norm, nn.LayerNorm):
            norm.eps = float(config.get("layer_norm_eps", 1e-6))
    load_state_strict(module, state, f"Hugging Face classifier {path}")
    spec = {"kind": "attentive", "variant": "vjepa2", "depth": depth, "embed_dim": embed_dim, "num_heads": heads,
            "num_classes": num_classes}
    return module, spec


def load_hf_probe(path: str | Path, class_names: list[str] | None = None) -> TrainedProbe:
    """The classifier of a Hugging Face `VJEPA2ForVideoClassification` folder as a probe, strictly.

    Its pooler is V-JEPA 2's attentive probe (`num_pooler_layers` self-attention blocks on the tokens,
    then the cross-attention; variant vjepa2, depth 1 + num_pooler_layers) with the config's heads and
    LayerNorm eps (transformers uses `layer_norm_eps`, 1e-6 by default, where the official pooler uses
    1e-5: kept as the file was trained). Class names come from the config's `id2label`.

    Raises:
        CheckpointError: for a `VJEPA2Model` folder without a classifier, or weights that do not fit.
    """
    from vjepa.formats import read_weights

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = json.loads((folder / "config.json").read_text())
    state = read_weights(path)[1].get("probe")
    if not state:
        raise CheckpointError(f"{path} is a Hugging Face V-JEPA 2 model without a classifier: train a probe "
                              f"on it (`vjepa probe {path} --data ...`) and classify with that probe file")
    module, spec = _hf_pooler(state, config, path)
    labels = config.get("id2label") or {}
    names = class_names or [str(labels.get(str(k), k)) for k in range(spec["num_classes"])]
    info = {"source": str(path), "official": True, "encoder": {"source": str(folder.resolve()), "which": "encoder"}}
    return TrainedProbe(module.eval(), spec, ViewProtocol.from_dict({"resize_ratio": 256 / 224}), names, info=info)


def _official_protocol(encoder: Any, given: dict[str, Any] | None) -> ViewProtocol:
    """One centre view of the encoder's clip (frames, step, size, normalisation), resized by 256/224 as
    the official evaluation does; `given` fields override."""
    data = encoder.config.data
    defaults = {
        "frames_per_segment": encoder.num_frames,
        "frame_step": encoder.frame_step,
        "crop_size": encoder.img_size,
        "mean": tuple(data.mean),
        "std": tuple(data.std),
        "resize_ratio": 256 / 224,
    }
    return ViewProtocol.from_dict({**defaults, **(given or {})})


def _load_probe_file(path: Path) -> TrainedProbe:
    tensors, config = load_safetensors(path)
    if "probe" not in config or "protocol" not in config:
        raise CheckpointError(
            f"{path}: not a probe file (its metadata has no probe config; was it written by `vjepa probe`?)"
        )
    spec = config["probe"]
    module = build_probe(
        spec["kind"],
        spec["embed_dim"],
        spec["num_heads"],
        spec["num_classes"],
        spec.get("depth", 1),
        spec.get("variant", "vjepa1"),
    )
    load_state_strict(module, tensors, f"probe file {path}")
    info = {k: v for k, v in config.items() if k not in ("probe", "protocol", "class_names")}
    return TrainedProbe(
        module,
        spec,
        ViewProtocol.from_dict(config["protocol"]),
        config.get("class_names", []),
        info={**info, "source": str(path)},
    )


def official_probe_state(
    checkpoint: dict[str, Any], path: str | Path, head: int = 0
) -> dict[str, torch.Tensor]:
    """The probe state dict of an official evaluation checkpoint, without wrapper prefixes.

    facebookresearch/jepa saves `{"classifier": state, "opt": ..., "epoch": ...}`; facebookresearch/
    vjepa2 saves `{"classifiers": [state, ...]}` (one probe per optimisation setting it swept). A
    bare state dict is accepted too. DDP's `module.` prefix is stripped.

    Args:
        checkpoint: what `torch.load` returned.
        path: the file (for error messages).
        head: which of several vjepa2 probes.
    """
    if "classifiers" in checkpoint:
        states = checkpoint["classifiers"]
        if not 0 <= head < len(states):
            raise CheckpointError(
                f"{path}: has {len(states)} probes (classifiers); head={head} is out of range"
            )
        state = states[head]
    elif "classifier" in checkpoint:
        state = checkpoint["classifier"]
    elif any(k.endswith("query_tokens") for k in checkpoint):
        state = checkpoint
    else:
        raise CheckpointError(
            f"{path}: no probe weights (expected a 'classifier' or 'classifiers' entry; "
            f"found {', '.join(sorted(map(str, checkpoint))[:10])})"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_official_probe(
    path: str | Path,
    num_heads: int = 16,
    head: int = 0,
    class_names: list[str] | None = None,
    protocol: dict[str, Any] | None = None,
) -> TrainedProbe:
    """An official attentive probe checkpoint (jepa or vjepa2 `video_classification_frozen`), strictly.

    The architecture is read off the weights: width from `pooler.query_tokens`, classes from
    `linear.weight`, depth from the `pooler.blocks.*` count; a `xattn.proj` entry marks V-JEPA 1's
    layout (blocks after the cross-attention), its absence V-JEPA 2's (blocks before it). Heads
    cannot be read off the weights: both official evaluations use 16 for their released models.

    Args:
        path: the .pt / .pth.tar file.
        num_heads: the probe's attention heads.
        head: which probe of a vjepa2 checkpoint (it saves one per swept learning rate / weight decay).
        class_names: K names (official files carry none; default: the class indices).
        protocol: `ViewProtocol` fields of the evaluation it came from. `load_probe` with an encoder
            fills the rest from the encoder's clip (one centre view, its frames, step, size and
            normalisation, short side resized by 256/224 as the official evaluation does).
    """
    return _official_probe(load_checkpoint(path), path, num_heads, head, class_names, protocol)


def _official_probe(
    checkpoint: dict[str, Any],
    path: str | Path,
    num_heads: int = 16,
    head: int = 0,
    class_names: list[str] | None = None,
    protocol: dict[str, Any] | None = None,
) -> TrainedProbe:
    """`load_official_probe` of a checkpoint already read (`checkpoint`, from `path`)."""
    state = official_probe_state(checkpoint, path, head)
    if "pooler.query_tokens" not in state or "linear.weight" not in state:
        raise CheckpointError(
            f"probe checkpoint {path} does not match the attentive probe: missing "
            f"pooler.query_tokens or linear.weight (keys: {', '.join(sorted(state)[:8])} ...)"
        )
    embed_dim, num_classes = state["pooler.query_tokens"].shape[-1], state["linear.weight"].shape[0]
    depth = 1 + len({k.split(".")[2] for k in state if k.startswith("pooler.blocks.")})
    variant = "vjepa1" if "pooler.cross_attention_block.xattn.proj.weight" in state else "vjepa2"
    module = build_probe("attentive", embed_dim, num_heads, num_classes, depth, variant)
    load_state_strict(module, state, f"probe checkpoint {path}")
    spec = {
        "kind": "attentive",
        "variant": variant,
        "depth": depth,
        "embed_dim": embed_dim,
        "num_heads": num_heads,
        "num_classes": num_classes,
    }
    view = ViewProtocol.from_dict({"resize_ratio": 256 / 224, **(protocol or {})})
    return TrainedProbe(module, spec, view, class_names or [], info={"source": str(path), "official": True})


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint a `--probe` folder or .pt names; a folder must be a `vjepa finetune` run.

    Raises:
        CheckpointError: naming the folder when it holds no latest.pt, or a latest.pt that is not a
            fine-tune's (a pretraining run has no classifier: probe it first).
    """
    from vjepa.formats import checkpoint_path

    file = checkpoint_path(path)
    checkpoint = load_checkpoint(file)
    if path.is_dir() and not isinstance(checkpoint.get("head"), dict):
        raise CheckpointError(f"{path} is a run without a classifier (not a `vjepa finetune` run): train a probe "
                              f"on it (`vjepa probe {path} --data ...`) and classify with that probe file")
    return checkpoint


def finetuned_probe(checkpoint: dict[str, Any], path: str | Path) -> TrainedProbe:
    """The head of a `vjepa finetune` checkpoint as a probe whose encoder is that run's fine-tuned one.

    The head comes from `vjepa.api.head_from_checkpoint` (class names and all); the views are the
    fine-tune's evaluation views (one centre view of the run's clip, `vjepa.finetune.evaluate`),
    built by `protocol_of_run`; the encoder is `vjepa.load(path, which="encoder")`, loaded by
    `load_probe` unless the caller passes another.

    Args:
        checkpoint: the fine-tune's latest.pt (or step_N.pt) as read.
        path: the run directory or that file.
    """
    from vjepa.api import head_from_checkpoint
    from vjepa.config import ProbeConfig, config_from_stored

    module, head = head_from_checkpoint(checkpoint, path)
    cfg = config_from_stored(checkpoint["config"], str(path))
    d = cfg.data  # the evaluation's one centre view: the run's frames, sampling and crop, no resize margin
    views = ProbeConfig(frames_per_segment=d.num_frames, frame_step=d.frame_step, fps=d.fps, resize_ratio=1.0)
    spec = {"kind": head["kind"], "variant": "vjepa1", "depth": head["depth"], "embed_dim": head["embed_dim"],
            "num_heads": head["num_heads"], "num_classes": head["num_classes"]}
    info = {"source": str(path), "finetuned": True, "task": head.get("task"),
            "encoder": {"source": str(path), "which": "encoder"}}
    return TrainedProbe(module, spec, protocol_of_run(cfg, views), head.get("class_names", []), info=info)


def _check_finetuned_encoder(probe: TrainedProbe, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Warn when a fine-tuned head is given an encoder other than the one trained with it."""
    own = probe.encoder.model.state_dict()
    if own.keys() != weights.keys() or not all(torch.equal(own[k].cpu(), v) for k, v in weights.items()):
        warnings.warn(f"the head of {path} was fine-tuned with that run's encoder, not {probe.encoder.source}; "
                      "its predictions may be meaningless", VJEPAWarning, stacklevel=3)


def _resolve_encoder(encoder: Any, probe: TrainedProbe, device: Any, precision: str) -> Any:
    """An `Encoder` from what the caller gave, or from the checkpoint the probe file names."""
    from vjepa.api import Encoder, load

    if isinstance(encoder, Encoder):
        return encoder
    record = probe.info.get("encoder", {})
    if encoder is None:
        from vjepa.config import PRESETS

        source = record.get("source")
        # a preset name stands for its seeded random init (the probe file's fingerprint checks it)
        if not source or not (Path(source).exists() or source in PRESETS):
            return None
        encoder = source
    which = record.get("which", "target_encoder")
    return load(encoder, which, device, with_predictor=False, precision=precision)


def _check_encoder(probe: TrainedProbe, path: Path) -> None:
    """The encoder must have the probe's width; a different fingerprint is only a warning."""
    width = probe.encoder.embed_dim
    if width != probe.spec["embed_dim"]:
        raise CheckpointError(
            f"probe {path} reads {probe.spec['embed_dim']}-wide tokens but the encoder "
            f"({probe.encoder.source}) gives {width}"
        )
    expected = probe.info.get("encoder", {}).get("fingerprint")
    if expected:
        from vjepa.eval.features import encoder_fingerprint

        if encoder_fingerprint(probe.encoder.model) != expected:
            warnings.warn(
                f"probe {path} was trained on another encoder's features "
                f"({probe.info['encoder'].get('source')}"
                f"); its predictions on {probe.encoder.source} may be meaningless",
                VJEPAWarning,
                stacklevel=3,
            )


# ---------------------------------------------------------------------------------------------
# many videos


def classify_videos(
    probe: TrainedProbe,
    videos: list[tuple[str, int]] | list[str],
    top_k: int = 5,
    batch_size: int = 16,
    decoder: str = "pyav",
    progress: bool = False,
) -> dict[str, Any]:
    """Top-k classes of each video (views by the probe's protocol, softmax averaged over views).

    Args:
        probe: from `load_probe`, with an encoder.
        videos: paths, or (path, label) pairs (see `vjepa.api.list_videos`).
        top_k: classes reported per video.
        batch_size: views per encoder call.
        decoder: video decoder name.
        progress: show a tqdm bar.

    Returns:
        dict with `results` (per video: path, top_k [{class, index, prob}], label and label_name when
        known) and `skipped` ([{path, reason}] for unreadable videos).
    """
    from tqdm.auto import tqdm

    from vjepa.data.decode import DecodeError

    results, skipped = [], []
    for item in tqdm(videos, desc="classify", unit="video", disable=not progress):
        path, label = (item, -1) if isinstance(item, (str, Path)) else item
        try:
            views = probe.protocol.read_views(path, decoder)  # [V, 3, F, h, w]
        except DecodeError as err:
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        entry = {"path": str(path), "top_k": probe.predict(views[None], batch_size).top_entries(top_k)[0]}
        names = probe.class_names
        if label >= 0:
            entry.update(label=label, label_name=names[label] if label < len(names) else str(label))
        results.append(entry)
    return {"results": results, "skipped": skipped}


def describe_prediction(entry: dict[str, Any]) -> str:
    """One line: the video and its top classes with probabilities."""
    classes = ", ".join(f"{c['class']} {100 * c['prob']:.1f}%" for c in entry["top_k"])
    truth = f"  (label: {entry['label_name']})" if "label_name" in entry else ""
    return f"{entry['path']}: {classes}{truth}"


def write_classification(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `classify_videos`' result (plus what produced it) as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
