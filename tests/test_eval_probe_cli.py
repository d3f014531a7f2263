"""`vjepa probe` on a user's lists: unreadable clips, result file names, held-out splits, progress."""

import json
import shutil

import pytest
import torch

from vjepa.cli import main
from vjepa.config import ConfigError, apply_overrides, preset
from vjepa.eval import FeatureCache, load_features, make_probe_config

FAST = ["--epochs", "2", "--frames", "8", "--frame-step", "1", "--batch-size", "2"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """bad/{train,test}.csv: train has 4 good clips, a valid copy of one, and a corrupt, an empty and
    a missing file; test has 2 good clips and the corrupt one. good/ holds the same lists without
    the unreadable files."""
    from video_utils import write_index_video

    root = tmp_path_factory.mktemp("lists")
    bad, good = root / "bad", root / "good"
    bad.mkdir()
    for i in range(6):
        write_index_video(bad / f"clip{i}.mp4", num_frames=12, width=40)
    shutil.copy(bad / "clip0.mp4", bad / "copy.mp4")
    (bad / "corrupt.mp4").write_bytes(b"\x00 not a video" * 64)
    (bad / "empty.mp4").write_bytes(b"")
    train = ["clip0.mp4 0", "clip1.mp4 1", "clip2.mp4 0", "clip3.mp4 1", "copy.mp4 0"]
    (bad / "train.csv").write_text("\n".join([*train, "corrupt.mp4 0", "empty.mp4 1", "missing.mp4 0"]) + "\n")
    (bad / "test.csv").write_text("clip4.mp4 0\nclip5.mp4 1\ncorrupt.mp4 0\n")
    good.mkdir()
    (good / "train.csv").write_text("".join(f"../bad/{line}\n" for line in train))
    (good / "test.csv").write_text("../bad/clip4.mp4 0\n../bad/clip5.mp4 1\n")
    return root


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr()


@pytest.mark.parametrize("streaming", [False, True])
def test_unreadable_clips_are_left_out_and_reported_never_replaced(lists, tmp_path, monkeypatch, capsys, streaming):
    """Cached and streaming probes train and score exactly the readable clips listed (a valid copy of
    a clip counts; nothing stands in for a bad file), and both print and record the same skipped files."""
    monkeypatch.chdir(lists)
    stream = ["--stream"] if streaming else []
    code, captured = _run(["probe", "debug", "--data", "bad/{split}.csv", *FAST, *stream], capsys)
    assert code == 0, captured.err
    output = lists / "probe_label_attentive_100pct_bad.json"  # {split}.csv data is named by its folder
    assert f"wrote {output}" in captured.out
    result = json.loads(output.read_text())
    assert result["num_train"] == 5 and result["num_test"] == 2
    assert result["test_paths"] == ["bad/clip4.mp4", "bad/clip5.mp4"]
    assert result["skipped"] == {
        "train": {"skipped": {"corrupt": 1, "empty": 1, "missing": 1},
                  "skipped_files": ["bad/corrupt.mp4", "bad/empty.mp4", "bad/missing.mp4"]},
        "test": {"skipped": {"corrupt": 1}, "skipped_files": ["bad/corrupt.mp4"]}}
    for line in ("skipped bad/corrupt.mp4 (train split", "skipped bad/empty.mp4 (train split",
                 "skipped bad/missing.mp4 (train split", "skipped bad/corrupt.mp4 (test split"):
        assert line in captured.err
    assert "features" in captured.err and "epoch" in captured.err  # progress bars (stderr) by default
    code, captured = _run(["probe", "debug", "--data", "good/{split}.csv", *FAST, *stream, "--no-progress"], capsys)
    assert code == 0, captured.err
    clean = json.loads((lists / "probe_label_attentive_100pct_good.json").read_text())
    assert (clean["num_train"], clean["num_test"]) == (result["num_train"], result["num_test"])
    assert clean["skipped"] == {"train": {"skipped": {}, "skipped_files": []},
                                "test": {"skipped": {}, "skipped_files": []}}
    if not streaming:  # the same clips, so the same features, probe and score (streaming batches differ)
        assert clean["confusion"] == result["confusion"] and clean["train_top1"] == result["train_top1"]
    assert "epoch" not in captured.err and "features" not in captured.err  # --no-progress


def test_the_disk_cache_holds_only_the_readable_clips(lists, tmp_path, monkeypatch):
    """A memory-mapped cache of a split with unreadable files has one row per readable clip and
    names the others; a later process reads the same from disk, and never a file of the format that
    held substitutes' rows."""
    torch.manual_seed(0)
    from vjepa.models.factory import build_encoder
    from vjepa.precision import freeze

    cfg = apply_overrides(preset("debug"), ["run.dtype=fp32"])
    encoder = freeze(build_encoder(cfg))
    probe_cfg = make_probe_config(data=str(lists / "bad" / "{split}.csv"), task="label", frames_per_segment=8,
                                  frame_step=1, feature_batch_size=3, cache_dir=str(tmp_path / "cache"))
    first = FeatureCache(encoder, cfg, probe_cfg).get("train", train=True)
    assert first.tokens.shape[0] == len(first.paths) == len(first.labels["label"]) == 5
    assert [p.rsplit("/", 1)[1] for p in first.paths] == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4",
                                                          "copy.mp4"]
    assert first.labels["label"].tolist() == [0, 1, 0, 1, 0]
    assert [(p.rsplit("/", 1)[1], reason) for p, reason in first.failures] == [
        ("corrupt.mp4", "corrupt"), ("empty.mp4", "empty"), ("missing.mp4", "missing")]
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.partial.npy"))
    again = load_features(files[0], mmap=True)
    assert torch.equal(again.tokens, first.tokens) and again.failures == first.failures
    assert torch.equal(first.tokens[4], first.tokens[0])  # the copy is clip0's pixels, its own row
    from vjepa.eval import cache

    monkeypatch.setattr(cache, "CACHE_FORMAT", 1)  # as files written before the fix were named
    FeatureCache(encoder, cfg, probe_cfg).get("train", train=True)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_evaluation_datasets_drop_bad_items_and_pretraining_still_substitutes(lists):
    from vjepa.data.datasets import MixtureDataset, VideoClipDataset, VideoRecord, drop_bad_items
    from vjepa.data.sampling import ClipSpec

    records = [VideoRecord(str(lists / "bad" / name), 0) for name in ("clip0.mp4", "corrupt.mp4", "clip1.mp4")]
    spec = ClipSpec(frames_per_clip=4, frame_step=1)
    pretraining = VideoClipDataset(records, spec, train=False)
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        assert pretraining[1]["path"].endswith("clip1.mp4")  # the next good video stands in (pretraining)
    evaluation = VideoClipDataset(records, spec, train=False)
    mixture = MixtureDataset([evaluation], train=False)
    assert drop_bad_items(mixture) is mixture and evaluation.substitute is False
    with pytest.warns(UserWarning, match="corrupt.mp4"):
        assert mixture[1] is None  # evaluation: nothing in its place
    assert evaluation[2]["path"].endswith("clip1.mp4") and dict(evaluation.skipped) == {"corrupt": 1}


