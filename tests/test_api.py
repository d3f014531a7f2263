"""Library use: load from every kind of source, embed paths / frames / tensors, export, embed many files."""

import json
import warnings

import numpy as np
import pytest
import torch

import vjepa
from vjepa.api import export, load
from vjepa.checkpoint import CheckpointError, read_safetensors_metadata, save_checkpoint
from vjepa.cli import main
from vjepa.config import preset, to_dict, to_yaml
from vjepa.data.decode import read_frames
from vjepa.data.synthetic import render_clip, write_mp4
from vjepa.encoder import window_indices
from vjepa.eval import list_videos, load_features
from vjepa.models.factory import build_encoder
from vjepa.models.predictor import build_predictor

CLIP = torch.randn(2, 3, 8, 32, 32)


def make_run(run_dir, seed=0):
    """A run directory as `vjepa pretrain` leaves it (debug preset), without training."""
    cfg = preset("debug")
    cfg.run.out_dir = str(run_dir)
    torch.manual_seed(seed)
    encoder = build_encoder(cfg)
    target = build_encoder(cfg)
    predictor = build_predictor(cfg.model, 2, encoder.grid)
    state = {"encoder": encoder.state_dict(), "target_encoder": target.state_dict(),
             "predictor": predictor.state_dict(), "opt": {}, "step": 5, "loss": 0.5, "config": to_dict(cfg)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    save_checkpoint(run_dir / "latest.pt", state)
    return encoder.eval(), target.eval()


def synthetic_frames(num_frames=24, index=0):
    """uint8 [T, 32, 40, 3]: a synthetic clip looped to `num_frames`, widened (exercises the crop)."""
    frames = render_clip(preset("debug").data.synthetic, "train", index)[0]  # [8, 32, 32, 3]
    frames = np.resize(frames, (num_frames, *frames.shape[1:]))
    return np.concatenate([frames, frames[:, :, :8]], axis=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    encoder, target = make_run(run_dir)
    return run_dir, encoder, target


def test_load_run_dir_checkpoint_and_preset(run):
    run_dir, encoder, target = run
    loaded = vjepa.load(run_dir, device="cpu")
    assert isinstance(loaded, vjepa.Encoder) and loaded.which == "target_encoder"
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.predictor is not None and not loaded.predictor.training
    assert torch.equal(loaded(CLIP), target(CLIP))
    assert torch.equal(load(run_dir / "latest.pt", "encoder", "cpu")(CLIP), encoder(CLIP))
    random = load("debug", device="cpu")
    assert random.which == "random" and random(CLIP).shape == (2, 64, 64)
    with pytest.raises(CheckpointError, match="not a preset"):
        load(run_dir / "nothing.pt")
    with pytest.raises(CheckpointError, match="contradict"):
        load(run_dir, device="cpu", img_size=64)


def test_init_rebuilds_the_runs_initial_encoder_and_keeps_the_callers_random_state(tmp_path):
    from vjepa.models.factory import initial_encoder
    from vjepa.train import train

    cfg = preset("debug")
    cfg.run.out_dir, cfg.run.seed, cfg.run.progress, cfg.optim.steps = str(tmp_path), 3, False, 2
    train(cfg)
    expected = initial_encoder(cfg).eval()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    init = load(tmp_path, "init", "cpu")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert init.which == "init" and init.predictor is None and not init.model.training
    assert torch.equal(init(CLIP), expected(CLIP))
    assert not torch.equal(init(CLIP), load(tmp_path, "target_encoder", "cpu")(CLIP))  # training moved it
    other_seed = load("debug", "init", "cpu")  # a preset: the init `train` would draw with seed 0
    assert not torch.equal(other_seed(CLIP), init(CLIP))
    with pytest.raises(ValueError, match="choose one of target_encoder, encoder, init"):
        load(tmp_path, "online", "cpu")
    with pytest.raises(ValueError, match="export takes"):  # an init is rebuilt, never stored
        export(tmp_path, tmp_path / "init.safetensors", "init")
    torch.save(expected.state_dict(), tmp_path / "bare.pt")  # no config: the run's seed is unknown
    with pytest.raises(CheckpointError, match="stores no config"):
        load(tmp_path / "bare.pt", "init", "cpu", num_heads=2)


def test_bare_state_dict_falls_back_to_encoder_with_a_warning(tmp_path, run):
    _, encoder, _ = run
    torch.save(encoder.state_dict(), tmp_path / "weights.pt")
    with pytest.warns(UserWarning, match="no target_encoder; using its encoder"):
        loaded = load(tmp_path / "weights.pt", device="cpu", num_heads=2)
    assert torch.equal(loaded(CLIP), encoder(CLIP))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn_fallback=False: the same fallback, silently
        quiet = load(tmp_path / "weights.pt", device="cpu", num_heads=2, warn_fallback=False)
    assert quiet.which == "encoder"


def test_window_indices_cover_the_video():
    assert window_indices(40, 8, 2, stride=8)[:, 0].tolist() == [0, 8, 16, 24, 25]
    assert window_indices(40, 8, 2, stride=8)[-1, -1] == 39
    assert window_indices(64, 8, 2)[:, 0].tolist() == [0, 16, 32, 48, 49]  # default: back to back
    assert window_indices(10, 8, 4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]  # short: the step shrinks
    assert window_indices(5, 8, 4).tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]  # shorter still: padded


def test_embed_path_frames_and_tensor_agree(tmp_path, run):
    run_dir, _, _ = run
    encoder = load(run_dir, device="cpu")
    video = tmp_path / "clip.mp4"
    write_mp4(synthetic_frames(24), video, fps=8)
    decoded = read_frames(video, range(24))  # lossy coding: compare against what the decoder returns
    from_path = encoder.embed(video, frame_step=2, stride=8)
    from_frames = encoder.embed(decoded, frame_step=2, stride=8)
    windows = window_indices(24, 8, 2, stride=8)  # starts 0, 8, 9
    from_tensor = encoder.embed(torch.stack([encoder.preprocess(decoded[w]) for w in windows]))
    assert from_path.shape == (3, 64, 64) and from_path.dtype == torch.float32
    assert torch.equal(from_path, from_frames) and torch.allclose(from_path, from_tensor, atol=1e-5)
    pooled = encoder.embed(torch.as_tensor(decoded), pooled=True, frame_step=2, stride=8, batch_size=2)
    assert pooled.shape == (3, 64) and torch.allclose(pooled, from_path.mean(dim=1), atol=1e-5)
    grey = encoder.embed(decoded[..., 0], frame_step=2)  # [T, H, W] grey frames are repeated to RGB
    assert grey.shape == (2, 64, 64)
    one_clip = encoder.embed(from_tensor.new_zeros(3, 8, 32, 32))  # one float clip [C, T, H, W]
    assert one_clip.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="uint8 frames"):
        encoder.embed(decoded.astype(np.float32))


