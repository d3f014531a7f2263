"""Helpers for tests that compare step layouts of a `vjepa.jepa.JEPA`."""

from __future__ import annotations

import torch


def sharpen(model) -> None:
    """Make attention matter in a tiny JEPA: attending to a padding slot, or across rows of a
    packed sequence, then moves the loss well beyond float tolerance. Mask tokens become non-zero."""
    with torch.no_grad():
        for block in list(model.encoder.blocks) + list(model.predictor.predictor_blocks):
            block.attn.proj.weight.mul_(10)
            block.attn.qkv.weight.mul_(3)
        for token in model.predictor.mask_tokens:
            token.normal_()
