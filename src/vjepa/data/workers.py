"""How many DataLoader workers `data.num_workers` means on a device (-1: auto).

A module of its own, importing nothing from vjepa, so both the training loader and `prepare` use it.
"""

from __future__ import annotations

import os

import torch

MAX_AUTO_WORKERS = 8  # decoding past ~8 workers per GPU stops paying at vitl16's ~0.2 s steps (issue 25)


def resolve_workers(num_workers: int, device: torch.device | str) -> int:
    """The DataLoader workers `data.num_workers` means on `device` (-1: auto).

    Auto is 0 on the CPU (a worker competes with the model for the same cores) and, on CUDA, the
    CPUs this process may use divided among the GPUs of its node (torchrun's LOCAL_WORLD_SIZE),
    less one for the main process, at most `MAX_AUTO_WORKERS`: a vitl16 step needs 24 PyAV
    decodes of 50-200 ms each, far more than its ~0.2 s of GPU work in one process.

    Args:
        num_workers: the configured count; -1 for auto.
        device: where training runs.
    """
    if num_workers >= 0:
        return num_workers
    if torch.device(device).type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = cpus // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(0, min(MAX_AUTO_WORKERS, per_rank - 1))
