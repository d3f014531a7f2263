"""Time the V-JEPA training step and print JSON (clips/s, step time, FLOPs, MFU, memory).

    python benchmarks/train_step.py --preset demo64 --dtype bf16
    python benchmarks/train_step.py --preset demo64 --compare --json out.json   # + the official step (fp32, bf16)
    python benchmarks/train_step.py --preset demo64 --ablation         # official -> ours, one change at a time
    python benchmarks/train_step.py --preset vits16 --dtype bf16 data.batch_size=4

Same options as `vjepa bench` (this script calls it); runs on CUDA when one is present.
Ratios between variants come from one process with interleaved steps; absolute numbers need a
quiet machine. See docs/performance.md.
"""

import sys

from vjepa.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
