"""vjepa.eval: encoder untouched, feature cache, multi-view arithmetic, low-shot, CLI, baselines."""

import json

import pytest
import torch

from vjepa.cli import main
from vjepa.config import apply_overrides, preset
from vjepa.data.images import image_clip
from vjepa.eval import (
    FeatureCache,
    Features,
    aggregate_views,
    balanced_subset,
    confusion_matrix,
    describe_classes,
    direction_given_type,
    load_features,
    load_frozen,
    make_probe_config,
    per_class_top1,
    predict,
    probe_encoder,
    probe_features,
    probe_inputs,
    probe_lr,
    quick_probe,
    save_features,
    segment_starts,
)
from vjepa.models.factory import build_encoder
from vjepa.precision import freeze
from vjepa.train import train

FAST = {"epochs": 3, "batch_size": 16, "warmup_epochs": 1}


def random_encoder(cfg, seed=0):
    """A frozen, untrained encoder of `cfg`'s shape (the random-init baseline of these tests)."""
    torch.manual_seed(seed)
    return freeze(build_encoder(cfg))


def debug_cfg(out_dir=None, *overrides):
    cfg = preset("debug")
    extra = [f"run.out_dir={out_dir}"] if out_dir else []
    return apply_overrides(cfg, [*extra, "run.progress=false", "run.log_every=1", *overrides])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(debug_cfg(out, "optim.steps=2", "run.checkpoint_every=2"))
    return out


# ---------------------------------------------------------------------------------------------
# the frozen encoder


def test_encoder_unchanged_and_frozen_after_probing():
    cfg = debug_cfg()
    encoder = random_encoder(cfg)
    encoder.train()  # probing must switch it to eval and leave every weight as it was
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    for kind in ("attentive", "linear"):
        probe_encoder(encoder, cfg, "motion", kind, **FAST)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not encoder.training
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())


