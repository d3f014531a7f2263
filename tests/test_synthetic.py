"""The procedural video set: determinism, labels, shapes, visibility, and the single-frame guarantee.

The central test renders a few hundred clips, measures simple per-frame features (sprite area,
toroidal centroid, shape-orientation moments, colour statistics, coarse pixels) and checks that
neither class-conditional means nor a classifier can tell motion classes apart from any single
frame, while the same classifier on frame-to-frame changes recovers the motion class. A control
re-runs the single-frame check on a deliberately leaky variant and requires it to fail.
"""

import dataclasses

import numpy as np
import pytest
import torch

from vjepa.config import SyntheticConfig, preset
from vjepa.data import synthetic
from vjepa.data.synthetic import (
    APPEARANCE_CLASSES,
    MOTION_CLASSES,
    MOTION_HFLIP,
    SyntheticVideoDataset,
    render_clip,
    render_clip_with_mask,
    split_labels,
    write_mp4,
)

NUM_PROBE_CLIPS = 480  # 60 per motion class


def test_class_lists():
    assert len(MOTION_CLASSES) == 8 and len(set(MOTION_CLASSES)) == 8
    assert 4 <= len(APPEARANCE_CLASSES) <= 6
    assert sorted(MOTION_HFLIP) == list(range(8)) and MOTION_CLASSES[MOTION_HFLIP[0]] == "translate_right"


def test_render_shapes_and_dtypes():
    frames, motion, appearance = render_clip(SyntheticConfig(), "train", 0)
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    assert 0 <= motion < len(MOTION_CLASSES) and 0 <= appearance < len(APPEARANCE_CLASSES)
    small = preset("debug").data.synthetic
    assert render_clip(small, "val", 3)[0].shape == (small.num_frames, small.size, small.size, 3)


def test_clip_depends_only_on_seed_split_and_index():
    cfg = SyntheticConfig(num_train=10)
    frames, motion, appearance = render_clip(cfg, "train", 7)
    again = render_clip(SyntheticConfig(num_train=5000, num_val=3), "train", 7)
    assert np.array_equal(frames, again[0]) and (motion, appearance) == again[1:]
    other_seed = render_clip(SyntheticConfig(seed=1), "train", 7)[0]
    assert not np.array_equal(frames, other_seed)


def test_splits_and_indices_differ():
    cfg = SyntheticConfig()
    clips = [render_clip(cfg, split, 0)[0] for split in ("train", "val", "test")]
    clips.append(render_clip(cfg, "train", 1)[0])
    for i in range(len(clips)):
        for j in range(i):
            assert not np.array_equal(clips[i], clips[j])
    with pytest.raises(ValueError):
        render_clip(cfg, "validation", 0)
    with pytest.raises(IndexError):
        render_clip(cfg, "val", cfg.num_val)


def test_labels_are_balanced_and_independent():
    cfg = SyntheticConfig(num_train=2400)
    labels = split_labels(cfg, "train")
    assert set(np.bincount(labels["motion"], minlength=8)) == {300}
    assert set(np.bincount(labels["appearance"], minlength=6)) == {400}
    joint = np.bincount(labels["motion"] * 6 + labels["appearance"], minlength=48)
    assert joint.min() > 25 and joint.max() < 75  # expected 50 per (motion, appearance) pair
    assert np.ptp(np.bincount(split_labels(cfg, "val")["motion"], minlength=8)) <= 1


def test_labels_without_rendering_match_rendered_labels():
    cfg = SyntheticConfig(num_val=20)
    labels = SyntheticVideoDataset(cfg, "val").labels()
    for index in range(20):
        _, motion, appearance = render_clip(cfg, "val", index)
        assert (labels["motion"][index], labels["appearance"][index]) == (motion, appearance)


