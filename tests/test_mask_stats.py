"""benchmarks/mask_stats.py: hidden shares and what truncating collation loses, against hand counts."""

import json

import pytest
import torch

from benchmark_utils import load_benchmark
from vjepa.config import MaskConfig


def test_lost_share_counts_tokens_dropped_by_truncation():
    module = load_benchmark("mask_stats")
    # 2 samples of 6 tokens: targets {0,1,2} and {0}. Truncation keeps the first 1 target and the
    # first 3 context tokens of each row: sample 0 loses targets 1,2 and sample 1 context 4,5.
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert module.lost_share(mask, "truncate").tolist() == pytest.approx([2 / 6, 2 / 6])
    assert module.lost_share(mask, "pad").tolist() == [0.0, 0.0]


def test_statistics_of_the_default_masks(tmp_path, capsys):
    module = load_benchmark("mask_stats")
    stats = module.mask_statistics(MaskConfig(), (8, 14, 14), batch_size=8, batches=5)
    short, long = stats
    assert 0.4 < short["hidden_mean"] < 0.8 and 0.7 < long["hidden_mean"] < 0.95  # the paper's ranges
    assert short["lost_truncate"] > 0.05 and long["lost_truncate"] > 0.05
    assert short["lost_pad"] == long["lost_pad"] == 0.0
    out = tmp_path / "stats.json"
    assert module.main(["--grid", "4", "8", "8", "--batch-size", "4", "--batches", "2", "--out", str(out)]) == 0
    assert "| 8 blocks x 0.15 of the frame |" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["generators"]) == 2
