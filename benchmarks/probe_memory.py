"""Peak memory and speed of streaming vs cached probes at two dataset sizes.

Each (mode, size) runs in a fresh process so its peak RSS is its own: the debug-size encoder (random
init) and an attentive probe on `size` built-in synthetic training clips (32 px, 8 frames, 64 tokens
of width 64), one epoch, scored on 64 test clips. Modes:

- memory: tokens cached in RAM (`extract_features`, the small-set default);
- disk: tokens written batch by batch to a .npy cache and read memory-mapped (`--cache-dir`);
- streaming: the encoder runs on every batch, nothing is cached (`--stream`).

Peak RSS is the kernel's high-water mark (VmHWM); anon/file split the peak of sampled RssAnon /
RssFile (every 20 ms): memory-mapped cache pages are file-backed and reclaimable. clips/s counts
training clips through encoder and probe (for the cached modes the one encoding pass plus the epoch).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/probe_memory.py --sizes 1000 8000 \\
        --out probe_memory.json

(`--out` appends to an existing file, so sizes can run one invocation each.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODES = ("memory", "disk", "streaming")


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class PeakSampler(threading.Thread):
    """Samples RssAnon and RssFile every 20 ms and keeps their peaks (kB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = self.file = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.anon, self.file = max(self.anon, _status_kb("RssAnon")), max(self.file, _status_kb("RssFile"))


def run_one(mode: str, size: int, epochs: int) -> dict:
    """One probe in this process; returns its figures."""
    import torch

    from vjepa.config import apply_overrides, preset
    from vjepa.eval import probe_encoder
    from vjepa.models.factory import build_encoder
    from vjepa.precision import freeze

    torch.set_num_threads(1)
    cfg = apply_overrides(preset("debug"), [f"data.synthetic.num_train={size}", "data.synthetic.num_test=64"])
    torch.manual_seed(0)
    encoder = freeze(build_encoder(cfg))
    sampler = PeakSampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as cache:
        settings = {"streaming": mode == "streaming", "cache_dir": cache if mode == "disk" else ""}
        start = time.perf_counter()
        result = probe_encoder(encoder, cfg, "motion", "attentive", epochs=epochs, batch_size=32, warmup_epochs=0,
                               feature_batch_size=64, **settings)
        seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    return {"mode": mode, "clips": size, "epochs": epochs, "seconds": round(seconds, 2),
            "clips_per_s": round(size * epochs / seconds, 1), "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
            "peak_anon_mb": round(sampler.anon / 1024, 1), "peak_file_mb": round(sampler.file / 1024, 1),
            "top1": round(result["top1"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", help="JSON file for the results")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.epochs)))
        return
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--one", mode, str(size), "--epochs", str(args.epochs)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['mode']:<9} {r['clips']:>6} clips  peak RSS {r['peak_rss_mb']:7.1f} MB "
                  f"(anon {r['peak_anon_mb']:7.1f}, file {r['peak_file_mb']:6.1f})  {r['clips_per_s']:7.1f} clips/s",
                  flush=True)
    command = "OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/probe_memory.py " + " ".join(sys.argv[1:])
    if args.out:  # runs of other sizes append to the file, each with its command
        path = Path(args.out)
        payload = json.loads(path.read_text()) if path.is_file() else {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)", "token_bytes_per_clip": 64 * 64 * 2,
            "commands": [], "results": []}
        payload["commands"].append(command)
        payload["results"] += rows
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
