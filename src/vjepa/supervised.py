"""The supervised baseline (the ceiling): `vjepa finetune --from scratch` at a pretraining config.

Same encoder, data pipeline, batch size, step count, optimiser groups and LR / weight-decay
schedules as pretraining (`cfg.optim`), so it spends the same compute as a pretraining run of the
same config; only the loss differs (cross-entropy on `task` instead of feature prediction). It is
`vjepa.finetune.finetune` from random weights with plain settings (no layer decay, no label
smoothing, no evaluation), so it resumes like a fine-tune and `vjepa.load` reads its run directory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vjepa.config import Config
from vjepa.finetune import FinetuneSettings, finetune


def train_supervised(cfg: Config, task: str = "motion") -> dict[str, Any]:
    """Train encoder + attentive head end to end on `task` labels for `cfg.optim.steps` steps.

    Args:
        cfg: the pretraining Config to match (model, data, optim; run.out_dir is the run directory).
        task: motion | appearance (built-in set) or label (real video with class folders).

    Returns:
        dict with steps, final_loss, train_top1 (percent, last logging window), seconds, out_dir.
    """
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from="", init_from_arch=False))
    settings = FinetuneSettings(source="random init", scratch=True, task=task, layer_decay=1.0,
                                label_smoothing=0.0, eval_split="")
    return finetune(cfg, settings)
