"""Does a run's predictor beat guesses that need no learning? Its L1 loss against three oracles.

The V-JEPA loss alone does not say whether the predictor places its predictions: much of it can
be removed by predicting one vector per clip. On training batches of a run (its own data, masks
and regression targets) this prints the prediction loss of
- `model`: the run's predictor (what training logs as `loss`);
- `clip_constant`: each clip's per-dimension median of its hidden targets, one vector per clip
  (an oracle: it reads the hidden targets; the best single vector per clip under L1);
- `position_mean`: the mean target at each token position over the sampled clips (no clip info);
- `visible_plus_position`: the mean target of the clip's *visible* tokens plus the position's
  offset from the overall mean: a guess from the context alone, no training;
- `zero`: predict 0.

If `model` is above `visible_plus_position`, the predictor has not yet learned what a fixed
average of its context already gives (README "Results").

    python experiments/predictor_oracles.py runs/paper_tables/runs/jepa_s0
    python experiments/predictor_oracles.py runs/demo/step_600.pt --batches 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vjepa.api import checkpoint_path
from vjepa.checkpoint import load_checkpoint
from vjepa.config import Config, config_from_stored
from vjepa.data.loader import build_train_loader
from vjepa.data.transforms import normalise
from vjepa.jepa import JEPA, sample_losses
from vjepa.masks import num_generators
from vjepa.models.vit import gather_tokens
from vjepa.precision import autocast

ORACLES = ("clip_constant", "position_mean", "visible_plus_position", "zero")


def load_model(path: Path) -> tuple[JEPA, Config, int]:
    """The JEPA model (encoder, predictor, target encoder) of a training checkpoint, its config, its step."""
    state = load_checkpoint(path)
    missing = [k for k in ("config", "encoder", "predictor", "target_encoder") if k not in state]
    if missing:
        raise SystemExit(f"{path} lacks {', '.join(missing)}: not a V-JEPA (feature-prediction) training checkpoint")
    cfg = config_from_stored(state["config"], str(path))
    model = JEPA(cfg, num_generators(cfg.mask))
    for name in ("encoder", "predictor", "target_encoder"):
        getattr(model, name).load_state_dict(state[name])
    return model.eval(), cfg, int(state["step"])


def weighted_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of [B, K, D] counting only valid [B, K] rows: [B, 1, D]."""
    w = torch.ones_like(x[..., :1]) if valid is None else valid.to(x.dtype)[..., None]
    return (x * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)


def oracle_losses(model: JEPA, cfg: Config, batches: int, start_step: int) -> dict[str, float]:
    """Mean prediction loss of the model and of every oracle over `batches` training batches."""
    loader, _ = build_train_loader(cfg, start_step, 0, 1, grid=model.encoder.grid)  # batches carry their masks
    device = torch.device("cpu")
    records = []  # (model loss, regression targets [B, N, D], masks)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            video, masks = normalise(batch["video"], cfg.data.mean, cfg.data.std), batch["masks"]
            with autocast(device, cfg.run.dtype):
                out = model(video, masks)
            targets = model.regression_targets(out["targets"].float())
            records.append((out["prediction_loss"].item(), targets, masks))
    every = torch.cat([t for _, t, _ in records])  # [batches*B, N, D]
    position_mean = every.mean(dim=0, keepdim=True)  # [1, N, D]
    overall = every.mean(dim=(0, 1), keepdim=True)  # [1, 1, D]
    exp = cfg.objective.loss_exp
    sums = {"model": 0.0, **{k: 0.0 for k in ORACLES}}
    for loss, targets, masks in records:
        sums["model"] += loss
        per_position = position_mean.expand(targets.shape[0], -1, -1)
        for m in masks:
            hidden = gather_tokens(targets, m.target_idx)  # [B, Kt, D]
            visible_mean = weighted_mean(gather_tokens(targets, m.context_idx), m.context_valid)
            position = gather_tokens(per_position, m.target_idx)
            guesses = {
                "clip_constant": hidden.median(dim=1, keepdim=True).values.expand_as(hidden),
                "position_mean": position,
                "visible_plus_position": visible_mean + position - overall,
                "zero": torch.zeros_like(hidden),
            }
            for name, guess in guesses.items():
                sums[name] += sample_losses(guess, hidden, m.target_valid, exp).mean().item() / len(masks)
    return {k: v / len(records) for k, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the model's and the oracles' losses on one run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory (latest.pt) or checkpoint file")
    p.add_argument("--batches", type=int, default=6, help="training batches to average over")
    p.add_argument("--start-step", type=int, default=100_000, help="data and masks of these steps (past training)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = checkpoint_path(Path(args.run))
    model, cfg, step = load_model(path)
    losses = oracle_losses(model, cfg, args.batches, args.start_step)
    print(f"{path} at step {step}: prediction loss on {args.batches} training batches of {cfg.data.batch_size}\n")
    print("| " + " | ".join(losses) + " |")
    print("|" + "---|" * len(losses))
    print("| " + " | ".join(f"{v:.3f}" for v in losses.values()) + " |")
    if args.json:
        payload = {"command": " ".join(sys.argv), "checkpoint": str(path), "step": step,
                   "batches": args.batches, "start_step": args.start_step, "losses": losses}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
