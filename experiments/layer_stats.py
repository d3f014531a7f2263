"""Where in the encoder do a run's features lose rank? Per-layer collapse statistics.

For one run, reads the run's initial weights (`init`), the trained context encoder (`online`) and
the EMA target (`target`), feeds the same clips through each, and measures the tokens after the
tubelet embedding (before positions are added), after every block, and after the final norm:
- effective rank and within-clip share (`vjepa.jepa.collapse_stats`, on layer-normed tokens, as
  the training monitor does);
- the mean token norm (the residual stream's scale).

This is how the demo's tubelet embedding was found to collapse first (README "Results").

    python experiments/layer_stats.py runs/demo
    python experiments/layer_stats.py RUN/step_600.pt --encoders init online --clips 64 --split val

Prints one Markdown table per statistic and writes <run dir>/layer_stats.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vjepa.data import build_dataset
from vjepa.jepa import collapse_stats, layer_norm_targets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from target_vs_online import encoders as run_encoders  # a sibling script: vjepa.load of init/online/target

ENCODERS = ("init", "online", "target")


def layer_outputs(encoder: torch.nn.Module, video: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, tokens [B, N, D]) after the tubelet embedding, each block and the final norm."""
    with torch.no_grad():
        outputs = [("embed", encoder.patch_embed(video).float())]
    hooks = []
    for index, block in enumerate(encoder.blocks):
        hooks.append(block.register_forward_hook(
            lambda m, i, o, index=index: outputs.append((f"block {index + 1}", o.float()))))
    try:
        with torch.no_grad():
            final = encoder(video)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs + [("output", final.float())]


def layer_stats(encoder: torch.nn.Module, video: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: name, effective_rank, within_clip and token_norm for clips [B, C, T, H, W]."""
    rows = []
    for name, tokens in layer_outputs(encoder, video):
        stats = collapse_stats(layer_norm_targets(tokens))
        rows.append({"layer": name, "effective_rank": stats.effective_rank, "within_clip": stats.within_clip,
                     "token_norm": tokens.norm(dim=-1).mean().item()})
    return rows


def clips(cfg, split: str, count: int) -> torch.Tensor:
    """The first `count` clips of `split` as the evaluation pipeline gives them (first view): [B, C, T, H, W]."""
    dataset = build_dataset(cfg.data, split=split, train=False)
    if count > len(dataset):
        raise SystemExit(f"--clips {count}: the {split} split has {len(dataset)} clips")
    video = torch.stack([dataset[i]["video"] for i in range(count)])  # [B, views, C, T, H, W]
    return video[:, 0]


def main(argv: list[str] | None = None) -> int:
    """Measure every layer of the chosen encoders of one run; print tables, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory (latest.pt) or checkpoint file")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    p.add_argument("--clips", type=int, default=32, help="clips fed through each encoder")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="JSON output (default: <run dir>/layer_stats.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    nets, cfg, _, step = run_encoders(run)
    video = clips(cfg, args.split, args.clips)
    results = {name: layer_stats(nets[name], video) for name in args.encoders}
    layers = [row["layer"] for row in results[args.encoders[0]]]
    print(f"{run} at step {step}, {args.clips} {args.split} clips")
    for key, fmt in (("effective_rank", "{:.1f}"), ("within_clip", "{:.2f}"), ("token_norm", "{:.1f}")):
        print(f"\n{key}\n\n| encoder | " + " | ".join(layers) + " |")
        print("|---|" + "---|" * len(layers))
        for name, rows in results.items():
            print(f"| {name} | " + " | ".join(fmt.format(row[key]) for row in rows) + " |")
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "layer_stats.json"
    payload = {"command": " ".join(sys.argv), "run": str(run), "step": step, "clips": args.clips,
               "split": args.split, "encoders": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
