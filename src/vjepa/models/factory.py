"""Model construction from a `Config`: the initial encoder a run starts from.

Shapes: B batch, C channels, T frames, H/W pixels, N tokens, D width.
"""

from __future__ import annotations

import torch

from vjepa.config import Config
from vjepa.models.vit import VisionTransformer, build_encoder
from vjepa.seeds import mix_seed


def init_seed(cfg: Config) -> int:
    """The torch seed `train(cfg)` sets right before building the model (the encoder comes first)."""
    return mix_seed(cfg.run.seed, 1)


def initial_encoder(cfg: Config) -> VisionTransformer:
    """The encoder exactly as `train(cfg)` initialises it, before any step (the random-init baseline).

    `train` seeds every generator and builds the encoder on the CPU, so seeding the CPU generator
    alone draws the same weights and leaves a GPU's random stream as it was.
    """
    torch.random.default_generator.manual_seed(init_seed(cfg))
    return build_encoder(cfg.model, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames)
