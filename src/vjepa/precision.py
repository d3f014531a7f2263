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


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bf16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere (AVX2-only x86 CPUs, most laptops) PyTorch emulates bf16
    matmuls, measured ~10x slower than fp32 on an AVX2 EPYC (docs/performance.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (/proc/cpuinfo), or none elsewhere."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_dtype(dtype: str, device: torch.device | str) -> str:
    """`run.dtype` as it will run: "auto" is bf16 where `device` has native bf16 (`native_bf16`),
    else fp32; "bf16" and "fp32" are kept."""
    if dtype != "auto":
        return dtype
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device: torch.device | str, dtype: str | bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA (matmuls in bf16, reductions and losses in fp32), or nothing.

    Args:
        device: where the computation runs.
        dtype: "bf16" (or True) turns autocast on; "fp32" (or False) leaves it off; "auto" decides
            from the device (`resolve_dtype`).
    """
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, device)
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