def test_dataset_items_and_cache():
    cfg = SyntheticConfig(num_train=4, size=32, num_frames=8)
    dataset = SyntheticVideoDataset(cfg, "train")
    item = dataset[1]
    assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.float32
    assert 0.0 <= item["video"].min() and item["video"].max() <= 1.0
    assert item["label"] == item["motion"] and item["index"] == 1 and len(dataset) == 4
    assert 1 in dataset._clips and np.array_equal(dataset._clips[1][0], render_clip(cfg, "train", 1)[0])
    assert torch.equal(dataset[-1]["video"], dataset[3]["video"])
    with pytest.raises(IndexError):
        dataset[4]
    uncached = SyntheticVideoDataset(cfg, "train", cache=False)
    assert torch.equal(uncached[1]["video"], item["video"]) and not uncached._clips


def test_dataset_applies_the_transform_to_uint8_frames():
    seen = []

    def transform(video: torch.Tensor) -> torch.Tensor:
        seen.append((video.dtype, tuple(video.shape)))
        return video.float().mean(dim=-1)

    item = SyntheticVideoDataset(SyntheticConfig(num_val=2), "val", transform=transform)[0]
    assert seen == [(torch.uint8, (16, 64, 64, 3))] and item["video"].shape == (16, 64, 64)


def test_more_sprites_render():
    cfg = SyntheticConfig(max_sprites=3, num_train=16)
    counts = [render_clip_with_mask(cfg, "train", i)[1].sum() for i in range(16)]
    single = [render_clip_with_mask(SyntheticConfig(num_train=16), "train", i)[1].sum() for i in range(16)]
    assert np.mean(counts) > 1.3 * np.mean(single)


def test_write_mp4_round_trip(tmp_path):
    av = pytest.importorskip("av")
    frames = render_clip(SyntheticConfig(), "test", 2)[0]
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, fps=8)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 6.0
    write_mp4(frames[:2, :31, :33, 0], tmp_path / "odd_grey.mp4")  # odd sizes are padded


# ---------------------------------------------------------------------------------------------
# per-frame measurements


def _toroidal_centroid(mask: np.ndarray) -> np.ndarray:
    """[..., H, W] coverage -> [..., 2] (x, y) circular-mean centre, pixels."""
    size = mask.shape[-1]
    phase = np.exp(2j * np.pi * (np.arange(size) + 0.5) / size)
    x = np.angle((mask.sum(-2) * phase).sum(-1)) % (2 * np.pi)
    y = np.angle((mask.sum(-1) * phase).sum(-1)) % (2 * np.pi)
    return np.stack([x, y], -1) * size / (2 * np.pi) - 0.5


