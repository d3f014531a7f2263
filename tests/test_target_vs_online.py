"""experiments/target_vs_online.py: the four encoders of a run, the blend arithmetic, a smoke run."""

import json

import pytest
import torch

from benchmark_utils import load_experiment
from vjepa.checkpoint import load_checkpoint, save_checkpoint
from vjepa.config import apply_overrides, preset
from vjepa.jepa import ema_init_share
from vjepa.models.factory import initial_encoder
from vjepa.train import train


def test_blend_interpolates_every_weight():
    module = load_experiment("target_vs_online")
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    mixed = module.blend(a, b, 0.7)
    assert torch.allclose(mixed.weight, 0.7 * a.weight + 0.3 * b.weight)
    assert torch.allclose(mixed.bias, 0.7 * a.bias + 0.3 * b.bias)
    assert mixed is not a and not torch.equal(mixed.weight, a.weight)


def test_encoders_and_a_smoke_run(tmp_path, capsys):
    module = load_experiment("target_vs_online")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=6", "run.progress=false"])
    train(cfg)
    nets, _, share, step = module.encoders(tmp_path)
    assert step == 6 and share == pytest.approx(ema_init_share(6, cfg.optim))
    init = initial_encoder(cfg)  # the same init train() drew
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
    assert len(payload["encoders"]["init"]["per_class_top1"]) == 8  # motion classes
    printed = capsys.readouterr().out
    assert "| init | online | target | blend |" in printed and "| rotate_cw |" in printed
    assert module.main([str(tmp_path), "--epochs", "1", "--max-train-clips", "8", "--eval-split", "val",
                        "--encoders", "init", "target", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["encoders"]) == {"init", "target"}


def test_checkpoints_it_cannot_compare_are_named(tmp_path):
    module = load_experiment("target_vs_online")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=2", "run.progress=false"])
    train(cfg)
    state = load_checkpoint(tmp_path / "latest.pt")
    save_checkpoint(tmp_path / "no_config.pt", {k: v for k, v in state.items() if k != "config"})
    with pytest.raises(SystemExit, match="no_config.pt has no stored config"):
        module.encoders(tmp_path / "no_config.pt")
    save_checkpoint(tmp_path / "no_target.pt", {k: v for k, v in state.items() if k != "target_encoder"})
    with pytest.raises(SystemExit, match="no_target.pt has no target_encoder"):
        module.encoders(tmp_path / "no_target.pt")
