"""Running a network frozen and in bfloat16: the two helpers training, evaluation and the API share."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and requires_grad False on every parameter; returns the module."""
    module.eval()
    module.requires_grad_(False)
    return module


def autocast(device: torch.device | str, dtype: str | bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA (matmuls in bf16, reductions and losses in fp32), or nothing.

    Args:
        device: where the computation runs.
        dtype: "bf16" (or True) turns autocast on; "fp32" (or False) leaves it off.
    """
    if dtype not in ("bf16", True):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def allow_tf32(device: torch.device | str) -> bool:
    """On CUDA, let fp32 matmuls and convolutions use TF32 tensor cores; returns whether it did.

    fp32 runs (and the fp32 parts of bf16 runs) then take the tensor-core path, ~8x an fp32 GEMM
    on an A100/H100, keeping fp32's exponent range (so overflow behaves as in fp32) with a 10-bit
    mantissa. Nothing changes on the CPU, where CPU results stay bit-exact.
    """
    if torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True
