"""Classifying videos with a trained probe: the probe file from `vjepa probe`, `vjepa classify` end to end,
and `vjepa.load_probe(...).predict` on paths, raw frames and normalised clips."""

import json

import numpy as np
import pytest
import torch

import vjepa
from video_utils import write_index_video
from vjepa.cli import main
from vjepa.config import ConfigError, apply_overrides, preset
from vjepa.data.decode import read_frames
from vjepa.eval import make_probe_config, probe_checkpoint
from vjepa.train import train

CLASSES = ("cats", "dogs")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A 2-step debug run, a class-folder set of tiny real videos, and an fp32 attentive probe on it
    with 2 segments x 3 crops (so the evaluation and classification can be compared exactly)."""
    root = tmp_path_factory.mktemp("classify")
    for split in ("train", "test"):
        for label in CLASSES:
            (root / "data" / split / label).mkdir(parents=True)
            for i in range(2):
                write_index_video(root / "data" / split / label / f"{i}.mp4", num_frames=40, width=48)
    cfg = apply_overrides(
        preset("debug"), [f"run.out_dir={root / 'run'}", "optim.steps=2", "run.progress=false"]
    )
    train(cfg)
    probe_cfg = make_probe_config(
        task="label",
        kind="attentive",
        epochs=3,
        batch_size=4,
        warmup_epochs=1,
        num_segments=2,
        num_crops=3,
        attend_across_segments=True,
        feature_dtype="fp32",
        frame_step=2,  # the probe's own sampling (not data.frame_step)
    )
    overrides = ["data.source=folder", f"data.path={root / 'data'}", "run.dtype=fp32"]
    result = probe_checkpoint(root / "run", probe_cfg, overrides, root / "run" / "probe.json")
    return root, result


def test_probe_file_is_written_beside_the_json_and_records_its_protocol(probed):
    root, result = probed
    assert result["probe_file"] == str(root / "run" / "probe.safetensors")
    probe = vjepa.load_probe(result["probe_file"])
    assert probe.encoder is not None and probe.encoder.source == str((root / "run" / "latest.pt").resolve())
    assert probe.class_names == list(CLASSES)
    p = probe.protocol
    assert (p.num_segments, p.num_crops, p.frames_per_segment, p.frame_step, p.crop_size) == (2, 3, 8, 2, 32)
    assert p.attend_across_segments and probe.info["result"]["top1"] == result["top1"]
    assert probe.spec == {
        "kind": "attentive",
        "variant": "vjepa1",
        "depth": 1,
        "embed_dim": 64,
        "num_heads": 2,
        "num_classes": 2,
    }


def test_classify_reproduces_the_evaluation_and_skips_bad_videos(probed, tmp_path, capsys):
    root, result = probed
    test = root / "data" / "test"
    listing = tmp_path / "list.csv"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    rows = [f"{test / name / f'{i}.mp4'} {k}" for k, name in enumerate(CLASSES) for i in range(2)]
    listing.write_text("\n".join([*rows, f"{broken} 0"]) + "\n")
    output = tmp_path / "out.json"
    code = main(
        [
            "classify",
            str(listing),
            "--probe",
            result["probe_file"],
            "--top-k",
            "2",
            "--output",
            str(output),
            "--no-progress",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert f"skipped {broken}" in captured.err and "classified 4 of 5 videos" in captured.out
    assert f"{test / 'cats' / '0.mp4'}: " in captured.out and "(label: cats)" in captured.out
    payload = json.loads(output.read_text())
    assert payload["skipped"][0]["path"] == str(broken) and len(payload["results"]) == 4
    confusion = np.zeros((2, 2), dtype=int)
    for entry in payload["results"]:
        top = entry["top_k"]
        assert [c["class"] for c in top] in (["cats", "dogs"], ["dogs", "cats"])
        assert top[0]["prob"] >= top[1]["prob"] and sum(c["prob"] for c in top) == pytest.approx(
            1.0, abs=1e-5
        )
        confusion[entry["label"], top[0]["index"]] += 1
    # the same views through the same probe: the evaluation's confusion matrix, video for video
    assert confusion.tolist() == result["confusion"]


def test_predict_on_a_path_raw_frames_and_clips_agree(probed):
    root, result = probed
    probe = vjepa.load_probe(result["probe_file"])
    video = root / "data" / "test" / "dogs" / "1.mp4"
    from_path = probe.predict(str(video))
    frames = read_frames(video, np.arange(40))  # the whole video, uint8 [T, H, W, 3]
    from_frames = probe.predict(frames)
    assert from_path.probs.shape == (1, 2) and torch.allclose(from_path.probs, from_frames.probs, atol=1e-6)
    views = probe.protocol.views(frames)  # [V, 3, F, h, w], normalised
    assert views.shape == (6, 3, 8, 32, 32)
    assert torch.allclose(probe.predict(views[None]).probs, from_path.probs, atol=1e-6)
    one_view = probe.predict(views[:2])  # [B, 3, F, h, w]: each clip one view
    assert one_view.probs.shape == (2, 2)
    assert from_path.top(1)[0][0][0] in CLASSES and from_path.labels[0] in CLASSES
    with pytest.raises(ValueError, match="too short"):
        probe.predict(frames[:5])


def test_a_file_too_short_for_one_segment_is_a_decode_error_naming_it(probed, tmp_path):
    """`read_views` goes through the datasets' `read_clip_frames`: same rules, same error."""
    from vjepa.data.decode import DecodeError

    probe = vjepa.load_probe(probed[1]["probe_file"])
    short = write_index_video(tmp_path / "short.mp4", num_frames=3, width=48)
    with pytest.raises(DecodeError, match=r"short\.mp4.*too_short|too_short.*short\.mp4") as caught:
        probe.predict(str(short))
    assert caught.value.reason == "too_short"


