"""Block-diagonal attention over packed rows: which kernel is fastest here (forward + backward).

    OMP_NUM_THREADS=1 python benchmarks/packed_attention.py --preset demo64 --dtype fp32

Takes one step's real context rows of the preset (every generator, every sample), packs them into
one [1, heads, T, head_dim] sequence and times, interleaved, each `Segments` kernel
(`vjepa.models.vit.Kernels.packed_attention`: loop, padded, nested), the earlier layout (each
generator's rows padded to its longest, one masked SDPA call per generator) and, where it runs,
`flex_attention` with a document mask. Prints JSON: median milliseconds per kernel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vjepa.config import preset
from vjepa.flops import mask_token_counts
from vjepa.models.vit import Kernels, Segments
from vjepa.train import masks_for_step


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


def flex(lengths: list[int], total: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = create_block_mask(lambda b, h, q, k: rows[q] == rows[k], None, None, total, total, device="cpu")
    return lambda q, k, v: flex_attention(q, k, v, block_mask=mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo64")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = preset(args.preset)
    m, d = cfg.model, cfg.data
    grid = (d.num_frames // m.tubelet_size, d.crop_size // m.patch_size, d.crop_size // m.patch_size)
    groups = [mask_token_counts(mask)[0] for mask in masks_for_step(cfg, grid, d.batch_size, 0)]
    lengths = [n for group in groups for n in group]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    heads, total = m.num_heads, sum(lengths)
    q, k, v = (torch.randn(1, heads, total, m.embed_dim // heads, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)
    kernels = {f"segments_{kind}": segments(lengths, kind) for kind in ("loop", "padded", "nested")}
    kernels["per_generator_padded"] = per_generator_padded(groups)
    kernels["flex_attention"] = flex(lengths, total)
    times: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for round_index in range(args.repeats + 1):
        for name, attend in kernels.items():
            if name in errors:
                continue
            try:
                start = time.perf_counter()
                attend(q, k, v).backward(grad)
                elapsed = time.perf_counter() - start
            except (NotImplementedError, RuntimeError) as err:  # not in this build (flex: no CPU backward)
                errors[name] = f"{type(err).__name__}: {str(err)[:120]}"
                continue
            q.grad = k.grad = v.grad = None
            if round_index:  # the first round warms up
                times.setdefault(name, []).append(elapsed)
    print(json.dumps({
        "preset": args.preset, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "rows": len(lengths), "tokens": total, "longest": max(lengths), "heads": heads,
        "median_ms": {name: round(1e3 * statistics.median(t), 1) for name, t in times.items()},
        "unavailable": errors,
    }, indent=2))


if __name__ == "__main__":
    main()