def test_probe_file_names_of_split_patterns_name_the_folder():
    from vjepa.eval.run import _data_name, _probe_file_name

    cases = {"videos/{split}.csv": "videos", "lists/k400_{split}.csv": "k400", "/data/ssv2/{split}": "ssv2",
             "classes/": "classes", "videos/train.csv": "train", "{split}.csv": "", "": ""}
    assert {data: _data_name(data) for data in cases} == cases
    from vjepa.eval import probe_preset

    k400 = {**probe_preset("k400"), "task": "label"}  # what --preset k400 sets, its 8 x 3 views included
    readme = make_probe_config(data="videos/{split}.csv", **k400)
    assert _probe_file_name(readme) == "probe_label_attentive_100pct_k400_videos.json"
    other = make_probe_config(data="audio/{split}.csv", **k400)
    assert _probe_file_name(other) != _probe_file_name(readme)  # no longer one name for every X/{split}.csv
    views = make_probe_config(data="videos/{split}.csv", **{**k400, "num_segments": 2})
    assert _probe_file_name(views) == "probe_label_attentive_100pct_k400_videos_2seg3crop.json"  # kept apart
    plain = make_probe_config(task="motion", num_segments=2, num_crops=3)
    assert _probe_file_name(plain) == "probe_motion_attentive_100pct_2seg3crop.json"
    assert _probe_file_name(make_probe_config(task="motion")) == "probe_motion_attentive_100pct.json"


def test_probe_refuses_to_score_its_own_training_clips(lists, tmp_path, capsys):
    """One list, or a folder without split folders, is the train and the test split at once: refused
    with one line saying what to pass, unless --eval-split train asks for it (or --folds splits it)."""
    from vjepa.eval.views import check_held_out

    single = str(lists / "good" / "train.csv")
    for data in (single, str(tmp_path)):  # a list; a folder of class folders without train/ test/
        code, captured = _run(["probe", "debug", "--data", data, *FAST, "--output", str(tmp_path / "p.json")], capsys)
        assert code == 2 and not (tmp_path / "p.json").exists()
        (message,) = captured.err.strip().splitlines()
        assert message.startswith(f"vjepa probe: error: {data} has no test split apart from train")
        assert "{split}" in message and "--folds K" in message and "--eval-split train" in message
        (tmp_path / "cats").mkdir(exist_ok=True)
        shutil.copy(lists / "bad" / "clip0.mp4", tmp_path / "cats" / "a.mp4")
    cfg = preset("debug")
    check_held_out(cfg, make_probe_config(data=single, folds=2))  # cross-validation splits the clips itself
    check_held_out(cfg, make_probe_config(data=str(lists / "good" / "{split}.csv")))
    with pytest.raises(ConfigError, match="has no val split apart from train"):
        check_held_out(cfg, make_probe_config(data=single, eval_split="val"))
    code, captured = _run(["probe", "debug", "--data", single, *FAST, "--eval-split", "train", "--no-progress",
                           "--output", str(tmp_path / "p.json")], capsys)
    assert code == 0, captured.err
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["eval_split"] == "train" and result["num_test"] == result["num_train"] == 5


@pytest.mark.parametrize("streaming", [False, True])
def test_a_probe_without_one_readable_training_clip_says_why(lists, streaming):
    """Nothing to substitute any more: a split with no usable clip is a one-line error, streaming too."""
    from vjepa.data.datasets import DataError
    from vjepa.eval import probe_encoder
    from vjepa.models.factory import build_encoder

    cfg = apply_overrides(preset("debug"), ["run.dtype=fp32"])
    encoder = build_encoder(cfg)
    with pytest.raises(DataError, match=r"every one of the 8 videos was skipped: .*'too_short': 5"):
        probe_encoder(encoder, cfg, "label", data=str(lists / "bad" / "{split}.csv"), streaming=streaming,
                      frames_per_segment=8, frame_step=4, epochs=1, batch_size=4)  # 8 frames 4 apart: 29 > 12