def _offsets(mask: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wrapped pixel offsets dx, dy [..., H, W] from `centre` [..., 2]."""
    size = mask.shape[-1]
    grid = np.arange(size)
    dx = (grid - centre[..., 0, None] + size / 2) % size - size / 2
    dy = (grid - centre[..., 1, None] + size / 2) % size - size / 2
    return dx[..., None, :], dy[..., :, None]


def _colour_dipole(frames: np.ndarray, mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """[F, 2, 3]: coverage-weighted offset x colour-deviation moments (the sprite's colour ramp)."""
    dx, dy = _offsets(mask, centre)  # [F, 1, W], [F, H, 1]
    weight = mask / mask.sum((-2, -1), keepdims=True)  # [F, H, W]
    colour = frames.astype(np.float32) / 255.0
    weighted = weight[..., None] * colour  # [F, H, W, 3]
    by_column, by_row = weighted.sum(1), weighted.sum(2)  # [F, W, 3], [F, H, 3]
    mean = by_column.sum(1)  # [F, 3]
    moment_x = np.einsum("fwc,fw->fc", by_column, dx[:, 0]) - mean * (weight * dx).sum((1, 2))[:, None]
    moment_y = np.einsum("fhc,fh->fc", by_row, dy[..., 0]) - mean * (weight * dy).sum((1, 2))[:, None]
    return np.stack([moment_x, moment_y], 1)


def _frame_features(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Features of single frames: frames [F, H, W, 3], mask [F, H, W] -> [F, D]."""
    area = mask.sum((-2, -1))
    centre = _toroidal_centroid(mask)
    size = mask.shape[-1]
    dx, dy = _offsets(mask, centre)
    offset = (dx + 1j * dy).astype(np.complex64)  # [F, H, W]
    square = offset * offset
    powers = (square * offset, square * square, square * square * offset)  # r^k e^(ik angle), k = 3, 4, 5
    # shape orientation, scale-free: k-fold moments over radius^k
    scales = [area * (area / np.pi) ** (k / 2) for k in (3, 4, 5)]
    moments = [(mask * power).sum((-2, -1)) / scale for power, scale in zip(powers, scales)]
    colour = frames.astype(np.float32) / 255.0
    sprite_colour = (mask[..., None] * colour).sum((-3, -2)) / area[..., None]
    dipole = _colour_dipole(frames, mask, centre)  # [F, 2, 3]
    gram = np.einsum("fic,fjc->fij", dipole, dipole)  # [F, 2, 2]: the colour ramp's axis, sign-free
    strength = gram[:, 0, 0] + gram[:, 1, 1]
    ramp_axis = [(gram[:, 0, 0] - gram[:, 1, 1]) / strength, 2 * gram[:, 0, 1] / strength]
    coarse = colour.reshape(len(frames), 2, size // 2, 2, size // 2, 3).mean((2, 4)).reshape(len(frames), -1)
    columns = [np.log(area), *np.cos(2 * np.pi * centre.T / size), *np.sin(2 * np.pi * centre.T / size)]
    columns += [part(m) for m in moments for part in (np.real, np.imag)]
    columns += [np.sqrt(strength), *ramp_axis, *sprite_colour.T, *colour.std((1, 2)).T, *coarse.T]
    return np.stack(columns, -1)


def _change_features(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Frame-to-frame changes of one clip [T, H, W, 3], [T, H, W] -> [4]: median step in x, y,
    orientation (from the colour ramp) and log-area."""
    size = mask.shape[-1]
    centre = _toroidal_centroid(mask)
    step = (np.diff(centre, axis=0) + size / 2) % size - size / 2
    dipole = _colour_dipole(frames, mask, centre)  # [T, 2, 3]
    before, after = dipole[:-1], dipole[1:]
    cross = (before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]).sum(-1)
    turn = np.arctan2(cross, (before * after).sum((-2, -1)))  # > 0: clockwise on screen
    growth = np.diff(np.log(mask.sum((-2, -1))))
    return np.median(np.stack([step[:, 0], step[:, 1], turn, growth], -1), axis=0)


def _measure(cfg: SyntheticConfig, num_clips: int, with_change: bool = True) -> dict[str, np.ndarray]:
    """Single-frame features at frames 0, T-1 and a random frame, change features, and labels."""
    pick = np.random.default_rng(0).integers(cfg.num_frames, size=num_clips)
    first, last, random_frame, change, motion = [], [], [], [], []
    for index in range(num_clips):
        frames, mask, label, _ = render_clip_with_mask(cfg, "train", index)
        chosen = [0, cfg.num_frames - 1, pick[index]]
        features = _frame_features(frames[chosen], mask[chosen])
        for store, row in zip((first, last, random_frame), features):
            store.append(row)
        if with_change:
            change.append(_change_features(frames, mask))
        motion.append(label)
    stacked = {"first": first, "last": last, "random": random_frame, "change": change}
    return {key: np.array(value) for key, value in stacked.items()} | {"motion": np.array(motion)}


def _max_class_mean_z(features: np.ndarray, labels: np.ndarray) -> float:
    """Largest |class mean - overall mean| in standard errors, over features and classes."""
    overall, spread = features.mean(0), features.std(0) + 1e-9
    scores = []
    for label in np.unique(labels):
        group = features[labels == label]
        scores.append(np.abs(group.mean(0) - overall) / (spread / np.sqrt(len(group))))
    return float(np.max(scores))


def _probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of Gaussian naive Bayes (per-class means and variances), trained on 5/8."""
    split = len(labels) * 5 // 8
    train, test = features[:split], features[split:]
    classes = np.unique(labels)
    means = np.stack([train[labels[:split] == c].mean(0) for c in classes])  # [classes, D]
    variances = np.stack([train[labels[:split] == c].var(0) for c in classes]) + 1e-6 * train.var(0) + 1e-12
    log_likelihood = -0.5 * (((test[:, None] - means) ** 2 / variances) + np.log(variances)).sum(-1)
    return float((classes[log_likelihood.argmax(1)] == labels[split:]).mean())


@pytest.fixture(scope="module")
def measured() -> dict[str, np.ndarray]:
    return _measure(SyntheticConfig(num_train=NUM_PROBE_CLIPS), NUM_PROBE_CLIPS)


CHANCE = 1 / len(MOTION_CLASSES)
Z_LIMIT = 4.5  # 32 features x 8 classes: the largest |z| under no leak is about 3
ACCURACY_MARGIN = 0.08  # over chance (1/8); about 3.5 standard errors on 180 held-out clips


def _single_frame_scores(features: np.ndarray, motion: np.ndarray) -> tuple[float, float]:
    return _max_class_mean_z(features, motion), _probe_accuracy(features, motion)


@pytest.mark.parametrize("frame", ["first", "last", "random"])
def test_single_frames_do_not_reveal_motion(measured, frame):
    z, accuracy = _single_frame_scores(measured[frame], measured["motion"])
    assert z < Z_LIMIT and accuracy < CHANCE + ACCURACY_MARGIN, (z, accuracy)


@pytest.mark.parametrize("name", ["demo", "demo64"])
def test_single_frames_of_the_demo_data_do_not_reveal_motion(name):
    """The demo presets' sets (1-3 sprites, fast motion, size sawtooth wrapping within a clip)."""
    from vjepa.config import preset

    cfg = dataclasses.replace(preset(name).data.synthetic, num_train=NUM_PROBE_CLIPS)
    measured = _measure(cfg, NUM_PROBE_CLIPS, with_change=False)
    for frame in ("first", "last", "random"):
        z, accuracy = _single_frame_scores(measured[frame], measured["motion"])
        assert z < Z_LIMIT and accuracy < CHANCE + ACCURACY_MARGIN, (frame, z, accuracy)


def test_frame_changes_reveal_motion(measured):
    change, motion = measured["change"], measured["motion"]
    z, accuracy = _single_frame_scores(change, motion)
    assert z > 10.0 and accuracy > 0.9, (z, accuracy)
    signs = {name: np.sign(change[motion == i].mean(0)) for i, name in enumerate(MOTION_CLASSES)}
    assert signs["translate_left"][0] < 0 < signs["translate_right"][0]
    assert signs["translate_up"][1] < 0 < signs["translate_down"][1]
    assert signs["rotate_ccw"][2] < 0 < signs["rotate_cw"][2]
    assert signs["shrink"][3] < 0 < signs["grow"][3]


# Tempting designs that leak the motion class into single frames; the check above must fail on each.
_TRAJECTORY = synthetic._trajectory


def _translation_starts_behind(rng, cfg, motion):
    """Translating sprites start in a band on the side they move away from."""
    x, y, angle, diameter = _TRAJECTORY(rng, cfg, motion)
    move_x = synthetic._DYNAMICS[MOTION_CLASSES[motion]][0]
    if move_x:
        start = (0.75 if move_x < 0 else 0.25) * cfg.size + rng.uniform(-8, 8)
        x = (x - x[0] + start) % cfg.size
    return x, y, angle, diameter


def _rotation_starts_upright(rng, cfg, motion):
    x, y, angle, diameter = _TRAJECTORY(rng, cfg, motion)
    spin = synthetic._DYNAMICS[MOTION_CLASSES[motion]][2]
    return x, y, angle - angle[0] if spin else angle, diameter


def _size_ranges_without_wrapping(rng, cfg, motion):
    """Grow/shrink over symmetric sub-ranges: right over a random frame, wrong at any fixed one."""
    x, y, angle, diameter = _TRAJECTORY(rng, cfg, motion)
    growth = synthetic._DYNAMICS[MOTION_CLASSES[motion]][3]
    if growth:
        low, high = np.log(np.asarray(cfg.sprite_size) * cfg.size)
        change = 0.5  # log-diameter over the clip, as with the default speeds over 16 frames
        t = np.arange(cfg.num_frames) / 15
        start = rng.uniform(low, high - change)
        diameter = np.exp(start + change * t if growth > 0 else start + change * (1 - t))
    return x, y, angle, diameter


@pytest.mark.parametrize(
    "leaky", [_translation_starts_behind, _rotation_starts_upright, _size_ranges_without_wrapping]
)
def test_single_frame_check_catches_leaky_designs(monkeypatch, leaky):
    monkeypatch.setattr(synthetic, "_trajectory", leaky)
    cfg = SyntheticConfig(num_train=NUM_PROBE_CLIPS, num_frames=2)  # frame 0 is all we look at
    measured = _measure(cfg, NUM_PROBE_CLIPS, with_change=False)
    z, accuracy = _single_frame_scores(measured["first"], measured["motion"])
    assert z > Z_LIMIT or accuracy > CHANCE + ACCURACY_MARGIN, (z, accuracy)


def test_sprites_are_large_and_visible():
    cfg = SyntheticConfig(num_train=48)
    areas, contrasts = [], []
    for index in range(48):
        frames, mask, _, _ = render_clip_with_mask(cfg, "train", index)
        areas.append(mask.sum((1, 2)).mean() / cfg.size**2)
        inside, outside = frames[mask > 0.99].astype(float), frames[mask < 0.01].astype(float)
        contrasts.append(np.abs(inside.mean(0) - outside.mean(0)).max())
    assert 0.04 < np.mean(areas) < 0.2 and min(areas) > 0.02  # about 8% of the frame on average
    assert min(contrasts) > 40  # the sprite colour differs from the background by > 40 grey levels


def test_sprite_states_match_the_rendered_clip():
    from vjepa.config import preset
    from vjepa.data.synthetic import sprite_states

    cfg = preset("demo32").data.synthetic
    for index in range(16):
        _, mask, motion, _ = render_clip_with_mask(cfg, "train", index)
        states = sprite_states(cfg, "train", index)
        assert 1 <= len(states) <= cfg.max_sprites
        for state in states:
            assert all(v.shape == (cfg.num_frames,) for v in state.values())
            # _offsets measures from pixel indices; the renderer's pixel j is centred at j + 0.5
            dx, dy = _offsets(mask, np.stack([state["x"], state["y"]], -1) - 0.5)
            disc = dx**2 + dy**2 <= (state["diameter"][:, None, None] / 2) ** 2  # [T, H, W]
            assert mask[disc].mean() > 0.4  # the sprite covers its disc (rings and stars partly)
        name = MOTION_CLASSES[motion]
        step = np.diff(states[0]["x"])
        if name == "translate_right":
            assert np.median(step) > 0
        if name in ("rotate_cw", "rotate_ccw"):
            assert np.sign(np.diff(states[0]["angle"])).mean() == (1 if name == "rotate_cw" else -1)


def test_motion_types_pair_each_class_with_its_opposite():
    """MOTION_TYPES lists every class once, (negative, positive) as the renderer's dynamics signs."""
    paired = [name for pair in synthetic.MOTION_TYPES.values() for name in pair]
    assert sorted(paired) == sorted(synthetic.MOTION_CLASSES)
    for kind, (negative, positive) in synthetic.MOTION_TYPES.items():
        assert synthetic.motion_type(negative) == synthetic.motion_type(positive) == kind
        dyn_neg, dyn_pos = synthetic._DYNAMICS[negative], synthetic._DYNAMICS[positive]
        slot = next(i for i, v in enumerate(dyn_pos) if v)
        assert dyn_pos[slot] == 1 and dyn_neg[slot] == -1 and sum(map(abs, dyn_neg)) == 1, kind
    with pytest.raises(ValueError, match="unknown motion class 'spin'"):
        synthetic.motion_type("spin")
