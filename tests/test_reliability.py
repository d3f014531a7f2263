"""Faults that must neither lose work nor poison it: NaN updates, full disks, killed saves, SIGTERM,
two runs in one directory, bad settings and files. Each test reproduces the fault first."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import vjepa.train as train_module
from video_utils import write_index_video
from vjepa.checkpoint import (
    CheckpointError,
    StorageError,
    load_checkpoint,
    load_safetensors,
    resume_mismatches,
    save_checkpoint,
    save_safetensors,
)
from vjepa.cli import main
from vjepa.config import ConfigError, apply_overrides, preset, validate
from vjepa.data import build_dataset
from vjepa.data.datasets import DataError, EmptyClassWarning, read_csv_list
from vjepa.models.factory import initial_encoder
from vjepa.rundir import RunDirLocked, RunLock
from vjepa.train import TrainingDiverged, TrainingInterrupted, train

TREE_AVI = Path("/usr/share/doc/opencv-doc/examples/data/tree.avi")


def debug_cfg(out_dir, *overrides):
    cfg = preset("debug")
    return apply_overrides(cfg, [f"run.out_dir={out_dir}", "run.progress=false", "run.log_every=1", *overrides])


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def losses(out_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(out_dir) if "loss" in r}


def _subprocess_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    tests = str(Path(__file__).resolve().parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, tests]), "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------
# 1, 2: non-finite weights are never saved, and never loaded


def poison_update_at(monkeypatch, bad_step: int) -> None:
    """After the optimiser update of step `bad_step` (0-based), one encoder weight is NaN: the
    step's loss (computed before the update) stays finite."""
    real = train_module.train_step

    def step(model, optimizer, video, masks, step, cfg, device):
        result = real(model, optimizer, video, masks, step, cfg, device)
        if step == bad_step:
            with torch.no_grad():
                train_module.dist_utils.unwrap(model).encoder.blocks[0].mlp.fc1.weight[0, :5] = float("nan")
        return result

    monkeypatch.setattr(train_module, "train_step", step)


def test_a_nan_update_is_never_saved_and_the_advice_is_one_resume_accepts(tmp_path, monkeypatch):
    poison_update_at(monkeypatch, bad_step=3)  # the update of step 4, a checkpoint step
    cfg = debug_cfg(tmp_path, "optim.steps=8", "run.checkpoint_every=2", "run.dtype=bf16")  # the advice is for bf16 runs
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite in the update of step 4") as err:
        train(cfg)
    message = str(err.value)
    assert "encoder.blocks.0.mlp.fc1.weight" in message and "step 2" in message
    state = load_checkpoint(tmp_path / "latest.pt")  # would refuse a NaN checkpoint
    assert state["step"] == 2
    # the advice: resume with run.dtype=fp32 (a run.* change), which the resume check accepts
    assert "run.dtype=fp32" in message
    assert resume_mismatches(state["config"], apply_overrides(cfg, ["run.dtype=fp32"])) == []


def test_loading_refuses_nonfinite_tensors_naming_them(tmp_path, capsys):
    from vjepa.api import load

    cfg = preset("debug")
    encoder = initial_encoder(cfg)
    weights = encoder.state_dict()
    weights["blocks.1.attn.qkv.weight"][0, 0] = float("inf")
    weights["norm.weight"][:] = float("nan")
    from vjepa.config import to_dict

    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"encoder": weights, "target_encoder": weights, "step": 3, "config": to_dict(cfg)})
    with pytest.raises(CheckpointError, match=r"NaN/inf values in .*blocks\.1\.attn\.qkv\.weight"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="diverged"):
        load(tmp_path, device="cpu")
    exported = tmp_path / "enc.safetensors"
    save_safetensors(exported, weights, to_dict(cfg))
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_safetensors(exported)
    assert main(["embed", str(TREE_AVI), "--checkpoint", str(tmp_path), "-o", str(tmp_path / "f.npy")]) == 2
    assert "NaN/inf" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 3: a shorter optim.steps than the checkpoint's step


