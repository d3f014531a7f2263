"""vjepa finetune: starts from the file (or scratch), layer-wise LR decay, exact resume, readable output."""

import json

import pytest
import torch

from vjepa.api import load_head
from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.cli import main
from vjepa.config import Config, ConfigError, apply_overrides, from_dict, preset
from vjepa.finetune import (
    FinetuneSettings,
    build_classifier,
    finetune,
    finetune_config,
    finetune_optimizer,
    layer_decay_groups,
)
from vjepa.jepa import set_schedules
from vjepa.models.probe import LinearProbe
from vjepa.train import train

QUIET = ["run.progress=false", "run.log_every=1", "data.batch_size=4"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    train(apply_overrides(preset("debug"), [f"run.out_dir={out}", "run.progress=false", "optim.steps=2"]))
    return out


def config(source, out, *overrides, scratch=False, preset_name="ssv2"):
    return finetune_config(str(source), [f"run.out_dir={out}", *QUIET, *overrides], preset_name, scratch)


def test_starts_from_the_files_target_encoder_or_from_scratch(source_run, tmp_path):
    frozen = ["optim.start_lr=0", "optim.lr=0", "optim.final_lr=0", "optim.steps=1", "finetune.eval_split="]
    cfg, settings = config(source_run, tmp_path / "pre", *frozen)
    assert settings.task == "motion" and cfg.model.drop_path == 0.1 and not cfg.data.horizontal_flip
    finetune(cfg, settings)
    start = load_checkpoint(source_run / "latest.pt")["target_encoder"]
    tuned = load_checkpoint(tmp_path / "pre" / "latest.pt")
    assert all(torch.equal(tuned["encoder"][k], start[k]) for k in start)
    assert tuned["config"]["model"]["init_from"] == str(source_run)
    cfg, settings = config(source_run, tmp_path / "scratch", *frozen, scratch=True)
    finetune(cfg, settings)
    scratch = load_checkpoint(tmp_path / "scratch" / "latest.pt")
    assert not torch.equal(scratch["encoder"]["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert scratch["config"]["model"]["init_from"] == "" and scratch["finetune"]["scratch"]


def test_layer_decay_scales_each_blocks_learning_rate(source_run, tmp_path):
    from vjepa.finetune import build_classifier

    cfg, settings = config(source_run, tmp_path, "finetune.layer_decay=0.5")
    model = build_classifier(cfg, settings, num_classes=8)
    optimizer = torch.optim.AdamW(layer_decay_groups(model.encoder, model.head, 0.5), lr=1.0)
    lr, _ = set_schedules(optimizer, 500, cfg.optim)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    depth = cfg.model.depth  # 2
    assert lr_of[id(model.encoder.blocks[0].attn.qkv.weight)] == pytest.approx(lr * 0.5**depth)
    assert lr_of[id(model.encoder.blocks[1].mlp.fc1.bias)] == pytest.approx(lr * 0.5)
    assert lr_of[id(model.encoder.norm.weight)] == pytest.approx(lr)
    assert lr_of[id(model.head.linear.weight)] == pytest.approx(lr)
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())


def test_finetune_optimizer_uses_the_training_decay_split_and_fuses_on_cuda(source_run, tmp_path):
    cfg, settings = config(source_run, tmp_path)
    model = build_classifier(cfg, settings, num_classes=8)
    optimizer = finetune_optimizer(model, cfg, settings, torch.device("cpu"))
    no_decay = {id(p) for g in optimizer.param_groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    head = {n: p for n, p in model.head.named_parameters() if p.requires_grad}
    assert {id(p) for n, p in head.items() if n.endswith(".bias") or p.ndim == 1} <= no_decay
    queries = [p for n, p in head.items() if n.endswith("query_tokens")]
    assert queries and {id(p) for p in queries} <= no_decay  # as the probe's optimiser
    assert id(model.encoder.norm.weight) in no_decay and id(model.encoder.blocks[0].attn.qkv.weight) not in no_decay
    assert not optimizer.defaults["fused"]  # CPU runs keep the default (bit-identical) implementation
    # fused like pretraining's optimiser on CUDA (constructing it needs no GPU)
    assert finetune_optimizer(model, cfg, settings, torch.device("cuda")).defaults["fused"] is True


def test_resume_repeats_the_uninterrupted_run(source_run, tmp_path, monkeypatch, capsys):
    import vjepa.finetune as module

    args = ["optim.steps=6", "optim.warmup_steps=2", "run.checkpoint_every=3", "finetune.eval_split="]
    full, part = tmp_path / "full", tmp_path / "part"
    finetune(*config(source_run, full, *args))
    real = module.finetune_step

    def interrupt_at_step_4(model, optimizer, video, labels, step, *rest):
        if step == 4:
            raise KeyboardInterrupt  # dies after the step-3 checkpoint
        return real(model, optimizer, video, labels, step, *rest)

    monkeypatch.setattr(module, "finetune_step", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        finetune(*config(source_run, part, *args))
    monkeypatch.undo()
    capsys.readouterr()
    finetune(*config(source_run, part, *args))
    assert f"vjepa: resuming {part} from step 3 of 6 (latest.pt)" in capsys.readouterr().err
    records = {d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (full, part)}
    loss = {d: {r["step"]: r["loss"] for r in rs if "loss" in r} for d, rs in records.items()}
    assert loss[full] == loss[part] and len(loss[full]) == 6
    steps = [r["step"] for r in records[part] if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 4, logged after the step-3 checkpoint, is not there twice
    assert [r["event"] for r in records[part] if "event" in r] == ["start", "resume"]
    a, b = (load_checkpoint(d / "latest.pt") for d in (full, part))
    for name in ("encoder", "classifier"):
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    with pytest.raises(ConfigError, match="other settings"):
        finetune(*config(source_run, part, *args, "finetune.label_smoothing=0.3"))


def test_output_is_an_encoder_vjepa_load_reads_and_a_probe_layout_head(source_run, tmp_path, capsys):
    from vjepa.api import load

    out = tmp_path / "run"
    assert main(["finetune", str(source_run), "--head", "linear", f"run.out_dir={out}", *QUIET,
                 "optim.steps=2", "finetune.label_smoothing=0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 <= summary["eval_top1"] <= 100 and summary["eval_split"] == "test"
    assert json.loads((out / "result.json").read_text())["eval_top1"] == summary["eval_top1"]
    state = load_checkpoint(out / "latest.pt")
    encoder = load(out, which="encoder", device="cpu")
    assert all(torch.equal(encoder.model.state_dict()[k], v) for k, v in state["encoder"].items())
    head, info = load_head(out)
    assert isinstance(head, LinearProbe) and all(torch.equal(head.state_dict()[k], v) for k, v in state["classifier"].items())
    assert info["num_classes"] == len(info["class_names"]) == 8 and info["task"] == "motion"
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():  # encoder + head reproduce the fine-tuned classifier's logits
        expected = build_classifier(from_dict(Config, state["config"]), FinetuneSettings(head="linear"), 8)
        expected.encoder.load_state_dict(state["encoder"])
        expected.head.load_state_dict(state["classifier"])
        assert torch.allclose(head(encoder(clip)), expected.eval()(clip), atol=1e-5)
    with pytest.raises(CheckpointError, match="no fine-tuned head"):
        load_head(source_run)
    # user errors are one line and exit status 2
    assert main(["finetune", str(source_run), f"run.out_dir={tmp_path / 'x'}", "finetune.head=mlp"]) == 2
    assert "finetune.head='mlp'" in capsys.readouterr().err
    assert main(["finetune", str(source_run), "--preset", "k400", f"run.out_dir={tmp_path / 'y'}"]) == 2
    assert "horizontal_flip" in capsys.readouterr().err
    assert main(["finetune", "debug", f"run.out_dir={tmp_path / 'z'}"]) == 2
    assert "add --from scratch" in capsys.readouterr().err


def write_video_folders(root):
    """train/ and test/ class folders (class0, class1) of 4 tiny rendered mp4 clips each."""
    from vjepa.config import SyntheticConfig
    from vjepa.data.synthetic import MOTION_CLASSES, render_clip, write_mp4

    for split in ("train", "test"):
        for i in range(4):
            frames, motion, _ = render_clip(SyntheticConfig(size=32, num_frames=20), split, i)
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            write_mp4(frames, folder / f"v{i}_{MOTION_CLASSES[motion]}.mp4")
    return root


def test_labelled_real_video_folders(source_run, tmp_path):
    write_video_folders(tmp_path / "videos")
    cfg, settings = finetune_config(str(source_run), [f"run.out_dir={tmp_path / 'run'}", *QUIET, "optim.steps=2",
                                                      "data.frame_step=2"], "k400", data=str(tmp_path / "videos"))
    assert cfg.data.source == "folder" and settings.task == "label" and cfg.data.horizontal_flip
    summary = finetune(cfg, settings)
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["head"]["class_names"] == ["class0", "class1"]
    assert summary["eval_split"] == "test" and 0 <= summary["eval_top1"] <= 100


def test_a_csv_of_path_label_lines(source_run, tmp_path):
    from vjepa.config import SyntheticConfig
    from vjepa.data.synthetic import render_clip, write_mp4

    for split in ("train", "test"):
        lines = []
        for i in range(4):
            frames, _, _ = render_clip(SyntheticConfig(size=32, num_frames=20), split, i)
            write_mp4(frames, tmp_path / f"{split}{i}.mp4")
            lines.append(f"{split}{i}.mp4 {2 * (i % 2)}")  # labels 0 and 2: class 1 has no video
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with open(tmp_path / "test.csv", "a") as listing:
        listing.write("broken.mp4 0\n")  # left out of the score, never replaced by another clip
    overrides = [f"run.out_dir={tmp_path / 'run'}", *QUIET, "optim.steps=2", "data.frame_step=2"]
    cfg, settings = finetune_config(str(source_run), overrides, "k400", data=str(tmp_path / "{split}.csv"))
    assert cfg.data.source == "csv" and settings.task == "label"
    with pytest.warns(UserWarning, match="broken.mp4"):
        summary = finetune(cfg, settings)
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["head"]["class_names"] == ["0", "1", "2"]
    assert summary["eval_split"] == "test" and 0 <= summary["eval_top1"] <= 100
    assert summary["eval_clips"] == 4 and summary["eval_skipped"] == {"corrupt": 1}
    (tmp_path / "test.csv").write_text("test0.mp4 3\n")  # a class training does not have
    cfg, settings = finetune_config(str(source_run), [*overrides, f"run.out_dir={tmp_path / 'run3'}"], "k400",
                                    data=str(tmp_path / "{split}.csv"))
    with pytest.raises(ConfigError, match=r"test split's .*test0\.mp4 has label 3, not among training's classes 0..2"):
        finetune(cfg, settings)
    (tmp_path / "train.csv").write_text("train0.mp4\n")  # no label
    cfg, settings = finetune_config(str(source_run), [*overrides, f"run.out_dir={tmp_path / 'run2'}"], "k400",
                                    data=str(tmp_path / "{split}.csv"))
    with pytest.raises(ConfigError, match=r"train\.csv, .*train0\.mp4 has no label \(use class folders"):
        finetune(cfg, settings)


def _ddp_worker(rank, world_size, port, cfg, settings):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    finetune(cfg, settings)


def test_two_ddp_ranks_match_one_process(source_run, tmp_path):
    import torch.multiprocessing as mp

    from test_distributed import LOSS_TOL, assert_close_states, free_port

    args = ["optim.steps=3", "run.dtype=fp32", "run.threads=1", "model.drop_path=0", "finetune.eval_split=",
            "optim.warmup_steps=0", "optim.start_lr=1e-3", "optim.lr=1e-3"]  # steps that move the weights
    one = config(source_run, tmp_path / "one", *args)
    two = config(source_run, tmp_path / "two", *args, "data.batch_size=2")  # per process: 2 x 2 = 4
    finetune(*one)
    mp.spawn(_ddp_worker, args=(2, free_port(), *two), nprocs=2, join=True)
    loss = [{r["step"]: r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
             if "loss" in r} for d in (tmp_path / "one", tmp_path / "two")]
    assert [loss[1][s] for s in (1, 2, 3)] == pytest.approx([loss[0][s] for s in (1, 2, 3)], rel=LOSS_TOL)
    a, b = (load_checkpoint(tmp_path / d / "latest.pt") for d in ("one", "two"))
    assert b["step"] == 3
    for name in ("encoder", "classifier"):
        assert_close_states(a[name], b[name])


def test_every_parameter_learns_and_one_batch_is_fitted(source_run, tmp_path):
    from vjepa.finetune import FinetuneSettings, build_classifier, finetune_step

    cfg, _ = config(source_run, tmp_path, "optim.warmup_steps=0", "optim.start_lr=1e-3", "optim.lr=1e-3",
                    "optim.final_lr=1e-3", "model.drop_path=0", "run.dtype=fp32")
    settings = FinetuneSettings(label_smoothing=0.0, layer_decay=0.75)
    model = build_classifier(cfg, settings, num_classes=4)
    optimizer = torch.optim.AdamW(layer_decay_groups(model.encoder, model.head, 0.75), lr=1e-3)
    video, labels = torch.randn(8, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    before = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    losses = [finetune_step(model, optimizer, video, labels, step, cfg, settings, torch.device("cpu"))[0].item()
              for step in range(40)]
    assert losses[-1] < 0.1 * losses[0], losses  # memorises 8 clips: gradients reach head and encoder
    unchanged = [k for k, v in model.named_parameters() if v.requires_grad and torch.equal(v, before[k])]
    assert not unchanged


def test_nonfinite_weights_are_never_saved(source_run, tmp_path, monkeypatch):
    import vjepa.finetune as module

    real = module.finetune_step

    def poison_after_step_3(model, optimizer, video, labels, step, *rest):
        out = real(model, optimizer, video, labels, step, *rest)
        if step == 2:  # the update of step 3, a checkpoint step
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(module, "finetune_step", poison_after_step_3)
    args = ["optim.steps=6", "optim.warmup_steps=2", "run.checkpoint_every=3", "run.log_every=10",
            "finetune.eval_split="]
    with pytest.raises(RuntimeError, match="fine-tuned weights became NaN or infinite by step 3"):
        finetune(*config(source_run, tmp_path / "run", *args))
    assert not (tmp_path / "run" / "latest.pt").exists()  # nothing non-finite was written


def test_classify_a_finetune_run_with_its_encoder_head_and_class_names(source_run, tmp_path, capsys):
    """`vjepa classify VIDEO --probe RUN` (or RUN/latest.pt) reads the run's fine-tuned encoder and head, names
    its classes and views a clip as the fine-tune's evaluation did."""
    import warnings

    import vjepa
    from vjepa.api import load, load_config
    from vjepa.data import build_dataset
    from vjepa.data.transforms import build_transform

    data, run = write_video_folders(tmp_path / "videos"), tmp_path / "run"
    finetune(*finetune_config(str(source_run), [f"run.out_dir={run}", *QUIET, "optim.steps=2", "data.frame_step=2"],
                              "k400", data=str(data)))
    video = next((data / "test" / "class1").iterdir())
    for probe_arg in (run, run / "latest.pt"):
        out = tmp_path / f"{probe_arg.name}.json"
        assert main(["classify", str(video), "--probe", str(probe_arg), "--output", str(out), "--no-progress"]) == 0
        payload = json.loads(out.read_text())
        assert {c["class"] for c in payload["results"][0]["top_k"]} == {"class0", "class1"}
        assert payload["checkpoint"] == str(run / "latest.pt")  # the encoder: the run's own
    # the numbers: the fine-tuned encoder + head on the fine-tune evaluation's own view of the clip
    cfg = load_config(run)
    dataset = build_dataset(cfg.data, split="test", train=False,
                            transform=build_transform(cfg.data, train=False, num_crops=1, resize_ratio=1.0))
    item = next(dataset[i] for i in range(len(dataset.records)) if dataset[i]["path"] == str(video))
    head, _ = load_head(run)
    with torch.no_grad():
        expected = head(load(run, which="encoder", device="cpu")(item["video"])).softmax(-1)[0]
    probs = {c["index"]: c["prob"] for c in payload["results"][0]["top_k"]}
    assert [probs[0], probs[1]] == pytest.approx(expected.tolist(), abs=1e-5)
    # another encoder is taken when given, with a warning; a pretraining run is no probe
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vjepa.load_probe(run, encoder=source_run, device="cpu")
    assert any("fine-tuned with that run's encoder" in str(w.message) for w in caught)
    capsys.readouterr()
    assert main(["classify", str(video), "--probe", str(source_run), "--output", str(tmp_path / "x.json")]) == 2
    assert "not a `vjepa finetune` run" in capsys.readouterr().err
