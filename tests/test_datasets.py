"""Sources (CSV, folders, frames, TIFF), bad-input handling, mixtures, the cache and the factory."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from video_utils import decode_index, index_frame, write_index_video
from vjepa.config import DataConfig
from vjepa.data import build_dataset
from vjepa.data.datasets import (
    DataError,
    MixtureDataset,
    SkippedVideoWarning,
    VideoClipDataset,
    collate_clips,
    read_csv_list,
    resolve_split_path,
    scan_folder,
)
from vjepa.data.decode import DecodeError
from vjepa.data.prepare import CachedVideoDataset, cache_summary, prepare_cache
from vjepa.data.sampling import ClipSpec
from vjepa.data.transforms import EvalTransform

SPEC = ClipSpec(frames_per_clip=4, frame_step=2)  # a clip spans 7 frames


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{cats,dogs}/*.mp4, a short video, and bad files beside them."""
    root = tmp_path_factory.mktemp("library")
    for name, label_dir, frames in [("a", "cats", 40), ("b", "cats", 24), ("c", "dogs", 30)]:
        (root / label_dir).mkdir(exist_ok=True)
        write_index_video(root / label_dir / f"{name}.mp4", num_frames=frames)
    write_index_video(root / "short.mp4", num_frames=5)
    good = (root / "cats" / "a.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    )
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not a video")
    return root


def _csv(folder: Path, lines: list[str], name: str = "list.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _items(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------------
# sources


def test_csv_list(library: Path, tmp_path: Path) -> None:
    (tmp_path / "my clips").mkdir()
    path = _csv(
        tmp_path,
        ["# comment", f"{library}/cats/a.mp4 3", "", "my clips/x y.mp4 1", "relative.mp4", "z.mp4 -1"],
    )
    records = read_csv_list(path)
    assert [r.label for r in records] == [3, 1, -1, -1]
    assert records[0].path == f"{library}/cats/a.mp4"
    assert records[1].path == str(tmp_path / "my clips" / "x y.mp4")  # relative to the CSV, spaces kept
    with pytest.raises(DataError, match=r"bad\.csv:2"):
        read_csv_list(_csv(tmp_path, ["a.mp4 0", "b.mp4 cat"], "bad.csv"))
    with pytest.raises(DataError, match="not found"):
        read_csv_list(tmp_path / "absent.csv")
    for lines in (["a.mp4,0"], ["path,label", "a.mp4,0"]):  # a spreadsheet export: one clear line, not N missing files
        with pytest.raises(DataError, match=r"comma\.csv:1: .* looks comma-separated; .* separated by a space"):
            read_csv_list(_csv(tmp_path, lines, "comma.csv"))
    assert read_csv_list(_csv(tmp_path, ["x,y.mp4 2", "a,b.mp4"], "commas_in_names.csv"))[0].label == 2


def test_shared_split_paths_names_the_parts_without_a_split(tmp_path: Path) -> None:
    from vjepa.data.datasets import shared_split_paths

    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "test").mkdir()
    one, split = str(tmp_path / "one.csv"), str(tmp_path / "split")
    assert shared_split_paths(one, "csv", "test") == [one]  # one list: train and test are the same videos
    assert shared_split_paths("lists/{split}.csv", "csv", "test") == [] and shared_split_paths(split, "folder", "test") == []
    assert shared_split_paths(f"{split},{one}", "mixture", "val", "test") == [one]  # each part of a mixture


def test_a_video_list_given_as_a_folder_source_says_to_use_csv(library: Path, tmp_path: Path) -> None:
    csv = _csv(tmp_path, ["a.mp4 0"], "list.csv")
    with pytest.raises(DataError, match=r"list\.csv is a video list, not a folder source: use data.source=csv"):
        scan_folder(csv)  # was: the list itself skipped as an unsupported video


def test_folder_labels_from_subfolders(library: Path) -> None:
    records, classes, ignored = scan_folder(library)
    assert classes == ["cats", "dogs"]
    labels = {Path(r.path).name: r.label for r in records}
    assert (
        labels["a.mp4"] == 0 and labels["b.mp4"] == 0 and labels["c.mp4"] == 1 and labels["short.mp4"] == -1
    )
    assert [Path(p).name for p in ignored] == ["notes.txt"]


def test_frame_folders(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    for label_dir, video, count in [("walk", "v1", 9), ("walk", "v2", 8), ("run", "v3", 10)]:
        folder = tmp_path / label_dir / video
        folder.mkdir(parents=True)
        for i in range(count):
            image.fromarray(index_frame(i)).save(folder / f"{i:04d}.png")
    cfg = DataConfig(source="frames", path=str(tmp_path), num_frames=4, frame_step=2, crop_size=32)
    dataset = build_dataset(cfg, "train", train=False)
    assert dataset.classes == ["run", "walk"]
    item = dataset[0]
    assert item["label"] == 0 and item["path"].endswith("v3")
    assert item["video"].shape == (1, 3, 4, 32, 32)  # [V, C, T, h, w]


def test_tiff_source_grey_and_16bit(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "grey.tif", np.stack([index_frame(i)[..., 0] for i in range(12)]))
    tifffile.imwrite(
        tmp_path / "deep.tif",
        (np.arange(12)[:, None, None] * 4000 + np.zeros((12, 20, 24))).astype(np.uint16),
    )
    records, _, _ = scan_folder(tmp_path, "tiff")
    dataset = VideoClipDataset(records, SPEC, transform=None, train=False)
    deep, grey = _items(dataset)  # sorted by name
    assert deep["path"].endswith("deep.tif") and grey["path"].endswith("grey.tif")
    assert deep["video"].shape == (1, 3, 4, 20, 24) and grey["video"].shape == (1, 3, 4, 32, 32)
    assert deep["video"].dtype == torch.float32 and 0 <= deep["video"].min() and deep["video"].max() <= 1
    means = deep["video"][0].mean(dim=(0, 2, 3))
    assert (means.diff() > 0).all()  # 16-bit intensities rise with time after scaling
    frames = (grey["video"][0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(decode_index(frames), [0, 2, 4, 6])  # grey replicated to RGB


def test_split_paths(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val.csv").write_text("")
    assert resolve_split_path(str(tmp_path), "train") == str(tmp_path / "train")
    assert resolve_split_path(str(tmp_path), "val") == str(tmp_path / "val.csv")
    assert resolve_split_path("lists/{split}.csv", "test") == "lists/test.csv"


# ---------------------------------------------------------------------------------------------
# items and exact frames


def test_items_hold_the_sampled_frames(library: Path) -> None:
    records, _, _ = scan_folder(library / "cats")
    dataset = VideoClipDataset(
        records, ClipSpec(frames_per_clip=4, frame_step=3, num_clips=2), None, train=False
    )
    video = dataset[0]["video"]  # a.mp4, 40 frames: segments of 20, clips start at 0 and 20
    assert video.shape == (2, 3, 4, 32, 32)
    frames = (video.permute(0, 2, 3, 4, 1).reshape(8, 32, 32, 3) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(decode_index(frames), [0, 3, 6, 9, 20, 23, 26, 29])


def test_train_and_eval_shapes(library: Path) -> None:
    cfg = DataConfig(source="folder", path=str(library / "cats"), num_frames=4, frame_step=2, crop_size=16)
    torch.manual_seed(0)
    train_item = build_dataset(cfg, "train", train=True)[0]
    assert train_item["video"].shape == (3, 4, 16, 16) and train_item["label"] == -1
    eval_set = build_dataset(cfg, "val", train=False, transform=EvalTransform(16, num_crops=3))
    assert eval_set[1]["video"].shape == (3, 3, 4, 16, 16)  # [V, C, T, h, w]


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_dataset(library: Path, tmp_path: Path, **kwargs) -> VideoClipDataset:
    names = [
        "cats/a.mp4 0",
        "empty.mp4 0",
        "garbage.mp4 0",
        "truncated.mp4 0",
        "missing.mp4 0",
        "notes.txt 0",
        "short.mp4 0",
        "dogs/c.mp4 1",
    ]
    csv = _csv(library, names, f"bad_{tmp_path.name}.csv")
    cfg = DataConfig(source="csv", path=str(csv), num_frames=4, frame_step=2, crop_size=16, **kwargs)
    return build_dataset(cfg, "train", train=True)


def test_bad_files_are_skipped_once_and_counted(library: Path, tmp_path: Path) -> None:
    dataset = _bad_dataset(library, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = _items(dataset) + _items(dataset)  # two epochs
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedVideoWarning)]
    assert len(messages) == 6  # one per bad file, first epoch only
    for name in ["empty.mp4", "garbage.mp4", "truncated.mp4", "missing.mp4", "notes.txt", "short.mp4"]:
        assert sum(name in m for m in messages) == 1
    assert {Path(i["path"]).name for i in items} == {"a.mp4", "c.mp4"}  # substitutes are good videos
    skipped = dataset.skipped
    assert sum(skipped.values()) == 6
    assert skipped["missing"] == 1 and skipped["empty"] == 1 and skipped["unsupported"] == 1
    assert skipped["too_short"] == 1 and skipped["corrupt"] + skipped["truncated"] == 2
    assert dataset[1]["path"].endswith("c.mp4")  # deterministic: the next good video after index 1


def test_strict_raises_naming_the_file(library: Path, tmp_path: Path) -> None:
    dataset = _bad_dataset(library, tmp_path, strict=True)
    with pytest.raises(DecodeError, match="empty.mp4"):
        dataset[1]
    with pytest.warns(SkippedVideoWarning, match="short.mp4"):
        assert dataset[6]["path"].endswith("c.mp4")  # too-short is filtering, never an error


def test_short_video_policies_in_a_dataset(library: Path) -> None:
    csv = _csv(library, ["short.mp4 5", "cats/a.mp4 0"], "short.csv")
    for policy, expected in [("skip", "a.mp4"), ("loop", "short.mp4"), ("pad", "short.mp4")]:
        cfg = DataConfig(
            source="csv", path=str(csv), num_frames=4, frame_step=2, crop_size=16, short_video_policy=policy
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedVideoWarning)
            item = build_dataset(cfg, "train", train=False)[0]
        assert item["path"].endswith(expected), policy


def test_workers_never_crash_and_share_counts(library: Path, tmp_path: Path) -> None:
    dataset = _bad_dataset(library, tmp_path)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        batches = list(loader)
    assert [b["video"].shape[0] for b in batches] == [4, 4]
    assert batches[0]["label"].dtype == torch.int64 and len(batches[0]["path"]) == 4
    assert sum(dataset.skipped.values()) == 6  # counted in the workers, visible here


def test_collate_drops_none() -> None:
    item = {"video": torch.zeros(3, 2, 4, 4), "label": 1, "path": "x.mp4"}
    batch = collate_clips([item, None, item])
    assert batch["video"].shape == (2, 3, 2, 4, 4) and batch["path"] == ["x.mp4", "x.mp4"]
    assert collate_clips([None]) is None


# ---------------------------------------------------------------------------------------------
# mixtures


class _Constant(torch.utils.data.Dataset):
    def __init__(self, size: int, tag: str) -> None:
        self.size, self.tag = size, tag

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"tag": self.tag, "index": index}


def test_mixture_weights_match_frequencies() -> None:
    mixture = MixtureDataset([_Constant(10, "a"), _Constant(1000, "b"), _Constant(5, "c")], [0.6, 0.3, 0.1])
    generator = torch.Generator().manual_seed(0)
    sources = Counter(mixture.pick(0, generator)[0] for _ in range(6000))
    for source, weight in enumerate([0.6, 0.3, 0.1]):
        assert abs(sources[source] / 6000 - weight) < 0.03
    assert mixture[3]["tag"] in "abc"
    ordered = MixtureDataset([_Constant(2, "a"), _Constant(3, "b")], [1, 1], train=False)
    assert [ordered[i]["tag"] for i in range(5)] == list("aabbb")
    with pytest.raises(DataError, match="weights"):
        MixtureDataset([_Constant(2, "a")], [1.0, 2.0])


def test_mixture_from_config(library: Path, tmp_path: Path) -> None:
    csv = _csv(library, ["cats/a.mp4 0"], "one.csv")
    cfg = DataConfig(
        source="mixture",
        path=f"{csv},{library / 'dogs'}",
        weights=[1.0, 3.0],
        num_frames=4,
        frame_step=2,
        crop_size=16,
    )
    dataset = build_dataset(cfg, "train", train=True)
    assert isinstance(dataset, MixtureDataset) and len(dataset) == 2
    assert dataset[0]["video"].shape == (3, 4, 16, 16)
    prepare_cache(cfg, tmp_path, "train", progress=False)  # a cached mixture keeps its sources
    cached = build_dataset(
        DataConfig(source="cache", path=str(tmp_path), num_frames=4, crop_size=16), "train"
    )
    assert isinstance(cached, MixtureDataset) and cached.sizes == [1, 1]
    assert cached.weights.tolist() == [0.25, 0.75]
    assert cached[0]["source"] in (0, 1)


# ---------------------------------------------------------------------------------------------
# the cache


def test_cache_round_trip_equals_direct_decoding(library: Path, tmp_path: Path) -> None:
    csv = _csv(library, ["cats/a.mp4 0", "dogs/c.mp4 1", "garbage.mp4 0"], "cache.csv")
    cfg = DataConfig(source="csv", path=str(csv), num_frames=4, frame_step=3, num_clips=2, crop_size=32)
    with pytest.warns(SkippedVideoWarning, match="garbage.mp4"):
        folder = prepare_cache(cfg, tmp_path / "cache", "train", progress=False)
    assert "2 videos, 70 frames" in cache_summary(folder)
    spec = ClipSpec.from_config(cfg)
    cached = CachedVideoDataset(folder, spec, transform=None, train=False)
    direct = VideoClipDataset(read_csv_list(csv), spec, transform=None, train=False)
    for i in range(2):
        assert cached[i]["path"] == direct[i]["path"] and cached[i]["label"] == direct[i]["label"]
        torch.testing.assert_close(cached[i]["video"], direct[i]["video"], atol=0, rtol=0)
    np.testing.assert_array_equal(decode_index(np.asarray(cached.frames(0))), np.arange(40))
    assert cached.skipped["corrupt"] == 1
    # training: same seed, same clips and crops from both
    cache_cfg = DataConfig(
        source="cache", path=str(tmp_path / "cache"), num_frames=4, frame_step=3, crop_size=16
    )
    train_cfg = DataConfig(source="csv", path=str(csv), num_frames=4, frame_step=3, crop_size=16)
    torch.manual_seed(7)
    from_cache = build_dataset(cache_cfg, "train", train=True)[1]["video"]
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        from_files = build_dataset(train_cfg, "train", train=True)[1]["video"]
    torch.testing.assert_close(from_cache, from_files, atol=0, rtol=0)


def test_cache_resizes_to_training_resolution(library: Path, tmp_path: Path) -> None:
    cfg = DataConfig(source="folder", path=str(library / "dogs"), crop_size=16, num_frames=4, frame_step=2)
    folder = prepare_cache(cfg, tmp_path, "val", progress=False)
    dataset = CachedVideoDataset(folder, ClipSpec.from_config(cfg))
    assert dataset.frames(0).shape == (30, 18, 18, 3)  # short side int(16 * 256 / 224)
    loader = DataLoader(dataset, batch_size=1, num_workers=1)  # memory maps reopen in the worker
    assert next(iter(loader))["video"].shape == (1, 3, 4, 18, 18)
    from vjepa.data.prepare import build_cached_dataset

    build_cached_dataset(folder, ClipSpec.from_config(cfg), None, False, crop_size=8)  # a smaller crop: fine
    with pytest.raises(DataError, match=r"short side 18 .* data.crop_size=32 needs 36: run vjepa prepare again"):
        build_cached_dataset(folder, ClipSpec.from_config(cfg), None, False, crop_size=32)  # would enlarge frames


# ---------------------------------------------------------------------------------------------
# the factory


def test_build_dataset_synthetic_and_errors() -> None:
    cfg = DataConfig(crop_size=32)
    cfg.synthetic.num_val, cfg.synthetic.size, cfg.synthetic.num_frames = 4, 32, 8
    cfg.num_frames = 8
    dataset = build_dataset(cfg, "val", train=True)
    assert len(dataset) == 4 and dataset[0]["video"].shape == (3, 8, 32, 32)
    with pytest.raises(DataError, match="data.source='youtube'"):
        build_dataset(DataConfig(source="youtube"), "train", True)
    with pytest.raises(DataError, match="needs data.path"):
        build_dataset(DataConfig(source="csv"), "train", True)


def test_a_decoder_that_does_not_import_fails_once_not_per_file(library: Path, tmp_path: Path, monkeypatch) -> None:
    import vjepa.data.datasets

    monkeypatch.setattr(vjepa.data.datasets, "available_decoders", lambda: ["pyav"])  # as without torchcodec
    csv = _csv(tmp_path, [f"{library}/cats/a.mp4 0"], "one.csv")
    cfg = DataConfig(source="csv", path=str(csv), decoder="torchcodec", num_frames=4, crop_size=16)
    with pytest.raises(DataError, match="data.decoder=torchcodec, but torchcodec does not import here.*data.decoder=pyav"):
        build_dataset(cfg, "train", True)  # was: every file skipped as unsupported, one warning each
    with pytest.raises(DataError, match="data.decoder=torchcodec"):
        prepare_cache(cfg, tmp_path, "train", progress=False)
