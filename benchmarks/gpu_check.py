"""One-GPU readiness check (issues 24, 25): eight checks of what only a GPU can show, printed as one JSON.

    bash benchmarks/gpu_check.sh                 # on a CUDA machine, vitl16, meant to take < 8 min on one H100/H200
    bash benchmarks/gpu_check.sh --dry-run       # the same code on the CPU with the debug preset, ~15 s

Checks (each reports its figures, or {"error": ...} without stopping the others):
1. `sdpa_kernels`: one training forward+backward (batch 8) with SDPA restricted to the flash / memory-efficient
   / cuDNN kernels (a mask shape none of them takes raises instead of silently falling back to the
   math kernel), and its loss against the math kernel's on the same weights, clips and masks.
2. `host_syncs`: three `train_step`s under `torch.cuda.set_sync_debug_mode("warn")`, counting the
   synchronising calls (`train_step` is meant to make none).
3. `bench_eager`: `vjepa bench` of the preset: clips/s, MFU against the measured bf16 matmul peak,
   peak memory.
4. `bench_compile`: the same with `run.compile=true`; the number of graphs dynamo compiled across
   steps whose mask sizes differ (recompiles), and the loss against eager on the same inputs.
5. `resume`: a run checkpointed at step 10 (interrupted in step 11) and resumed, against the
   uninterrupted run: the loss difference (0 on CPU; small but not 0 on GPU: kernels are not
   deterministic).
6. `loader`: real-video (H.264 via PyAV) DataLoader throughput at 0 / 8 / 16 workers through the
   training loader (`vjepa.train.build_train_loader`), the bytes one step's clips take, and the
   host-to-device copy time of one batch.
7. `compare`: `vjepa bench --compare` on the GPU: our step against the official step as its configs
   run it there (bf16 autocast, SDPA, truncation), interleaved: clips/s, valid tokens/s, and the
   clips/s ratio split into FLOP rate and work per clip (issue 24's goals).
8. `packed_attention`: `benchmarks/packed_attention.py` on the GPU in bf16: which block-diagonal
   kernel (per-row loop, one padded masked call, nested jagged SDPA, compiled flex_attention) is
   fastest over one step's real context rows, against the official truncated layout.

The dry run uses the debug preset in fp32, few steps, workers 0 / 1, `aot_eager` instead of inductor
(no C++ toolchain needed) and the math kernel alongside the fused ones (the CPU has no fused kernel
for masked attention); `tests/test_gpu_check.py` runs it in the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vjepa.bench import benchmark
from vjepa.config import Config, apply_overrides, preset
from vjepa.jepa import JEPA
from vjepa.masks import num_generators
from vjepa.masks.step import masks_for_step
from vjepa.models.factory import token_grid
from vjepa.precision import allow_tf32, autocast
from vjepa.train import build_train_loader, compile_blocks, train, train_step

CHECKS = ("sdpa_kernels", "host_syncs", "bench_eager", "bench_compile", "resume", "loader", "compare",
          "packed_attention")


def settings(dry_run: bool, preset_name: str) -> dict[str, Any]:
    """Sizes of every check: the real run's, or the dry run's tiny ones."""
    if dry_run:
        return {"preset": "debug", "device": torch.device("cpu"), "bench_steps": 1, "warmup": 1, "compile_steps": 2,
                "resume_steps": (2, 3), "workers": (0, 1), "loader_batches": 2, "videos": 2, "backend": "eager",
                "overrides": ("run.dtype=fp32",), "small_batch": (),  # CPUs without bf16 units take ~1 min per bf16 matmul peak
                "official_dtypes": ("fp32",), "attention_dtype": "fp32", "attention_repeats": 1}
    return {"preset": preset_name, "device": torch.device("cuda"), "bench_steps": 10, "warmup": 3, "compile_steps": 3,
            "resume_steps": (10, 12), "workers": (0, 8, 16), "loader_batches": 10, "videos": 24, "backend": "inductor",
                "overrides": (),
                "small_batch": ("data.batch_size=8",),  # the math kernel materialises attention: ~45 GB at 24
                "official_dtypes": ("bf16",), "attention_dtype": "bf16", "attention_repeats": 10}


def base_config(opts: dict[str, Any], *overrides: str) -> Config:
    """The preset on the check's device, quiet, with `overrides`."""
    return apply_overrides(preset(opts["preset"]), ["run.progress=false", f"run.device={opts['device'].type}",
                                                    *opts["overrides"], *overrides])


def model_and_batch(cfg: Config, device: torch.device, step: int = 0) -> tuple[JEPA, torch.Tensor, list]:
    """A seeded JEPA, a random batch of clips and that step's masks, on `device`."""
    torch.manual_seed(cfg.run.seed)
    model = JEPA(cfg, num_generators(cfg.mask)).to(device)
    d = cfg.data
    video = torch.randn(d.batch_size, 3, d.num_frames, d.crop_size, d.crop_size, device=device)
    return model, video, batch_masks(cfg, model, video, device, step)


