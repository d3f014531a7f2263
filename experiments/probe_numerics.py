"""A/B: the official attentive-probe numerics against the ones this library used before (issue 18).

Before: the cross-attention output went through `xattn.proj`, LayerNorms used eps 1e-6 and the
linear head was initialised truncated-normal (std 0.02, zero bias). Now (official): no projection,
eps 1e-5, PyTorch's default head init. Both probes train on the same cached features of one encoder,
same seeds and schedule; the script prints top-1 per task, seed and numerics as JSON.

    PYTHONPATH=src python experiments/probe_numerics.py RUN_DIR [data.synthetic.num_train=512 ...] \
        [--epochs 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from vjepa import eval as evaluation
from vjepa.config import apply_overrides
from vjepa.eval import probe_train
from vjepa.models import probe as probe_module
from vjepa.models.vit import init_weights


def before_numerics(module: torch.nn.Module) -> torch.nn.Module:
    """Turn an official-numerics `AttentiveClassifier` into the previous numerics (in place)."""
    for norm in module.modules():
        if isinstance(norm, torch.nn.LayerNorm):
            norm.eps = 1e-6
    xattn = module.pooler.cross_attention_block.xattn
    xattn.proj.requires_grad_(True)
    forward = xattn.forward
    xattn.forward = lambda *args, **kwargs: xattn.proj(forward(*args, **kwargs))
    init_weights(module.linear)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory or checkpoint")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=["motion", "appearance"])
    parser.add_argument("overrides", nargs="*", help="run-config changes, e.g. data.synthetic.num_train=512")
    args = parser.parse_args()
    encoder, cfg = evaluation.load_frozen(args.run)
    cfg = apply_overrides(cfg, args.overrides)
    cache = evaluation.FeatureCache(encoder, cfg)
    official_build = probe_module.build_probe
    results: dict[str, dict[str, list[float]]] = {}
    for numerics in ("official", "before"):
        probe_train.build_probe = (
            official_build
            if numerics == "official"
            else lambda *a, **k: before_numerics(official_build(*a, **k))
        )
        for task in args.tasks:
            for seed in args.seeds:
                result = evaluation.probe_encoder(
                    encoder,
                    cfg,
                    task,
                    "attentive",
                    cache=cache,
                    epochs=args.epochs,
                    seed=seed,
                    eval_split="test",
                )
                results.setdefault(task, {}).setdefault(numerics, []).append(round(result["top1"], 2))
    probe_train.build_probe = official_build
    summary = {
        task: {n: {"top1": v, "mean": round(statistics.mean(v), 2)} for n, v in by.items()}
        for task, by in results.items()
    }
    print(
        json.dumps(
            {
                "run": str(args.run),
                "epochs": args.epochs,
                "seeds": args.seeds,
                "num_train": len(cache.get("train", True)),
                "overrides": args.overrides,
                "results": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
