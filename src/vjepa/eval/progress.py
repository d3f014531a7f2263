"""Probe training progress: the step order, loss history, checkpoints every N steps and exact resume.

A probe's training is a pure function of its settings: epoch e visits the clips in the e-th
permutation of a generator seeded with `probe_cfg.seed`, and (streaming) clip i of epoch e is
augmented from a seed of (seed, e, i). So resuming is "restore the probe, the optimizer and the
step, replay the permutations, skip the steps done": the result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vjepa.config import ConfigError, ProbeConfig, to_dict

# settings that do not change what a probe learns (where it runs, how fast, where it writes)
_FREE = ("device", "num_workers", "feature_batch_size", "cache_dir", "checkpoint_every", "state_file", "preset")


def epoch_batches(num_items: int, probe_cfg: ProbeConfig, start_step: int = 0) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (epoch, step, clip indices [b]) of every training step from `start_step` on.

    Each epoch draws one permutation from a generator seeded with `probe_cfg.seed` (earlier epochs'
    permutations are replayed when resuming, so the order is the uninterrupted run's).
    """
    generator = torch.Generator().manual_seed(probe_cfg.seed)
    step = 0
    for epoch in range(probe_cfg.epochs):
        for index in torch.randperm(num_items, generator=generator).split(probe_cfg.batch_size):
            if step >= start_step:
                yield epoch, step, index
            step += 1


class EpochSeeded(Dataset):
    """A dataset whose item i of epoch e draws its randomness (augmentation) from a seed of (seed, e, i),
    whichever worker loads it and whatever was loaded before: what makes streaming resumable exactly."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 100_003 + int(index)) % 2**62)
            return self.dataset[index]


class ProbeProgress:
    """Loss history of a probe's training, its checkpoint file and its progress bar.

    Args:
        probe_cfg: the settings (`checkpoint_every` steps, `state_file`); the file is refused when
            it was written with settings that change what the probe learns.
        probe: the probe being trained.
        optimizer: its optimizer.
        steps_per_epoch: training steps in one epoch (for the bar and the resume message).
        show: a tqdm bar of the epochs (stderr), its postfix the last epoch's mean loss.
    """

    def __init__(self, probe_cfg: ProbeConfig, probe: nn.Module, optimizer: torch.optim.Optimizer,
                 steps_per_epoch: int = 1, show: bool = False) -> None:
        from tqdm.auto import tqdm

        self.probe_cfg, self.probe, self.optimizer = probe_cfg, probe, optimizer
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.step, self.epoch, self.history, self.current = 0, 0, [], []
        path = Path(probe_cfg.state_file) if probe_cfg.state_file else None
        if path is not None and path.is_file():
            self._resume(path)
        self.bar = tqdm(total=probe_cfg.epochs, initial=min(self.step // self.steps_per_epoch, probe_cfg.epochs),
                        desc="probe", unit="epoch", disable=not show)

    def _settings(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self.probe_cfg).items() if k not in _FREE}

    def _resume(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        changed = sorted(k for k, v in self._settings().items() if state["settings"].get(k) != v)
        if changed:
            raise ConfigError(f"{path} was written by a probe with other settings ({', '.join(changed)}); "
                              "delete it or restore them")
        self.probe.load_state_dict(state["probe"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:  # e.g. a file from a version whose optimiser grouped parameters otherwise
            raise ConfigError(f"{path}: its optimiser state does not fit this probe's ({err}); delete it to "
                              "start the probe over") from None
        self.step, self.epoch, self.history, self.current = (state["step"], state["epoch"], state["history"],
                                                            state["current"])
        epochs, total = self.probe_cfg.epochs, self.probe_cfg.epochs * self.steps_per_epoch
        where = (f"epoch {self.step // self.steps_per_epoch + 1} of {epochs}" if self.step < total
                 else f"all {epochs} epochs done")
        if _is_main():  # one line, not one per rank under torchrun
            print(f"resumed probe training from {path}: step {self.step} of {total}, {where}", flush=True)

    def record(self, epoch: int, loss: float | None) -> None:
        """Count one finished step of `epoch` with its loss (None: a step without clips, every one of
        its files unreadable); checkpoint every `checkpoint_every` steps."""
        if epoch != self.epoch:
            self._close_epoch()
            self.epoch = epoch
        if loss is not None:
            self.current.append(loss)
        self.step += 1
        if self.step % self.steps_per_epoch == 0:
            self.bar.update(1)
            if self.current:
                self.bar.set_postfix(loss=f"{sum(self.current) / len(self.current):.4f}")
        every = self.probe_cfg.checkpoint_every
        if every and self.probe_cfg.state_file and self.step % every == 0 and _is_main():
            self.save()

    def _close_epoch(self) -> None:
        if self.current:
            self.history.append(sum(self.current) / len(self.current))
            self.current = []

    def finish(self) -> list[float]:
        """The mean training loss of each epoch (and the bar closed)."""
        self._close_epoch()
        self.bar.close()
        return self.history

    def save(self) -> None:
        """Write the probe, optimizer, step and history atomically to `state_file`."""
        from vjepa.checkpoint import atomic_write

        state = {"probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "epoch": self.epoch, "history": self.history, "current": self.current, "settings": self._settings()}
        atomic_write(self.probe_cfg.state_file, lambda tmp: torch.save(state, tmp))


def _is_main() -> bool:
    """Rank 0 (or a single process): the rank that writes the state file (all ranks hold the same)."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def with_state_file(probe_cfg: ProbeConfig, output: str | Path) -> ProbeConfig:
    """`probe_cfg` with its state file beside `output` (<output>.state.pt) when it checkpoints."""
    if not probe_cfg.checkpoint_every or probe_cfg.state_file:
        return probe_cfg
    return dataclasses.replace(probe_cfg, state_file=str(Path(output).with_suffix(".state.pt")))