def test_classify_with_an_explicit_encoder_and_nothing_readable(probed, tmp_path, capsys):
    root, result = probed
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    code = main(
        [
            "classify",
            str(broken),
            "--probe",
            result["probe_file"],
            "--checkpoint",
            str(root / "run"),
            "-o",  # like embed, export and visualize
            str(tmp_path / "o.json"),
            "--no-progress",
        ]
    )
    assert code == 1 and "classified 0 of 1 videos" in capsys.readouterr().out
    assert (tmp_path / "o.json").is_file()  # -o names the JSON
    assert main(["classify", str(broken), "--probe", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["classify", str(broken), "--probe", result["probe_file"], "--top-k", "0"]) == 2
    assert "--top-k 0: report at least 1 class" in capsys.readouterr().err


def test_probe_cli_saves_where_asked_or_not_at_all(probed, tmp_path, capsys):
    root, _ = probed
    args = [
        "probe",
        str(root / "run"),
        "--task",
        "label",
        "--probe",
        "linear",
        "--epochs",
        "1",
        "data.source=folder",
        f"data.path={root / 'data'}",
        "data.frame_step=2",
    ]
    assert (
        main([*args, "--output", str(tmp_path / "a.json"), "--save-probe", str(tmp_path / "p.safetensors")])
        == 0
    )
    assert f"wrote {tmp_path / 'p.safetensors'}" in capsys.readouterr().out
    linear = vjepa.load_probe(tmp_path / "p.safetensors")
    assert linear.spec["kind"] == "linear" and linear.class_names == list(CLASSES)
    assert main([*args, "--output", str(tmp_path / "b.json"), "--no-save-probe"]) == 0
    assert not (tmp_path / "b.safetensors").exists() and "probe_file" not in json.loads(
        (tmp_path / "b.json").read_text()
    )


def test_classification_views_are_the_evaluations_views(probed):
    from vjepa.eval import load_frozen
    from vjepa.eval.views import view_dataset

    root, result = probed
    _, cfg = load_frozen(root / "run")
    cfg = apply_overrides(cfg, ["data.source=folder", f"data.path={root / 'data'}"])
    probe_cfg = make_probe_config(
        **{k: result["settings"][k] for k in ("num_segments", "num_crops", "resize_ratio", "frame_step")}
    )
    dataset = view_dataset(cfg, probe_cfg, "test", probe_cfg.num_crops)
    protocol = vjepa.load_probe(result["probe_file"]).protocol
    for index in range(len(dataset)):
        item = dataset[index]
        assert torch.equal(protocol.read_views(item["path"]), item["video"])  # [S*C, 3, F, h, w]


def test_probe_cli_trains_the_vjepa2_probe(probed, tmp_path):
    root, _ = probed
    assert (
        main(
            [
                "probe",
                str(root / "run"),
                "--task",
                "label",
                "--epochs",
                "1",
                "--variant",
                "vjepa2",
                "--depth",
                "2",
                "--output",
                str(tmp_path / "v2.json"),
                "data.source=folder",
                f"data.path={root / 'data'}",
                "data.frame_step=2",
            ]
        )
        == 0
    )
    probe = vjepa.load_probe(tmp_path / "v2.safetensors")
    assert (probe.spec["variant"], probe.spec["depth"]) == ("vjepa2", 2)
    assert len(probe.module.pooler.blocks) == 1 and not hasattr(
        probe.module.pooler.cross_attention_block.xattn, "proj"
    )
    with pytest.raises(ConfigError, match="probe variant 'v3'"):
        make_probe_config(variant="v3")


def test_classify_with_an_official_probe_checkpoint(probed, tmp_path, capsys):
    from vjepa.models.probe import AttentiveClassifier

    root, _ = probed
    state = AttentiveClassifier(64, 2, 3, depth=2, variant="vjepa2").state_dict()
    torch.save(
        {"classifiers": [{f"module.{k}": v for k, v in state.items()}], "epoch": 1}, tmp_path / "v2.pt"
    )
    video = root / "data" / "test" / "cats" / "0.mp4"
    args = [
        "classify",
        str(video),
        "--probe",
        str(tmp_path / "v2.pt"),
        "--output",
        str(tmp_path / "o.json"),
        "--no-progress",
        "--probe-heads",
        "2",
    ]
    assert (
        main(args) == 2 and "pass --checkpoint" in capsys.readouterr().err
    )  # official files name no encoder
    assert main([*args, "--checkpoint", str(root / "run")]) == 0
    payload = json.loads((tmp_path / "o.json").read_text())
    assert {c["class"] for c in payload["results"][0]["top_k"]} == {
        "0",
        "1",
        "2",
    }  # no names in official files
    protocol = payload["protocol"]  # the encoder's clip, short side resized by 256/224 as officially
    assert (protocol["frames_per_segment"], protocol["crop_size"], protocol["num_segments"]) == (8, 32, 1)
    assert protocol["resize_ratio"] == pytest.approx(256 / 224)


def test_another_encoder_warns_and_another_width_is_an_error(probed):
    from vjepa.checkpoint import CheckpointError

    _, result = probed
    with pytest.warns(UserWarning, match="trained on another encoder's features"):
        vjepa.load_probe(result["probe_file"], encoder="debug")  # a random-init encoder of the same width
    with pytest.raises(CheckpointError, match="reads 64-wide tokens"):
        vjepa.load_probe(result["probe_file"], encoder="demo")


def test_a_streaming_probe_is_saved_and_classifies_as_it_scored(probed, tmp_path):
    """`--stream` probes keep their trained probe too: classifying the test split with the saved
    file gives the streaming evaluation's confusion matrix."""
    from vjepa.classify import classify_videos
    from vjepa.eval import list_videos

    root, cached = probed
    probe_cfg = make_probe_config(task="label", epochs=2, batch_size=4, warmup_epochs=1, num_segments=2,
                                  num_crops=3, attend_across_segments=True, frame_step=2, streaming=True)
    overrides = ["data.source=folder", f"data.path={root / 'data'}", "run.dtype=fp32"]
    result = probe_checkpoint(root / "run", probe_cfg, overrides, tmp_path / "stream.json")
    assert result["probe_file"] == str(tmp_path / "stream.safetensors")
    probe = vjepa.load_probe(result["probe_file"])
    assert probe.protocol == vjepa.load_probe(cached["probe_file"]).protocol  # same views, cached or not
    from vjepa.eval.probe_train import new_probe

    untrained = new_probe(probe_cfg, probe.spec["embed_dim"], probe.spec["num_heads"], 2).state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in probe.module.state_dict().items())  # trained weights
    out = classify_videos(probe, list_videos(root / "data" / "test"), 2, 4, progress=False)
    confusion = np.zeros((2, 2), dtype=int)
    for entry in out["results"]:
        confusion[entry["label"], entry["top_k"][0]["index"]] += 1
    assert confusion.tolist() == result["confusion"]


def test_a_probe_of_a_presets_random_init_finds_its_encoder_again(probed, tmp_path):
    """Probing a preset name (a random-init baseline) records the name; loading the probe file
    rebuilds the same seeded init (no 'another encoder' warning) and classifies."""
    import warnings

    root, _ = probed
    probe_cfg = make_probe_config(task="label", epochs=1, batch_size=4, warmup_epochs=1, frame_step=2,
                                  data=str(root / "data"))
    result = probe_checkpoint("debug", probe_cfg, [], tmp_path / "preset.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe = vjepa.load_probe(result["probe_file"])
    assert probe.encoder is not None and probe.encoder.source == "preset 'debug' (random init)"
    assert probe.predict(str(root / "data" / "test" / "cats" / "0.mp4")).probs.shape == (1, 2)