def test_resume_past_optim_steps_is_refused_without_touching_the_run_dir(tmp_path):
    train(debug_cfg(tmp_path, "optim.steps=4", "run.checkpoint_every=2"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(ConfigError, match="already finished at step 4, past optim.steps=2"):
        train(debug_cfg(tmp_path, "optim.steps=2", "run.checkpoint_every=2"))
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
    summary = train(debug_cfg(tmp_path, "optim.steps=4", "run.checkpoint_every=2"))  # finished: reports its loss
    assert summary["final_loss"] == summary["final_loss"]  # not NaN


# ---------------------------------------------------------------------------------------------
# 4: disk full; config.yaml atomic and written only once accepted


@pytest.mark.parametrize("fault", ["oserror", "torch_writer"])
def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})

    def full_disk(state, tmp):
        Path(tmp).write_bytes(b"partial")
        if fault == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(StorageError, match=f"^no space left on device writing {path}$"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_disk_full_in_training_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    def full_disk(state, tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code = main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "optim.steps=2", "run.progress=false"])
    assert code == 2
    assert f"no space left on device writing {tmp_path / 'latest.pt'}" in capsys.readouterr().err


def test_config_yaml_is_written_atomically_and_only_for_accepted_settings(tmp_path, monkeypatch):
    train(debug_cfg(tmp_path, "optim.steps=2", "run.checkpoint_every=2"))
    original = (tmp_path / "config.yaml").read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("the loader crashed")

    monkeypatch.setattr(train_module, "build_train_loader", crash)  # a resume that crashes while starting
    with pytest.raises(RuntimeError, match="loader crashed"):
        train(debug_cfg(tmp_path, "optim.steps=4", "run.log_every=3"))
    assert (tmp_path / "config.yaml").read_text() == original
    monkeypatch.undo()

    real_write_text = Path.write_text

    def disk_full_on_config(self, *args, **kwargs):
        if ".config.yaml." in self.name:
            real_write_text(self, "steps: 4")  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_on_config)
    with pytest.raises(StorageError, match="no space left on device writing .*config.yaml"):
        train(debug_cfg(tmp_path, "optim.steps=4"))
    assert (tmp_path / "config.yaml").read_text() == original


# ---------------------------------------------------------------------------------------------
# 5: killed saves leave no temp files behind for long; modes follow the umask; fsync


def test_a_save_killed_mid_write_leaves_a_temp_file_that_the_next_start_removes(tmp_path):
    code = (
        "import os, signal, sys, torch\n"
        "from vjepa.checkpoint import save_checkpoint\n"
        "def dying(state, tmp):\n"
        "    open(tmp, 'wb').write(b'x' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying\n"
        "save_checkpoint(sys.argv[1], {'step': 1})\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "latest.pt")], check=False,
                          env=_subprocess_env())
    assert done.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".latest.pt.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "latest.pt").exists()
    train(debug_cfg(tmp_path, "optim.steps=2"))
    assert not list(tmp_path.glob(".*.tmp"))
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2


