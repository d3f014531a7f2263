"""Block-diagonal attention over packed rows: which kernel is fastest here (forward + backward).

    OMP_NUM_THREADS=1 python benchmarks/packed_attention.py --preset demo64 --dtype fp32

Takes one step's real context rows of the preset (every generator, every sample), packs them into
one [1, heads, T, head_dim] sequence and times, interleaved, each `Segments` kernel
(`vjepa.models.vit.Kernels.packed_attention`: loop, padded, nested), the earlier layout (each
generator's rows padded to its longest, one masked SDPA call per generator), where it runs
`flex_attention` with a document mask, and the official layout: each generator's rows truncated to
its shortest and one unmasked SDPA call per generator (fewer tokens, so compare its thread scaling,
not its time). `--threads 1 2` times every kernel at each thread count in one
process and reports each kernel's speed-up from the first count to the last. Prints JSON: median
milliseconds per kernel (per thread count). `--device cuda` times the same on a GPU (flex_attention
compiled there); `benchmarks/gpu_check.py` calls `measure` for its `packed_attention` check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vjepa.config import preset
from vjepa.flops import mask_token_counts
from vjepa.masks.step import masks_for_step
from vjepa.models.vit import Kernels, Segments


def per_generator_padded(groups: list[list[int]]):
    """The padded layout: each generator's rows padded to its longest, one masked call each."""
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs, start = [], 0
        for lengths in groups:
            count = sum(lengths)
            part = [x[:, :, start:start + count] for x in (q, k, v)]
            outs.append(Segments(lengths)._padded(*part, Kernels(attention="sdpa")))
            start += count
        return torch.cat(outs, dim=2)
    return attend


def segments(lengths: list[int], kind: str):
    """`Segments.attend` with one `packed_attention` kernel."""
    return lambda q, k, v: Segments(lengths).attend(q, k, v, Kernels(packed_attention=kind))


def flex(lengths: list[int], total: int, device: torch.device):
    """`flex_attention` with a document mask (rows attend within themselves); compiled on a GPU,
    eager on a CPU (where this build has no eager backward: reported as unavailable)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    rows = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    mask = create_block_mask(lambda b, h, q, k: rows[q] == rows[k], None, None, total, total, device=device.type)
    attend = torch.compile(flex_attention) if device.type == "cuda" else flex_attention
    return lambda q, k, v: attend(q, k, v, block_mask=mask)


def truncated(groups: list[list[int]], heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
    """The official layout: each generator's rows cut to its shortest, one unmasked SDPA call per
    generator over [rows, heads, shortest, head_dim] (its own inputs)."""
    import torch.nn.functional as F

    shapes = [(len(lengths), heads, min(lengths), head_dim) for lengths in groups]
    inputs = [[torch.randn(shape, dtype=dtype, device=device, requires_grad=True) for _ in range(3)]
              for shape in shapes]
    grads = [torch.randn(shape, dtype=dtype, device=device) for shape in shapes]

    def attend(*_):
        for tensor in (t for group in inputs for t in group):
            tensor.grad = None
        outs = [F.scaled_dot_product_attention(q, k, v) for q, k, v in inputs]
        return _Fixed(torch.cat([o.flatten() for o in outs]), torch.cat([g.flatten() for g in grads]))
    return attend


class _Fixed:
    """An output whose `backward(anything)` uses its own gradient (the truncated kernel's shape differs)."""

    def __init__(self, out: torch.Tensor, grad: torch.Tensor):
        self.out, self.grad = out, grad

    def backward(self, _grad: torch.Tensor) -> None:
        self.out.backward(self.grad)


def time_kernels(kernels: dict, q, k, v, grad, repeats: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median milliseconds of forward + backward per kernel, interleaved, after one warm-up round."""
    times: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for round_index in range(repeats + 1):
        for name, attend in kernels.items():
            if name in errors:
                continue
            try:
                _sync(q.device)
                start = time.perf_counter()
                attend(q, k, v).backward(grad)
                _sync(q.device)
                elapsed = time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - not in this build (flex: no CPU backward; no GPU kernel)
                errors[name] = f"{type(err).__name__}: {str(err)[:120]}"
                continue
            q.grad = k.grad = v.grad = None
            if round_index:  # the first round warms up
                times.setdefault(name, []).append(elapsed)
    return {name: round(1e3 * statistics.median(t), 1) for name, t in times.items()}, errors


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset_name: str = "demo64", dtype: str = "fp32", device: str = "cpu", repeats: int = 5,
            threads: list[int] | None = None) -> dict:
    """Time every kernel over one step's real context rows of `preset_name` (forward + backward).

    Args:
        preset_name: whose model width, heads, clip and masks (step 0, rank 0) to use.
        dtype: "fp32" or "bf16".
        device: "cpu" or "cuda".
        repeats: timed rounds per kernel after one warm-up round (medians reported).
        threads: CPU thread counts to time in turn (default: as set).

    Returns:
        The JSON report: rows, tokens, median ms per kernel (per thread count with several),
        speed-ups from the first thread count to the last, and the kernels that could not run here.
    """
    cfg = preset(preset_name)
    m, d = cfg.model, cfg.data
    dev = torch.device(device)
    grid = (d.num_frames // m.tubelet_size, d.crop_size // m.patch_size, d.crop_size // m.patch_size)
    groups = [mask_token_counts(mask)[0] for mask in masks_for_step(cfg, grid, d.batch_size, 0)]
    lengths = [n for group in groups for n in group]
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    heads, total, head_dim = m.num_heads, sum(lengths), m.embed_dim // m.num_heads
    q, k, v = (torch.randn(1, heads, total, head_dim, dtype=torch_dtype, device=dev, requires_grad=True)
               for _ in range(3))
    grad = torch.randn_like(q)
    kernels = {f"segments_{kind}": segments(lengths, kind) for kind in ("loop", "padded", "nested")}
    kernels["per_generator_padded"] = per_generator_padded(groups)
    kernels["flex_attention"] = flex(lengths, total, dev)
    kernels["official_truncated"] = truncated(groups, heads, head_dim, torch_dtype, dev)
    medians, errors = {}, {}
    for count in threads or [torch.get_num_threads()]:
        torch.set_num_threads(count)
        medians[str(count)], errors = time_kernels(kernels, q, k, v, grad, repeats)
    first, last = medians[next(iter(medians))], medians[str(torch.get_num_threads())]
    return {
        "preset": preset_name, "dtype": dtype, "device": dev.type, "threads": list(medians),
        "rows": len(lengths), "tokens": total, "longest": max(lengths), "shortest": min(lengths), "heads": heads,
        "median_ms": medians if len(medians) > 1 else first,
        "speedup_first_to_last_threads": {name: round(first[name] / last[name], 2) for name in last}
        if len(medians) > 1 else {},
        "unavailable": errors,
    }


def main() -> None:
    """CLI: parse the flags and print `measure`'s JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo64")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts to time in turn (default: as set)")
    args = parser.parse_args()
    print(json.dumps(measure(args.preset, args.dtype, args.device, args.repeats, args.threads), indent=2))


if __name__ == "__main__":
    main()
