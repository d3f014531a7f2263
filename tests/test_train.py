"""Training loop: the loss falls, resume is bit-identical, NaN stops the run, saves are atomic."""

import json

import pytest
import torch

from vjepa.checkpoint import load_checkpoint, save_checkpoint
from vjepa.cli import main
from vjepa.config import apply_overrides, preset
from vjepa.data.datasets import DataError
from vjepa.data.loader import StepBatchSampler
from vjepa.models.factory import initial_encoder
from vjepa.train import TrainingDiverged, train


def debug_cfg(out_dir, *overrides):
    cfg = preset("debug")
    return apply_overrides(cfg, [f"run.out_dir={out_dir}", "run.progress=false", "run.log_every=1", *overrides])


def losses(out_dir):
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_short_run_lowers_loss_and_writes_run_dir(tmp_path):
    summary = train(debug_cfg(tmp_path, "optim.steps=30", "run.monitor_every=10", "run.checkpoint_every=20",
                              "run.keep_every=15"))
    by_step = losses(tmp_path)
    first = sum(by_step[s] for s in (1, 2, 3)) / 3
    last = sum(by_step[s] for s in (28, 29, 30)) / 3
    assert last < first - 0.03, (first, last)
    assert {"config.yaml", "metrics.jsonl", "latest.pt"} <= {p.name for p in tmp_path.iterdir()}
    assert summary["effective_rank_end"] > 0 and load_checkpoint(tmp_path / "latest.pt")["step"] == 30
    # keep_every need not be a multiple of checkpoint_every
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_15.pt", "step_30.pt"]
    assert load_checkpoint(tmp_path / "step_15.pt")["step"] == 15
    assert 0 < summary["within_clip_end"] <= 1
    assert 0.9 < summary["target_init_share"] < 1  # 30 updates at momentum ~0.998


def test_initial_encoder_is_the_one_train_starts_from(tmp_path):
    # with every learning rate 0 the encoder never moves, so the checkpoint holds train()'s init
    train(debug_cfg(tmp_path, "optim.steps=2", "optim.start_lr=0", "optim.lr=0", "optim.final_lr=0"))
    trained = load_checkpoint(tmp_path / "latest.pt")["encoder"]
    init = initial_encoder(debug_cfg(tmp_path)).state_dict()
    assert trained.keys() == init.keys() and all(torch.equal(trained[k], init[k]) for k in init)
    other = initial_encoder(debug_cfg(tmp_path, "run.seed=1")).state_dict()
    assert not torch.equal(other["blocks.0.mlp.fc1.weight"], init["blocks.0.mlp.fc1.weight"])


def test_predictor_lr_scale_reaches_the_optimizer(tmp_path):
    train(debug_cfg(tmp_path, "optim.steps=2", "optim.predictor_lr_scale=4"))
    state = load_checkpoint(tmp_path / "latest.pt")
    groups = state["opt"]["param_groups"]
    scaled = [g for g in groups if g.get("lr_scale") == 4.0]
    plain = [g for g in groups if "lr_scale" not in g]
    assert len(scaled) == 2 and len(plain) == 2
    assert scaled[0]["lr"] == pytest.approx(4 * plain[0]["lr"]) and plain[0]["lr"] > 0


def test_freeze_patch_embed_keeps_the_tubelet_embedding_at_init(tmp_path):
    """model.freeze_patch_embed: after training, the online and target tubelet embeddings still
    equal train()'s init while the blocks moved, and the optimiser holds no embedding tensor."""
    cfg = debug_cfg(tmp_path, "optim.steps=3", "model.freeze_patch_embed=true")
    train(cfg)
    state = load_checkpoint(tmp_path / "latest.pt")
    init = initial_encoder(cfg).state_dict()
    for net in ("encoder", "target_encoder"):
        for key in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
            assert torch.equal(state[net][key], init[key]), (net, key)
    assert not torch.equal(state["encoder"]["blocks.0.mlp.fc1.weight"], init["blocks.0.mlp.fc1.weight"])
    num_in_optimizer = sum(len(g["params"]) for g in state["opt"]["param_groups"])
    train(debug_cfg(tmp_path / "plain", "optim.steps=1"))
    plain = load_checkpoint(tmp_path / "plain" / "latest.pt")
    assert num_in_optimizer == sum(len(g["params"]) for g in plain["opt"]["param_groups"]) - 2


