"""Embedding on several processes: `torchrun --nproc_per_node N -m vjepa embed ...`.

Each rank embeds a contiguous share of the files on its own device and writes it beside the output
(`<name>.part<rank>-of-<N>.safetensors`); after a barrier rank 0 joins the shares in input order
into the one output file and deletes them. The joined file equals a single process's output (same
rows, order, labels and skipped files; tokens to the float rounding of each device).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vjepa.eval.features import Features, load_features, save_features


def share(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank `rank`'s contiguous share of `items`: shares differ in length by at most one and,
    joined in rank order, give `items` back."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size} processes")
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return list(items[start:start + base + (rank < extra)])


def concat_features(parts: Sequence[Features]) -> Features:
    """Join `Features` of disjoint file sets, rows in the order given.

    Raises:
        ValueError: the parts were not made alike (views per clip, token shape or metadata differ).
    """
    first = parts[0]
    for k, part in enumerate(parts[1:], start=1):
        same = ((part.num_segments, part.num_crops, part.metadata, part.labels.keys())
                == (first.num_segments, first.num_crops, first.metadata, first.labels.keys()))
        if not same or part.tokens.shape[1:] != first.tokens.shape[1:]:
            raise ValueError(f"feature part {k} was not made like part 0 (views, token shape, labels or metadata differ)")
    starts = [p.window_start for p in parts]
    return Features(
        tokens=torch.cat([p.tokens for p in parts]),
        labels={name: torch.cat([p.labels[name] for p in parts]) for name in first.labels},
        num_segments=first.num_segments,
        num_crops=first.num_crops,
        class_names=first.class_names,
        paths=[path for p in parts for path in p.paths],
        window_start=None if any(s is None for s in starts) else torch.cat(starts),
        failures=[f for p in parts for f in p.failures],
        metadata=first.metadata,
    )


def part_path(output: str | Path, rank: int, world_size: int) -> Path:
    """Where rank `rank` writes its share of `output` (always .safetensors)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.part{rank}-of-{world_size}.safetensors")


def join_shares(features: Features, output: str | Path, rank: int, world_size: int) -> Features | None:
    """Write this rank's share, wait for every rank, and on rank 0 return all shares joined.

    Needs an initialised process group (`vjepa.distributed.setup` under torchrun). Returns None on
    the other ranks. Rank 0 deletes the share files once it has read them.
    """
    import torch.distributed as dist

    save_features(part_path(output, rank, world_size), features)
    dist.barrier()
    if rank != 0:
        return None
    paths = [part_path(output, r, world_size) for r in range(world_size)]
    joined = concat_features([load_features(p) for p in paths])
    for p in paths:
        p.unlink()
    return joined
