"""Training-step benchmark: clips/s, valid tokens/s, step time, model FLOPs, MFU, memory.

Each *variant* is a config plus the `StepOptions` its model is built with (step layout, attention
and embedding kernels). Several variants run in ONE process, their timed steps interleaved (A, B,
A, B, ...), so a ratio between them is fair even on a busy machine; the dense matmul peak is sampled
between rounds in the same process and dtype.

The baseline is the official step as the official pretraining configs run it (`official_structure`):
SDPA attention (`use_sdpa: true`), Conv3d tubelet embedding, the encoder re-embedding the
whole clip for each mask generator, one predictor pass per generator, and truncation collation
(every row cut to the batch's shortest), in fp32 (the configs' `dtype: bfloat16` goes through
`torch.cuda.amp.autocast`, a no-op on a CPU) and under bf16 autocast (what the configs run on a GPU).

Valid tokens per step: each sample's real context plus target tokens, summed over the mask
generators (truncation drops some, padding slots do not count): the work the objective covers.

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
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from vjepa.config import Config, validate
from vjepa.distributed import resolve_device
from vjepa.flops import mask_token_counts, step_flops
from vjepa.jepa import JEPA, StepOptions, build_optimizer, official_options, param_groups
from vjepa.masks import MaskBatch, num_generators
from vjepa.masks.step import masks_for_step
from vjepa.models.factory import token_grid
from vjepa.precision import resolve_dtype
from vjepa.train import compile_blocks, train_step


@dataclass
class Variant:
    """One way to run the step: a config and the `StepOptions` the model is built with."""

    name: str
    cfg: Config
    options: StepOptions | None = None  # None: the model's default for `cfg` (see `JEPA`)


def official_structure(cfg: Config, dtype: str = "fp32") -> Variant:
    """The official code's step as its pretraining configs run it, for the baseline variant.

    SDPA in every block (the configs set `use_sdpa: true`), Conv3d tubelet embedding, the clip
    re-embedded per mask generator, one predictor pass per generator over context + target rows,
    and truncation collation (every row cut to the batch's shortest, as the official collator
    does). The configs set `dtype: bfloat16`, which the official code applies through
    `torch.cuda.amp.autocast`: bf16 on a GPU, a no-op on a CPU. So on a CPU the official step
    runs in fp32 (`dtype="fp32"`), and `dtype="bf16"` is the one-line change that gives it CPU
    autocast; on a GPU `dtype="bf16"` is what the configs run.

    Args:
        cfg: the config to mirror (model, data, batch stay as they are).
        dtype: "fp32" (the configs) or "bf16".
    """
    cfg = copy.deepcopy(cfg)
    cfg.run.dtype, cfg.mask.collate = dtype, "truncate"
    name = "official" if dtype == "fp32" else f"official_{dtype}"
    return Variant(name, cfg, official_options())


def _next_variant(name: str, base: Variant, dtype: str | None = None, collate: str | None = None,
                  **changes: Any) -> Variant:
    """`base` with one change: its dtype, its mask collation, or `StepOptions` fields (`kernels`: a
    dict of `Kernels` fields)."""
    new = copy.deepcopy(base.cfg)
    new.run.dtype = dtype or new.run.dtype
    new.mask.collate = collate or new.mask.collate
    kernels = replace(base.options.kernels, **changes.pop("kernels", {}))
    return Variant(name, new, replace(base.options, kernels=kernels, **changes))


def ablation_variants(cfg: Config) -> list[Variant]:
    """From the official step (fp32, SDPA, truncation) to ours, one change at a time.

    Each variant adds one change to the previous one; the last one is our default step. The
    pad-collation step adds work (it keeps every token instead of truncating); the others change
    speed only. The matmul-attention step matters on CPU in bf16 only.
    """
    official = official_structure(cfg)
    ours = StepOptions()
    step = _next_variant
    chain = [official]
    if cfg.run.dtype != official.cfg.run.dtype:
        chain.append(step(f"+{cfg.run.dtype}_autocast", chain[-1], dtype=cfg.run.dtype))
    chain.append(step("+embed_once_gemm", chain[-1], reembed_per_generator=False,
                      kernels={"conv3d_patch_embed": False}))
    chain.append(step("+matmul_attention_short_seqs", chain[-1], kernels={"attention": ours.kernels.attention}))
    chain.append(step("+pad_collation(keeps_all_tokens)", chain[-1], collate=cfg.mask.collate))
    chain.append(step("+batched_grid_predictor", chain[-1], batch_generators=ours.batch_generators))
    chain.append(step("+packed_contexts(=ours)", chain[-1], pack=ours.pack))
    return chain


# ---------------------------------------------------------------------------------------------
# measurements


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """Dense matmul throughput in FLOP/s: best of `repeats` [size, size] x [size, size] products.

    Args:
        device: where to run.
        dtype: torch.bfloat16 or torch.float32 (fp32 on CUDA follows torch's TF32 setting).
        size: matrix size. Default: doubled from 256 until one product takes 0.05 s, at most 2048 on
            CPU and 8192 on CUDA (large enough to saturate each). A CPU without bf16 instructions
            (AVX2 only) multiplies bf16 ~10x slower than fp32, and a 2048^2 bf16 probe would take minutes.
        repeats: timed products; the fastest counts.

    Returns:
        2 * size^3 / best time.
    """
    if size is None:
        size, cap = 256, (8192 if device.type == "cuda" else 2048)
        while size < cap and _time_matmul(device, dtype, size) < 0.05:
            size *= 2
    best = min(_time_matmul(device, dtype, size) for _ in range(repeats))
    return 2.0 * size**3 / best


def _time_matmul(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """Seconds of one [size, size] x [size, size] product (after one untimed warm-up product)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    _sync(device)
    start = time.perf_counter()
    torch.mm(a, b)
    _sync(device)
    return time.perf_counter() - start


def valid_tokens(masks: list[MaskBatch]) -> int:
    """Real context plus target tokens of a step's masks, summed over samples and generators."""
    return sum(sum(context) + sum(target) for context, target in map(mask_token_counts, masks))


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


def step_optimizer(variant: Variant, model: JEPA, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser each side's own code builds: ours is training's (`jepa.build_optimizer`, fused on
    CUDA); the official step gets a plain AdamW over the same groups, as the official code makes it."""
    if variant.name.startswith("official"):
        return torch.optim.AdamW(param_groups(model.encoder, model.predictor), lr=variant.cfg.optim.lr)
    return build_optimizer(model.encoder, model.predictor, variant.cfg.optim, device)


class _Run:
    """A variant's model, optimiser, inputs and measurements."""

    def __init__(self, variant: Variant, device: torch.device, num_steps: int, seed: int):
        cfg = validate(variant.cfg)
        self.variant, self.cfg, self.device = variant, cfg, device
        torch.manual_seed(seed)
        self.model = JEPA(cfg, num_generators(cfg.mask), variant.options).to(device)
        if cfg.run.activation_checkpointing:
            self.model.encoder.activation_checkpointing = self.model.predictor.activation_checkpointing = True
        self.optimizer = step_optimizer(variant, self.model, device)
        if cfg.run.compile:
            compile_blocks(self.model)
        d = cfg.data
        self.grid = token_grid(cfg)
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
        timed_masks = self.masks[warmup : warmup + len(self.times)]
        return {
            **self._settings(),
            **self._throughput(timed_masks),
            **self._efficiency(timed_masks, peaks),
            "peak_memory_mb": (_state_bytes(self.model, self.optimizer) + self.memory) / 2**20,
            "step_memory_mb": self.memory / 2**20,
            "final_loss": float(self.loss),
        }

    def _settings(self) -> dict[str, Any]:
        """What was timed: the variant's name, dtype, collate, model options, batch and clip."""
        cfg, d = self.cfg, self.cfg.data
        return {
            "name": self.variant.name,
            "dtype": cfg.run.dtype,
            "collate": cfg.mask.collate,
            "options": asdict(self.model.options),
            "compile": cfg.run.compile,
            "activation_checkpointing": cfg.run.activation_checkpointing,
            "batch_size": d.batch_size,
            "clip": [d.num_frames, d.crop_size, d.crop_size],
            "tokens_per_clip": self.grid[0] * self.grid[1] * self.grid[2],
            "timed_steps": len(self.times),
        }

    def _throughput(self, timed_masks: list[Any]) -> dict[str, Any]:
        """Clips and valid (unmasked context + target) tokens per second of the median step."""
        median = statistics.median(self.times)
        tokens = statistics.fmean(valid_tokens(masks) for masks in timed_masks)
        return {
            "clips_per_s": self.cfg.data.batch_size / median,
            "valid_tokens_per_step": tokens,
            "valid_tokens_per_s": tokens / median,
            "step_time_s": {"median": median, "min": min(self.times), "max": max(self.times)},
            "mask_sampling_s_per_step": self.mask_seconds,
        }

    def _efficiency(self, timed_masks: list[Any], peaks: list[float]) -> dict[str, Any]:
        """FLOPs per step (by part, from the sampled masks), achieved FLOP/s and MFU against `peaks`."""
        num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        flops = [step_flops(self.cfg, [m.to("cpu") for m in masks], num_tokens) for masks in timed_masks]
        mean_flops = {k: statistics.fmean(f.as_dict()[k] for f in flops) for k in flops[0].as_dict()}
        median, peak = statistics.median(self.times), statistics.median(peaks)
        achieved = mean_flops["total"] / median
        return {
            "flops_per_step": mean_flops,
            "achieved_flops_per_s": achieved,
            "peak_matmul_flops_per_s": peak,
            "mfu": achieved / peak,
            # the same from the fastest step and the best peak: less sensitive to a busy machine
            "mfu_best": mean_flops["total"] / min(self.times) / max(peaks),
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
    for run in runs:
        for _ in range(warmup):
            run.step(timed=False)
    peaks = _time_rounds(runs, steps, device)
    return [run.report(peaks[run.cfg.run.dtype], warmup) for run in runs]


def _time_rounds(runs: list[_Run], steps: int, device: torch.device) -> dict[str, list[float]]:
    """`steps` rounds of one timed step per run; the matmul peak of each dtype sampled ~4 times between
    rounds (so it sees the machine's state at the same moments): {dtype: [FLOP/s, ...]}."""
    peaks: dict[str, list[float]] = {run.cfg.run.dtype: [] for run in runs}
    for round_index in range(steps):
        for run in runs:
            run.step(timed=True)
        if round_index % max(1, steps // 3) == 0 or round_index == steps - 1:
            for dt, samples in peaks.items():
                samples.append(matmul_peak(device, torch.bfloat16 if dt == "bf16" else torch.float32, repeats=3))
    return peaks


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
        # AVX2-only CPUs have no bf16 matmul instructions: bf16 there is far slower than fp32
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
    official_dtypes: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Benchmark the training step of `cfg` (its dtype, batch, compile and checkpointing settings).

    Args:
        cfg: the run config (preset plus overrides).
        steps: timed steps per variant.
        warmup: untimed steps per variant first.
        official: time only the official baseline (`official_structure`) instead of our step.
        compare_official: time ours, the official step (fp32) and the official step under bf16
            autocast interleaved; add the speed-ups in clips/s and in valid tokens/s.
        ablation: time the chain from the official step to ours, one change at a time.
        device: "cpu", "cuda", ... (default: `cfg.run.device`).
        official_dtypes: the official step's dtypes `compare_official` times ("fp32": as its configs
            run on a CPU; "bf16": under autocast, as they run on a GPU). Default: fp32, plus bf16
            where the device has native bf16 (a CPU without bf16 matmul instructions, AVX2 only,
            runs bf16 ~10x slower than fp32, which would only measure that).

    Returns:
        One variant: its record (clips_per_s, valid_tokens_per_s, step_time_s median/min/max, flops_per_step by part,
        achieved_flops_per_s, peak_matmul_flops_per_s, mfu, peak_memory_mb, ...) plus the
        environment. Several: {"environment", "results": [...], "speedups": {...}}.
    """
    dev = resolve_device(device or cfg.run.device)
    cfg = copy.deepcopy(cfg)
    cfg.run.dtype = resolve_dtype(cfg.run.dtype, dev)  # "auto": bf16 only where the device has it natively
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    if official_dtypes is None:
        official_dtypes = ("fp32", "bf16") if resolve_dtype("auto", dev) == "bf16" else ("fp32",)
    variants = _chosen_variants(cfg, official, compare_official, ablation, official_dtypes)
    results = run_variants(variants, dev, steps, warmup, cfg.run.seed)
    env = environment(dev)
    if len(results) == 1:
        return {**results[0], **env}
    speedups = _ablation_speedups(results) if ablation else _official_speedups(results)
    return {"environment": env, "results": results, "speedups": speedups}


def _chosen_variants(
    cfg: Config, official: bool, compare_official: bool, ablation: bool, official_dtypes: tuple[str, ...]
) -> list[Variant]:
    """The variants `benchmark` times for its flags (see its docstring); ours alone by default."""
    if ablation:
        return ablation_variants(cfg)
    if compare_official:
        return [Variant("ours", copy.deepcopy(cfg))] + [official_structure(cfg, dtype) for dtype in official_dtypes]
    if official:
        return [official_structure(cfg)]
    return [Variant("ours", copy.deepcopy(cfg))]


def _ablation_speedups(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Clips/s of each ablation step against the official step (the first) and the step before it."""
    return {r["name"]: {"vs_official": r["clips_per_s"] / results[0]["clips_per_s"],
                        "vs_previous": r["clips_per_s"] / p["clips_per_s"]}
            for p, r in itertools.pairwise(results)}


def _official_speedups(results: list[dict[str, Any]]) -> dict[str, float]:
    """Our speed-up over each other variant (the official step per dtype), in clips/s and valid
    tokens/s, and the two factors of the clips/s ratio: `_flop_rate` (our achieved FLOP/s over its)
    divided by `_work_per_clip` (our model FLOPs per clip over its; above 1 when we keep tokens it
    truncates). So ours wins in clips/s only where its FLOP rate beats the official's by more than
    the extra work it does."""
    by_name = {r["name"]: r for r in results}
    ours = by_name["ours"]
    speedups = {}
    for name in [r["name"] for r in results[1:]]:
        base = by_name[name]
        speedups[f"ours_vs_{name}"] = ours["clips_per_s"] / base["clips_per_s"]
        speedups[f"ours_vs_{name}_valid_tokens"] = ours["valid_tokens_per_s"] / base["valid_tokens_per_s"]
        speedups[f"ours_vs_{name}_flop_rate"] = ours["achieved_flops_per_s"] / base["achieved_flops_per_s"]
        speedups[f"ours_vs_{name}_work_per_clip"] = _flops_per_clip(ours) / _flops_per_clip(base)
    return speedups


def _flops_per_clip(record: dict[str, Any]) -> float:
    """A variant's model FLOPs per training clip (the step's analytic total over its batch)."""
    return record["flops_per_step"]["total"] / record["batch_size"]