def batch_masks(cfg: Config, model: JEPA, video: torch.Tensor, device: torch.device, step: int) -> list:
    """The training masks of `step` for this batch, on `device`."""
    grid = model.encoder.patch_embed.grid(cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    return [m.to(device) for m in masks_for_step(cfg, grid, video.shape[0], step)]


def forward_backward(model: JEPA, video: torch.Tensor, masks: list, cfg: Config, device: torch.device) -> float:
    """The loss of one training forward pass, after its backward pass ran (gradients discarded)."""
    with autocast(device, cfg.run.dtype):
        loss = model(video, masks)["loss"]
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss.detach())


def check_sdpa_kernels(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 1: the step on fused SDPA kernels only, and its loss against the math kernel's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = opts["device"]
    cfg = base_config(opts, *opts["small_batch"])
    model, video, masks = model_and_batch(cfg, device)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    if device.type == "cpu":
        fused.append(SDPBackend.MATH)  # no fused masked kernel on the CPU: the dry run only runs the code
    with sdpa_kernel(fused):
        fused_loss = forward_backward(model, video, masks, cfg, device)
    with sdpa_kernel([SDPBackend.MATH]):
        math_loss = forward_backward(model, video, masks, cfg, device)
    return {"kernels": [k.name for k in fused], "loss": fused_loss, "math_loss": math_loss,
            "relative_difference": abs(fused_loss - math_loss) / max(abs(math_loss), 1e-12)}


def check_host_syncs(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 2: synchronising CUDA calls in three `train_step`s (the sync debug mode's warnings)."""
    from vjepa.jepa import build_optimizer

    device = opts["device"]
    cfg = base_config(opts)
    model, video, _ = model_and_batch(cfg, device)
    optimizer = build_optimizer(model.encoder, model.predictor, cfg.optim, device)
    masks = [batch_masks(cfg, model, video, device, step) for step in range(4)]
    train_step(model, optimizer, video, masks[0], 0, cfg, device)  # warm-up: lazy state, allocator
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(1, 4):
                train_step(model, optimizer, video, masks[step], step, cfg, device)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"steps": 3, "host_syncs": len(syncs), "first": syncs[:5],
            "measured": device.type == "cuda"}  # the CPU has nothing to synchronise with


def _bench_record(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("clips_per_s", "step_time_s", "mfu", "achieved_flops_per_s", "peak_matmul_flops_per_s",
            "peak_memory_mb", "device_name")
    return {key: report[key] for key in keys if key in report}


def check_bench_eager(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 3: `vjepa bench --preset P --device D`."""
    cfg = base_config(opts)
    return _bench_record(benchmark(cfg, steps=opts["bench_steps"], warmup=opts["warmup"], device=opts["device"].type))


def check_bench_compile(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 4: the compiled step's speed, its graphs across changing mask sizes, its loss vs eager."""
    import torch._dynamo

    device = opts["device"]
    cfg = base_config(opts)
    eager, video, masks = model_and_batch(cfg, device)
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    compile_blocks(compiled, backend=opts["backend"])
    eager_losses, compiled_losses = [], []
    for step in range(opts["compile_steps"]):  # each step's masks keep another number of tokens: dynamic shapes
        masks = batch_masks(cfg, eager, video, device, step)
        eager_losses.append(forward_backward(eager, video, masks, cfg, device))
        compiled_losses.append(forward_backward(compiled, video, masks, cfg, device))
    graphs = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    record = {"backend": opts["backend"], "graphs_compiled": graphs, "eager_losses": eager_losses,
              "compiled_losses": compiled_losses,
              "max_relative_difference": max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(eager_losses,
                                                                                                compiled_losses))}
    if opts["backend"] == "inductor":  # the benchmark compiles with the default (inductor) backend
        bench = benchmark(base_config(opts, "run.compile=true"), steps=opts["bench_steps"], warmup=opts["warmup"],
                          device=device.type)
        record.update(_bench_record(bench))
        record["graphs_after_bench"] = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    return record


def _losses(out_dir: Path) -> dict[int, float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def check_resume(opts: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Check 5: checkpoint at step N, die in step N+1, resume; losses against the uninterrupted run."""
    import vjepa.train as train_module

    split, steps = opts["resume_steps"]
    overrides = (f"optim.steps={steps}", f"run.checkpoint_every={split}", "run.log_every=1",
                 "data.batch_size=4", "run.monitor_every=1000")
    train(base_config(opts, f"run.out_dir={folder / 'whole'}", *overrides))
    real = train_module.train_step

    def die_after_checkpoint(model, optimizer, video, masks, step, *rest):
        if step == split:
            raise KeyboardInterrupt
        return real(model, optimizer, video, masks, step, *rest)

    train_module.train_step = die_after_checkpoint
    try:
        train(base_config(opts, f"run.out_dir={folder / 'split'}", *overrides))
    except KeyboardInterrupt:
        pass
    finally:
        train_module.train_step = real
    train(base_config(opts, f"run.out_dir={folder / 'split'}", *overrides))
    whole, resumed = _losses(folder / "whole"), _losses(folder / "split")
    after = range(split + 1, steps + 1)
    return {"checkpoint_step": split, "steps": steps, "whole": [whole[s] for s in after],
            "resumed": [resumed[s] for s in after],
            "max_abs_difference": max(abs(whole[s] - resumed[s]) for s in after)}


def make_videos(folder: Path, count: int) -> Path:
    """`count` short H.264 mp4s (procedural sprites, 320 px, 64 frames) and a CSV listing them."""
    import numpy as np

    from vjepa.config import SyntheticConfig
    from vjepa.data.synthetic import render_clip, write_mp4

    cfg = SyntheticConfig(size=320, num_frames=32)
    lines = []
    for index in range(count):
        frames = np.concatenate([render_clip(cfg, "train", 2 * index + k)[0] for k in range(2)])
        path = folder / f"video{index}.mp4"
        write_mp4(frames, path, fps=25)
        lines.append(f"{path} 0")
    csv = folder / "videos.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def check_loader(opts: dict[str, Any], folder: Path, videos: str | None) -> dict[str, Any]:
    """Check 6: clips/s of the training loader on real video per worker count; bytes and copy time."""
    device = opts["device"]
    csv = Path(videos) if videos else make_videos(folder, opts["videos"])
    record: dict[str, Any] = {"videos": str(csv), "clips_per_s": {}}
    for workers in opts["workers"]:
        cfg = base_config(opts, "data.source=csv", f"data.path={csv}", f"data.num_workers={workers}",
                          "data.frame_step=1")
        loader, _ = build_train_loader(cfg, 0, 0, 1, device, token_grid(cfg))  # clips and masks, as training
        batches = iter(loader)
        batch = next(batches)  # worker start-up excluded
        start = time.perf_counter()
        for _ in range(opts["loader_batches"]):
            batch = next(batches)
        record["clips_per_s"][str(workers)] = opts["loader_batches"] * batch["video"].shape[0] / (time.perf_counter()
                                                                                                   - start)
        del batches, loader
    video = batch["video"]
    record.update(batch_shape=list(video.shape), dtype=str(video.dtype), bytes_per_step=video.numel() * video.element_size(),
                  bytes_per_step_as_fp32=video.numel() * 4, pinned=bool(video.is_pinned()))
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        video.to(device, non_blocking=True)
        torch.cuda.synchronize()
        record["host_to_device_s"] = time.perf_counter() - start
    return record


def check_compare(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 7: our step against the official step as its configs run on this device, interleaved."""
    report = benchmark(base_config(opts), steps=opts["bench_steps"], warmup=opts["warmup"], compare_official=True,
                       device=opts["device"].type, official_dtypes=opts["official_dtypes"])
    records = {r["name"]: {**_bench_record(r), "valid_tokens_per_s": r["valid_tokens_per_s"],
                           "flops_per_step": r["flops_per_step"]["total"]} for r in report["results"]}
    return {**records, "speedups": report["speedups"]}


def check_packed_attention(opts: dict[str, Any]) -> dict[str, Any]:
    """Check 8: the block-diagonal attention kernels over one step's real rows (`packed_attention.py`)."""
    spec = importlib.util.spec_from_file_location("packed_attention", Path(__file__).with_name("packed_attention.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure(opts["preset"], opts["attention_dtype"], opts["device"].type, opts["attention_repeats"])


def run_checks(dry_run: bool, preset_name: str = "vitl16", videos: str | None = None,
               only: tuple[str, ...] = CHECKS) -> dict[str, Any]:
    """Run the checks named in `only`; returns {"environment", check name: figures or {"error"}}."""
    opts = settings(dry_run, preset_name)
    if opts["device"].type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --dry-run to run the checks on the CPU")
    allow_tf32(opts["device"])
    report: dict[str, Any] = {"environment": {"dry_run": dry_run, "preset": opts["preset"], "torch": torch.__version__,
                                              "device": torch.cuda.get_device_name() if opts["device"].type == "cuda"
                                              else "cpu"}}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "sdpa_kernels": lambda: check_sdpa_kernels(opts),
            "host_syncs": lambda: check_host_syncs(opts),
            "bench_eager": lambda: check_bench_eager(opts),
            "bench_compile": lambda: check_bench_compile(opts),
            "resume": lambda: check_resume(opts, Path(tmp) / "resume"),
            "loader": lambda: check_loader(opts, Path(tmp), videos),
            "compare": lambda: check_compare(opts),
            "packed_attention": lambda: check_packed_attention(opts),
        }
        for name in only:
            start = time.perf_counter()
            try:
                report[name] = runs[name]()
            except Exception as err:  # noqa: BLE001 - one failed check must not hide the others' figures
                report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=3)}
            report[name]["seconds"] = round(time.perf_counter() - start, 2)
            if opts["device"].type == "cuda":
                torch.cuda.empty_cache()
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """CLI: run the checks, print the JSON (and write it with --out). Exit 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU, tiny shapes")
    parser.add_argument("--preset", default="vitl16")
    parser.add_argument("--videos", help="CSV of real videos for the loader check (default: generated mp4s)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # training prints stay off the JSON on stdout
        report = _jsonable(run_checks(args.dry_run, args.preset, args.videos, tuple(args.only)))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return int(any("error" in report[name] for name in args.only))


if __name__ == "__main__":
    sys.exit(main())
