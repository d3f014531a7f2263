"""Process-group setup for torchrun (DDP on gloo/NCCL, FSDP2), kept out of model and loop code.

Single-process runs need nothing: `setup()` returns rank 0 of 1 and every helper is a no-op.
Under `torchrun --nproc_per_node N -m vjepa pretrain ...` the environment variables torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) select the process group; the backend is
NCCL on CUDA and gloo on CPU. Multi-node runs are the same command with a rendezvous endpoint
(see the README's "Distributed" section); nothing here knows about clusters or schedulers.

Checkpoints are always ordinary single-process files: under FSDP the full state dicts are gathered
to rank 0 (`full_state_dicts`) before it writes, so a run can resume on any number of processes.
Rank 0 also decides the resume (`resume_state`): ranks whose run directory lacks its checkpoint
(node-local disks) receive rank 0's state, so every rank starts at the same step. Ranks agree
before stopping on a NaN (`agreed_first_bad_step`), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp", "hsdp")


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


DEFAULT_TIMEOUT_S = 1800  # run.dist_timeout_s: a ViT-g checkpoint (~15 GB) written by rank 0 fits in it


def rank_device(device_name: str, local_rank: int, world_size: int) -> torch.device:
    """This rank's device: under torchrun with CUDA, GPU `local_rank % device_count()`.

    The modulo covers both layouts: one task per node seeing all 8 GPUs (LOCAL_RANK 0..7 -> cuda:0..7)
    and schedulers that show each task only its own GPU (LOCAL_RANK 3 -> cuda:0, the one it sees).

    Args:
        device_name: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
        local_rank: the rank within the node (torchrun's LOCAL_RANK).
        world_size: the number of processes (WORLD_SIZE).

    Raises:
        ValueError: "cuda:N" with more than one process (every rank would share GPU N), or CUDA
            asked for on a machine without it.
    """
    if device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not device_name.startswith("cuda") and device_name != "auto":
        return torch.device(device_name)
    if not torch.cuda.is_available():
        raise ValueError(f"device {device_name}, but this machine has no usable CUDA device; use cpu or auto")
    if device_name.startswith("cuda:"):
        return _one_gpu(device_name, world_size)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _one_gpu(device_name: str, world_size: int) -> torch.device:
    """`cuda:N`, allowed only for a single process (every rank would share GPU N)."""
    if world_size > 1:
        raise ValueError(
            f"device {device_name} under torchrun ({world_size} processes) would put every rank on GPU "
            f"{device_name[5:]}; use cuda (or auto): each rank takes GPU LOCAL_RANK % device_count()")
    return torch.device(device_name)


def torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) for a plain process."""
    return tuple(int(os.environ.get(key, default)) for key, default in (("RANK", "0"), ("WORLD_SIZE", "1"),
                                                                         ("LOCAL_RANK", "0")))


def setup(device_name: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Initialise the process group when launched by torchrun; pick this rank's device.

    Args:
        device_name: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N" (one process
            only). Under torchrun with CUDA each rank takes GPU LOCAL_RANK % device_count().
        timeout_s: how long a collective may wait before the job fails (run.dist_timeout_s); set
            explicitly because rank 0 writes checkpoints while the others wait in a barrier.

    Returns:
        This process's `DistEnv`. The process group (NCCL on CUDA, gloo on CPU) is initialised
        only when WORLD_SIZE > 1.
    """
    from datetime import timedelta

    rank, world_size, local_rank = torchrun_env()
    device = rank_device(device_name, local_rank, world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds NCCL communicators to this rank's GPU at init (no lazy, guessed binding)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                timeout=timedelta(seconds=timeout_s))
    return DistEnv(rank, world_size, local_rank, device)


def _block_lists(module: nn.Module) -> list[nn.Module]:
    return list(getattr(module, "blocks", getattr(module, "predictor_blocks", [])))


MESH_DIMS = {"fsdp": ("shard",), "hsdp": ("replicate", "shard")}


def mesh_shape(env: DistEnv, strategy: str) -> tuple[int, ...]:
    """The FSDP2 device mesh: (world,) for "fsdp"; (nodes, ranks per node) for "hsdp".

    Raises:
        ValueError: "hsdp" when the world size is not a multiple of torchrun's LOCAL_WORLD_SIZE.
    """
    if strategy != "hsdp":
        return (env.world_size,)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(env.world_size)))
    if local < 1 or env.world_size % local:
        raise ValueError(f"run.distributed=hsdp needs the world size ({env.world_size}) to be a multiple of the "
                         f"ranks per node (LOCAL_WORLD_SIZE={local})")
    return (env.world_size // local, local)


def wrap(model: nn.Module, env: DistEnv, strategy: str = "ddp", param_dtype: torch.dtype | None = None) -> nn.Module:
    """Wrap a `JEPA` for data parallelism from outside the model (identity in a single process).

    Args:
        model: the JEPA module (encoder, predictor, optional target_encoder), already on env.device.
        env: this process's `DistEnv`.
        strategy: "ddp" (replicate, all-reduce gradients) or "fsdp" (FSDP2 `fully_shard`: every
            transformer block, then each network, shards parameters, gradients and optimiser
            state over the ranks; the EMA target encoder is sharded like the encoder so the EMA
            update stays shard-local), or "hsdp": FSDP2 on a 2-D mesh, sharded within each node
            (LOCAL_WORLD_SIZE ranks) and replicated across nodes, so the per-block all-gathers
            stay on the node's fast links and only gradients cross the network.
        param_dtype: FSDP only: the dtype parameters are all-gathered and computed in (e.g.
            torch.bfloat16 for run.dtype=bf16: half the all-gather bytes); gradients are still
            reduced and kept in fp32. None: gather in the parameters' own dtype (fp32).

    Returns:
        The module to call in the training step: a DDP wrapper, or `model` itself (sharded in
        place) for FSDP. Build the optimiser *after* wrapping: FSDP2 replaces the parameters.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"run.distributed={strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not env.distributed:
        return model
    if strategy in ("fsdp", "hsdp"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(env.device.type, mesh_shape(env, strategy), mesh_dim_names=MESH_DIMS[strategy])
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for module in (model.encoder, model.predictor, getattr(model, "target_encoder", None)):
            if module is None:
                continue
            # the encoder runs once per mask generator (then backward): keeping its blocks gathered
            # after forward costs one unsharded encoder (bf16 ViT-g: ~2 GB) and saves 2G-1 all-gathers
            # of every block per step; the target encoder and the predictor run once and reshard
            keep = module is model.encoder
            for block in _block_lists(module):
                fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=not keep)
            fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=not keep)
        # the JEPA is the one root: roots keep parameters gathered after forward, which would leave
        # the (never backpropagated) target encoder unsharded when the EMA update runs
        fully_shard(model, mesh=mesh, mp_policy=policy)
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


