"""Write small checkpoints in the released files' layouts, to try the loading commands offline.

The released V-JEPA 1 / V-JEPA 2 checkpoints are hundreds of MB to GB and need a download; these
files have the same layout and tensor names (ViT-L/16 width, heads and patch, cut to one block, random
weights), so every command that reads a released file can be tried on them:

    python docs/examples/make_official_files.py /tmp/official
    vjepa embed VIDEO --checkpoint /tmp/official/vitl16-v1-cut.pth.tar -o v1.safetensors
    vjepa embed VIDEO --checkpoint /tmp/official/vitl16-v2-cut.pt -o v2.safetensors
    vjepa export /tmp/official/vitl16-v2-cut.pt --format hf -o /tmp/official/hf
    vjepa embed VIDEO --checkpoint /tmp/official/hf -o hf.safetensors

Layouts (facebookresearch/jepa `app/vjepa/train.py` and facebookresearch/vjepa2's): a dict with
`encoder`, `predictor`, `target_encoder` under DDP's `module.backbone.` prefix, plus `opt`, `epoch`,
`loss`, ...; V-JEPA 1 stores a sin-cos `pos_embed` table and 2 mask tokens, V-JEPA 2 uses RoPE (its
files still carry an unused `pos_embed`) and stores 10 mask tokens. Tests build such files from
independently written key lists (`tests/test_official_keys.py`, `tests/test_formats.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vjepa.config import apply_overrides, preset
from vjepa.models.factory import build_encoder, token_grid
from vjepa.models.predictor import build_predictor


def official_file(preset_name: str, mask_tokens: int, rope: bool) -> dict:
    """A released-layout checkpoint dict: ViT-L/16 cut to 1 encoder and 1 predictor block."""
    cfg = apply_overrides(preset(preset_name), ["model.depth=1", "model.predictor_depth=1"])
    torch.manual_seed(0)
    encoder = build_encoder(cfg)
    predictor = build_predictor(cfg.model, mask_tokens, token_grid(cfg))

    def wrapped(module: torch.nn.Module, table: str) -> dict:
        state = dict(module.state_dict())
        if rope:  # V-JEPA 2 files keep the sin-cos table the RoPE model never reads
            width = predictor.predictor_embed.out_features if table.startswith("predictor") else encoder.embed_dim
            state[table] = torch.zeros(1, encoder.grid[0] * encoder.grid[1] * encoder.grid[2], width)
        return {f"module.backbone.{k}": v for k, v in state.items()}

    return {"encoder": wrapped(encoder, "pos_embed"), "target_encoder": wrapped(encoder, "pos_embed"),
            "predictor": wrapped(predictor, "predictor_pos_embed"), "opt": {}, "scaler": None, "epoch": 1,
            "loss": 0.5, "batch_size": 24, "world_size": 1, "lr": 1e-4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write vitl16-v1-cut.pth.tar and vitl16-v2-cut.pt into")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(official_file("vitl16", 2, rope=False), out / "vitl16-v1-cut.pth.tar")
    torch.save(official_file("vitl16_v2", 10, rope=True), out / "vitl16-v2-cut.pt")
    print(f"wrote {out / 'vitl16-v1-cut.pth.tar'} and {out / 'vitl16-v2-cut.pt'}")


if __name__ == "__main__":
    main()
