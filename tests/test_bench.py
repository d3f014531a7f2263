"""The benchmark's variants: the official baseline as its configs run it, options held per model, JSON out."""

import itertools
import json

import pytest
import torch

from vjepa import bench
from vjepa.bench import ablation_variants, official_structure
from vjepa.cli import main
from vjepa.config import preset
from vjepa.jepa import JEPA, StepOptions, official_options
from vjepa.models.vit import Attention, Kernels, attention_core


@pytest.fixture
def small_peak(monkeypatch):
    """The default 2048^2 bf16 peak probe takes minutes on one thread; a small product suffices here."""
    real_peak = bench.matmul_peak
    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype, size=None, repeats=5: real_peak(device, dtype, 128, 1))


def test_official_baseline_is_what_the_official_configs_run():
    """SDPA (use_sdpa: true), fp32, truncation; not materialised attention (which needed ~95 GB at vitl16)."""
    base = official_structure(preset("demo64"))
    assert (base.cfg.run.dtype, base.cfg.mask.collate) == ("fp32", "truncate")
    assert base.options.kernels.attention == "sdpa" and base.options.kernels.conv3d_patch_embed
    assert base.options.reembed_per_generator and not base.options.batch_generators
    assert official_structure(preset("demo64"), "bf16").cfg.run.dtype == "bf16"


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_ablation_starts_from_the_official_baseline_and_ends_at_ours(dtype):
    cfg = preset("demo64")
    cfg.run.dtype = dtype
    chain = ablation_variants(cfg)
    assert chain[0].options == official_options() and chain[0].cfg.run.dtype == "fp32"
    assert chain[0].cfg.mask.collate == "truncate"
    assert chain[-1].options == StepOptions() and chain[-1].cfg.mask.collate == cfg.mask.collate
    assert chain[-1].cfg.run.dtype == dtype
    assert len({v.name for v in chain}) == len(chain)
    # each step changes something
    for before, after in itertools.pairwise(chain):
        changed = (before.options, before.cfg.run.dtype, before.cfg.mask.collate) != (
            after.options, after.cfg.run.dtype, after.cfg.mask.collate)
        assert changed, after.name


def test_models_hold_their_own_kernels():
    """Two models with different options live side by side: nothing is a module global."""
    cfg = preset("debug")
    official = JEPA(cfg, 2, official_options())
    ours = JEPA(cfg, 2)
    kinds = {m.kernels.attention for m in official.modules() if isinstance(m, Attention)}
    assert kinds == {"sdpa"}
    assert {m.kernels.attention for m in ours.modules() if isinstance(m, Attention)} == {"auto"}
    assert official.encoder.kernels.conv3d_patch_embed and not ours.encoder.kernels.conv3d_patch_embed


def test_manual_and_sdpa_kernels_agree():
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., 7:] = False
    sdpa = attention_core(q, k, v, mask, Kernels(attention="sdpa"))
    assert torch.allclose(sdpa, attention_core(q, k, v, mask, Kernels(attention="manual")), atol=1e-5)
    with pytest.raises(ValueError, match="attention kernel"):
        Kernels(attention="flash")


def test_bench_cli_writes_json(tmp_path, small_peak, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--preset", "debug", "--steps", "1", "--warmup", "0", "--compare", "--json", str(out),
                 "--official-dtypes", "fp32", "bf16"])
    assert code == 0
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["results"]] == ["ours", "official", "official_bf16"]
    speedups = report["speedups"]
    assert speedups["ours_vs_official_valid_tokens"] > 0
    # clips/s ratio = FLOP-rate ratio / work-per-clip ratio; keeping the truncated tokens costs work
    ours, official = report["results"][:2]
    assert speedups["ours_vs_official_work_per_clip"] == pytest.approx(
        ours["flops_per_step"]["total"] / official["flops_per_step"]["total"])
    assert speedups["ours_vs_official_work_per_clip"] > 1
    assert speedups["ours_vs_official_flop_rate"] / speedups["ours_vs_official_work_per_clip"] == pytest.approx(
        speedups["ours_vs_official"])


