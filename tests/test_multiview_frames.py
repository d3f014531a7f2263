"""Multi-view evaluation: every segment view holds the frames it should, read off the pixels.

The real-video test uses a video whose frame i spells i in its grey levels (tests/video_utils.py),
so a view's frame indices are decoded from what the evaluation actually feeds the encoder.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from video_utils import decode_index, write_index_video
from vjepa.config import ProbeConfig, apply_overrides, preset
from vjepa.eval.views import SyntheticViews, segment_starts, view_dataset


def to_uint8(views: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised views [V, 3, F, h, w] -> uint8 frames [V, F, h, w, 3]."""
    pixels = views * torch.tensor(std)[None, :, None, None, None] + torch.tensor(mean)[None, :, None, None, None]
    return (pixels.permute(0, 2, 3, 4, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def test_segment_starts_by_hand():
    assert segment_starts(16, 8, 2) == [0, 8]
    assert segment_starts(8, 4, 3) == [0, 2, 4]
    assert segment_starts(16, 4, 4) == [0, 4, 8, 12]
    assert segment_starts(10, 4, 1) == [0]


def test_synthetic_views_hold_their_segments_frames():
    cfg = preset("debug")  # synthetic clips of 8 frames
    probe = ProbeConfig(num_segments=3, frames_per_segment=4, num_crops=1)
    views = SyntheticViews(cfg, probe, "val", num_crops=1)
    item = views[0]["video"]  # [S*C, 3, F, h, w]
    assert item.shape == (3, 3, 4, cfg.data.crop_size, cfg.data.crop_size)
    frames = torch.from_numpy(views.clips.clip(0)[0])  # [T, H, W, 3]
    for s, start in enumerate([0, 2, 4]):  # 8 frames, windows of 4, evenly spaced
        assert torch.equal(item[s], views.transform(frames[start:start + 4])[0]), s
    assert not torch.equal(item[0], item[2])  # the clip moves: different windows differ


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("index_videos")
    write_index_video(root / "a.mp4", num_frames=40)
    write_index_video(root / "b.mp4", num_frames=24)
    (root / "val.csv").write_text(f"{root / 'a.mp4'} 0\n{root / 'b.mp4'} 1\n")
    return root


@pytest.mark.parametrize("num_crops", [1, 3])
def test_real_video_views_hold_the_frames_of_their_segment(index_videos, num_crops):
    cfg = apply_overrides(preset("debug"), [
        "data.source=csv", f"data.path={index_videos}", "data.crop_size=16",
    ])
    # the probe samples with its own frame step (probe.frame_step), not the pretraining data's
    probe = ProbeConfig(num_segments=2, frames_per_segment=4, num_crops=num_crops, frame_step=2)
    dataset = view_dataset(cfg, probe, "val", num_crops)
    # a.mp4: 40 frames in 2 segments of 20, each clip 4 frames 2 apart from its segment's start;
    # b.mp4: 24 frames, segments of 12
    for index, expected in [(0, [[0, 2, 4, 6], [20, 22, 24, 26]]), (1, [[0, 2, 4, 6], [12, 14, 16, 18]])]:
        item = dataset[index]
        assert item["video"].shape == (2 * num_crops, 3, 4, 16, 16) and item["label"] == index
        frames = to_uint8(item["video"], cfg.data.mean, cfg.data.std)  # [V, F, h, w, 3]
        for view in range(2 * num_crops):
            segment = view // num_crops  # views are segment-major: view s*C + c
            np.testing.assert_array_equal(decode_index(frames[view]), expected[segment], err_msg=f"view {view}")
