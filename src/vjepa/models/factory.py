"""Model construction from a `Config`: the one place that turns config sections into networks.

`build_encoder(cfg)` is the encoder for the configured clip (`data.num_frames` x `data.crop_size`^2),
`token_grid(cfg)` its token grid, and `initial_encoder(cfg)` the encoder exactly as a run with
this config starts (its random-init baseline). Shapes: T'/H'/W' token grid, N = T'*H'*W' tokens.
"""

from __future__ import annotations

import torch

from vjepa.config import Config
from vjepa.models.patch_embed import clip_grid
from vjepa.models.vit import VisionTransformer
from vjepa.seeds import mix_seed


def token_grid(cfg: Config) -> tuple[int, int, int]:
    """(T', H', W'): the token grid of the configured clip (`data.num_frames` x `data.crop_size`^2), as
    `build_encoder(cfg).grid` (`vjepa.models.patch_embed.clip_grid`).

    E.g. 16 frames of 224x224, tubelet 2, patch 16 -> (8, 14, 14), N = 1568 tokens.
    """
    m, d = cfg.model, cfg.data
    return clip_grid(d.num_frames, d.crop_size, d.crop_size, m.tubelet_size, m.patch_size)


def build_encoder(cfg: Config) -> VisionTransformer:
    """The encoder that `cfg.model` describes, built for the configured clip (randomly initialised).

    With `model.freeze_patch_embed` the tubelet embedding's parameters do not require gradients,
    so no optimiser ever sees them and they keep their (seeded) random init.
    """
    encoder = VisionTransformer(cfg.model, img_size=cfg.data.crop_size, num_frames=cfg.data.num_frames)
    if cfg.model.freeze_patch_embed:
        encoder.patch_embed.requires_grad_(False)
    return encoder


def init_seed(cfg: Config) -> int:
    """The torch seed `train(cfg)` sets right before building the model (the encoder comes first)."""
    return mix_seed(cfg.run.seed, 1)


def initial_encoder(cfg: Config) -> VisionTransformer:
    """The encoder exactly as `train(cfg)` initialises it, before any step (the random-init baseline).

    `train` seeds every generator and builds the encoder on the CPU, so seeding the CPU generator
    alone draws the same weights and leaves a GPU's random stream as it was.
    """
    torch.random.default_generator.manual_seed(init_seed(cfg))
    return build_encoder(cfg)
