"""experiments/motion_from_pixels.py: the pixels reveal every motion's direction; confusion arithmetic."""

import json

import numpy as np

from benchmark_utils import load_experiment
from vjepa.config import preset
from vjepa.data.synthetic import MOTION_CLASSES, motion_type, render_clip, sprite_states


def test_flow_fit_recovers_every_direction_on_the_demo32_data():
    module = load_experiment("motion_from_pixels")
    result = module.measure(preset("demo32").data.synthetic, "test", max_clips=64)
    assert sum(row["clips"] for row in result.values()) == 64
    for kind, row in result.items():
        assert row["clips"] == 16 and row["direction_top1"] >= 95.0, (kind, row)


def test_flow_fit_sign_flips_with_time_reversed_frames():
    """A fit that ignored the pixels' order in time could not tell cw from ccw or grow from shrink."""
    module = load_experiment("motion_from_pixels")
    cfg = preset("demo32").data.synthetic
    for index in range(24):
        frames, motion, _ = render_clip(cfg, "val", index)
        name = MOTION_CLASSES[motion]
        kind = motion_type(name)
        states = sprite_states(cfg, "val", index)
        reversed_states = [{k: v[::-1] for k, v in s.items()} for s in states]
        forward = module.fitted_direction(frames, states, kind)
        backward = module.fitted_direction(frames[::-1], reversed_states, kind)
        assert forward * backward < 0, (name, forward, backward)


def test_main_prints_pixels_and_probe_columns(tmp_path, capsys):
    module = load_experiment("motion_from_pixels")
    confusion = np.eye(8, dtype=int) * 3
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"encoders": {"init": {"top1": 100.0, "confusion": confusion.tolist()}}}))
    out = tmp_path / "out.json"
    assert module.main(["--preset", "demo32", "--max-clips", "16", "--probe-json", str(probe),
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| rotation | 4 | 100.0 | 100.0 |" in printed
    assert json.loads(out.read_text())["pixels"]["scale"]["clips"] == 4
