"""vjepa.eval on real files: streaming probes, the disk cache, presets, sampling, images, labels, folds."""

import json
import os

import numpy as np
import pytest
import torch

from vjepa.cli import main
from vjepa.config import apply_overrides, preset
from vjepa.data.datasets import DataError
from vjepa.eval import (
    FeatureCache,
    Features,
    fold_index,
    load_features,
    make_probe_config,
    probe_encoder,
    probe_preset,
    save_features,
    view_dataset,
)
from vjepa.models.factory import build_encoder
from vjepa.precision import freeze

FAST = {"epochs": 2, "batch_size": 2, "warmup_epochs": 0, "frames_per_segment": 8, "frame_step": 1}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """train/ and test/ splits of two classes, three 12-frame videos each."""
    from video_utils import write_index_video

    root = tmp_path_factory.mktemp("videos")
    for split in ("train", "test"):
        for label in ("cats", "dogs"):
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                write_index_video(root / split / label / f"{i}.mp4", num_frames=12, width=40)
    return root


def encoder_and_cfg(*overrides):
    cfg = apply_overrides(preset("debug"), ["run.dtype=fp32", *overrides])
    torch.manual_seed(0)
    return freeze(build_encoder(cfg)), cfg


def test_streaming_probe_equals_the_cached_one_without_augmentation(videos):
    """Same views, same clip order, fp32: a streaming probe learns exactly what the cached one does."""
    encoder, cfg = encoder_and_cfg()
    settings = {**FAST, "data": str(videos), "feature_dtype": "fp32", "num_segments": 2, "num_crops": 3,
                "attend_across_segments": True}
    cached = probe_encoder(encoder, cfg, "label", **settings)
    calls = []
    hook = encoder.register_forward_hook(lambda *args: calls.append(1))
    streamed = probe_encoder(encoder, cfg, "label", streaming=True, **settings)
    hook.remove()
    assert len(calls) == 2 * 3 + 1  # the encoder ran on every batch of every epoch (6 clips / 2), then the test
    assert streamed["num_classes"] == cached["num_classes"] == 2 and streamed["class_names"] == ["cats", "dogs"]
    assert streamed["final_loss"] == pytest.approx(cached["final_loss"], abs=1e-4)
    assert streamed["confusion"] == cached["confusion"]


def test_augmented_training_views_are_random_crops_with_erasing(videos):
    _, cfg = encoder_and_cfg()
    probe_cfg = make_probe_config(data=str(videos), num_segments=2, frames_per_segment=8, frame_step=1)
    train = view_dataset(cfg, probe_cfg, "train", 1, augment=True)
    first, second = train[0]["video"], train[0]["video"]
    assert first.shape == (2, 3, 8, 32, 32)  # S segments, one augmented view each
    assert not torch.equal(first, second)  # a new crop (and erasing) every time
    plain = view_dataset(cfg, probe_cfg, "train", 1)
    assert torch.equal(plain[0]["video"], plain[0]["video"])


