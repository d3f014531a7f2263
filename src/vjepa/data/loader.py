"""The training loader: deterministic step batches, so the clips of step s are a pure function of
(run.seed, s) and resuming at any step is exact (any number of processes, any worker count).

What the workers do, so the training loop only copies: decode, crop, resize and flip each clip
(shipped as uint8 in [0, 255], a quarter of fp32's bytes; the loop normalises on the device with
`vjepa.data.transforms.normalise`), and build the step's masks (`vjepa.masks.step.masks_for_step`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa.config import Config
from vjepa.data import build_dataset, collate
from vjepa.data.transforms import build_transform
from vjepa.data.workers import resolve_workers
from vjepa.masks.step import masks_for_step
from vjepa.seeds import mix_seed


class StepBatchSampler(Sampler):
    """Yields, for steps start_step, start_step+1, ..., this rank's list of (index, item_seed, step).

    Sample k of global step s is element (s*G + k) mod n of the epoch's permutation (G = global
    batch), so the order depends only on (seed, step) and resuming at any step is exact.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise ValueError("the training dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.num_items, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        """This rank's (index, item_seed, step) keys for global step `step`."""
        global_batch = self.batch_size * self.world_size
        items = []
        for k in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):
            flat = step * global_batch + k
            index = int(self._perm(flat // self.num_items)[flat % self.num_items])
            items.append((index, mix_seed(self.seed, step, k), step))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


@dataclass
class StepItems:
    """One step's dataset items, as `SeededItems.__getitems__` hands them to `StepCollate`."""

    step: int
    items: list[Any]


class SeededItems(Dataset):
    """Wraps a dataset so item (index, seed, ...) is drawn with the global RNG seeded by `seed`.

    Augmentations that use torch's global RNG become reproducible, in any worker, without
    disturbing the caller's RNG state. A step's keys are fetched together (`__getitems__`, which
    the DataLoader prefers), so the collate function learns the step.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]) -> Any:
        index, seed = key[:2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> StepItems:
        """A step's items (keys from `StepBatchSampler.batch`)."""
        return StepItems(keys[0][2], [self[key] for key in keys])


class StepCollate:
    """Batches a step's items and, given the token grid, builds that step's masks, in the worker.

    Returns {"video": uint8 [B, 3, T, h, w] (as the transform gave it), "step": s, "masks": this
    rank's `MaskBatch` per generator (without `grid`: no "masks"), ...the items' other keys}.
    """

    def __init__(self, cfg: Config, grid: tuple[int, int, int] | None, rank: int = 0, world_size: int = 1):
        self.cfg, self.grid, self.rank, self.world_size = cfg, grid, rank, world_size

    def __call__(self, batch: StepItems) -> dict[str, Any]:
        out = {**collate(batch.items), "step": batch.step}
        if self.grid is not None:  # the clips that survived (bad files are dropped) get masks
            out["masks"] = masks_for_step(self.cfg, self.grid, out["video"].shape[0], batch.step, self.rank, self.world_size)
        return out


def train_dataset(cfg: Config) -> Dataset:
    """The training split of the configured source, its clips cropped but not normalised (uint8)."""
    return build_dataset(cfg.data, split="train", train=True, transform=build_transform(cfg.data, train=True, normalise=False))


def build_train_loader(cfg: Config, start_step: int, rank: int, world_size: int,
                       device: torch.device | str = "cpu",
                       grid: tuple[int, int, int] | None = None) -> tuple[DataLoader, Dataset]:
    """The training DataLoader: deterministic step batches from the configured source.

    Batches are `StepCollate`'s: unnormalised clips (normalise them on the device with
    `vjepa.data.transforms.normalise(video, cfg.data.mean, cfg.data.std)`) and, given the token
    `grid`, the step's masks. On CUDA (`device`) batches go to pinned memory and
    `data.num_workers=-1` picks the workers from the machine (`vjepa.data.workers.resolve_workers`).
    """
    dataset = train_dataset(cfg)
    sampler = StepBatchSampler(len(dataset), cfg.data.batch_size, cfg.run.seed, start_step, rank, world_size)
    workers = resolve_workers(cfg.data.num_workers, device)
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=StepCollate(cfg, grid, rank, world_size),
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        # its own generator: starting the iterator draws worker seeds from it, not from the global
        # generator drop path uses, which a resume restores (items are seeded by SeededItems)
        generator=torch.Generator().manual_seed(mix_seed(cfg.run.seed, 11)),
    )
    return loader, dataset
