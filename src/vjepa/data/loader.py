"""The training loader: deterministic step batches, so the clips of step s are a pure function of
(run.seed, s) and resuming at any step is exact (any number of processes, any worker count).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vjepa.config import Config
from vjepa.data import build_dataset, collate
from vjepa.data.workers import resolve_workers
from vjepa.seeds import mix_seed


class StepBatchSampler(Sampler):
    """Yields, for steps start_step, start_step+1, ..., this rank's list of (index, item_seed).

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

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (index, item_seed) pairs for global step `step`."""
        global_batch = self.batch_size * self.world_size
        items = []
        for k in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):
            flat = step * global_batch + k
            index = int(self._perm(flat // self.num_items)[flat % self.num_items])
            items.append((index, mix_seed(self.seed, step, k)))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class SeededItems(Dataset):
    """Wraps a dataset so item (index, seed) is drawn with the global RNG seeded by `seed`.

    Augmentations that use torch's global RNG become reproducible, in any worker, without
    disturbing the caller's RNG state.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def build_train_loader(cfg: Config, start_step: int, rank: int, world_size: int,
                       device: torch.device | str = "cpu") -> tuple[DataLoader, Dataset]:
    """The training DataLoader: deterministic step batches from the configured source.

    On CUDA (`device`) batches go to pinned memory and `data.num_workers=-1` picks the workers
    from the machine (`vjepa.data.workers.resolve_workers`).
    """
    dataset = build_dataset(cfg.data, split="train", train=True)
    sampler = StepBatchSampler(len(dataset), cfg.data.batch_size, cfg.run.seed, start_step, rank, world_size)
    workers = resolve_workers(cfg.data.num_workers, device)
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        # its own generator: starting the iterator draws worker seeds from it, not from the global
        # generator drop path uses, which a resume restores (items are seeded by SeededItems)
        generator=torch.Generator().manual_seed(mix_seed(cfg.run.seed, 11)),
    )
    return loader, dataset