def test_export_round_trip_keeps_outputs_and_config(tmp_path, run, capsys):
    run_dir, encoder, target = run
    out = tmp_path / "encoder.safetensors"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    meta = read_safetensors_metadata(out)
    assert meta["which"] == "target_encoder" and json.loads(meta["config"])["model"]["embed_dim"] == 64
    loaded = load(out, device="cpu")
    assert loaded.config.model == load(run_dir, device="cpu").config.model and loaded.predictor is None
    assert torch.equal(loaded(CLIP), target(CLIP))
    both = export(run_dir, tmp_path / "both.safetensors", which="encoder", with_predictor=True)
    reloaded = load(both, which="encoder", device="cpu")
    assert torch.equal(reloaded(CLIP), encoder(CLIP)) and reloaded.predictor is not None
    with pytest.warns(UserWarning, match="no target_encoder; using its encoder"):
        load(both, device="cpu")  # only an `encoder` inside: never a silent substitution
    with pytest.raises(CheckpointError, match="has no 'encoder' weights"):
        load(out, which="encoder", device="cpu")



def test_a_presets_random_init_exports_and_loads_back(tmp_path):
    """`vjepa export debug` (a random-init baseline) is loadable with the default `which`."""
    out = export("debug", tmp_path / "random.safetensors")
    assert read_safetensors_metadata(out)["which"] == "target_encoder"
    loaded = load(out, device="cpu")
    again = load(out, device="cpu")
    assert torch.equal(loaded(CLIP), again(CLIP))  # the stored weights, not a fresh draw