def test_erasing_replaces_one_rectangle_per_frame():
    from vjepa.data.transforms import TrainTransform

    video = torch.full((4, 32, 32, 3), 128, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    plain = TrainTransform(32, (1.0, 1.0), (1.0, 1.0))(video, generator=torch.Generator().manual_seed(0))
    erased = TrainTransform(32, (1.0, 1.0), (1.0, 1.0), erase_prob=1.0)(video, generator=generator)
    changed = (erased != plain).any(dim=0)  # [T, H, W]
    share = changed.flatten(1).float().mean(dim=1)
    assert ((share > 0.015) & (share < 0.34)).all()  # every frame: one rectangle of 2-33% of the frame


def test_probe_sampling_is_its_own_setting_and_the_error_names_it(videos, tmp_path, capsys):
    """A run trained at frame_step=4 does not decide the probe's clips; too-short clips say what to change."""
    args = ["probe", "debug", "--data", str(videos), "--epochs", "1", "--frames", "8", "--output",
            str(tmp_path / "p.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--frame-step" in err and "8 frames 4 apart" in err  # 8 frames 4 apart span 29 > 12
    assert main([*args, "--frame-step", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'p.json'}" in out
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["task"] == "label" and result["settings"]["frame_step"] == 1 and result["num_test"] == 6


def test_presets_carry_the_papers_protocols(videos, tmp_path):
    k400, ssv2, in1k = probe_preset("k400"), probe_preset("ssv2"), probe_preset("in1k")
    assert (k400["frames_per_segment"], k400["num_segments"], k400["num_crops"]) == (16, 8, 3)
    assert (ssv2["frames_per_segment"], ssv2["num_segments"], ssv2["num_crops"]) == (16, 2, 3)
    assert in1k["source"] == "images" and in1k["weight_decay"] == 0.001
    assert k400["epochs"] == 20 and k400["lr"] == 1e-3 and k400["streaming"] and k400["augment"]
    out = tmp_path / "k400.json"
    assert main(["probe", "debug", "--data", str(videos), "--preset", "ssv2", "--epochs", "1", "--frames", "8",
                 "--frame-step", "1", "--output", str(out)]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["preset"] == "ssv2" and settings["num_segments"] == 2 and settings["num_crops"] == 3
    assert settings["epochs"] == 1 and settings["streaming"] and settings["grad_clip"] == 1.0


def test_image_folder_probe_skips_and_names_an_unreadable_image(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, label in enumerate(("red", "blue")):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 60, (20, 24, 3), dtype=np.uint8)
                pixels[..., 0 if k == 0 else 2] += 180
                Image.fromarray(pixels).save(tmp_path / split / label / f"{i}.png")
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"not a png")
    _, cfg = encoder_and_cfg()
    probe_cfg = make_probe_config(data=str(tmp_path), source="images")
    item = view_dataset(cfg, probe_cfg, "test", 1)[0]
    assert item["video"].shape == (1, 3, 8, 32, 32)  # one crop, the encoder's 8 frames
    assert torch.equal(item["video"][:, :, 0], item["video"][:, :, 7])  # a repeated frame
    out = tmp_path / "images.json"
    assert main(["probe", "debug", "--data", str(tmp_path), "--preset", "in1k", "--epochs", "1",
                 "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err
    result = json.loads(out.read_text())
    assert result["class_names"] == ["blue", "red"] and result["num_train"] == 6  # the broken image left out
    assert any(p.endswith("broken.png") for p in result["skipped"]["train"]["skipped_files"])
    (tmp_path / "train" / "red" / "broken.png").unlink()
    assert main(["probe", "debug", "--data", str(tmp_path), "--epochs", "1", "--output", str(out)]) == 2
    assert "pass --source images" in capsys.readouterr().err  # read as frame folders: each far too short


def test_labels_outside_the_classes_and_empty_splits_are_clear_errors(videos, tmp_path):
    encoder, cfg = encoder_and_cfg()
    files = sorted((videos / "train").rglob("*.mp4"))
    (tmp_path / "train.csv").write_text("".join(f"{f} {i % 2}\n" for i, f in enumerate(files)))
    (tmp_path / "test.csv").write_text(f"{files[0]} 0\n{files[1]} 5\n")
    with pytest.raises(DataError, match=r"labels outside the 2 training classes.*label 5.*1\.mp4"):
        probe_encoder(encoder, cfg, "label", data=str(tmp_path), **FAST)
    (tmp_path / "test.csv").write_text("")
    with pytest.raises(DataError, match="no videos"):
        probe_encoder(encoder, cfg, "label", data=str(tmp_path), **FAST)
    extra = tmp_path / "folders"
    for split, classes in (("train", ("cats", "dogs")), ("test", ("dogs", "emus"))):
        for name in classes:
            (extra / split / name).mkdir(parents=True)
            os.symlink(files[0], extra / split / name / "a.mp4")
    with pytest.raises(DataError, match="classes the train split lacks: emus"):
        probe_encoder(encoder, cfg, "label", data=str(extra), streaming=True, **FAST)


def test_test_classes_are_matched_to_train_classes_by_name(videos, tmp_path):
    encoder, cfg = encoder_and_cfg()
    for split, classes in (("train", ("cats", "dogs")), ("test", ("dogs",))):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                os.symlink(videos / "train" / name / f"{i}.mp4", tmp_path / split / name / f"{i}.mp4")
    for streaming in (False, True):
        result = probe_encoder(encoder, cfg, "label", data=str(tmp_path), streaming=streaming, **FAST)
        assert result["confusion"][0] == [0, 0]  # no test clip is counted as cats
        assert sum(result["confusion"][1]) == 2


def test_folds_are_video_wise_and_encode_once(videos, tmp_path, monkeypatch):
    folds = fold_index(["a/1.mp4", "a/2.mp4", "b/1.mp4", "c/1.mp4"], 3, group_by="folder")
    assert folds[0] == folds[1] and len(set(folds.tolist())) == 3
    with pytest.raises(ValueError, match="needs at least 3 groups"):
        fold_index(["a/1.mp4", "a/2.mp4"], 3, group_by="folder")
    from vjepa.eval import cache as cache_module

    calls = []
    real = cache_module.extract_features
    monkeypatch.setattr(cache_module, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    from vjepa.config import to_dict

    encoder, cfg = encoder_and_cfg()
    weights = tmp_path / "enc.pt"  # fixed weights (a preset name draws new ones every load)
    torch.save({"encoder": encoder.state_dict(), "config": to_dict(cfg)}, weights)
    args = ["probe", str(weights), "--data", str(videos), "--folds", "3", "--epochs", "1", "--frames", "8",
            "--frame-step", "1", "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "cv.json")]
    assert main(args) == 0 and main(args) == 0
    result = json.loads((tmp_path / "cv.json").read_text())
    assert len(result["fold_top1"]) == 3 and result["num_test"] == 6
    assert len(calls) == 1  # the second call read the clips' tokens from the disk cache


def test_disk_cache_is_memory_mapped_and_keyed_by_the_clips_content(videos, tmp_path):
    from video_utils import write_index_video

    data = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("cats", "dogs"):
            (data / split / name).mkdir(parents=True)
            for i in range(2):
                write_index_video(data / split / name / f"{i}.mp4", num_frames=12, width=40)
    encoder, cfg = encoder_and_cfg()
    probe_cfg = make_probe_config(data=str(data), cache_dir=str(tmp_path / "cache"), **FAST)
    first = FeatureCache(encoder, cfg, probe_cfg).get("train", train=True)
    files = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1 and first.paths and first.tokens.shape[0] == 4
    assert torch.equal(load_features(files[0], mmap=True).tokens, first.tokens)
    again = FeatureCache(encoder, cfg, probe_cfg).get("train", train=True)  # same clips: the same file
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1 and torch.equal(again.tokens, first.tokens)
    write_index_video(data / "train" / "cats" / "0.mp4", num_frames=14, width=40)  # new content, same path
    FeatureCache(encoder, cfg, probe_cfg).get("train", train=True)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    other = make_probe_config(data=str(data), cache_dir=str(tmp_path / "cache"), resize_ratio=1.25, **FAST)
    FeatureCache(encoder, cfg, other).get("train", train=True)  # other views: another file
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_features_npy_roundtrip_bf16_memory_mapped(tmp_path):
    features = Features(torch.randn(3, 2, 4, 5).bfloat16(), {"label": torch.tensor([0, 1, 1])}, 2, 1, ["a", "b"],
                        ["x.mp4", "y.mp4", "y.mp4"], torch.tensor([0, 0, 8]), [("z.mp4", "corrupt")], {"k": "v"})
    save_features(tmp_path / "f.npy", features)
    for mmap in (False, True):
        loaded = load_features(tmp_path / "f.npy", mmap=mmap)
        assert torch.equal(loaded.tokens, features.tokens) and loaded.tokens.dtype == torch.bfloat16
        assert loaded.paths == features.paths and loaded.window_start.tolist() == [0, 0, 8]
        assert loaded.failures == [("z.mp4", "corrupt")] and loaded.metadata == {"k": "v"}
    assert load_features(tmp_path / "f.npy").videos == ["x.mp4", "y.mp4"]
    assert load_features(tmp_path / "f.npy").subset(torch.tensor([2])).paths == ["y.mp4"]


@pytest.mark.parametrize("streaming", [False, True])
def test_probe_checkpoints_resume_exactly(videos, tmp_path, monkeypatch, capsys, streaming):
    """Interrupted after step 4 of 6 with checkpoints every 2 steps, a rerun ends where an
    uninterrupted run does (augmented streaming clips included), and says once where it resumed."""
    from vjepa.eval import progress

    encoder, cfg = encoder_and_cfg()
    settings = {**FAST, "epochs": 2, "data": str(videos), "streaming": streaming, "augment": streaming,
                "feature_dtype": "fp32", "num_segments": 2}
    states = []
    real_record = progress.ProbeProgress.record
    monkeypatch.setattr(progress.ProbeProgress, "record",
                        lambda self, *a: real_record(self, *a) or states.append({k: v.clone() for k, v in
                                                                                 self.probe.state_dict().items()}))
    whole = probe_encoder(encoder, cfg, "label", **settings)
    final = states[-1]
    state_file = tmp_path / "probe.state.pt"

    def interrupt(self, *args):
        real_record(self, *args)
        if self.step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.ProbeProgress, "record", interrupt)
    with pytest.raises(KeyboardInterrupt):
        probe_encoder(encoder, cfg, "label", checkpoint_every=2, state_file=str(state_file), **settings)
    assert torch.load(state_file, weights_only=True)["step"] == 4
    assert "resumed" not in capsys.readouterr().out  # a first run says nothing of resuming
    states.clear()
    monkeypatch.setattr(progress.ProbeProgress, "record",
                        lambda self, *a: real_record(self, *a) or states.append({k: v.clone() for k, v in
                                                                                 self.probe.state_dict().items()}))
    resumed = probe_encoder(encoder, cfg, "label", checkpoint_every=2, state_file=str(state_file), **settings)
    assert len(states) == 2  # only steps 5 and 6 ran again
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "resumed" in line]
    assert line == f"resumed probe training from {state_file}: step 4 of 6, epoch 2 of 2"  # 3 steps per epoch
    assert all(torch.equal(final[k], states[-1][k]) for k in final)
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], abs=1e-6)
    with pytest.raises(ValueError, match="other settings.*lr"):
        probe_encoder(encoder, cfg, "label", checkpoint_every=2, state_file=str(state_file), **{**settings, "lr": 0.1})
    state = torch.load(state_file, weights_only=True)  # an optimiser grouped otherwise (another version)
    state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:-1]
    torch.save(state, state_file)
    with pytest.raises(ValueError, match="optimiser state does not fit.*delete it"):
        probe_encoder(encoder, cfg, "label", checkpoint_every=2, state_file=str(state_file), **settings)


def _probe_rank(rank, world_size, port, weights, data, out_dir):
    """One torchrun-like rank: a streaming, augmented probe; keeps its final probe weights."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from vjepa import distributed
    from vjepa.eval.run import _broadcast

    env = distributed.setup("cpu")  # probe_checkpoint joins this group (and leaves it at the end)
    torch.manual_seed(rank)  # a preset's random encoder differs per rank until rank 0's is broadcast
    drawn = torch.nn.Linear(3, 2)
    _broadcast(drawn, env)
    torch.save(drawn.state_dict(), f"{out_dir}/drawn{rank}.pt")
    _run_and_keep(weights, data, f"{out_dir}/rank{rank}.pt", f"{out_dir}/result.json")


def _run_and_keep(weights, data, keep, output):
    from vjepa.eval import progress
    from vjepa.eval.run import probe_checkpoint

    real = progress.ProbeProgress.finish

    def finish(self):
        torch.save({k: v.detach().clone() for k, v in self.probe.state_dict().items()}, keep)
        return real(self)

    progress.ProbeProgress.finish = finish
    try:
        probe_cfg = make_probe_config(data=data, task="label", streaming=True, augment=True, device="cpu",
                                      **{**FAST, "batch_size": 3, "epochs": 2})
        probe_checkpoint(weights, probe_cfg, output=output)
    finally:
        progress.ProbeProgress.finish = real


@pytest.mark.parametrize("unreadable", [False, True])
def test_two_ranks_share_the_clips_and_take_the_single_process_steps(videos, tmp_path, unreadable):
    """Also with an unreadable training clip: it is left out (each step's loss is the mean over the
    clips read on all ranks) and rank 0 reports it whichever rank met it."""
    import socket

    import torch.multiprocessing as mp

    from vjepa.config import to_dict

    encoder, cfg = encoder_and_cfg()
    weights = tmp_path / "enc.pt"
    torch.save({"encoder": encoder.state_dict(), "config": to_dict(cfg)}, weights)
    data = str(videos)
    if unreadable:  # the same clips as lists, a corrupt file among the training ones
        (tmp_path / "corrupt.mp4").write_bytes(b"\x00 not a video" * 64)
        for split in ("train", "test"):
            files = sorted((videos / split).rglob("*.mp4"))
            lines = [f"{f} {int(f.parent.name == 'dogs')}" for f in files]
            lines = lines[:2] + [f"{tmp_path / 'corrupt.mp4'} 0"] + lines[2:] if split == "train" else lines
            (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
        data = str(tmp_path / "{split}.csv")
    _run_and_keep(str(weights), data, str(tmp_path / "single.pt"), str(tmp_path / "single.json"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_probe_rank, args=(2, port, str(weights), data, str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert max((state[k] - single[k]).abs().max().item() for k in single) < 1e-5
    drawn = [torch.load(tmp_path / f"drawn{rank}.pt", weights_only=True) for rank in range(2)]
    assert all(torch.equal(drawn[0][k], drawn[1][k]) for k in drawn[0])
    ran = json.loads((tmp_path / "result.json").read_text())  # written once, by rank 0
    assert ran["num_train"] == 6 and ran["top1"] == json.loads((tmp_path / "single.json").read_text())["top1"]
    assert ran["skipped"]["train"]["skipped_files"] == ([str(tmp_path / "corrupt.mp4")] if unreadable else [])


def test_eval_command_probes_the_label_task_of_given_data(videos, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "debug", "--data", str(videos), "--epochs", "1", "--frames", "8", "--frame-step", "1",
                 "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [(r["task"], r["probe"]) for r in results] == [("label", "attentive"), ("label", "linear")]
    assert all(r["checkpoint"] == "debug" and r["step"] is None for r in results)
