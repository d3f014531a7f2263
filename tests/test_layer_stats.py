"""experiments/layer_stats.py: per-layer statistics of a run's encoders."""

import json

import pytest
import torch

from benchmark_utils import load_experiment
from vjepa.config import apply_overrides, preset
from vjepa.models.factory import initial_encoder
from vjepa.train import train


def test_layer_stats_sees_a_clip_constant_layer():
    """A block that replaces every token by its clip's mean shows within_clip 0 from there on,
    while the layers before it keep their spread."""
    module = load_experiment("layer_stats")
    cfg = preset("debug")
    encoder = initial_encoder(cfg).eval()

    class ClipMean(torch.nn.Module):
        def forward(self, x, attn_mask=None):
            return x.mean(dim=1, keepdim=True).expand_as(x)

    encoder.blocks[1] = ClipMean()
    video = torch.randn(4, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    rows = module.layer_stats(encoder, video)
    assert [r["layer"] for r in rows] == ["embed"] + [f"block {i + 1}" for i in range(len(encoder.blocks))] + ["output"]
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer["embed"]["within_clip"] > 0.5 and by_layer["block 1"]["within_clip"] > 0.5
    assert by_layer["block 2"]["within_clip"] == pytest.approx(0.0, abs=1e-6)
    assert by_layer["output"]["within_clip"] == pytest.approx(0.0, abs=1e-6)


def test_layer_stats_smoke_run(tmp_path, capsys):
    module = load_experiment("layer_stats")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=3", "run.progress=false"])
    train(cfg)
    out = tmp_path / "layers.json"
    assert module.main([str(tmp_path), "--clips", "4", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["encoders"]) == {"init", "online", "target"} and payload["step"] == 3
    init, online = payload["encoders"]["init"], payload["encoders"]["online"]
    assert len(init) == cfg.model.depth + 2 and init[0]["layer"] == "embed"
    assert init[0]["token_norm"] != online[0]["token_norm"]  # the embedding trained
    assert "effective_rank" in capsys.readouterr().out
