"""experiments/demo_variants.py: a smoke run trains, probes trained and random-init encoders, resumes."""

import json

from benchmark_utils import load_experiment


def test_quick_run_writes_table_and_skips_finished_variants(tmp_path, capsys):
    module = load_experiment("demo_variants")
    args = ["--quick", "--variants", "short", "--out", str(tmp_path)]
    assert module.main(args) == 0
    result = json.loads((tmp_path / "short" / "demo_variant.json").read_text())
    assert set(result["trained"]) == set(result["random"]) == {"motion", "appearance"}
    assert all(0.0 <= v <= 100.0 for v in [*result["trained"].values(), *result["random"].values()])
    config = (tmp_path / "short" / "config.yaml").read_text()
    assert config.count("num_blocks:") == 1  # the short-range generator only
    assert "| short |" in (tmp_path / "demo_variants.md").read_text()
    capsys.readouterr()
    stamp = (tmp_path / "short" / "latest.pt").stat().st_mtime_ns
    assert module.main(args) == 0  # finished: read back, not retrained
    assert (tmp_path / "short" / "latest.pt").stat().st_mtime_ns == stamp
    assert "| short |" in capsys.readouterr().out
