"""docs/examples/make_official_files.py: its files load as released V-JEPA 1 / V-JEPA 2 checkpoints."""

import importlib.util
from pathlib import Path

import torch

from vjepa.api import load

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "make_official_files.py"


def test_released_layout_files_load_with_the_right_architecture(tmp_path):
    spec = importlib.util.spec_from_file_location("make_official_files", EXAMPLE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.save(script.official_file("vitl16", 2, rope=False), tmp_path / "v1.pth.tar")
    torch.save(script.official_file("vitl16_v2", 10, rope=True), tmp_path / "v2.pt")
    for name, pos, tokens in (("v1.pth.tar", "sincos", 2), ("v2.pt", "rope", 10)):
        encoder = load(tmp_path / name, device="cpu")
        m = encoder.config.model
        assert (m.embed_dim, m.num_heads, m.depth, m.pos_embed) == (1024, 16, 1, pos), name
        assert len(encoder.predictor.mask_tokens) == tokens
