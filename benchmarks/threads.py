"""Train-step throughput by OpenMP wait policy and thread count, on a quiet and on a busy machine.

    OMP_NUM_THREADS= python benchmarks/threads.py --preset demo64 --dtype fp32 --steps 4
    python benchmarks/threads.py --preset demo32 --threads 1 2 --rounds 2 --json threads.json

For each case a fresh process times `vjepa.bench.benchmark` (the wait policy is read once, when
torch starts OpenMP, so it cannot change inside one process): policy "default" (libgomp's own: spin
a while, then sleep; what `python -c "import torch"` gets) or "PASSIVE" (what the `vjepa` CLI sets
unless the user chose a policy), at each thread count. "busy" repeats every case with one
neighbour process started by this script (a one-thread fp32 matmul loop, stopped at the end), the
situation in which spinning threads collapse. Cases alternate within each round; the JSON holds
every round's clips/s and the medians. Absolute figures need an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys, torch  # torch first: the CLI's PASSIVE default is not applied here
from vjepa.bench import benchmark
from vjepa.config import apply_overrides, preset
cfg = apply_overrides(preset(sys.argv[1]), [f"run.dtype={sys.argv[2]}", f"run.threads={sys.argv[3]}"])
report = benchmark(cfg, steps=int(sys.argv[4]), warmup=1, device="cpu")
print(json.dumps({"clips_per_s": report["clips_per_s"], "threads": report["threads"]}))
"""

NEIGHBOUR = """
import os, torch
torch.set_num_threads(1)
parent, a = os.getppid(), torch.randn(1024, 1024)
while os.getppid() == parent:  # stops by itself if this script dies without terminating it
    a = torch.tanh(a @ a)
"""


def run_case(preset: str, dtype: str, threads: int, policy: str, steps: int) -> float:
    """clips/s of one fresh process with the given OpenMP wait policy and thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, preset, dtype, str(threads), str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["clips_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from vjepa.config import PRESETS  # no torch import: the children start OpenMP with their own settings

    parser.add_argument("--preset", default="demo64", choices=list(PRESETS))
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    cases = [(t, p) for t in args.threads for p in args.policies]
    results: dict[str, list[float]] = {}
    for load in ("quiet", "busy"):
        neighbour = None
        if load == "busy":
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={**os.environ, "OMP_NUM_THREADS": "1"})
            time.sleep(1.0)
        try:
            for _ in range(args.rounds):
                for threads, policy in cases:
                    key = f"{load}/threads={threads}/{policy}"
                    results.setdefault(key, []).append(run_case(args.preset, args.dtype, threads, policy, args.steps))
                    print(key, round(results[key][-1], 3), file=sys.stderr, flush=True)
        finally:
            if neighbour is not None:
                neighbour.terminate()
                neighbour.wait()
    report = {
        "preset": args.preset, "dtype": args.dtype, "steps": args.steps, "cpu_count": os.cpu_count(),
        "clips_per_s": results,
        "median_clips_per_s": {k: statistics.median(v) for k, v in results.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
