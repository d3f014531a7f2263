"""Does `torch.compile` make our step faster? Ours eager (packed contexts), ours eager in the padded
batched layout, ours compiled (`run.compile=true`: every block compiled with dynamic shapes;
compiled runs keep the padded batched layout) and the official step, timed interleaved in one
process; prints JSON.

    python benchmarks/compile_step.py --preset demo64 --dtype fp32 --threads 1 --json out.json

The warm-up steps include compilation (about a minute per compiled variant on a CPU). See
docs/performance.md.
"""

import argparse
import copy
import json

import torch

from vjepa.bench import Variant, environment, official_structure, run_variants
from vjepa.config import ConfigError, check_output_path, preset
from vjepa.distributed import resolve_device
from vjepa.jepa import StepOptions


def variants(name: str, dtype: str, batch_size: int | None) -> list[Variant]:
    """Ours eager (packed, padded), ours compiled and the official step (same dtype) for preset `name`."""
    cfg = preset(name)
    cfg.run.dtype = dtype
    cfg.data.batch_size = batch_size or cfg.data.batch_size
    compiled = copy.deepcopy(cfg)
    compiled.run.compile = True
    return [Variant("ours", cfg), Variant("ours_padded", cfg, StepOptions(pack=False)),
            Variant("ours_compiled", compiled), official_structure(cfg, dtype)]


def clips_ratios(results: list[dict]) -> dict[str, float]:
    """Clips/s ratios: compiled against both eager layouts, and ours (eager, compiled) against the
    official step ("official" in fp32, "official_bf16" under bf16 autocast: the last record)."""
    by_name = {r["name"]: r for r in results}
    official = results[-1]["name"]
    pairs = [("ours_compiled", "ours_padded"), ("ours_compiled", "ours"), ("ours", official), ("ours_compiled", official)]
    return {f"{a}_vs_{b}": by_name[a]["clips_per_s"] / by_name[b]["clips_per_s"] for a, b in pairs}


def main() -> None:
    """Parse the flags, time the four variants, print (and optionally write) the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo64")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    try:  # before minutes of timing
        preset(args.preset)
        if args.json:
            check_output_path(args.json, "--json")
    except ConfigError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results = run_variants(variants(args.preset, args.dtype, args.batch_size), device, args.steps, args.warmup)
    report = {"environment": environment(device), "results": results, "clips_per_s_ratios": clips_ratios(results)}
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