def all_reduce_min(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The smallest value over ranks (identity in a single process)."""
    if not env.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def agreed_first_bad_step(first_bad: torch.Tensor, env: DistEnv) -> int:
    """The earliest step at which any rank saw a non-finite loss, or -1 when none did.

    A collective: every rank gets the same answer, so every rank raises the same error at the same
    place instead of one raising while the others wait in the next all-reduce until it aborts.

    Args:
        first_bad: this rank's first non-finite step (a 0-d long tensor; -1 for none).
        env: this process's `DistEnv`.
    """
    none = torch.iinfo(torch.long).max
    value = torch.where(first_bad < 0, torch.full_like(first_bad, none), first_bad)
    step = int(all_reduce_min(value, env).item())
    return -1 if step == none else step


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)  # any dtype travels on any backend


def broadcast_state(state: dict[str, Any] | None, env: DistEnv) -> dict[str, Any]:
    """Rank 0's nested dict of tensors on every rank, sent one tensor at a time (a collective).

    The structure (with tensors replaced by their shape and dtype) goes as one small object, then
    each tensor's bytes through `env.device`, so no rank ever holds a second pickled copy.

    Args:
        state: the dict on rank 0 (ignored elsewhere).
        env: this process's `DistEnv`.

    Returns:
        The dict, its tensors on the CPU.
    """
    if not env.distributed:
        return state or {}
    tensors: list[torch.Tensor] = []
    box = [_skeleton(state, tensors) if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return _fill(box[0], tensors, env)  # depth-first, the same order on every rank


def _skeleton(node: Any, tensors: list[torch.Tensor]) -> Any:
    """`node` with every tensor replaced by ("__tensor__", index, shape, dtype), appended to `tensors`."""
    if isinstance(node, torch.Tensor):
        tensors.append(node)
        return ("__tensor__", len(tensors) - 1, tuple(node.shape), node.dtype)
    if isinstance(node, dict):
        return {key: _skeleton(value, tensors) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_skeleton(value, tensors) for value in node)
    return node


def _fill(node: Any, tensors: list[torch.Tensor], env: DistEnv) -> Any:
    """Rebuild a `_skeleton` on every rank, broadcasting each tensor's bytes from rank 0 in turn
    (rank 0 keeps its own `tensors`; the others receive CPU copies)."""
    if isinstance(node, tuple) and len(node) == 4 and node[0] == "__tensor__":
        _, index, shape, dtype = node
        empty = torch.empty(shape, dtype=dtype)
        buffer = _as_bytes(tensors[index] if env.is_main else empty).to(env.device)
        dist.broadcast(buffer, src=0)
        return tensors[index] if env.is_main else buffer.cpu().view(dtype).reshape(shape)
    if isinstance(node, dict):
        return {key: _fill(value, tensors, env) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_fill(value, tensors, env) for value in node)
    return node


def resume_state(path: Path, env: DistEnv, load: Callable[[Path], dict[str, Any]],
                 error_type: type[Exception] = RuntimeError) -> dict[str, Any] | None:
    """The checkpoint every rank resumes from, as rank 0 sees it (a collective under torchrun).

    Rank 0 decides: it loads `path` (or finds none) and tells the others the step. A rank whose
    own `path` holds that step (a shared run.out_dir) loads it itself; if any rank cannot (a
    node-local run.out_dir without it, or a stale one), rank 0 broadcasts its state to all. So all
    ranks start at rank 0's step, whatever their own directories hold.

    Args:
        path: the checkpoint (e.g. `<run.out_dir>/latest.pt`) on each rank's filesystem.
        env: this process's `DistEnv`.
        load: reads a checkpoint file (`vjepa.checkpoint.load_checkpoint`).
        error_type: what the other ranks raise when rank 0 cannot read its file (`CheckpointError`;
            passed in so this module never imports `vjepa.checkpoint`, which imports it).

    Returns:
        The state dict, or None when rank 0 has nothing to resume (then every rank starts afresh).

    Raises:
        error_type: on every rank when rank 0 cannot read its checkpoint (rank 0 re-raises its own).
    """
    state, error = None, None
    if env.is_main:
        try:
            state = load(path) if path.exists() else None
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks were told
            error = err
    if not env.distributed:
        if error is not None:
            raise error
        return state
    box = [{"step": None if state is None else int(state["step"]), "error": None if error is None else str(error)}]
    dist.broadcast_object_list(box, src=0)
    step, message = box[0]["step"], box[0]["error"]
    if message is not None:
        if error is not None:
            raise error
        raise error_type(f"rank 0 could not read its checkpoint, so no rank resumes: {message}")
    if step is None:
        return None
    if not env.is_main:
        try:
            state = load(path) if path.exists() else None
        except Exception:  # noqa: BLE001 - an unreadable local copy: take rank 0's instead
            state = None
        state = state if state is not None and int(state["step"]) == step else None
    missing = torch.tensor(float(state is None), device=env.device)
    dist.all_reduce(missing, op=dist.ReduceOp.MAX)
    if missing.item() > 0:
        received = broadcast_state(state if env.is_main else None, env)
        state = state if state is not None else received
    return state


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random generators training draws from (drop path): the CPU's, and `device`'s if a GPU.

    Data order, augmentations and masks use their own generators seeded from (seed, step), so
    these are all a resume must restore. Every rank draws the same numbers (same seed, same
    shapes), so rank 0's states stand for all ranks'.
    """
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore `rng_state`'s generators (the CUDA one only on a CUDA device; a CPU run ignores it)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.distributed:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    """Leave the process group. A barrier first: without it gloo often crashed at shutdown."""
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
