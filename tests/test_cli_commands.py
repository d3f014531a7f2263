"""`vjepa prepare` (two splits) feeding `vjepa pretrain`, and `vjepa eval`'s figures, checked on values."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from video_utils import decode_index, write_index_video
from vjepa.checkpoint import load_checkpoint
from vjepa.cli import main
from vjepa.config import apply_overrides, preset
from vjepa.data.prepare import CachedVideoDataset
from vjepa.data.sampling import ClipSpec
from vjepa.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def video_lists(tmp_path_factory) -> Path:
    """train.csv (3 videos of 40, 30, 24 frames) and val.csv (2 videos) of index-frame videos."""
    root = tmp_path_factory.mktemp("videos")
    lengths = {"train": [40, 30, 24], "val": [36, 20]}
    for split, frames in lengths.items():
        lines = []
        for i, n in enumerate(frames):
            path = write_index_video(root / f"{split}{i}.mp4", num_frames=n)
            lines.append(f"{path} {i % 2}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_cli_prepare_two_splits_then_pretrain_from_the_cache(video_lists, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["prepare", "--preset", "debug", "data.source=csv", f"data.path={video_lists}",
                 "--out", str(cache), "--split", "train", "val"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{cache / 'train'}: 3 videos, 94 frames")
    assert lines[1].startswith(f"{cache / 'val'}: 2 videos, 56 frames")
    # the cache holds every frame of every video, in order: evaluation clips decode to their indices
    spec = ClipSpec(frames_per_clip=4, frame_step=3, num_clips=2)
    for split, expected in (("train", [[0, 3, 6, 9], [20, 23, 26, 29]]), ("val", [[0, 3, 6, 9], [18, 21, 24, 27]])):
        item = CachedVideoDataset(cache / split, spec, None, train=False)[0]
        frames = (item["video"].permute(0, 2, 3, 4, 1) * 255).round().to(torch.uint8).numpy()  # [clips, T, h, w, 3]
        for clip, indices in zip(frames, expected):
            np.testing.assert_array_equal(decode_index(clip), indices, err_msg=split)
    # pretraining reads the cache's train split
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "debug", "data.source=cache", f"data.path={cache}", "data.frame_step=2",
                 f"run.out_dir={run}", "optim.steps=2", "run.progress=false", "run.log_every=1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    state = load_checkpoint(run / "latest.pt")
    assert state["step"] == 2 and state["config"]["data"]["source"] == "cache"
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 2 and all(np.isfinite(losses))



def test_cli_prepare_refuses_splits_without_a_split_and_a_split_with_no_readable_video(video_lists, tmp_path, capsys):
    args = ["prepare", "--preset", "debug", "data.source=csv", "--out", str(tmp_path / "cache")]
    assert main([*args, f"data.path={video_lists / 'train.csv'}", "--split", "train", "val"]) == 2
    assert "so both splits would cache the same videos" in capsys.readouterr().err  # not the same videos twice
    (tmp_path / "gone.csv").write_text("missing0.mp4 0\nmissing1.mp4 1\n")
    assert main([*args, f"data.path={tmp_path / 'gone.csv'}"]) == 2  # exited 0 with an empty cache
    err = capsys.readouterr().err
    assert "every one of the 2 videos was skipped: {'missing': 2}; nothing cached in" in err
    assert main(["prepare", "--preset", "debug", "--out", str(tmp_path / "c"), "--split", "train", "val"]) == 2
    assert "data.source=synthetic needs no preparing" in capsys.readouterr().err  # not the split complaint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(apply_overrides(preset("debug"), [f"run.out_dir={out}", "run.progress=false", "optim.steps=2",
                                            "run.checkpoint_every=2"]))
    return out


def test_cli_eval_figures_match_their_confusion_and_vjepa_probe(tiny_run, tmp_path, capsys):
    """Every row's top-1 is its confusion matrix's diagonal share, the printed table shows the JSON's
    numbers, and `vjepa probe` with the same settings reproduces a row exactly."""
    output = tmp_path / "eval.json"
    assert main(["eval", str(tiny_run), "--epochs", "2", "--seed", "3", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert sorted((r["task"], r["probe"]) for r in results) == [
        ("appearance", "attentive"), ("appearance", "linear"), ("motion", "attentive"), ("motion", "linear")]
    for r in results:
        confusion = np.array(r["confusion"])
        assert confusion.shape == (r["num_classes"], r["num_classes"])
        assert confusion.sum() == r["num_test"] == 32 and r["num_train"] == 64  # debug: 64 train, 32 test clips
        assert r["top1"] == pytest.approx(100 * np.trace(confusion) / confusion.sum())
        rows = confusion.sum(axis=1)
        expected = [100 * confusion[k, k] / n if n else None for k, n in enumerate(rows)]
        assert r["per_class_top1"] == pytest.approx(expected)
        assert 0 <= r["train_top1"] <= 100 and r["step"] == 2 and r["settings"]["seed"] == 3
        row = f"| {r['task']} | {r['probe']} | 100% | {r['top1']:.1f} | {r['train_top1']:.1f} | 64 | 32 |"
        assert row in table, row
    probe_json = tmp_path / "probe.json"
    assert main(["probe", str(tiny_run), "--task", "appearance", "--probe", "linear", "--epochs", "2",
                 "--seed", "3", "--output", str(probe_json)]) == 0
    probe = json.loads(probe_json.read_text())
    same = next(r for r in results if (r["task"], r["probe"]) == ("appearance", "linear"))
    assert probe["top1"] == same["top1"] and probe["confusion"] == same["confusion"]
def test_the_cli_prints_the_librarys_warnings_on_one_line(monkeypatch, capsys):
    import warnings

    from vjepa.data.datasets import SkippedVideoWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    assert main(["config", "debug"]) == 0
    installed = warnings.formatwarning
    assert main(["config", "debug"]) == 0 and warnings.formatwarning is installed  # not wrapped once per call
    ours = warnings.formatwarning("skipping video a.mp4: missing", SkippedVideoWarning, "datasets.py", 3)
    assert ours == "vjepa: SkippedVideoWarning: skipping video a.mp4: missing\n"  # no source line under it
    from vjepa.config import VJEPAWarning

    probe = warnings.formatwarning("probe p was trained on another encoder", VJEPAWarning, "classify.py", 9)
    assert probe == "vjepa: VJEPAWarning: probe p was trained on another encoder\n"  # every library warning
    theirs = warnings.formatwarning("someone else's", UserWarning, "lib.py", 7, "source line")
    assert theirs == "lib.py:7: UserWarning: someone else's\n  source line\n"  # Python's format


@pytest.mark.parametrize("argv", [["debug"], ["--preset", "debug"], ["--preset", "debug", "optim.steps=7"],
                                  ["debug", "optim.steps=7"]])
def test_cli_config_takes_the_preset_as_a_name_or_as_preset_like_the_other_commands(argv, capsys):
    assert main(["config", *argv]) == 0
    printed = capsys.readouterr().out
    assert "embed_dim: 64" in printed and f"steps: {7 if 'optim.steps=7' in argv else 20}" in printed


def test_cli_config_errors(tmp_path, capsys):
    assert main(["config", "debug", "mask.kind=typo"]) == 2  # refused as training would refuse it
    assert "mask.kind='typo'; choose one of" in capsys.readouterr().err
    assert main(["config", "vitl1"]) == 2
    assert "unknown preset 'vitl1'; choose from debug, demo" in capsys.readouterr().err
    assert main(["config", "--preset", "debug", "demo"]) == 2
    assert "two presets given: demo and --preset debug" in capsys.readouterr().err
    (tmp_path / "mine.yaml").write_text("optim:\n  steps: 9\n")
    assert main(["config", "debug", "--config", str(tmp_path / "mine.yaml")]) == 0
    assert "steps: 9" in capsys.readouterr().out

