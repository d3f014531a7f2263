"""Saved activations of one training step at a real model size, without running it at full size.

    python benchmarks/activation_memory.py --preset vitl16 --batch 24

Autograd's saved tensors (each storage counted once) are measured on the CPU for the model at
depth (1, 1), (2, 1) and (1, 2) (encoder, predictor) and a small batch, then extrapolated
linearly to the preset's depths and `--batch` (activations grow linearly in both). Variants: the
official step in fp32 with SDPA (what its configs run, the `vjepa bench --compare` baseline) and
with materialised attention (the earlier baseline), and ours. Model state (weights, gradients,
AdamW moments) is added separately. Truncation keeps the batch's shortest row, which shrinks as
the batch grows, so the official figures at a large batch are upper bounds.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from vjepa.bench import official_structure
from vjepa.config import PRESETS, Config, preset
from vjepa.jepa import JEPA, StepOptions, official_options
from vjepa.masks import num_generators
from vjepa.masks.step import masks_for_step
from vjepa.models.vit import Kernels


def saved_bytes(cfg: Config, options: StepOptions, batch: int) -> int:
    """Bytes of the distinct storages autograd saves in one forward of `cfg`'s step."""
    torch.manual_seed(0)
    model = JEPA(cfg, num_generators(cfg.mask), options)
    d = cfg.data
    grid = model.encoder.patch_embed.grid(d.num_frames, d.crop_size, d.crop_size)
    masks = masks_for_step(cfg, grid, batch, 0, 0)
    video = torch.randn(batch, 3, d.num_frames, d.crop_size, d.crop_size)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(video, masks)
    return sum(storages.values())


def estimate(cfg: Config, options: StepOptions, probe_batch: int, batch: int) -> dict[str, float]:
    """Saved activations (GiB) at the preset's depths and `batch`, from three shallow probes."""
    probes = {}
    for depth, predictor_depth in ((1, 1), (2, 1), (1, 2)):
        shallow = copy.deepcopy(cfg)
        shallow.model.depth, shallow.model.predictor_depth = depth, predictor_depth
        probes[depth, predictor_depth] = saved_bytes(shallow, options, probe_batch)
    encoder_block = probes[2, 1] - probes[1, 1]
    predictor_block = probes[1, 2] - probes[1, 1]
    rest = probes[1, 1] - encoder_block - predictor_block
    total = rest + cfg.model.depth * encoder_block + cfg.model.predictor_depth * predictor_block
    model = JEPA(cfg, num_generators(cfg.mask), options)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"saved_activations_gib": total * batch / probe_batch / 2**30,
            "state_gib": (weights + 3 * trained) / 2**30}  # weights, gradients, two AdamW moments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vitl16", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=24, help="batch to extrapolate to (per device)")
    parser.add_argument("--probe-batch", type=int, default=2, help="batch of the shallow probes")
    args = parser.parse_args()
    cfg = preset(args.preset)
    official = official_structure(cfg).cfg
    manual = StepOptions(False, False, True, Kernels(attention="manual", conv3d_patch_embed=True))
    ours = copy.deepcopy(cfg)
    ours.run.dtype = "fp32"  # measured in fp32 (bf16 autocast would halve most saved tensors)
    variants = {"official_fp32_sdpa": (official, official_options()),
                "official_fp32_materialised_attention": (official, manual),
                "ours_fp32": (ours, StepOptions())}
    report = {"preset": args.preset, "batch": args.batch, "probe_batch": args.probe_batch}
    for name, (c, options) in variants.items():
        report[name] = {k: round(v, 1) for k, v in estimate(c, options, args.probe_batch, args.batch).items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