def test_a_preset_name_loads_the_same_seeded_init_every_time():
    """A preset is a reproducible random-init baseline: the weights `train` would start from."""
    first, second = load("debug", device="cpu"), load("debug", device="cpu")
    assert torch.equal(first(CLIP), second(CLIP))
    init = load("debug", which="init", device="cpu")
    assert torch.equal(first(CLIP), init(CLIP))

def test_embed_command_skips_bad_files_and_reports_them(tmp_path, run, capsys):
    run_dir, _, _ = run
    videos = tmp_path / "videos"
    (videos / "cats").mkdir(parents=True)
    (videos / "dogs").mkdir()
    write_mp4(synthetic_frames(24, 0), videos / "cats" / "a.mp4")
    write_mp4(synthetic_frames(12, 1), videos / "dogs" / "b.mp4")
    (videos / "dogs" / "corrupt.mp4").write_bytes(b"\x00not a video" * 100)
    (videos / "dogs" / "empty.mp4").write_bytes(b"")
    out = tmp_path / "features.safetensors"
    code = main(["embed", str(videos), "--checkpoint", str(run_dir), "-o", str(out), "--no-progress",
                 "--batch-size", "3", "--frame-step", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped" in captured.err and "corrupt.mp4" in captured.err and "empty.mp4" in captured.err
    assert "embedded 2 of 4 videos" in captured.out
    features = load_features(out)
    assert features.tokens.shape == (3, 1, 64, 64)  # a.mp4: windows at 0, 9; b.mp4 (short): one
    assert features.video_index.tolist() == [0, 0, 1] and features.window_start.tolist() == [0, 9, 0]
    assert [p.split("/")[-1] for p in features.videos] == ["a.mp4", "b.mp4"]
    assert features.labels["label"].tolist() == [0, 0, 1]
    assert features.metadata["frame_step"] == "2"
    direct = load(run_dir, device="cpu").embed(videos / "cats" / "a.mp4", frame_step=2)
    assert torch.allclose(features.tokens[:2, 0], direct, atol=1e-5)

    npy = tmp_path / "pooled.npy"
    listing = tmp_path / "list.csv"
    listing.write_text(f"{videos / 'cats' / 'a.mp4'} 3\n{videos / 'dogs' / 'b.mp4'} 5\n")
    assert main(["embed", str(listing), "--checkpoint", str(run_dir), "-o", str(npy), "--pooled", "--no-progress",
                 "--frame-step", "2", "--dtype", "float16"]) == 0
    pooled = load_features(npy)
    assert pooled.tokens.shape == (3, 1, 1, 64) and pooled.tokens.dtype == torch.float16
    assert pooled.labels["label"].tolist() == [3, 3, 5]
    assert json.loads(npy.with_suffix(".json").read_text())["metadata"]["pooled"] == "true"
    assert list_videos(videos / "cats" / "a.mp4") == [(str(videos / "cats" / "a.mp4"), -1)]

    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    (bad_only / "x.mp4").write_bytes(b"junk")
    capsys.readouterr()
    assert main(["embed", str(bad_only), "--checkpoint", "debug", "-o", str(tmp_path / "n.npy"), "--no-progress"]) == 1
    assert "none of the 1 videos" in capsys.readouterr().err
