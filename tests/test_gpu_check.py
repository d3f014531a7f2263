"""benchmarks/gpu_check.sh: its dry run (the GPU checks' code on the CPU, tiny shapes) runs and reports."""

import json
import os
import subprocess
import sys

import pytest

from benchmark_utils import BENCHMARKS, load_benchmark


@pytest.mark.slow
def test_the_dry_run_runs_all_eight_checks(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          check=False, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    module = load_benchmark("gpu_check")
    assert all("error" not in report[name] for name in module.CHECKS), report
    assert report["environment"]["dry_run"] and report["environment"]["device"] == "cpu"
    assert report["sdpa_kernels"]["relative_difference"] < 1e-4
    assert report["host_syncs"]["steps"] == 3
    assert report["bench_eager"]["clips_per_s"] > 0 and report["bench_eager"]["mfu"] > 0
    assert report["bench_compile"]["graphs_compiled"] >= 1
    assert report["bench_compile"]["compiled_losses"] == report["bench_compile"]["eager_losses"]  # eager backend
    assert report["resume"]["max_abs_difference"] == 0.0  # bit-exact on the CPU
    assert set(report["loader"]["clips_per_s"]) == {"0", "1"}
    assert report["loader"]["bytes_per_step_as_fp32"] == 4 * report["loader"]["bytes_per_step"]
    assert report["loader"]["dtype"] == "torch.uint8"
    compare = report["compare"]  # ours against the official step (fp32 on the CPU; bf16 autocast on a GPU)
    assert compare["ours"]["clips_per_s"] > 0 and compare["official"]["valid_tokens_per_s"] > 0
    assert compare["speedups"]["ours_vs_official_work_per_clip"] > 1  # we keep the tokens truncation drops
    attention = report["packed_attention"]
    assert attention["device"] == "cpu" and attention["tokens"] > 0
    assert {"segments_loop", "segments_padded", "official_truncated"} <= set(attention["median_ms"])


def test_a_failing_check_is_reported_and_fails_the_script(monkeypatch, capsys):
    module = load_benchmark("gpu_check")

    def broken(opts):
        raise RuntimeError("no kernel fits")

    monkeypatch.setattr(module, "check_sdpa_kernels", broken)
    assert module.main(["--dry-run", "--only", "sdpa_kernels"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["sdpa_kernels"]["error"] == "RuntimeError: no kernel fits"


def test_without_a_gpu_the_real_run_says_to_use_the_dry_run(monkeypatch):
    module = load_benchmark("gpu_check")
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device here; use --dry-run"):
        module.main([])
