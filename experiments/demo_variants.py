"""Does the demo encoder learn motion? Demo-sized V-JEPA runs on variants of the built-in data and
masks, each probed frozen against a random-init encoder of the same shape on the same data.

The demo here is `demo64`, the 64 px 16-frame recipe that was the `demo` preset when these were
measured (2026-11-29). Every variant trains the demo architecture for the same steps (600, as the README table was
measured, unless the variant says otherwise) and batch, then `quick_probe`s
(attentive probe, 100 epochs, 1024 training clips, the 256 validation clips) the target encoder
and a random-init encoder of the same shape on the same data, on motion and appearance. Also
reported: the collapse monitor at the end (effective rank, the within-clip share of the target
features' variance).

    python experiments/demo_variants.py                        # every variant (~20 min each on one core)
    python experiments/demo_variants.py --variants demo short  # some of them
    python experiments/demo_variants.py --quick                # smoke test: debug preset, seconds

Runs go to --out/<variant>; finished runs are not retrained, so re-running only adds what is
missing. The table is printed and written to --out/demo_variants.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vjepa.config import apply_overrides, load_yaml, preset
from vjepa.eval import (
    QUICK_EVAL_SPLIT,
    QUICK_TRAIN_CLIPS,
    FeatureCache,
    probe_encoder,
    quick_probe,
)
from vjepa.models.factory import initial_encoder
from vjepa.precision import freeze
from vjepa.train import train

# The demo data before 2026-11-29: one sprite, 1-2 px per frame, slow turns and resizing.
SLOW = ["data.synthetic.max_sprites=1", "data.synthetic.translate_speed=[1.0,2.0]",
        "data.synthetic.rotate_speed=[0.1,0.2]", "data.synthetic.scale_speed=[0.025,0.045]"]
FOUR = [*SLOW, "data.synthetic.max_sprites=4", "data.synthetic.sprite_size=[0.3,0.5]"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "slow": ("1 sprite, 1-2 px/frame (the earlier demo data)", SLOW),
    "four": ("1-4 sprites of 30-50% of the frame", FOUR),
    "big": ("1 sprite of 45-75% of the frame", [*SLOW, "data.synthetic.sprite_size=[0.45,0.75]"]),
    "short": ("1-4 sprites, short-range mask generator only", FOUR),  # generators set in `config`
    "causal": ("1-4 sprites, causal masks (context: first 6 frames)", [*FOUR, "mask.kind=causal"]),
    "frozen": ("1-4 sprites, frozen random target (EMA momentum 1); online encoder probed",
               [*FOUR, "optim.ema=[1.0,1.0]"]),
    "fast": ("1-3 sprites, 2.5-4 px/frame, faster turns",
             [*SLOW, "data.synthetic.max_sprites=3", "data.synthetic.translate_speed=[2.5,4.0]",
              "data.synthetic.rotate_speed=[0.2,0.35]"]),
    "demo": ("the demo preset: 1-3 sprites, 4-6 px/frame, fast turns and resizing", []),
    "demo_short": ("the demo preset, short-range mask generator only", []),  # generators set in `config`
    "demo_300": ("the demo preset as shipped: demo data, 300 steps", ["optim.steps=300", "optim.warmup_steps=30"]),
}
SHORT_RANGE_ONLY = ("short", "demo_short")


def config(args: argparse.Namespace, variant: str):
    """The run config of one variant."""
    steps = [f"optim.steps={args.steps}", f"optim.warmup_steps={max(1, args.steps // 10)}"] if args.steps else []
    cfg = apply_overrides(preset(args.preset), steps + VARIANTS[variant][1] + args.overrides)
    if variant in SHORT_RANGE_ONLY:
        cfg.mask.generators = cfg.mask.generators[:1]
    cfg.run.out_dir = str(Path(args.out) / variant)
    cfg.run.threads, cfg.run.probe_after, cfg.run.progress = args.threads, False, False
    return cfg


def probe_random(run_dir: str, epochs: int) -> dict[str, float]:
    """Top-1 of a random-init encoder of the run's shape, on the run's data (same probe settings)."""
    cfg = load_yaml(Path(run_dir) / "config.yaml", stored=True)
    encoder = freeze(initial_encoder(cfg))
    cache = FeatureCache(encoder, cfg)
    return {task: probe_encoder(encoder, cfg, task, "attentive", cache=cache, epochs=epochs,
                                max_train_clips=QUICK_TRAIN_CLIPS, eval_split=QUICK_EVAL_SPLIT)["top1"]
            for task in ("motion", "appearance")}


def run_variant(args: argparse.Namespace, variant: str) -> dict:
    """Train (unless finished), then probe the trained and the random-init encoder."""
    cfg = config(args, variant)
    out = Path(cfg.run.out_dir)
    result_file = out / "demo_variant.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    start = time.perf_counter()
    summary = train(cfg)
    train_s = time.perf_counter() - start
    which = "encoder" if variant == "frozen" else "target_encoder"
    trained = {task: quick_probe(out, task=task, epochs=args.probe_epochs, which=which, verbose=False)["top1"]
               for task in ("motion", "appearance")}
    result = {"variant": variant, "description": VARIANTS[variant][0], "train_seconds": round(train_s),
              "steps": cfg.optim.steps, "final_loss": summary["final_loss"],
              "rank_start": summary.get("effective_rank_start"), "rank_end": summary.get("effective_rank_end"),
              "within_clip_start": summary.get("within_clip_start"), "within_clip_end": summary.get("within_clip_end"),
              "trained": trained, "random": probe_random(str(out), args.probe_epochs)}
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(results: list[dict]) -> str:
    """One row per variant: probes of trained vs random init, loss, rank and within-clip share."""
    header = ("| variant | data / masks | motion: trained / random | appearance: trained / random | "
              "final loss | eff. rank start -> end | within-clip share start -> end | train (s) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, z = r["trained"], r["random"]
        lines.append(
            f"| {r['variant']} | {r['description']} | {t['motion']:.1f} / {z['motion']:.1f} | "
            f"{t['appearance']:.1f} / {z['appearance']:.1f} | {r['final_loss']:.3f} | "
            f"{r['rank_start']:.1f} -> {r['rank_end']:.1f} | "
            f"{r['within_clip_start']:.2f} -> {r['within_clip_end']:.2f} | {r['train_seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen variants and print / write the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--out", default="runs/demo_variants")
    p.add_argument("--preset", default="demo64", help="starting preset (demo64: the 64 px demo these variants came from)")
    p.add_argument("--steps", type=int, default=600,
                   help="pretraining steps, warmup a tenth (600: as the README table was measured; 0: the preset's)")
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: run one process per core)")
    p.add_argument("--quick", action="store_true", help="smoke test: debug preset, 4 steps, 2 probe epochs")
    p.add_argument("overrides", nargs="*", help="config overrides for every variant")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.steps, args.probe_epochs = "debug", 4, 2
    torch.set_num_threads(args.threads)
    results = [run_variant(args, v) for v in args.variants]
    table = markdown(results)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "demo_variants.md").write_text(table + f"\nCommand: `{' '.join(sys.argv)}`\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
