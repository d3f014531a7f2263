"""run.dtype=auto: bf16 only where the device multiplies bf16 in hardware, recorded as what ran."""

import pytest
import torch
import yaml

from vjepa import precision
from vjepa.config import ConfigError, apply_overrides, preset, validate
from vjepa.precision import autocast, native_bf16, resolve_dtype


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "fma"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                                 ({"amx_bf16"}, "bf16"), (set(), "fp32")])
def test_auto_follows_the_cpus_bf16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    assert native_bf16("cpu") == (expected == "bf16")
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("bf16", "cpu") == "bf16" and resolve_dtype("fp32", "cpu") == "fp32"  # explicit wins
    with autocast("cpu", "auto"):
        assert torch.is_autocast_enabled("cpu") == (expected == "bf16")


def test_auto_on_a_gpu_asks_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "cuda") == "fp32"


def test_the_default_is_auto_and_a_run_records_what_ran(monkeypatch, tmp_path):
    from vjepa.train import train

    assert preset("demo").run.dtype == "auto"
    with pytest.raises(ConfigError, match="run.dtype='fp16'"):
        validate(apply_overrides(preset("debug"), ["run.dtype=fp16"]))
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2"})
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={tmp_path}", "optim.steps=1", "run.progress=false",
                                            "run.probe_after=false", "run.dtype=auto"])
    train(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["run"]["dtype"] == "fp32"