def test_feature_cache_runs_the_encoder_once_per_split(tmp_path):
    cfg = debug_cfg()
    encoder = random_encoder(cfg)
    calls = []
    encoder.register_forward_hook(lambda *args: calls.append(1))
    probe_cfg = make_probe_config(cache_dir=str(tmp_path), **FAST)
    cache = FeatureCache(encoder, cfg, probe_cfg)
    for task in ("motion", "appearance"):
        for kind in ("attentive", "linear"):
            probe_encoder(encoder, cfg, task, kind, probe_cfg=probe_cfg, cache=cache)
    batches = len(calls)
    assert batches == -(-64 // 32) + -(-32 // 32)  # train + test, once
    assert len(list(tmp_path.glob("*.npy"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    fresh = FeatureCache(encoder, cfg, probe_cfg)  # a later process: loads from disk
    assert torch.equal(fresh.get("test", train=False).tokens, cache.get("test", train=False).tokens)
    assert len(calls) == batches


def test_direction_given_type_counts_only_within_type_predictions():
    confusion = torch.zeros(8, 8, dtype=torch.long)
    confusion[4, 4], confusion[4, 5], confusion[5, 4], confusion[5, 5] = 30, 10, 20, 40  # cw, ccw
    confusion[4, 6] = 50  # rotations mistaken for grow do not count
    confusion[0, 0] = 7
    result = direction_given_type(confusion.tolist())
    assert result == {"horizontal": 100.0, "vertical": None, "rotation": 70.0, "scale": None}


def test_features_roundtrip(tmp_path):
    features = Features(torch.randn(3, 2, 4, 5).bfloat16(), {"label": torch.tensor([0, 1, 2])}, 2, 1,
                        ["cats", "dogs", "emus"])
    save_features(tmp_path / "f.safetensors", features)
    loaded = load_features(tmp_path / "f.safetensors")
    assert torch.equal(loaded.tokens, features.tokens)
    assert torch.equal(loaded.labels["label"], features.labels["label"])
    assert (loaded.num_segments, loaded.num_crops) == (2, 1)
    assert loaded.class_names == ["cats", "dogs", "emus"]
    assert loaded.subset(torch.tensor([2])).class_names == ["cats", "dogs", "emus"]  # names index labels


def test_load_frozen_from_run_dir(tiny_run):
    encoder, cfg = load_frozen(tiny_run)
    state = torch.load(tiny_run / "latest.pt", weights_only=True)["target_encoder"]
    assert all(torch.equal(state[k], v) for k, v in encoder.state_dict().items())
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert cfg.model.embed_dim == 64


def test_load_frozen_reads_a_safetensors_export(tiny_run, tmp_path):
    from vjepa.api import export

    path = export(tiny_run, tmp_path / "enc.safetensors", which="target_encoder")
    encoder, cfg = load_frozen(path)
    reference, _ = load_frozen(tiny_run)
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in encoder.state_dict().items())
    assert cfg.model.embed_dim == 64 and not encoder.training


# ---------------------------------------------------------------------------------------------
# probes learn what the features hold


def label_features(num_clips: int, num_classes: int, seed: int, views: int = 1) -> Features:
    """Tokens of noise, with one token per view holding a one-hot code of the label (its place varies)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_clips) % num_classes
    tokens = 0.1 * torch.randn(num_clips, views, 16, 32, generator=generator)
    where = torch.randint(16, (num_clips, views), generator=generator)
    for i in range(num_clips):
        for v in range(views):
            tokens[i, v, where[i, v], labels[i]] += 3.0
            tokens[i, v, where[i, v], 16:] += 1.0  # marks the informative token
    return Features(tokens, {"motion": labels}, views, 1)


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_probe_reaches_full_accuracy_on_label_encoding_features(kind):
    probe_cfg = make_probe_config(kind=kind, epochs=30, batch_size=16, lr=1e-2, warmup_epochs=2, device="cpu")
    result = probe_features(label_features(128, 4, 0), label_features(64, 4, 1), "motion", probe_cfg, 32, 4)
    assert result["top1"] >= 98.0, result


def test_confusion_and_per_class_top1_arithmetic():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.7, 0.2]])
    labels = torch.tensor([0, 1, 1, 1])  # class 1: 2 of 3 right, class 2 absent
    confusion = confusion_matrix(probs, labels, 3)
    assert confusion.tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    per_class = per_class_top1(confusion)
    assert per_class[0] == 100.0 and per_class[1] == pytest.approx(200 / 3) and per_class[2] is None
    line = describe_classes({"task": "motion", "per_class_top1": per_class})
    assert line.startswith("per class: translate_left 100.0, translate_right 66.7, translate_up -")


def test_probe_result_carries_per_class_accuracy():
    probe_cfg = make_probe_config(kind="attentive", epochs=30, batch_size=16, lr=1e-2, warmup_epochs=2, device="cpu")
    result = probe_features(label_features(128, 4, 0), label_features(64, 4, 1), "motion", probe_cfg, 32, 4)
    confusion = torch.tensor(result["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum().item() == 64
    assert result["top1"] == pytest.approx(100.0 * confusion.trace().item() / 64)
    assert result["per_class_top1"] == per_class_top1(confusion)


def test_low_shot_subset_is_class_balanced():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    index = balanced_subset(labels, 0.3, seed=0)
    counts = torch.bincount(labels[index], minlength=3)
    assert counts.tolist() == [10, 10, 10]  # round(0.3 * 100 / 3) per class
    assert len(index.unique()) == len(index)
    assert torch.equal(balanced_subset(labels, 0.3, seed=0), index)
    assert balanced_subset(labels, 0.01, seed=0).numel() == 3  # at least one per class
    assert torch.equal(balanced_subset(labels, 1.0), torch.arange(100))


def test_low_shot_probe_trains_on_the_subset():
    cfg = debug_cfg()
    result = probe_encoder(random_encoder(cfg), cfg, "motion", "linear", label_fraction=0.25, **FAST)
    assert result["num_train"] == 16  # 0.25 * 64 clips, 2 of each of 8 motion classes


# ---------------------------------------------------------------------------------------------
# multi-view testing


def test_probe_inputs_grouping():
    b, s, c, n, d = 2, 3, 2, 4, 5
    tokens = torch.arange(b * s * c * n * d, dtype=torch.float32).view(b, s * c, n, d)
    assert torch.equal(probe_inputs(tokens, s, c, attend_across_segments=False), tokens)
    grouped = probe_inputs(tokens, s, c, attend_across_segments=True)  # [b, C, S*N, D]
    assert grouped.shape == (b, c, s * n, d)
    for crop in range(c):
        expected = torch.cat([tokens[:, seg * c + crop] for seg in range(s)], dim=1)  # segment-major views
        assert torch.equal(grouped[:, crop], expected)


def test_aggregate_views_averages_probabilities():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # 1 clip, 3 views, 2 classes
    probs = aggregate_views(logits)
    manual = sum(torch.softmax(logits[0, v], -1) for v in range(3)) / 3
    assert torch.allclose(probs[0], manual)
    assert torch.allclose(probs.sum(-1), torch.ones(1))


class MeanLogits(torch.nn.Module):
    """A fixed 'probe': logits = the mean token's first K features."""

    def forward(self, x, valid=None):
        return x.mean(dim=1)[:, :3]


@pytest.mark.parametrize("attend", [False, True])
def test_predict_aggregates_each_clips_views(attend):
    features = Features(torch.randn(5, 6, 4, 8), {"motion": torch.zeros(5, dtype=torch.long)}, 3, 2)
    probe_cfg = make_probe_config(attend_across_segments=attend)
    probs = predict(MeanLogits(), features, probe_cfg, torch.device("cpu"), batch_size=2)
    groups = probe_inputs(features.tokens, 3, 2, attend)  # [5, G, L, 8]
    expected = groups.mean(dim=2)[..., :3].softmax(-1).mean(dim=1)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_multi_view_probe_on_synthetic_segments_and_crops():
    cfg = debug_cfg(None, "data.synthetic.num_frames=12")
    result = probe_encoder(random_encoder(cfg), cfg, "appearance", "attentive", num_segments=2, num_crops=3,
                           resize_ratio=1.25, attend_across_segments=True, **FAST)
    assert result["num_test"] == 32 and 0.0 <= result["top1"] <= 100.0


def test_segments_images_and_schedule():
    assert segment_starts(16, 16, 1) == [0]
    assert segment_starts(32, 16, 2) == [0, 16]
    assert segment_starts(24, 8, 3) == [0, 8, 16]
    assert segment_starts(16, 8, 3) == [0, 4, 8]  # overlapping windows when the clip is short
    images = torch.randn(2, 3, 8, 8)
    clip = image_clip(images, 4)
    assert clip.shape == (2, 3, 4, 8, 8) and torch.equal(clip[:, :, 3], images)
    assert probe_lr(0, 100, 10, 1e-3) == pytest.approx(1e-4)
    assert probe_lr(10, 100, 10, 1e-3) == pytest.approx(1e-3)
    assert probe_lr(100, 100, 10, 1e-3) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# commands and baselines


def test_cli_probe_writes_json(tiny_run, capsys):
    code = main(["probe", str(tiny_run), "--task", "appearance", "--probe", "linear", "--epochs", "2",
                 "--label-fraction", "0.5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "on test" in out
    assert "per class: circle " in out and "ring " in out
    result = json.loads((tiny_run / "probe_appearance_linear_50pct.json").read_text())
    assert result["task"] == "appearance" and 0 <= result["top1"] <= 100 and result["step"] == 2
    # the run's own init is probed alike into its own file, leaving the target's result in place
    assert main(["probe", str(tiny_run), "--task", "appearance", "--probe", "linear", "--epochs", "2",
                 "--label-fraction", "0.5", "--which", "init"]) == 0
    init = json.loads((tiny_run / "probe_appearance_linear_50pct_init.json").read_text())
    assert init["settings"]["encoder"] == "init" and result["settings"]["encoder"] == "target_encoder"
    assert init["step"] == 0  # the init's weights, not the checkpoint's
    assert json.loads((tiny_run / "probe_appearance_linear_50pct.json").read_text()) == result
    # so is a probe scored on another split
    assert main(["probe", str(tiny_run), "--task", "appearance", "--probe", "linear", "--epochs", "2",
                 "--label-fraction", "0.5", "--eval-split", "val"]) == 0
    assert json.loads((tiny_run / "probe_appearance_linear_50pct_val.json").read_text())["eval_split"] == "val"
    assert json.loads((tiny_run / "probe_appearance_linear_50pct.json").read_text()) == result


def test_cli_eval_prints_table(tiny_run, tmp_path, capsys):
    output = tmp_path / "eval.json"
    assert main(["eval", str(tiny_run), "--epochs", "1", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "| motion | attentive |" in table and "| appearance | linear |" in table
    assert len(json.loads(output.read_text())) == 4


def test_cli_probe_reports_a_missing_run(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_quick_probe_returns_accuracy(tiny_run):
    result = quick_probe(tiny_run, epochs=2, verbose=False, batch_size=16)  # task: the run's data's first
    assert result["task"] == "motion"
    assert result["eval_split"] == "val" and result["num_test"] == 16 and 0 <= result["top1"] <= 100


def test_quick_probe_of_the_runs_init(tiny_run):
    init = quick_probe(tiny_run, task="motion", epochs=1, verbose=False, which="init")
    encoder, _ = load_frozen(tiny_run, "init")
    target, _ = load_frozen(tiny_run)
    assert init["num_test"] == 16 and 0 <= init["top1"] <= 100
    assert any(not torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), target.state_dict().values()))


def test_pixel_and_supervised_runs_load_their_encoder(tmp_path):
    from vjepa.supervised import train_supervised

    train(debug_cfg(tmp_path / "pixel", "optim.steps=2", "objective.kind=pixel"))
    encoder, _ = load_frozen(tmp_path / "pixel")  # no target encoder: falls back to the encoder
    cfg = debug_cfg(tmp_path / "sup", "optim.steps=3", "run.keep_every=3")
    summary = train_supervised(cfg, task="motion")
    assert summary["steps"] == 3 and (tmp_path / "sup" / "step_3.pt").exists()
    encoder, _ = load_frozen(tmp_path / "sup")
    state = torch.load(tmp_path / "sup" / "latest.pt", weights_only=True)
    assert all(torch.equal(state["encoder"][k], v) for k, v in encoder.state_dict().items())


def test_real_video_folder_probe_with_segments_and_crops(tmp_path):
    from video_utils import write_index_video

    for split in ("train", "test"):
        for label in ("cats", "dogs"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                write_index_video(tmp_path / split / label / f"{i}.mp4", num_frames=40, width=48)
    cfg = debug_cfg(None, "data.source=folder", f"data.path={tmp_path}")
    result = probe_encoder(random_encoder(cfg), cfg, "label", "attentive", num_segments=2, num_crops=3,
                           attend_across_segments=True, frame_step=2, **FAST)
    assert (result["num_train"], result["num_test"], result["num_classes"]) == (4, 4, 2)
    assert result["class_names"] == ["cats", "dogs"]  # the class folders, in label order
    assert describe_classes(result).startswith("per class: cats ")
    linear = probe_encoder(random_encoder(cfg), cfg, "label", "linear", frame_step=2, **FAST)  # pools the tokens
    assert linear["class_names"] == ["cats", "dogs"]


def test_quick_probe_reuses_features_of_the_same_checkpoint(tiny_run, monkeypatch):
    from vjepa.eval import cache

    cache._RECENT.clear()  # earlier tests probed this run too
    calls = []
    real = cache.extract_features
    monkeypatch.setattr(cache, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    for task in ("motion", "appearance"):
        quick_probe(tiny_run, task=task, epochs=1, verbose=False)
    assert len(calls) == 2  # train + val, once
