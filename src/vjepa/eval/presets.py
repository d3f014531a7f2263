"""The paper's frozen-evaluation protocols as named probe presets (`vjepa probe ... --preset k400`).

Values from the official configs (facebookresearch/jepa `configs/evals/vitl16_{k400_16x8x3,
ssv2_16x2x3,in1k}.yaml` and `evals/*_classification_frozen/eval.py`):

- clips: 16 frames, 4 source frames apart; K400 8 temporal segments, SSv2 2, each tested through 3
  spatial views (short side resized to the crop, left/centre/right), softmax averaged; one probe
  reads all segments of a view at once (`attend_across_segments`).
- training: one view of S segments per clip, augmented: random resized crop (area 0.08-1, aspect
  3/4-4/3), no flip, random erasing (p 0.25); the official RandAugment (rand-m7-n4) is not applied
  (it needs torchvision, which this library does not depend on).
- optimisation: 20 epochs of AdamW, lr 1e-3 without warmup then cosine to 0, weight decay 0.01
  (images 0.001) following a cosine to 1e-6, gradient norm clipped at 1, 4 clips per process
  (16 images); the official runs used 64 GPUs, so 256 clips (1024 images) per step in all.
- images (IN1K, Places, iNat): each image is a clip of the repeated frame (the encoder's own
  frame count), trained with the same crop and erasing, tested on one centre crop after resizing
  the short side to 256/224 of the crop.
"""

from __future__ import annotations

from typing import Any

from vjepa.config import ConfigError

_OPTIMISATION: dict[str, Any] = {
    "epochs": 20, "lr": 1e-3, "final_lr": 0.0, "warmup_epochs": 0, "weight_decay": 0.01,
    "final_weight_decay": 1e-6, "grad_clip": 1.0, "batch_size": 4, "streaming": True, "augment": True,
    "kind": "attentive", "depth": 1, "task": "label",
}

PROBE_PRESETS: dict[str, dict[str, Any]] = {
    "k400": {**_OPTIMISATION, "frames_per_segment": 16, "frame_step": 4, "num_segments": 8, "num_crops": 3,
             "attend_across_segments": True, "resize_ratio": 1.0},
    "ssv2": {**_OPTIMISATION, "frames_per_segment": 16, "frame_step": 4, "num_segments": 2, "num_crops": 3,
             "attend_across_segments": True, "resize_ratio": 1.0},
    "in1k": {**_OPTIMISATION, "weight_decay": 0.001, "batch_size": 16, "source": "images", "num_segments": 1,
             "num_crops": 1, "resize_ratio": 256 / 224},
}


def probe_preset(name: str) -> dict[str, Any]:
    """The ProbeConfig settings of a named protocol (a copy; `preset` records the name).

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    if name not in PROBE_PRESETS:
        raise ConfigError(f"unknown probe preset {name!r}; choose one of {', '.join(PROBE_PRESETS)}")
    return {**PROBE_PRESETS[name], "preset": name}
