"""Pictures: PCA of patch features, masks and curves are written as non-empty images of the right size."""

import numpy as np
import pytest
import torch

from vjepa.api import load
from vjepa.cli import main
from vjepa.config import apply_overrides, preset
from vjepa.data.synthetic import render_clip, write_mp4
from vjepa.visualize import GAP, masks_figure, overlay_masks, pca_colours, tile

Image = pytest.importorskip("PIL.Image", reason="pictures need Pillow: pip install pillow")
pytest.importorskip("matplotlib", reason="curves need matplotlib: pip install matplotlib")


def has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real 4-step debug run (with TensorBoard output when the package is installed)."""
    from vjepa.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = apply_overrides(preset("debug"), [f"run.out_dir={out}", "run.progress=false", "optim.steps=4",
                                            "run.log_every=1", "run.monitor_every=2",
                                            f"run.tensorboard={has_tensorboard()}"])
    train(cfg)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = render_clip(preset("debug").data.synthetic, "train", 2)[0]  # [8, 32, 32, 3]
    write_mp4(np.concatenate([frames, frames[::-1]]), path)
    return path


def opened(path):
    image = Image.open(path)
    assert path.stat().st_size > 0 and image.getbbox() is not None
    return image


def test_pca_colours_follow_the_main_directions():
    grid = (2, 2, 2)
    features = torch.zeros(8, 16)
    features[:4, 0] = 5.0  # the first half of the tokens differs along one direction
    colours = pca_colours(features, grid)
    assert colours.shape == (2, 2, 2, 3) and colours.min() >= 0.0 and colours.max() <= 1.0
    first = colours[..., 0].reshape(-1)
    assert np.ptp(first[:4]) == 0 and np.ptp(first[4:]) == 0 and first[0] != first[4]


def test_tile_lays_out_cells_with_gaps():
    cell = np.zeros((4, 6, 3), np.uint8)
    grid = tile([[cell, cell, cell], [cell]])
    assert grid.shape == (2 * 4 + GAP, 3 * 6 + 2 * GAP, 3)
    assert (grid[4:4 + GAP] == 255).all() and (grid[5 + GAP:, 6:] == 255).all()


def test_pca_png_and_gif_have_the_right_size(tmp_path, run_dir, video, capsys):
    png, gif = tmp_path / "pca.png", tmp_path / "pca.gif"
    common = ["--checkpoint", str(run_dir), "--frame-step", "1", "--cell", "40", "--device", "cpu"]
    assert main(["visualize", "pca", str(video), "-o", str(png), *common]) == 0
    assert main(["visualize", "pca", str(video), "-o", str(gif), "--start", "8", *common]) == 0
    assert "wrote" in capsys.readouterr().out
    time_steps = 4  # 8 frames, tubelet 2
    assert opened(png).size == (time_steps * 40 + (time_steps - 1) * GAP, 2 * 40 + GAP)
    animation = opened(gif)
    assert animation.size == (2 * 40 + GAP, 40) and animation.n_frames == 8


def test_masks_png_and_gif_show_each_generator(tmp_path, run_dir, video):
    png = tmp_path / "masks.png"
    assert main(["visualize", "masks", str(run_dir), "-o", str(png), "--cell", "32"]) == 0
    image = np.asarray(opened(png).convert("RGB"))
    assert image.shape == (2 * 32 + GAP, 4 * 32 + 3 * GAP, 3)  # 2 generators x 4 time steps
    reddish = (image[..., 0] > 150) & (image[..., 1] < 110)
    assert reddish.mean() > 0.2  # the targets cover most of each clip
    cfg = apply_overrides(preset("debug"), ["mask.kind=tube"])
    gif = masks_figure(cfg, tmp_path / "tube.gif", video=str(video), cell=32)
    animation = opened(gif)
    assert animation.size == (32, 32) and animation.n_frames == 8  # one generator, 8 frames


def test_overlay_tints_targets_and_greys_unused_tokens():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    target = torch.tensor([True, False, False, False])
    context = torch.tensor([False, True, True, False])
    out = overlay_masks(frames, target, context, (1, 2, 2))
    assert out[0, 0, 0, 0] > 100 and out[1, 1, 1, 0] > 100  # target token: top-left 2x2, both frames
    assert (out[:, :2, 2:] == 0).all() and (out[:, 2:, :2] == 0).all()  # context: untouched
    assert (out[:, 2:, 2:] == out[0, 3, 3]).all() and out[0, 3, 3, 0] == out[0, 3, 3, 1] > 50  # neither: grey


def test_curves_png_has_the_right_size(tmp_path, run_dir):
    out = tmp_path / "curves.png"
    assert main(["visualize", "curves", str(run_dir), "-o", str(out)]) == 0
    assert opened(out).size == (1000, 600)


def test_tensorboard_scalars_beside_the_jsonl(run_dir):
    if not has_tensorboard():
        pytest.skip("tensorboard is not installed (pip install tensorboard); run.tensorboard needs it")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "target_std", "effective_rank"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]


def test_pca_of_an_encoder_object(tmp_path, run_dir, video):
    from vjepa.visualize import pca_figure

    encoder = load(run_dir, device="cpu")
    frames = render_clip(preset("debug").data.synthetic, "train", 0)[0]
    out = pca_figure(encoder, frames, tmp_path / "pca.png", cell=16)
    assert opened(out).size == (4 * 16 + 3 * GAP, 2 * 16 + GAP)
