"""Training-step benchmark: clips/s, step time, model FLOPs, MFU against a measured matmul peak, memory.

Each *variant* is a config plus a set of implementation switches (module flags in
`vjepa.models.vit` and `vjepa.jepa`). Several variants run in ONE process, their timed steps
interleaved (A, B, A, B, ...), so a ratio between them is fair even on a busy machine; the dense
matmul peak is sampled between rounds in the same process and dtype.

The "official structure" variant times the same step laid out as the official code does it: fp32,
attention as q @ k^T, softmax, @ v, Conv3d tubelet embedding, the encoder re-embedding the whole
clip for each mask generator, one predictor pass per generator, and truncation collation.

Timed: `train_step` (forward, backward, clipping, AdamW, EMA) on synthetic clips with real masks
sampled beforehand (mask sampling, a host-side cost, is timed separately). Not timed: data loading.

Example:
    >>> from vjepa.config import preset
    >>> report = benchmark(preset("debug"), steps=4, warmup=1, compare_official=True)
    >>> report["speedups"]["ours_vs_official"] > 0
    True
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import itertools
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from vjepa import jepa as jepa_module
from vjepa.config import Config, validate
from vjepa.distributed import resolve_device
from vjepa.flops import step_flops
from vjepa.jepa import JEPA, param_groups
from vjepa.masks import num_generators
from vjepa.models import vit
from vjepa.train import compile_blocks, masks_for_step, train_step

# name -> (module, attribute) of every implementation switch a variant may set
SWITCHES: dict[str, tuple[Any, str]] = {
    "manual_attention": (vit, "MANUAL_ATTENTION"),
    "conv3d_patch_embed": (vit, "CONV3D_PATCH_EMBED"),
    "cpu_fp32_attention": (vit, "CPU_FP32_ATTENTION"),
    "cpu_matmul_attention_max_tokens": (vit, "CPU_MATMUL_ATTENTION_MAX_TOKENS"),
    "reembed_per_generator": (jepa_module, "REEMBED_PER_GENERATOR"),
    "batch_generators": (jepa_module, "BATCH_GENERATORS"),
}
OFFICIAL_SWITCHES = {
    "manual_attention": True,
    "conv3d_patch_embed": True,
    "reembed_per_generator": True,
    "batch_generators": False,
}


@contextlib.contextmanager
def switches(**values: bool | int) -> Iterator[None]:
    """Set implementation switches (names in `SWITCHES`) for the duration of the block.

    Example:
        >>> with switches(manual_attention=True):
        ...     pass  # attention runs as q @ k^T, softmax, @ v here
    """
    unknown = set(values) - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown switch {min(unknown)!r}; choose from {', '.join(SWITCHES)}")
    saved = {name: getattr(*SWITCHES[name]) for name in values}
    try:
        for name, value in values.items():
            setattr(*SWITCHES[name], value)
        yield
    finally:
        for name, value in saved.items():
            setattr(*SWITCHES[name], value)


def official_structure(cfg: Config) -> tuple[Config, dict[str, bool]]:
    """The official code's step structure, for the baseline variant.

    Args:
        cfg: the config to mirror (model, data, batch stay as they are).

    Returns:
        (a copy of `cfg` in fp32 with truncation collation, the switches to set). Use as
        ``base, flags = official_structure(cfg)`` then run steps inside ``switches(**flags)``.
    """
    cfg = copy.deepcopy(cfg)
    cfg.run.dtype, cfg.mask.collate = "fp32", "truncate"
    return cfg, dict(OFFICIAL_SWITCHES)


@dataclass
class Variant:
    """One way to run the step: a config and the implementation switches it needs."""

    name: str
    cfg: Config
    switches: dict[str, bool | int] = field(default_factory=dict)


def ablation_variants(cfg: Config) -> list[Variant]:
    """From the official structure to ours, one change at a time (each variant adds one change).

    Every variant sets every switch, so the chain does not depend on the module defaults; the last
    one is our default step. The pad-collation step adds work (it keeps every token instead of
    truncating); the others change speed only. The bf16 steps matter on CPU only (the attention
    switches apply to CPU bf16).
    """
    official, flags = official_structure(cfg)
    ours = {name: getattr(*SWITCHES[name]) for name in SWITCHES}  # the defaults

    def step(name: str, base: Variant, dtype: str | None = None, collate: str | None = None, **changes) -> Variant:
        new = copy.deepcopy(base.cfg)
        new.run.dtype = dtype or new.run.dtype
        new.mask.collate = collate or new.mask.collate
        return Variant(name, new, {**base.switches, **changes})

    old_cpu_attention = {"cpu_fp32_attention": True, "cpu_matmul_attention_max_tokens": 0}
    chain = [Variant("official_structure", official, {**ours, **old_cpu_attention, **flags})]
    chain.append(step("+sdpa", chain[-1], manual_attention=False))
    chain.append(step("+embed_once_gemm", chain[-1], conv3d_patch_embed=False, reembed_per_generator=False))
    chain.append(step("+bf16_autocast(fp32_attention_core)", chain[-1], dtype=cfg.run.dtype))
    chain.append(step("+bf16_attention_core", chain[-1], cpu_fp32_attention=ours["cpu_fp32_attention"]))
    chain.append(step("+matmul_attention_short_seqs", chain[-1],
                      cpu_matmul_attention_max_tokens=ours["cpu_matmul_attention_max_tokens"]))
    chain.append(step("+pad_collation(keeps_all_tokens)", chain[-1], collate=cfg.mask.collate))
    chain.append(step("+batched_grid_predictor(=ours)", chain[-1], batch_generators=ours["batch_generators"]))
    return chain


# ---------------------------------------------------------------------------------------------
# measurements


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """Dense matmul throughput in FLOP/s: best of `repeats` [size, size] x [size, size] products.

    Args:
        device: where to run.
        dtype: torch.bfloat16 or torch.float32 (fp32 on CUDA follows torch's TF32 setting).
        size: matrix size (default 2048 on CPU, 8192 on CUDA, large enough to saturate each).
        repeats: timed products; the fastest counts.

    Returns:
        2 * size^3 / best time.
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i:  # the first product warms up
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM), or 0 where unavailable."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_mark(device: torch.device) -> int:
    """Start a peak-memory window; return the bytes in use now.

    CUDA: resets `max_memory_allocated`. CPU: returns freed heap to the OS (glibc `malloc_trim`)
    and resets the process's peak RSS (VmHWM, via /proc/self/clear_refs) where Linux allows.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _proc_status("VmRSS")


def memory_peak(device: torch.device) -> int:
    """Peak bytes in use since the last `memory_mark` (CUDA allocator peak, or CPU peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _proc_status("VmHWM")


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters, buffers, gradients and optimiser state (what stays between steps)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------------------------
# running variants


class _Run:
    """A variant's model, optimiser, inputs and measurements."""

    def __init__(self, variant: Variant, device: torch.device, num_steps: int, seed: int):
        cfg = validate(variant.cfg)
        self.variant, self.cfg, self.device = variant, cfg, device
        torch.manual_seed(seed)
        self.model = JEPA(cfg, num_generators(cfg.mask)).to(device)
        if cfg.run.activation_checkpointing:
            self.model.encoder.activation_checkpointing = self.model.predictor.activation_checkpointing = True
        self.optimizer = torch.optim.AdamW(param_groups(self.model.encoder, self.model.predictor), lr=cfg.optim.lr)
        if cfg.run.compile:
            compile_blocks(self.model)
        d = cfg.data
        self.grid = self.model.encoder.patch_embed.grid(d.num_frames, d.crop_size, d.crop_size)
        start = time.perf_counter()
        self.masks = [masks_for_step(cfg, self.grid, d.batch_size, s, 0) for s in range(num_steps)]
        self.mask_seconds = (time.perf_counter() - start) / num_steps
        self.masks = [[m.to(device) for m in masks] for masks in self.masks]
        generator = torch.Generator().manual_seed(seed)
        self.videos = [torch.randn(d.batch_size, 3, d.num_frames, d.crop_size, d.crop_size, generator=generator).to(device) for _ in range(2)]
        self.times: list[float] = []
        self.memory = 0
        self.step_index = 0
        self.loss = float("nan")

    def step(self, timed: bool) -> None:
        """Run the next training step; record its wall time (and peak memory) if `timed`."""
        i = self.step_index
        with switches(**self.variant.switches):
            before = memory_mark(self.device) if timed else 0
            _sync(self.device)
            start = time.perf_counter()
            result = train_step(self.model, self.optimizer, self.videos[i % 2], self.masks[i], i, self.cfg, self.device)
            _sync(self.device)
            elapsed = time.perf_counter() - start
        if timed:
            self.times.append(elapsed)
            self.memory = max(self.memory, memory_peak(self.device) - before)
        self.loss = result.loss
        self.step_index += 1

    def report(self, peaks: list[float], warmup: int) -> dict[str, Any]:
        """The variant's JSON record (`peaks`: matmul FLOP/s samples for its dtype)."""
        cfg, d = self.cfg, self.cfg.data
        num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        timed_masks = self.masks[warmup : warmup + len(self.times)]
        flops = [step_flops(cfg, [m.to("cpu") for m in masks], num_tokens) for masks in timed_masks]
        mean_flops = {k: statistics.fmean(f.as_dict()[k] for f in flops) for k in flops[0].as_dict()}
        median, peak = statistics.median(self.times), statistics.median(peaks)
        achieved = mean_flops["total"] / median
        return {
            "name": self.variant.name,
            "dtype": cfg.run.dtype,
            "collate": cfg.mask.collate,
            "switches": {name: getattr(*SWITCHES[name]) for name in SWITCHES} | self.variant.switches,
            "compile": cfg.run.compile,
            "activation_checkpointing": cfg.run.activation_checkpointing,
            "batch_size": d.batch_size,
            "clip": [d.num_frames, d.crop_size, d.crop_size],
            "tokens_per_clip": num_tokens,
            "timed_steps": len(self.times),
            "clips_per_s": d.batch_size / median,
            "step_time_s": {"median": median, "min": min(self.times), "max": max(self.times)},
            "mask_sampling_s_per_step": self.mask_seconds,
            "flops_per_step": mean_flops,
            "achieved_flops_per_s": achieved,
            "peak_matmul_flops_per_s": peak,
            "mfu": achieved / peak,
            # the same from the fastest step and the best peak: less sensitive to a busy machine
            "mfu_best": mean_flops["total"] / min(self.times) / max(peaks),
            "peak_memory_mb": (_state_bytes(self.model, self.optimizer) + self.memory) / 2**20,
            "step_memory_mb": self.memory / 2**20,
            "final_loss": float(self.loss),
        }


def run_variants(
    variants: list[Variant], device: torch.device, steps: int = 10, warmup: int = 3, seed: int = 0
) -> list[dict[str, Any]]:
    """Warm every variant up, then time their steps interleaved (one step of each in turn).

    Args:
        variants: what to compare; each builds its own model and optimiser.
        device: where to run.
        steps: timed steps per variant.
        warmup: untimed steps per variant first (compilation, allocator warm-up).
        seed: model init and synthetic data.

    Returns:
        One JSON-ready record per variant (see `benchmark` for the fields). `mfu` divides the
        FLOP/s of the median step by the median of the matmul peaks sampled between rounds (same
        dtype); `mfu_best` uses the fastest step and the best peak.
    """
    runs = [_Run(v, device, warmup + steps, seed) for v in variants]
    dtypes = {run.cfg.run.dtype for run in runs}
    peaks: dict[str, list[float]] = {dt: [] for dt in dtypes}
    for run in runs:
        for _ in range(warmup):
            run.step(timed=False)
    for round_index in range(steps):
        for run in runs:
            run.step(timed=True)
        if round_index % max(1, steps // 3) == 0 or round_index == steps - 1:
            for dt in dtypes:
                peaks[dt].append(matmul_peak(device, torch.bfloat16 if dt == "bf16" else torch.float32, repeats=3))
    return [run.report(peaks[run.cfg.run.dtype], warmup) for run in runs]


def environment(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: torch version, device name, threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        if device.type == "cpu":
            with open("/proc/cpuinfo") as handle:
                name = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), name)
    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def benchmark(
    cfg: Config,
    steps: int = 10,
    warmup: int = 3,
    official: bool = False,
    compare_official: bool = False,
    ablation: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Benchmark the training step of `cfg` (its dtype, batch, compile and checkpointing settings).

    Args:
        cfg: the run config (preset plus overrides).
        steps: timed steps per variant.
        warmup: untimed steps per variant first.
        official: time only the official-structure baseline instead of our step.
        compare_official: time ours and the official structure interleaved; add the speed-up.
        ablation: time the chain from the official structure to ours, one change at a time.
        device: "cpu", "cuda", ... (default: `cfg.run.device`).

    Returns:
        One variant: its record (clips_per_s, step_time_s median/min/max, flops_per_step by part,
        achieved_flops_per_s, peak_matmul_flops_per_s, mfu, peak_memory_mb, ...) plus the
        environment. Several: {"environment", "results": [...], "speedups": {...}}.
    """
    dev = resolve_device(device or cfg.run.device)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    ours = Variant("ours", copy.deepcopy(cfg))
    if ablation:
        variants = ablation_variants(cfg)
    elif compare_official or official:
        base, flags = official_structure(cfg)
        variants = ([ours] if compare_official else []) + [Variant("official_structure", base, flags)]
    else:
        variants = [ours]
    results = run_variants(variants, dev, steps, warmup, cfg.run.seed)
    env = environment(dev)
    if len(results) == 1:
        return {**results[0], **env}
    first = results[0]["clips_per_s"]
    by_name = {r["name"]: r["clips_per_s"] for r in results}
    if ablation:
        speedups = {r["name"]: {"vs_official": r["clips_per_s"] / first,
                                "vs_previous": r["clips_per_s"] / p["clips_per_s"]}
                    for p, r in itertools.pairwise(results)}
    else:
        speedups = {"ours_vs_official": by_name["ours"] / by_name["official_structure"]}
    return {"environment": env, "results": results, "speedups": speedups}
