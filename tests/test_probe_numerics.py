"""experiments/probe_numerics.py: both numerics train on one cache; the 'before' probe really differs."""

import json
import sys

import torch

from benchmark_utils import load_experiment
from vjepa.config import preset
from vjepa.eval import probe_train
from vjepa.models.probe import build_probe


def test_before_numerics_change_the_forward():
    script = load_experiment("probe_numerics")
    torch.manual_seed(0)
    official = build_probe("attentive", 32, 4, 3)
    before = script.before_numerics(build_probe("attentive", 32, 4, 3))
    before.load_state_dict(official.state_dict())
    tokens = torch.randn(2, 8, 32)
    assert all(m.eps == 1e-6 for m in before.modules() if isinstance(m, torch.nn.LayerNorm))
    assert not torch.allclose(official(tokens), before(tokens))  # the projection is applied again


def test_smoke_run_prints_both_numerics_and_restores_the_factory(monkeypatch, capsys):
    script = load_experiment("probe_numerics")
    assert preset("debug").data.source == "synthetic"
    monkeypatch.setattr(sys, "argv", ["probe_numerics.py", "debug", "data.synthetic.num_train=16",
                                      "--epochs", "1", "--seeds", "0", "--tasks", "motion"])
    factory = probe_train.build_probe
    script.main()
    out = json.loads(capsys.readouterr().out)
    assert out["num_train"] == 16
    assert set(out["results"]["motion"]) == {"official", "before"}
    assert probe_train.build_probe is factory
