"""Process-group setup for torchrun (DDP on gloo/NCCL, FSDP2), kept out of model and loop code.

Single-process runs need nothing: `setup()` returns rank 0 of 1 and every helper is a no-op.
Under `torchrun --nproc_per_node N -m vjepa pretrain ...` the environment variables torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) select the process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    """Where this process stands: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def setup(device_name: str = "auto") -> DistEnv:
    """Initialise the process group when launched by torchrun; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda:")
    if use_cuda:
        device = torch.device(device_name if device_name.startswith("cuda:") else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, device)


def wrap(model: nn.Module, env: DistEnv, strategy: str = "ddp") -> nn.Module:
    """Wrap for data parallelism from outside the model: DDP (default) or FSDP2 `fully_shard`."""
    if not env.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in (model.encoder, model.predictor):
            for block in getattr(module, "blocks", getattr(module, "predictor_blocks", [])):
                fully_shard(block)
            fully_shard(module)
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP / torch.compile wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Average a tensor over ranks (identity in a single process)."""
    if not env.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.distributed:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    """Leave the process group. A barrier first: without it gloo often crashed at shutdown."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
