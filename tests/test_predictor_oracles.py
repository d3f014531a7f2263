"""experiments/predictor_oracles.py: oracle arithmetic, a smoke run, checkpoints it cannot read."""

import json

import pytest
import torch

from benchmark_utils import load_experiment
from vjepa.config import apply_overrides, preset
from vjepa.train import train


def test_weighted_mean_ignores_invalid_rows():
    module = load_experiment("predictor_oracles")
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert module.weighted_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
    assert module.weighted_mean(x, None).item() == pytest.approx(104 / 3)


@pytest.mark.parametrize("overrides", [["objective.target_norm=layer"], ["objective.target_norm=layer_center"],
                                       ["mask.kind=tube"]])  # tube: one generator, one mask token
def test_oracles_on_a_short_run(tmp_path, capsys, overrides):
    module = load_experiment("predictor_oracles")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=4", "run.progress=false",
                                            *overrides])
    train(cfg)
    model, loaded, step = module.load_model(tmp_path / "latest.pt")
    assert step == 4 and (loaded.objective.target_norm, loaded.mask.kind) == (cfg.objective.target_norm, cfg.mask.kind)
    losses = module.oracle_losses(model, loaded, batches=2, start_step=50)
    assert set(losses) == {"model", *module.ORACLES} and all(v > 0 for v in losses.values())
    # the per-clip median is the best constant vector per clip under L1, so it beats the zero vector
    assert losses["clip_constant"] <= losses["zero"] + 1e-6
    out = tmp_path / "o.json"
    assert module.main([str(tmp_path), "--batches", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["losses"].keys() == losses.keys()
    assert "| model | clip_constant |" in capsys.readouterr().out


def test_pixel_checkpoint_is_named(tmp_path):
    module = load_experiment("predictor_oracles")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=2", "run.progress=false",
                                            "objective.kind=pixel"])
    train(cfg)
    with pytest.raises(SystemExit, match="latest.pt lacks target_encoder"):
        module.load_model(tmp_path / "latest.pt")
