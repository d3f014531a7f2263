"""Where does a short run's target-encoder probe score come from? Init, online, target and a blend.

After a few hundred steps the EMA target encoder still gives a large weight to its random init
(`vjepa.jepa.ema_init_share`: 0.70 after `demo64`'s 300 steps). This probes, on one run and with
one probe protocol, four encoders of the same shape:
- `init`: the run's own initial weights (no training);
- `online`: the trained context encoder;
- `target`: the EMA target encoder (what the paper evaluates);
- `blend`: share x init + (1 - share) x online, a plain weight interpolation holding the same
  share of init as the target; if it matches the target, the EMA's gain is the interpolation.

    python experiments/target_vs_online.py runs/paper_tables/runs/jepa_s0
    python experiments/target_vs_online.py RUN --task appearance --max-train-clips 1024 --eval-split test
    python experiments/target_vs_online.py RUN --encoders init target --max-train-clips 0   # all train clips

Prints a Markdown table and writes <run>/target_vs_online.json (or --out).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vjepa.api import checkpoint_path, load
from vjepa.checkpoint import load_checkpoint
from vjepa.eval import class_names, probe_encoder
from vjepa.jepa import ema_init_share

ENCODERS = ("init", "online", "target", "blend")


def blend(first: torch.nn.Module, second: torch.nn.Module, share: float) -> torch.nn.Module:
    """A copy of `first` with every floating tensor set to share x first + (1 - share) x second."""
    mixed = copy.deepcopy(first)
    other = second.state_dict()
    state = {k: (share * v + (1 - share) * other[k]) if v.is_floating_point() else v
             for k, v in first.state_dict().items()}
    mixed.load_state_dict(state)
    return mixed


def encoders(run: Path) -> tuple[dict[str, torch.nn.Module], Any, float, int]:
    """The four encoders of a run (built and loaded by `vjepa.load`), its config, the target's init
    share and the checkpoint step. Exits naming the file when it has no stored config (its init is
    unknown) or no target encoder."""
    path = checkpoint_path(run)
    state = load_checkpoint(path, mmap=True)  # only checked here: the weights come through vjepa.load
    if "config" not in state:
        raise SystemExit(f"{path} has no stored config (not a vjepa training checkpoint): its init is unknown")
    if "target_encoder" not in state:
        raise SystemExit(f"{path} has no target_encoder (a pixel or supervised run): nothing to compare")
    step = int(state["step"])
    del state
    loaded = [load(path, which=which, device="cpu", with_predictor=False) for which in ("init", "encoder", "target_encoder")]
    (init, online, target), cfg = [encoder.model for encoder in loaded], loaded[0].config
    share = ema_init_share(step, cfg.optim)
    nets = {"init": init, "online": online, "target": target, "blend": blend(init, online, share)}
    return nets, cfg, share, step


def main(argv: list[str] | None = None) -> int:
    """Probe the four encoders of one run and print / write the comparison."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory (latest.pt) or checkpoint file")
    p.add_argument("--task", default="motion")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-train-clips", type=int, default=1024)
    p.add_argument("--eval-split", default="test")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS), help="which to probe")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="JSON output (default: <run dir>/target_vs_online.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    nets, cfg, share, step = encoders(run)
    rows = {}
    for name in args.encoders:
        start = time.perf_counter()
        result = probe_encoder(nets[name], cfg, args.task, "attentive", cache=None, epochs=args.epochs,
                               max_train_clips=args.max_train_clips, eval_split=args.eval_split)
        rows[name] = {"top1": result["top1"], "train_top1": result["train_top1"],
                      "per_class_top1": result["per_class_top1"], "confusion": result["confusion"],
                      "seconds": round(time.perf_counter() - start, 1)}
        print(f"  {name:<7} {result['top1']:5.1f}", flush=True)
    payload = {"command": " ".join(sys.argv), "run": str(run), "step": step, "target_init_share": share,
               "task": args.task, "max_train_clips": args.max_train_clips, "eval_split": args.eval_split,
               "epochs": args.epochs, "encoders": rows}
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "target_vs_online.json"
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\n{run} at step {step} (target init share {share:.2f}), {args.task}, {args.eval_split} split:\n")
    print("| " + " | ".join(args.encoders) + " |")
    print("|" + "---|" * len(args.encoders))
    print("| " + " | ".join(f"{rows[n]['top1']:.1f}" for n in args.encoders) + " |")
    names = class_names(args.task, len(rows[args.encoders[0]]["per_class_top1"]))
    print("\nper class:\n\n| class | " + " | ".join(args.encoders) + " |")
    print("|---|" + "---|" * len(args.encoders))
    for k, label in enumerate(names):
        cells = [rows[n]["per_class_top1"][k] for n in args.encoders]
        print(f"| {label} | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
