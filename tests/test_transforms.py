"""Clip transforms: crop sampling, one crop per clip, flips, eval crops, normalisation, grey input."""

import math

import pytest
import torch

from vjepa.config import DataConfig
from vjepa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    build_transform,
    random_resized_crop_params,
)


def _video(frames: int = 4, height: int = 40, width: int = 48, channels: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, height, width, channels), dtype=torch.uint8, generator=generator)


def _unnormalise(clip: torch.Tensor) -> torch.Tensor:
    """[3, T, h, w] normalised -> values in [0, 255]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (clip * std + mean) * 255.0


@pytest.mark.parametrize("height,width", [(64, 64), (240, 320), (320, 180), (17, 100)])
def test_crop_params_within_bounds_and_ranges(height, width):
    generator = torch.Generator().manual_seed(0)
    scale, aspect = (0.3, 1.0), (0.75, 1.35)
    for _ in range(200):
        params = random_resized_crop_params(height, width, scale, aspect, generator)
        top, left, crop_height, crop_width = params
        assert 0 <= top and top + crop_height <= height and crop_height > 0
        assert 0 <= left and left + crop_width <= width and crop_width > 0
        if (height, width) == (240, 320):  # large frame: sampling never falls back; rounding is small
            assert scale[0] - 0.01 <= crop_height * crop_width / (height * width) <= scale[1] + 0.01
            assert aspect[0] - 0.02 <= crop_width / crop_height <= aspect[1] + 0.02


def test_crop_params_follow_the_generator():
    draws = [
        random_resized_crop_params(100, 100, (0.2, 1.0), (0.5, 2.0), torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert draws[0] == draws[1]


def test_crop_params_fall_back_to_a_central_crop():
    # a crop of the whole area cannot fit a 4:1 frame at aspect <= 1.35: centre crop of aspect 1.35
    assert random_resized_crop_params(100, 400, (1.0, 1.0), (0.75, 1.35), None) == (0, 132, 100, 135)
    assert random_resized_crop_params(400, 100, (1.0, 1.0), (0.75, 1.35), None) == (133, 0, 133, 100)


def test_train_transform_uses_one_crop_for_all_frames():
    video = _video(frames=1).repeat(6, 1, 1, 1)  # identical frames: any per-frame crop would differ
    clip = TrainTransform(32, scale=(0.1, 0.5))(video, torch.Generator().manual_seed(3))
    assert clip.shape == (3, 6, 32, 32) and clip.dtype == torch.float32
    assert torch.equal(clip, clip[:, :1].expand_as(clip))


def test_train_transform_matches_its_crop_params():
    video = _video(frames=2, height=60, width=80)
    clip = TrainTransform(24)(video, torch.Generator().manual_seed(5))
    top, left, height, width = random_resized_crop_params(
        60, 80, (0.3, 1.0), (0.75, 1.35), torch.Generator().manual_seed(5)
    )
    crop = video[:, top : top + height, left : left + width].permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(crop, size=(24, 24), mode="bilinear", antialias=True)
    assert (_unnormalise(clip).permute(1, 0, 2, 3) - expected).abs().max() <= 1.01  # uint8 kernel rounding


def test_horizontal_flip_flips_whole_clips_about_half_the_time():
    video = _video(frames=3, height=32, width=32)
    transform = TrainTransform(32, scale=(1.0, 1.0), aspect=(1.0, 1.0), horizontal_flip=True)
    plain = TrainTransform(32, scale=(1.0, 1.0), aspect=(1.0, 1.0))(video)
    flips = 0
    for seed in range(40):
        clip = transform(video, torch.Generator().manual_seed(seed))
        flipped = torch.allclose(clip, plain.flip(-1))
        assert flipped or torch.allclose(clip, plain)
        flips += flipped
    assert 10 <= flips <= 30


def test_eval_transform_three_crops_landscape_and_portrait():
    # pixel value = column (landscape) or row (portrait) index, so crops can be located exactly
    columns = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(2, 128, 256, 3)
    clips = EvalTransform(112, resize_ratio=128 / 112, num_crops=3)(columns)
    assert clips.shape == (3, 3, 2, 112, 112)
    lefts = [_unnormalise(clip)[0, 0, 0, 0].round().item() for clip in clips]
    assert lefts == [0, 72, 144]
    rows = columns.transpose(1, 2)  # [T, 256, 128, 3], portrait
    tops = [_unnormalise(clip)[0, 0, 0, 0].round().item() for clip in EvalTransform(112, 128 / 112, 3)(rows)]
    assert tops == [0, 72, 144]


@pytest.mark.parametrize("height,width", [(64, 64), (90, 160), (160, 90), (50, 51)])
def test_eval_transform_shapes(height, width):
    video = _video(frames=4, height=height, width=width)
    assert EvalTransform(32)(video).shape == (1, 3, 4, 32, 32)
    assert EvalTransform(32, num_crops=3)(video).shape == (3, 3, 4, 32, 32)


def test_eval_transform_resizes_the_short_side():
    transform = EvalTransform(224)
    assert transform._resized_shape(480, 640) == (256, 341)
    assert transform._resized_shape(640, 480) == (341, 256)
    assert EvalTransform(64, resize_ratio=1.0)._resized_shape(64, 64) == (64, 64)


def test_normalisation_values():
    video = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 16, 16, 3)
    clip = EvalTransform(16, resize_ratio=1.0)(video)[0]
    for channel, value in enumerate((0, 128, 255)):
        expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(clip[channel], torch.full_like(clip[channel], expected), atol=1e-5)
    custom = TrainTransform(16, scale=(1.0, 1.0), aspect=(1.0, 1.0), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert torch.allclose(custom(video)[2], torch.ones(2, 16, 16), atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 20, 24, 1), (3, 20, 24)])
def test_grayscale_is_repeated_to_three_channels(shape):
    grey = _video(frames=3, height=20, width=24, channels=1).view(shape)
    rgb = grey.view(3, 20, 24, 1).expand(3, 20, 24, 3).contiguous()
    evaluate, train = EvalTransform(16, num_crops=3), TrainTransform(16)
    pairs = [(evaluate(grey), evaluate(rgb))]
    seeded = [torch.Generator().manual_seed(1) for _ in range(2)]
    pairs.append((train(grey, seeded[0]), train(rgb, seeded[1])))
    for out_grey, out_rgb in pairs:
        assert out_grey.shape == out_rgb.shape and out_grey.shape[-4] == 3
        assert torch.allclose(out_grey, out_rgb, atol=1e-5)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        EvalTransform(16)(torch.zeros(2, 16, 16, 4, dtype=torch.uint8))
    with pytest.raises(ValueError):
        EvalTransform(16, num_crops=2)


def test_build_transform_reads_the_data_config():
    cfg = DataConfig(crop_size=32, crop_scale=(0.5, 0.5), horizontal_flip=True, mean=(0.5,) * 3)
    train = build_transform(cfg, train=True)
    assert isinstance(train, TrainTransform) and train.horizontal_flip and train.scale == (0.5, 0.5)
    evaluate = build_transform(cfg, train=False, num_crops=3)
    assert isinstance(evaluate, EvalTransform) and evaluate.num_crops == 3
    video = _video(frames=2, height=48, width=64)
    assert train(video).shape == (3, 2, 32, 32)
    assert evaluate(video).shape == (3, 3, 2, 32, 32)
    assert math.isclose(evaluate.resize_ratio, 256 / 224)
