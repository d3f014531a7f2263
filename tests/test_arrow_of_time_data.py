"""experiments/arrow_of_time_data.py: pieces of the opencv-doc clips, forwards and reversed, split by time."""

import numpy as np
import pytest

from benchmark_utils import load_experiment
from vjepa.data.decode import read_frames

CLIP = "/usr/share/doc/opencv-doc/examples/data/Megamind.avi"  # 270 frames, 720x528, moving


def test_backward_pieces_are_the_forward_ones_reversed(tmp_path):
    from pathlib import Path

    if not Path(CLIP).exists():
        pytest.skip("needs the Debian opencv-doc clips")
    module = load_experiment("arrow_of_time_data")
    counts = module.write_dataset(tmp_path, segment=90, size=16, sources=("Megamind",))  # 3 pieces
    assert counts == {"train/forward": 2, "train/backward": 2, "test/forward": 1, "test/backward": 1}
    forward = read_frames(tmp_path / "train" / "forward" / "Megamind_00.mp4", np.arange(90)).astype(float)
    backward = read_frames(tmp_path / "train" / "backward" / "Megamind_00.mp4", np.arange(90)).astype(float)
    assert forward.shape[1:3] == (16, 22)  # short side 16, 720x528 -> 21.8 -> 22 px wide
    assert np.abs(forward[::-1] - backward).mean() < 3  # the same frames, reversed (up to H.264)
    assert np.abs(forward - backward).mean() > np.abs(forward[::-1] - backward).mean() + 1
    assert (tmp_path / "test" / "forward" / "Megamind_02.mp4").exists()  # the last 30% is the test split