def test_demo32_preset_trains_on_its_own_clip_size(tmp_path):
    """The demo32 preset as shipped (8x32x32 clips, 64 tokens, frozen embedding, 10x predictor LR)
    runs end to end; only the step count, batch and set size are cut for the test."""
    cfg = apply_overrides(preset("demo32"), [f"run.out_dir={tmp_path}", "run.progress=false", "run.probe_after=false",
                                             "optim.steps=3", "optim.warmup_steps=1", "data.batch_size=4",
                                             "data.synthetic.num_train=8", "run.keep_every=0"])
    summary = train(cfg)
    state = load_checkpoint(tmp_path / "latest.pt")
    assert state["step"] == 3 and summary["effective_rank_end"] > 0
    assert state["encoder"]["pos_embed"].shape[1] == 64  # 4 tubelet steps x 4 x 4 patches
    init = initial_encoder(cfg).state_dict()
    assert torch.equal(state["target_encoder"]["patch_embed.proj.weight"], init["patch_embed.proj.weight"])
    assert {g.get("lr_scale") for g in state["opt"]["param_groups"]} == {None, 10.0}


def test_resume_gives_identical_losses(tmp_path, monkeypatch, interrupt_at, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    train(debug_cfg(full, "optim.steps=8", "run.checkpoint_every=4"))
    interrupt_at(5)  # the run dies after the step-4 checkpoint, mid-way through step 6
    with pytest.raises(KeyboardInterrupt):
        train(debug_cfg(part, "optim.steps=8", "run.checkpoint_every=4"))
    monkeypatch.undo()
    assert "resuming" not in capsys.readouterr().err
    train(debug_cfg(part, "optim.steps=8", "run.checkpoint_every=4"))  # resumes from latest.pt (step 4)
    assert f"vjepa: resuming {part} from step 4 of 8 (latest.pt)" in capsys.readouterr().err
    a, b = losses(full), losses(part)
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]
    wa = load_checkpoint(full / "latest.pt")["encoder"]
    wb = load_checkpoint(part / "latest.pt")["encoder"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_run_dir_holding_a_different_run(tmp_path):
    from vjepa.config import ConfigError

    train(debug_cfg(tmp_path, "optim.steps=2"))
    saved_yaml = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"model.depth: 2 -> 3.*delete .*latest.pt"):
        train(debug_cfg(tmp_path, "optim.steps=4", "model.depth=3"))
    with pytest.raises(ConfigError, match=r"data.source: 'synthetic' -> 'folder'"):
        train(debug_cfg(tmp_path, "optim.steps=4", "data.source=folder", f"data.path={tmp_path}"))
    with pytest.raises(ConfigError, match=r"run.seed: 0 -> 1"):
        train(debug_cfg(tmp_path, "optim.steps=4", "run.seed=1"))
    assert (tmp_path / "config.yaml").read_text() == saved_yaml  # a refused resume changes nothing
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2
    # how the run executes, and a longer schedule, may change
    train(debug_cfg(tmp_path, "optim.steps=4", "run.log_every=2", "run.threads=1", "run.keep_every=4"))
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 4 and (tmp_path / "step_4.pt").exists()


def test_resume_mismatches_ignore_settings_an_old_checkpoint_lacks():
    from vjepa.checkpoint import resume_mismatches
    from vjepa.config import to_dict

    cfg = preset("debug")
    saved = to_dict(cfg)
    del saved["model"]["freeze_patch_embed"]  # written before the setting existed
    saved["run"]["progress"] = not cfg.run.progress
    assert resume_mismatches(saved, cfg) == []
    saved["optim"]["lr"] = cfg.optim.lr * 2
    assert resume_mismatches(saved, cfg) == [f"optim.lr: {cfg.optim.lr * 2!r} -> {cfg.optim.lr!r}"]


def test_a_run_stored_before_the_objective_section_resumes_and_loads(tmp_path):
    """A run directory whose latest.pt and config.yaml use the old keys (run.objective,
    optim.loss_exp, ...) resumes with a warning, its objective compared under the new names."""
    import yaml

    from test_config import old_layout
    from vjepa.api import load, load_config
    from vjepa.config import ConfigError

    cfg = debug_cfg(tmp_path, "optim.steps=2", "objective.loss_exp=2")
    train(cfg)
    state = load_checkpoint(tmp_path / "latest.pt")
    save_checkpoint(tmp_path / "latest.pt", {**state, "config": old_layout(cfg)})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old_layout(cfg)))
    with pytest.warns(UserWarning, match="written before the objective settings moved"):
        assert load_config(tmp_path).objective.loss_exp == 2.0
    with pytest.warns(UserWarning, match="written before"):
        assert load(tmp_path, device="cpu").config.objective.loss_exp == 2.0
    with pytest.warns(UserWarning, match="written before"), \
            pytest.raises(ConfigError, match=r"objective.loss_exp: 2.0 -> 1.0"):
        train(debug_cfg(tmp_path, "optim.steps=4"))  # the old run's loss, under its new name, must match
    with pytest.warns(UserWarning, match=r"latest.pt was written before"):
        train(debug_cfg(tmp_path, "optim.steps=4", "objective.loss_exp=2"))
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 4
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["objective"]["loss_exp"] == 2.0


