"""benchmarks/target_vs_online.py: the four encoders of a run, the blend arithmetic, a smoke run."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vjepa.config import apply_overrides, preset
from vjepa.jepa import ema_init_share
from vjepa.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "target_vs_online.py"


def load_module():
    spec = importlib.util.spec_from_file_location("target_vs_online", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blend_interpolates_every_weight():
    module = load_module()
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mixed = module.blend(a, b, 0.7)
    assert torch.allclose(mixed.weight, 0.7 * a.weight + 0.3 * b.weight)
    assert torch.allclose(mixed.bias, 0.7 * a.bias + 0.3 * b.bias)
    assert mixed is not a and not torch.equal(mixed.weight, a.weight)


def test_encoders_and_a_smoke_run(tmp_path, capsys):
    module = load_module()
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=6", "run.progress=false"])
    train(cfg)
    nets, _, share, step = module.encoders(tmp_path)
    assert step == 6 and share == pytest.approx(ema_init_share(6, cfg.optim))
    init = module.initial_encoder(cfg)  # the same init train() drew
    assert torch.equal(nets["init"].pos_embed, init.pos_embed)
    assert torch.equal(nets["init"].patch_embed.proj.weight, init.patch_embed.proj.weight)
    w = lambda name: nets[name].blocks[0].mlp.fc1.weight
    assert not torch.equal(w("online"), w("init"))  # trained
    assert torch.allclose(w("blend"), share * w("init") + (1 - share) * w("online"), atol=1e-6)
    out = tmp_path / "cmp.json"
    assert module.main([str(tmp_path), "--epochs", "2", "--max-train-clips", "16", "--eval-split", "val",
                        "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["encoders"]) == {"init", "online", "target", "blend"}
    assert "| init | online | target | blend |" in capsys.readouterr().out
    assert module.main([str(tmp_path), "--epochs", "1", "--max-train-clips", "8", "--eval-split", "val",
                        "--encoders", "init", "target", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["encoders"]) == {"init", "target"}