def test_saved_files_honour_the_umask_and_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "a.pt", {"step": 1})
        os.umask(0o027)
        save_checkpoint(tmp_path / "b.pt", {"step": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o640
    assert any(".a.pt." in s for s in synced) and str(tmp_path) in synced  # the file, then its folder


# ---------------------------------------------------------------------------------------------
# 6: every setting is range-checked


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=0", "data.batch_size"),
        ("run.checkpoint_every=0", "run.checkpoint_every"),
        ("run.log_every=0", "run.log_every"),
        ("run.monitor_every=0", "run.monitor_every"),
        ("model.patch_size=0", "model.patch_size"),
        ("model.num_heads=0", "model.num_heads"),
        ("model.num_heads=3", "model.num_heads"),  # does not divide 64
        ("optim.ema=[2,3]", "optim.ema"),
        ("optim.ema=[1.0,0.99]", "optim.ema"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.betas=[0.9,1.5]", "optim.betas"),
        ("data.crop_scale=[0.9,0.3]", "data.crop_scale"),
        ("data.frame_step=0", "data.frame_step"),
        ("data.num_workers=-2", "data.num_workers"),
        ("mask.tube_ratio=1.5", "mask.tube_ratio"),
        ("run.device=potato", "run.device"),
        ("run.device=cuda:99", "run.device"),
        ("data.decoder=ffmpeg", "data.decoder"),
        ("data.source=youtube", "data.source"),
    ],
)
def test_out_of_range_settings_fail_with_one_line_naming_the_key(override, key, tmp_path, capsys):
    cfg = apply_overrides(preset("debug"), [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate(cfg)
    assert "\n" not in str(err.value)
    assert main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", override]) == 2
    assert key in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused_not_silently_cpu():
    with pytest.raises(ConfigError, match="run.device='cuda', but this machine has no usable CUDA"):
        validate(apply_overrides(preset("debug"), ["run.device=cuda"]))


def test_inference_commands_check_the_device_flag(tmp_path, capsys):
    assert main(["embed", str(tmp_path), "--checkpoint", "debug", "--device", "potato", "-o", "f.npy"]) == 2
    assert "--device='potato' is not a device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 7: class folders keep their label in every split


def test_a_class_empty_in_one_split_keeps_its_label(tmp_path):
    for split, classes in [("train", "abc"), ("test", "ac")]:
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            write_index_video(tmp_path / split / name / "v.mp4", num_frames=8)
    (tmp_path / "test" / "b").mkdir()  # empty in test
    from vjepa.config import DataConfig

    cfg = DataConfig(source="folder", path=str(tmp_path), num_frames=4, frame_step=1, crop_size=32)
    train_set = build_dataset(cfg, "train", train=False)
    with pytest.warns(EmptyClassWarning, match="'b' has no videos"):
        test_set = build_dataset(cfg, "test", train=False)
    label = {Path(r.path).parent.name: r.label for r in test_set.records}
    assert train_set.classes == test_set.classes == ["a", "b", "c"]
    assert label == {"a": 0, "c": 2}
    (tmp_path / "test" / "b").rmdir()  # a class missing from a split altogether: still the union
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyClassWarning)
        test_set = build_dataset(cfg, "test", train=False)
    assert {Path(r.path).parent.name: r.label for r in test_set.records} == {"a": 0, "c": 2}


# ---------------------------------------------------------------------------------------------
# 8: one run per directory; metrics trimmed on resume


HOLD_LOCK = ("import sys, time; from pathlib import Path; from vjepa.rundir import RunLock; "
             "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")


def test_a_second_run_on_a_locked_run_dir_names_the_holder(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        env=_subprocess_env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match=f"in use by process {holder.pid}"):
            train(debug_cfg(tmp_path, "optim.steps=2"))
        assert main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "optim.steps=2"]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "latest.pt").exists()
    train(debug_cfg(tmp_path, "optim.steps=2"))  # the dead holder's lock is taken over
    (tmp_path / ".lock").write_text("999999999\n")  # a lock file naming a dead pid
    RunLock(tmp_path).acquire().release()


def test_resume_trims_metrics_back_to_the_checkpoint(tmp_path, monkeypatch, interrupt_at):
    interrupt_at(5)  # after the step-4 checkpoint and the step-5 log line
    with pytest.raises(KeyboardInterrupt):
        train(debug_cfg(tmp_path, "optim.steps=8", "run.checkpoint_every=4"))
    monkeypatch.undo()
    assert max(losses(tmp_path)) == 5
    train(debug_cfg(tmp_path, "optim.steps=8", "run.checkpoint_every=4"))
    steps = [r["step"] for r in records(tmp_path) if "loss" in r]
    assert steps == list(range(1, 9))


# ---------------------------------------------------------------------------------------------
# 9: SIGTERM saves, exits non-zero, and the next start resumes exactly


def test_sigterm_saves_exits_143_and_resumes_exactly(tmp_path):
    uninterrupted = tmp_path / "full"
    train(debug_cfg(uninterrupted, "optim.steps=10", "run.checkpoint_every=100"))
    run = tmp_path / "run"
    code = (
        "import os, signal, sys\n"
        "import vjepa.train as t\n"
        "from vjepa.cli import main\n"
        "real = t.train_step\n"
        "def step_(model, optimizer, video, masks, step, *rest):\n"
        "    if step == 5:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)  # what SLURM / Kubernetes send, mid-step\n"
        "    return real(model, optimizer, video, masks, step, *rest)\n"
        "t.train_step = step_\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["pretrain", "--preset", "debug", f"run.out_dir={run}", "run.progress=false", "run.log_every=1",
            "optim.steps=10", "run.checkpoint_every=100"]
    done = subprocess.run([sys.executable, "-c", code, *args], check=False, env=_subprocess_env(),
                          capture_output=True, text=True)
    assert done.returncode == TrainingInterrupted.exit_code == 143, done.stderr
    assert f"received SIGTERM: saved {run / 'latest.pt'} at step 6" in done.stderr
    assert load_checkpoint(run / "latest.pt")["step"] == 6
    train(debug_cfg(run, "optim.steps=10", "run.checkpoint_every=100"))
    a, b = losses(uninterrupted), losses(run)
    assert [a[s] for s in range(1, 11)] == [b[s] for s in range(1, 11)]
    wa, wb = load_checkpoint(uninterrupted / "latest.pt"), load_checkpoint(run / "latest.pt")
    assert all(torch.equal(wa["encoder"][k], wb["encoder"][k]) for k in wa["encoder"])


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_saves(tmp_path):
    # schedulers signal every process of the job: DataLoader workers must not die before the save
    code = (
        "import os, signal, sys\n"
        "import vjepa.train as t\n"
        "from vjepa.cli import main\n"
        "real = t.train_step\n"
        "def step_(model, optimizer, video, masks, step, *rest):\n"
        "    if step == 1:\n"
        "        os.killpg(os.getpgid(0), signal.SIGTERM)\n"
        "    return real(model, optimizer, video, masks, step, *rest)\n"
        "t.train_step = step_\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "run.progress=false", "optim.steps=6",
            "data.num_workers=1", "run.checkpoint_every=100"]
    done = subprocess.run([sys.executable, "-c", code, *args], check=False, env=_subprocess_env(),
                          capture_output=True, text=True, start_new_session=True)
    assert done.returncode == 143, done.stderr
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2