def test_probe_after_compares_the_target_encoder_with_its_random_init(monkeypatch, capsys):
    from vjepa.cli import _probe_after

    calls = []

    def fake(run_dir, which, max_train_clips, verbose):
        calls.append((run_dir, which, max_train_clips))
        top1 = {"target_encoder": 80.5, "init": 71.25}[which]
        return {"top1": top1, "num_train": max_train_clips, "num_test": 256, "eval_split": "val", "task": "motion",
                "per_class_top1": [top1] * 8}

    monkeypatch.setattr("vjepa.eval.quick_probe", fake)
    cfg = apply_overrides(preset("demo"), ["run.probe_after_clips=4096", "run.out_dir=runs/x"])
    summary = _probe_after(cfg)
    assert calls == [("runs/x", "target_encoder", 4096), ("runs/x", "init", 4096)]
    assert summary["target_encoder"] == 80.5 and summary["init"] == 71.25 and summary["gain"] == 9.2
    out = capsys.readouterr().out
    assert "target encoder (trained)    80.5%" in out and "its random init             71.2%" in out
    assert "pretraining gain            +9.2 points" in out and "translate_left 80.5" in out


def test_probe_after_keeps_the_target_score_when_the_init_probe_fails(monkeypatch, capsys):
    from vjepa.checkpoint import CheckpointError
    from vjepa.cli import _probe_after

    def fake(run_dir, which, max_train_clips, verbose):
        if which == "init":
            raise CheckpointError("init unavailable")
        return {"top1": 80.5, "num_train": 64, "num_test": 16, "eval_split": "val", "task": "motion",
                "probe": "attentive", "label_fraction": 1.0, "train_top1": 100.0}

    monkeypatch.setattr("vjepa.eval.quick_probe", fake)
    summary = _probe_after(apply_overrides(preset("demo"), ["run.out_dir=runs/x"]))
    assert summary == {"target_encoder": 80.5, "init_failed": "init unavailable"}
    captured = capsys.readouterr()
    assert "top-1  80.5% on val" in captured.out and "probe failed: init unavailable" in captured.err


def test_probe_after_says_why_the_evaluation_module_did_not_import(monkeypatch):
    import sys

    from vjepa.cli import _probe_after

    monkeypatch.setitem(sys.modules, "vjepa.eval", None)  # `import vjepa.eval` raises ImportError
    summary = _probe_after(apply_overrides(preset("demo"), ["run.out_dir=runs/x"]))
    assert summary["skipped"].startswith("the evaluation module did not import: import of vjepa.eval halted")


def test_probe_after_skips_other_data_and_reports_a_failed_probe(monkeypatch, capsys):
    from vjepa.cli import _probe_after
    from vjepa.data.datasets import DataError

    cfg = apply_overrides(preset("demo"), ["data.source=folder", "data.path=videos/", "run.out_dir=runs/mine"])
    assert "vjepa probe runs/mine --task label" in _probe_after(cfg)["skipped"]

    def broken(run_dir, **_):
        raise DataError(f"{run_dir}: no val split")

    monkeypatch.setattr("vjepa.eval.quick_probe", broken)
    assert _probe_after(preset("demo")) == {"failed": "runs/demo: no val split"}
    assert "after-training probe failed: runs/demo: no val split" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from vjepa import jepa

    real = jepa.JEPA.outputs  # every step layout (packed, batched, per generator) ends here
    calls = {"n": 0}

    def poisoned(self, generator_losses, *args):
        calls["n"] += 1  # one call per step: NaN from step 7
        return real(self, generator_losses * float("nan") if calls["n"] > 6 else generator_losses, *args)

    monkeypatch.setattr(jepa.JEPA, "outputs", poisoned)
    with pytest.raises(TrainingDiverged, match="step 7"):
        train(debug_cfg(tmp_path, "optim.steps=12", "run.checkpoint_every=5", "run.log_every=3"))
    state = load_checkpoint(tmp_path / "latest.pt")
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind


def test_step_sampler_is_a_pure_function_of_step():
    a = StepBatchSampler(10, 4, seed=3)
    b = StepBatchSampler(10, 4, seed=3, start_step=5)
    it = iter(b)
    assert [a.batch(s) for s in range(5, 8)] == [next(it) for _ in range(3)]
    epoch0 = [i for s in range(5) for i, _, _ in a.batch(s)][:10]  # first 10 items: one epoch, no repeats
    assert sorted(epoch0) == list(range(10))
    ranks = [StepBatchSampler(10, 2, seed=3, rank=r, world_size=2).batch(1) for r in (0, 1)]
    assert ranks[0] + ranks[1] == a.batch(1)
    assert {step for _, _, step in a.batch(6)} == {6}


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_ships_uint8_clips_and_each_steps_masks(workers):
    """Workers crop and build masks; the loop only copies and normalises: the normalised clip equals
    the float transform's exactly, and batch k carries masks_for_step(k) for this rank (resumed at 3)."""
    from vjepa.data import build_dataset
    from vjepa.data.loader import SeededItems, build_train_loader
    from vjepa.data.transforms import normalise
    from vjepa.masks.step import masks_for_step
    from vjepa.models.factory import token_grid

    cfg = debug_cfg("unused", f"data.num_workers={workers}", "data.horizontal_flip=true")
    grid = token_grid(cfg)
    loader, _ = build_train_loader(cfg, 3, 1, 2, "cpu", grid)
    float_items = SeededItems(build_dataset(cfg.data, split="train", train=True))  # the normalising transform
    sampler = loader.batch_sampler
    for step, batch in zip(range(3, 5), loader):
        assert batch["step"] == step and batch["video"].dtype == torch.uint8
        expected = torch.stack([float_items[key]["video"] for key in sampler.batch(step)])
        assert torch.equal(normalise(batch["video"], cfg.data.mean, cfg.data.std), expected)
        for got, want in zip(batch["masks"], masks_for_step(cfg, grid, cfg.data.batch_size, step, 1, 2)):
            assert torch.equal(got.context_idx, want.context_idx) and torch.equal(got.target_idx, want.target_idx)
    assert "masks" not in next(iter(build_train_loader(cfg, 0, 0, 1)[0]))  # finetuning: no grid, no masks


def test_cli_pretrain_and_config_errors(tmp_path, capsys):
    assert main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "optim.steps=2", "run.progress=false"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert main(["pretrain", "--preset", "debug", "optim.stepz=2"]) == 2
    assert "unknown config key 'optim.stepz'" in capsys.readouterr().err
    assert main(["config", "debug"]) == 0 and "embed_dim: 64" in capsys.readouterr().out
    # overrides on both sides of an option, in order
    (tmp_path / "extra.yaml").write_text("optim:\n  warmup_steps: 1\n")
    assert main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path / 'b'}", "--config",
                 str(tmp_path / "extra.yaml"), "optim.steps=1", "run.progress=false"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    with pytest.raises(SystemExit):
        main(["pretrain", "--preset", "debug", "--bogus"])


def test_cli_pretrain_reports_on_rank_zero_only(tmp_path, capsys, monkeypatch):
    import vjepa.train

    probed = []
    monkeypatch.setattr("vjepa.cli._probe_after", lambda cfg: probed.append(cfg) or {"top1": 50.0})
    for rank in (1, 0):
        monkeypatch.setattr(vjepa.train, "train", lambda cfg, rank=rank: {"steps": 1, "rank": rank, "world_size": 2})
        assert main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "run.probe_after=true"]) == 0
        out = capsys.readouterr().out
        if rank == 1:
            assert out == "" and not probed  # other ranks neither print nor probe
        else:
            assert json.loads(out)["probe"] == {"top1": 50.0} and len(probed) == 1


def test_videos_too_short_for_one_clip_say_which_settings_to_change(tmp_path):
    from video_utils import write_index_video

    (tmp_path / "list.csv").write_text(f"{write_index_video(tmp_path / 'short.mp4', num_frames=6)} 0\n")
    with pytest.raises(DataError, match=r"\{'too_short': 1\}; .* lower data.frame_step or data.num_frames, or keep"):
        train(debug_cfg(tmp_path / "run", "data.source=csv", f"data.path={tmp_path / 'list.csv'}", "optim.steps=1"))


def test_real_video_csv_run_counts_skipped_files(tmp_path):
    from vjepa.config import SyntheticConfig
    from vjepa.data.synthetic import render_clip, write_mp4

    lines = []
    for i in range(3):
        frames, motion, _ = render_clip(SyntheticConfig(size=32, num_frames=20), "train", i)
        write_mp4(frames, tmp_path / f"v{i}.mp4")
        lines.append(f"v{i}.mp4 {motion}")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "list.csv").write_text("\n".join(lines + ["bad.mp4 0", "missing.mp4 1"]) + "\n")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="bad.mp4"):
        summary = train(debug_cfg(out, "data.source=csv", f"data.path={tmp_path / 'list.csv'}", "data.frame_step=2",
                                  "optim.steps=6", "run.log_every=3"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_files"] == {"corrupt": 1, "missing": 1}
    assert summary["skipped_files"] == {"corrupt": 1, "missing": 1}  # the summary the CLI prints says it too