def test_bench_cli_rejects_an_unwritable_json_path_before_timing(tmp_path, capsys):
    code = main(["bench", "--preset", "debug", "--json", str(tmp_path / "missing" / "x.json")])
    assert code == 2
    assert "--json" in capsys.readouterr().err
    assert main(["bench", "--preset", "debug", "--json", str(tmp_path)]) == 2
    assert "cannot write (it is a folder)" in capsys.readouterr().err


def test_bench_cli_refuses_bad_counts_and_mixed_modes_leaving_no_file(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert main(["bench", "--preset", "debug", "--steps", "0", "--json", str(out)]) == 2
    assert "--steps 0 --warmup 3: time at least 1 step" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "--preset", "debug", "--warmup", "-1"]) == 2  # was a ZeroDivisionError
    capsys.readouterr()
    assert main(["bench", "--preset", "debug", "--batch-size", "0"]) == 2  # was run at the preset's batch
    assert "data.batch_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--preset", "debug", "--compare", "--ablation"])  # only one mode
    assert "not allowed with argument" in capsys.readouterr().err


def test_compare_times_the_official_bf16_step_only_where_the_device_has_bf16(monkeypatch, small_peak):
    chosen = []
    monkeypatch.setattr(bench, "run_variants", lambda variants, *a, **k: chosen.append([v.name for v in variants]) or [
        {"name": v.name, "clips_per_s": 1.0, "valid_tokens_per_s": 1.0, "achieved_flops_per_s": 1.0,
         "flops_per_step": {"total": 1.0}, "batch_size": 1} for v in variants])
    for native, expected in (("fp32", ["ours", "official"]), ("bf16", ["ours", "official", "official_bf16"])):
        monkeypatch.setattr(bench, "resolve_dtype", lambda dtype, device, native=native: native)
        bench.benchmark(preset("debug"), steps=1, warmup=0, compare_official=True, device="cpu")
        assert chosen[-1] == expected


@pytest.mark.parametrize("preset_policy", [None, "ACTIVE"])
def test_cli_lets_idle_openmp_threads_sleep_unless_the_user_chose(preset_policy):
    """The wait policy must be in the environment before torch starts OpenMP (so: a fresh process)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset_policy:
        env["OMP_WAIT_POLICY"] = preset_policy
    script = ("import os; from vjepa.cli import main; main(['config', 'debug']); "
              "import torch; print(os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == (preset_policy or "PASSIVE")


def test_each_side_is_timed_with_its_own_optimiser():
    """Ours: training's AdamW (fused on CUDA, so the GPU bench times what training runs); the official
    step: the plain AdamW its code builds."""
    from vjepa.bench import Variant, step_optimizer

    cfg = preset("debug")
    ours = Variant("ours", cfg, StepOptions())
    model = JEPA(cfg, 2)
    assert step_optimizer(ours, model, torch.device("cuda")).defaults["fused"] is True  # built without a GPU
    assert not step_optimizer(ours, model, torch.device("cpu")).defaults["fused"]
    assert not step_optimizer(official_structure(cfg), model, torch.device("cuda")).defaults["fused"]


def test_compile_benchmark_times_eager_packed_eager_padded_compiled_and_official():
    from benchmark_utils import load_benchmark

    chosen = load_benchmark("compile_step").variants("debug", "fp32", batch_size=3)
    assert [v.name for v in chosen] == ["ours", "ours_padded", "ours_compiled", "official"]
    assert [v.cfg.run.compile for v in chosen] == [False, False, True, False]
    assert chosen[1].options.pack is False and chosen[0].options is None  # None: JEPA's default (packed, eager)
    assert chosen[3].cfg.mask.collate == "truncate"
    assert {v.cfg.data.batch_size for v in chosen} == {3} and {v.cfg.run.dtype for v in chosen} == {"fp32"}
    bf16 = load_benchmark("compile_step").variants("debug", "bf16", None)
    records = [{"name": v.name, "clips_per_s": rate} for v, rate in zip(bf16, (4.0, 2.0, 3.0, 8.0))]
    assert load_benchmark("compile_step").clips_ratios(records) == {  # bf16: the official step is official_bf16
        "ours_compiled_vs_ours_padded": 1.5, "ours_compiled_vs_ours": 0.75, "ours_vs_official_bf16": 0.5,
        "ours_compiled_vs_official_bf16": 0.375}