def test_the_sigterm_handler_is_restored_after_training(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    train(debug_cfg(tmp_path, "optim.steps=1"))
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------------------------------
# 10: small messages


def test_non_utf8_and_folder_inputs_name_the_file(tmp_path, capsys):
    csv = tmp_path / "list.csv"
    csv.write_bytes(b"v\xff\xfe.mp4 0\n")
    with pytest.raises(DataError, match=f"video list {csv} is not UTF-8"):
        read_csv_list(csv)
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_bytes(b"optim:\n  steps: \xff\n")
    assert main(["pretrain", "--preset", "debug", "--config", str(yaml_file)]) == 2
    assert f"config file {yaml_file} is not UTF-8" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "debug", "--config", str(tmp_path)]) == 2
    assert f"config file {tmp_path} is a folder" in capsys.readouterr().err


def test_a_file_with_code_is_refused_as_code_without_torch_hint(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"encoder": Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "contains code" in str(err.value) and "will not be loaded" in str(err.value)
    assert "weights_only" not in str(err.value) and "will likely succeed" not in str(err.value)


def test_pictures_need_no_extra():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].strip() for dep in project["dependencies"]}
    assert {"pillow", "matplotlib"} <= names


# ---------------------------------------------------------------------------------------------
# 11: short reads are reported by `vjepa prepare`


def test_prepare_names_videos_that_decode_far_fewer_frames_than_declared(tmp_path, monkeypatch):
    from vjepa.data import prepare
    from vjepa.data.decode import VideoInfo

    for name in ("ok", "short"):
        write_index_video(tmp_path / f"{name}.mp4", num_frames=12)
    (tmp_path / "list.csv").write_text("ok.mp4 0\nshort.mp4 1\n")
    real = prepare.probe_video

    def lying_header(path, decoder="pyav"):  # short.mp4's container claims 100 frames
        info = real(path, decoder)
        return VideoInfo(100, info.fps, info.height, info.width) if "short" in str(path) else info

    monkeypatch.setattr(prepare, "probe_video", lying_header)
    cfg = apply_overrides(preset("debug"), ["data.source=csv", f"data.path={tmp_path / 'list.csv'}"])
    with pytest.warns(UserWarning, match="short.mp4 decoded to 12 of the 100 frames"):
        lines = prepare.prepare_main(cfg.data, tmp_path / "cache", progress=False)
    assert "short reads 1" in lines[0] and f"{tmp_path / 'short.mp4'} (12 of 100)" in lines[0]
    assert "ok.mp4" not in lines[0]


@pytest.mark.skipif(not TREE_AVI.is_file(), reason="needs Debian's opencv-doc examples")
def test_prepare_reports_the_real_short_read_of_tree_avi(tmp_path):
    from vjepa.data.prepare import prepare_main

    (tmp_path / "list.csv").write_text(f"{TREE_AVI} 0\n")
    cfg = apply_overrides(preset("debug"), ["data.source=csv", f"data.path={tmp_path / 'list.csv'}"])
    with pytest.warns(UserWarning, match="short read"):
        lines = prepare_main(cfg.data, tmp_path / "cache", progress=False)
    assert f"{TREE_AVI} (68 of 444)" in lines[0]
