"""Decoding (exact frame indices from files the tests write) and clip sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from video_utils import decode_index, index_frame, write_index_video
from vjepa.data import decode as decode_module
from vjepa.data.decode import (
    DecodeError,
    available_decoders,
    iter_frames,
    probe_video,
    read_frames,
    to_rgb_uint8,
)
from vjepa.data.sampling import ClipSpec, filter_reason, frame_step_for, sample_clip_indices


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4": str(write_index_video(folder / "a.mp4", num_frames=40)),
        "long": str(write_index_video(folder / "long.mp4", num_frames=300, gop=20)),
        "odd": str(write_index_video(folder / "odd.mp4", num_frames=12, height=18, width=22, codec="mpeg4")),
    }


# ---------------------------------------------------------------------------------------------
# video files


def test_probe(videos: dict[str, str]) -> None:
    info = probe_video(videos["mp4"])
    assert (info.num_frames, info.fps, info.height, info.width) == (40, 8.0, 32, 32)


def test_exact_random_access(videos: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        indices = rng.integers(0, 40, size=rng.integers(1, 10))  # unsorted, with repeats
        frames = read_frames(videos["mp4"], indices)
        assert frames.dtype == np.uint8 and frames.shape == (len(indices), 32, 32, 3)
        np.testing.assert_array_equal(decode_index(frames), indices)


def test_exact_across_keyframes(videos: dict[str, str]) -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        indices = np.sort(rng.choice(300, size=8, replace=False))
        np.testing.assert_array_equal(decode_index(read_frames(videos["long"], indices)), indices)


def test_short_clip_does_not_decode_whole_file(
    videos: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = decode_module._FrameClock.index
    monkeypatch.setattr(
        decode_module._FrameClock, "index", lambda self, pts: calls.append(pts) or original(self, pts)
    )
    indices = [250, 254, 258, 262]
    np.testing.assert_array_equal(decode_index(read_frames(videos["long"], indices)), indices)
    assert len(calls) < 60  # one GOP (20) plus the clip, not 263 frames


def test_variable_frame_rate_is_exact(tmp_path: Path) -> None:
    path = write_index_video(tmp_path / "vfr.mp4", num_frames=40, jitter=True)
    assert probe_video(path).num_frames == 40
    indices = [0, 1, 2, 3, 21, 22, 38, 39, 7]
    np.testing.assert_array_equal(decode_index(read_frames(path, indices)), indices)
    if "torchcodec" in available_decoders():
        np.testing.assert_array_equal(decode_index(read_frames(path, indices, decoder="torchcodec")), indices)


@pytest.mark.parametrize(("codec", "suffix"), [("mpeg4", "avi"), ("libvpx-vp9", "webm"), ("ffv1", "mkv")])
def test_other_containers(tmp_path, codec: str, suffix: str) -> None:
    path = write_index_video(tmp_path / f"v.{suffix}", num_frames=30, codec=codec, gop=8)
    assert probe_video(path).num_frames == 30
    indices = [29, 0, 13, 14, 22]
    np.testing.assert_array_equal(decode_index(read_frames(path, indices)), indices)


def test_single_channel_video(tmp_path: Path) -> None:
    path = write_index_video(tmp_path / "grey.mkv", num_frames=10, codec="ffv1", pix_fmt="gray")
    frames = read_frames(path, [9, 4])
    assert frames.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(decode_index(frames), [9, 4])


def test_odd_sizes(videos: dict[str, str]) -> None:
    frames = read_frames(videos["odd"], [0, 11])
    assert frames.shape == (2, 18, 22, 3)
    np.testing.assert_array_equal(decode_index(frames), [0, 11])


@pytest.mark.skipif("torchcodec" not in available_decoders(), reason="torchcodec not installed")
def test_torchcodec_matches_pyav(videos: dict[str, str]) -> None:
    indices = [3, 17, 17, 2, 39]
    pyav = read_frames(videos["mp4"], indices, decoder="pyav")
    codec = read_frames(videos["mp4"], indices, decoder="torchcodec")
    np.testing.assert_array_equal(decode_index(codec), indices)
    assert np.abs(pyav.astype(int) - codec.astype(int)).max() <= 2
    assert probe_video(videos["mp4"], decoder="torchcodec").num_frames == 40


def test_reading_past_the_end(videos: dict[str, str]) -> None:
    # headers may over-count a frame or two: those repeat the last frame ...
    np.testing.assert_array_equal(decode_index(read_frames(videos["mp4"], [39, 40])), [39, 39])
    # ... more is a truncated stream
    with pytest.raises(DecodeError, match="truncated") as info:
        read_frames(videos["mp4"], [10, 60])
    assert info.value.reason == "truncated" and info.value.path == videos["mp4"]


def test_iter_frames(videos: dict[str, str]) -> None:
    chunks = list(iter_frames(videos["mp4"], chunk=16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    np.testing.assert_array_equal(decode_index(np.concatenate(chunks)), np.arange(40))


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_files(tmp_path, good: str) -> dict[str, str]:
    data = Path(good).read_bytes()
    paths = {
        "empty": tmp_path / "empty.mp4",
        "garbage": tmp_path / "garbage.mp4",
        "truncated": tmp_path / "truncated.mp4",
        "text": tmp_path / "notes.txt",
    }
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["text"].write_text("not a video")
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize(
    ("name", "reasons"),
    [
        ("empty", {"empty"}),
        ("garbage", {"corrupt"}),
        ("truncated", {"corrupt", "truncated"}),
        ("text", {"unsupported"}),
    ],
)
def test_bad_files_raise_decode_error(tmp_path, videos: dict[str, str], name: str, reasons: set[str]) -> None:
    path = _bad_files(tmp_path, videos["mp4"])[name]
    with pytest.raises(DecodeError) as info:
        probe_video(path)
        read_frames(path, [0, 20, 39])
    assert info.value.reason in reasons and path in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DecodeError, match="missing"):
        read_frames(tmp_path / "nope.mp4", [0])


def test_corrupted_bytes_never_crash(tmp_path, videos: dict[str, str]) -> None:
    data = bytearray(Path(videos["long"]).read_bytes())
    rng = np.random.default_rng(0)
    for position in rng.integers(len(data) // 4, len(data), 200):
        data[position] = rng.integers(0, 256)
    path = tmp_path / "flipped.mp4"
    path.write_bytes(bytes(data))
    try:  # FFmpeg conceals some damage and returns frames; otherwise a DecodeError
        frames = read_frames(path, [0, 100, 200])
        assert frames.shape[0] == 3
    except DecodeError:
        pass


# ---------------------------------------------------------------------------------------------
# frame folders and TIFF stacks


def test_frame_folder_natural_order(tmp_path) -> None:
    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(12):
        image.fromarray(index_frame(i)).save(folder / f"frame_{i}.png")
    image.fromarray(index_frame(0)[..., 0]).save(folder / "frame_12.png")  # a grayscale frame
    info = probe_video(folder)
    assert (info.num_frames, info.height, info.width, info.fps) == (13, 32, 32, 0.0)
    np.testing.assert_array_equal(decode_index(read_frames(folder, [11, 2, 10])), [11, 2, 10])
    assert read_frames(folder, [12]).shape == (1, 32, 32, 3)


def test_tiff_grayscale_8bit(tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    stack = np.stack([index_frame(i)[..., 0] for i in range(10)])  # [T, H, W] grey
    tifffile.imwrite(tmp_path / "grey.tif", stack, metadata={"axes": "TYX"})
    assert probe_video(tmp_path / "grey.tif").num_frames == 10
    frames = read_frames(tmp_path / "grey.tif", [7, 1])
    assert frames.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    np.testing.assert_array_equal(decode_index(frames), [7, 1])


def test_tiff_16bit_is_stretched(tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    stack = (np.arange(6)[:, None, None] * 500 + np.zeros((6, 8, 9))).astype(np.uint16)
    stack[:, :4] += 100  # some contrast inside each frame
    tifffile.imwrite(tmp_path / "deep.tif", stack)
    frames = read_frames(tmp_path / "deep.tif", [0, 5])
    assert frames.dtype == np.uint8 and frames.shape == (2, 8, 9, 3)
    assert frames[0].max() < frames[1].min() and frames.max() > 200  # order kept, full range used


def test_ome_tiff_multichannel(tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    stack = np.zeros((5, 2, 3, 16, 16), np.uint8)  # T, C, Z, Y, X
    stack[:, 0] = np.arange(5)[:, None, None, None] * 40
    stack[:, 1, 1] = 200  # only the middle Z slice of channel 1 is bright
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path, np.ascontiguousarray(stack.transpose(0, 2, 1, 3, 4)), ome=True, metadata={"axes": "TZCYX"}
    )
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (5, 16, 16)
    frames = read_frames(path, [4, 2])
    assert frames.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(frames[:, 0, 0, 0], [160, 80])  # channel 0 -> red
    np.testing.assert_array_equal(frames[:, 0, 0, 1], [200, 200])  # channel 1 (middle Z) -> green
    np.testing.assert_array_equal(frames[..., 2], 0)  # no third channel


def test_to_rgb_uint8_channels() -> None:
    assert to_rgb_uint8(np.zeros((2, 4, 4), np.uint8), None).shape == (2, 4, 4, 3)
    assert to_rgb_uint8(np.zeros((4, 4, 5), np.uint8), -1).shape == (4, 4, 3)
    assert to_rgb_uint8(np.ones((4, 4), bool), None).max() == 255


# ---------------------------------------------------------------------------------------------
# clip sampling


def test_train_clips_in_segments() -> None:
    spec = ClipSpec(frames_per_clip=8, frame_step=4, num_clips=2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        clips = sample_clip_indices(200, spec, train=True, generator=generator)
        assert clips.shape == (2, 8) and clips.dtype == np.int64
        assert (np.diff(clips, axis=1) == 4).all()
        assert clips[0].max() < 100 <= clips[1].min() and clips[1].max() < 200


def test_train_sampling_is_a_function_of_the_generator() -> None:
    spec = ClipSpec(frames_per_clip=4, frame_step=2)
    first = [sample_clip_indices(100, spec, True, torch.Generator().manual_seed(3)) for _ in range(2)]
    np.testing.assert_array_equal(*first)
    starts = {
        int(sample_clip_indices(100, spec, True, torch.Generator().manual_seed(s))[0, 0]) for s in range(200)
    }
    assert min(starts) == 0 and max(starts) == 100 - 7  # every valid start can occur


def test_eval_clips_are_evenly_spaced_and_deterministic() -> None:
    spec = ClipSpec(frames_per_clip=4, frame_step=2, num_clips=3)
    clips = sample_clip_indices(90, spec, train=False)
    np.testing.assert_array_equal(clips[:, 0], [0, 30, 60])
    np.testing.assert_array_equal(clips, sample_clip_indices(90, spec, train=False))


def test_short_segments_overlap_or_pad() -> None:
    overlap = ClipSpec(frames_per_clip=4, frame_step=4, num_clips=4, allow_clip_overlap=True)
    clips = sample_clip_indices(40, overlap, train=False)  # segments of 10 < span 13
    np.testing.assert_array_equal(clips[:, 0], [0, 9, 18, 27])
    assert clips.max() == 39
    padded = sample_clip_indices(40, ClipSpec(frames_per_clip=4, frame_step=4, num_clips=4), train=False)
    np.testing.assert_array_equal(padded[1], [10, 14, 18, 19])  # last frame of segment 1 repeats


def test_short_video_policies() -> None:
    kwargs = {"frames_per_clip": 8, "frame_step": 2}
    assert sample_clip_indices(10, ClipSpec(**kwargs, short_video_policy="skip"), train=True) is None
    assert filter_reason(10, ClipSpec(**kwargs), 2) == "too_short"
    padded = sample_clip_indices(10, ClipSpec(**kwargs, short_video_policy="pad"), train=True)
    np.testing.assert_array_equal(padded[0], [0, 2, 4, 6, 8, 9, 9, 9])
    looped = sample_clip_indices(10, ClipSpec(**kwargs, short_video_policy="loop"), train=False)
    np.testing.assert_array_equal(looped[0], [0, 2, 4, 6, 8, 0, 2, 4])
    generator = torch.Generator().manual_seed(0)
    looped = sample_clip_indices(10, ClipSpec(**kwargs, short_video_policy="loop"), True, generator)
    assert looped.shape == (1, 8) and looped.max() < 10


def test_filters_and_fps() -> None:
    spec = ClipSpec(frames_per_clip=4, frame_step=2, min_frames=50, max_frames=100)
    assert filter_reason(0, spec, 2) == "zero_frames"
    assert filter_reason(40, spec, 2) == "too_short"
    assert filter_reason(101, spec, 2) == "too_long"
    assert filter_reason(60, spec, 2) is None
    assert frame_step_for(ClipSpec(fps=7.5), 30.0) == 4
    assert frame_step_for(ClipSpec(fps=7.5, frame_step=3), 0.0) == 3  # unknown rate: frame_step
    with pytest.raises(ValueError, match="short_video_policy"):
        ClipSpec(short_video_policy="stretch")
