"""Process-group setup for torchrun (DDP on gloo/NCCL, FSDP2), kept out of model and loop code.

Single-process runs need nothing: `setup()` returns rank 0 of 1 and every helper is a no-op.
Under `torchrun --nproc_per_node N -m vjepa pretrain ...` the environment variables torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) select the process group; the backend is
NCCL on CUDA and gloo on CPU. Multi-node runs are the same command with a rendezvous endpoint
(see the README's "Distributed" section); nothing here knows about clusters or schedulers.

Checkpoints are always ordinary single-process files: under FSDP the full state dicts are gathered
to rank 0 (`full_state_dicts`) before it writes, so a run can resume on any number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")


@dataclass
class DistEnv:
    """Where this process stands: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes logs and checkpoints (rank 0)."""
        return self.rank == 0


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; any other name (or a torch.device) as given."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device_name: str = "auto") -> DistEnv:
    """Initialise the process group when launched by torchrun; pick this rank's device.

    Args:
        device_name: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N". Under
            torchrun with CUDA each rank takes device LOCAL_RANK.

    Returns:
        This process's `DistEnv`. The process group (NCCL on CUDA, gloo on CPU) is initialised
        only when WORLD_SIZE > 1.
    """
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
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds NCCL communicators to this rank's GPU at init (no lazy, guessed binding)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world_size, local_rank, device)


def _block_lists(module: nn.Module) -> list[nn.Module]:
    return list(getattr(module, "blocks", getattr(module, "predictor_blocks", [])))


def wrap(model: nn.Module, env: DistEnv, strategy: str = "ddp") -> nn.Module:
    """Wrap a `JEPA` for data parallelism from outside the model (identity in a single process).

    Args:
        model: the JEPA module (encoder, predictor, optional target_encoder), already on env.device.
        env: this process's `DistEnv`.
        strategy: "ddp" (replicate, all-reduce gradients) or "fsdp" (FSDP2 `fully_shard`: every
            transformer block, then each network, shards parameters, gradients and optimiser
            state over the ranks; the EMA target encoder is sharded like the encoder so the EMA
            update stays shard-local).

    Returns:
        The module to call in the training step: a DDP wrapper, or `model` itself (sharded in
        place) for FSDP. Build the optimiser *after* wrapping: FSDP2 replaces the parameters.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"run.distributed={strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not env.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for module in (model.encoder, model.predictor, getattr(model, "target_encoder", None)):
            if module is None:
                continue
            for block in _block_lists(module):
                fully_shard(block, mesh=mesh)
            fully_shard(module, mesh=mesh)
        # the JEPA is the one root: roots keep parameters gathered after forward, which would leave
        # the (never backpropagated) target encoder unsharded when the EMA update runs
        fully_shard(model, mesh=mesh)
        # JEPA calls encoder.embed / encode / encode_packed and predictor.forward_packed directly:
        # make them gather parameters too
        for module, method in ((model.encoder, "embed"), (model.encoder, "encode"),
                               (model.encoder, "encode_packed"), (model.predictor, "forward_packed")):
            register_fsdp_forward_method(module, method)
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP / torch.compile wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def is_sharded(model: nn.Module) -> bool:
    """True when the model's parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    names = ("encoder", "predictor", "target_encoder")
    return {name: getattr(model, name) for name in names if getattr(model, name, None) is not None}


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, dict], dict[str, Any]]:
    """Unsharded state dicts of the JEPA's networks and of the optimiser, as a single process has them.

    Under FSDP this is a collective (every rank must call it): shards are gathered to rank 0 and
    offloaded to CPU; other ranks receive empty dicts. The optimiser state is converted back to
    `optimizer.state_dict()`'s integer-indexed layout, so the checkpoint loads anywhere.

    Args:
        model: the unwrapped JEPA.
        optimizer: its optimiser.

    Returns:
        ({"encoder": ..., "predictor": ..., "target_encoder": ...}, optimiser state dict).
    """
    modules = _named_modules(model)
    if not is_sharded(model):
        return {name: module.state_dict() for name, module in modules.items()}, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    flat = get_model_state_dict(model, options=options)  # {"encoder.blocks.0...": tensor} (rank 0)
    states = {name: {k[len(name) + 1 :]: v for k, v in flat.items() if k.startswith(name + ".")} for name in modules}
    optim = get_optimizer_state_dict(model, optimizer, options=options)  # keyed by parameter name
    if not optim:
        return states, {}
    ids = {name: i for i, name in enumerate(n for group in optim["param_groups"] for n in group["params"])}
    groups = [{**group, "params": [ids[n] for n in group["params"]]} for group in optim["param_groups"]]
    return states, {"state": {ids[n]: v for n, v in optim["state"].items()}, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an ordinary (integer-indexed, unsharded) optimiser state dict, sharding it under FSDP.

    Args:
        model: the unwrapped JEPA (already wrapped in place if FSDP).
        optimizer: built over the (possibly sharded) parameters, in `param_groups` order.
        state: `optimizer.state_dict()` layout, e.g. a checkpoint's "opt".
    """
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]  # index -> name
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in state["param_groups"]]
    named = {"state": {order[int(i)]: v for i, v in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))


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
