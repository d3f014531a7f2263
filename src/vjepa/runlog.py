"""The run log: `metrics.jsonl` (one JSON record per logged step) and optional TensorBoard output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vjepa.checkpoint import atomic_write, write_failure
from vjepa.config import ConfigError


@dataclass
class RunLog:
    """Appends metrics to metrics.jsonl (and TensorBoard if enabled) on rank 0 only."""

    out_dir: Path
    enabled: bool = True
    tensorboard: bool = False
    _writer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.enabled and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard=true needs the tensorboard package: pip install 'vjepa[tensorboard]'") from None
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (must contain `step`)."""
        if not self.enabled:
            return
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise write_failure(err, path) from None
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, record["step"])
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard output."""
        if self._writer is not None:
            self._writer.close()


def trim_metrics(out_dir: Path, step: int) -> int:
    """Drop metrics.jsonl records past `step` (a resumed run logs those steps again). Returns how many."""
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            keep = int(json.loads(line).get("step", 0)) <= step
        except (ValueError, AttributeError):  # a line cut short by a kill: drop it
            keep = False
        if keep:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(kept)))
    return len(lines) - len(kept)
