"""model.init_from: strict starts from a file, bit-exact at step 0, resumable; cooldown to a larger clip."""

import json
import re

import pytest
import torch
import yaml

from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.config import ConfigError, apply_overrides, preset, validate
from vjepa.init_from import resample_positions
from vjepa.models.pos_embed import sincos_3d
from vjepa.train import train

FROZEN = ["optim.start_lr=0", "optim.lr=0", "optim.final_lr=0", "optim.ema=[1.0,1.0]"]  # nothing moves


def debug_cfg(out_dir, *overrides):
    return apply_overrides(preset("debug"), [f"run.out_dir={out_dir}", "run.progress=false", "run.log_every=1",
                                             *overrides])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A 3-step debug run whose encoder, target encoder and predictor all differ from any init."""
    out = tmp_path_factory.mktemp("source")
    train(debug_cfg(out, "optim.steps=3", "run.seed=5"))
    return out


def networks(path):
    state = load_checkpoint(path)
    return {k: state[k] for k in ("encoder", "target_encoder", "predictor")}


def assert_equal_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_step_zero_weights_are_the_files_and_the_config_records_the_start(source_run, tmp_path):
    summary = train(debug_cfg(tmp_path, "optim.steps=1", f"model.init_from={source_run}", *FROZEN))
    assert summary["steps"] == 1
    start, ours = networks(source_run / "latest.pt"), networks(tmp_path / "latest.pt")
    for name in ("encoder", "target_encoder", "predictor"):
        assert_equal_states(ours[name], start[name])
    assert not torch.equal(start["encoder"]["blocks.0.attn.qkv.weight"], start["target_encoder"]["blocks.0.attn.qkv.weight"])
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]
    assert recorded["init_from"] == str(source_run) and len(recorded["init_from_sha256"]) == 64
    state = load_checkpoint(tmp_path / "latest.pt")
    assert state["step"] == 1 and state["config"]["model"]["init_from_sha256"] == recorded["init_from_sha256"]
    # which="init" of this run is where it started, not a random draw
    from vjepa.api import load

    init = load(tmp_path, which="init", device="cpu").model.state_dict()
    assert_equal_states(init, start["target_encoder"])


def test_fresh_optimiser_and_schedule(source_run, tmp_path):
    train(debug_cfg(tmp_path, "optim.steps=2", f"model.init_from={source_run}"))
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert first["step"] == 1 and first["lr"] == pytest.approx(preset("debug").optim.start_lr)


def test_a_mismatched_architecture_is_refused_naming_the_keys(source_run, tmp_path):
    with pytest.raises(CheckpointError, match=r"\[encoder\].*unexpected keys: blocks\.1\..*init_from_arch=true") as err:
        train(debug_cfg(tmp_path / "a", "model.depth=1", f"model.init_from={source_run}"))
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"differ: model\.embed_dim: file 64, config 32; shape mismatches: blocks\.0"):
        train(debug_cfg(tmp_path / "b", "model.embed_dim=32", f"model.init_from={source_run}"))
    with pytest.raises(ConfigError, match="no such file"):
        train(debug_cfg(tmp_path / "c", f"model.init_from={tmp_path / 'missing.pt'}"))
    with pytest.raises(ConfigError, match="sha256"):
        train(debug_cfg(tmp_path / "d", f"model.init_from={source_run}", "model.init_from_sha256=abc"))
    # the architecture taken from the file instead
    train(debug_cfg(tmp_path / "e", "model.depth=1", "model.embed_dim=32", "optim.steps=1",
                    f"model.init_from={source_run}", "model.init_from_arch=true", *FROZEN))
    recorded = yaml.safe_load((tmp_path / "e" / "config.yaml").read_text())["model"]
    assert (recorded["depth"], recorded["embed_dim"]) == (2, 64)
    assert_equal_states(networks(tmp_path / "e" / "latest.pt")["encoder"], networks(source_run / "latest.pt")["encoder"])


def test_a_relative_path_is_recorded_absolute_and_resumes(source_run, tmp_path, monkeypatch):
    monkeypatch.chdir(source_run.parent)
    args = ["optim.steps=2", "run.checkpoint_every=1", f"model.init_from={source_run.name}"]
    train(debug_cfg(tmp_path, *args))
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["init_from"]
    assert recorded == str(source_run)
    train(debug_cfg(tmp_path, *args[1:], "optim.steps=3"))  # the same relative path resumes the run
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 3


def test_an_exported_encoder_starts_both_encoders(source_run, tmp_path):
    from vjepa.api import export

    file = export(source_run, tmp_path / "enc.safetensors", which="target_encoder")
    train(debug_cfg(tmp_path / "run", "optim.steps=1", f"model.init_from={file}", *FROZEN))
    ours, start = networks(tmp_path / "run" / "latest.pt"), networks(source_run / "latest.pt")
    assert_equal_states(ours["encoder"], start["target_encoder"])
    assert_equal_states(ours["target_encoder"], start["target_encoder"])


def test_resuming_an_init_from_run_resumes_instead_of_starting_over(source_run, tmp_path, monkeypatch, interrupt_at):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(source_run, src)
    args = ["optim.steps=6", "run.checkpoint_every=3", f"model.init_from={src}"]
    full, part = tmp_path / "full", tmp_path / "part"
    train(debug_cfg(full, *args))
    interrupt_at(4)
    with pytest.raises(KeyboardInterrupt):
        train(debug_cfg(part, *args))
    monkeypatch.undo()
    (src / "latest.pt").unlink()  # a resume never reads the start file again
    train(debug_cfg(part, *args))
    lines = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in lines if "event" in r] == ["start", "resume"]
    a, b = ({r["step"]: r["loss"] for r in (json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines())
             if "loss" in r} for d in (full, part))
    assert a == b
    assert_equal_states(networks(full / "latest.pt")["encoder"], networks(part / "latest.pt")["encoder"])


def test_resample_positions_at_a_known_grid():
    # a table whose columns are the t, h and w coordinates of each token of a (2, 2, 2) grid
    t, h, w = torch.meshgrid(torch.arange(2.0), torch.arange(2.0), torch.arange(2.0), indexing="ij")
    table = torch.stack([t, h, w], dim=-1).reshape(1, 8, 3)
    out = resample_positions({"pos_embed": table, "other": table}, "pos_embed", (2, 2, 2), (4, 4, 2), "test")
    assert out["pos_embed"].shape == (1, 32, 3) and out["other"] is table
    grid = out["pos_embed"].reshape(4, 4, 2, 3)
    # trilinear, half-pixel centres (align_corners=False): 2 -> 4 samples at -0.25, 0.25, 0.75, 1.25, clamped
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.allclose(grid[:, 0, 0, 0], expected) and torch.allclose(grid[0, :, 0, 1], expected)
    assert torch.equal(grid[0, 0, :, 2], torch.tensor([0.0, 1.0]))  # unchanged axis
    same = resample_positions({"pos_embed": table}, "pos_embed", (2, 2, 2), (2, 2, 2), "test")
    assert same["pos_embed"] is table
    with pytest.raises(CheckpointError, match=r"not the 27 tokens"):
        resample_positions({"pos_embed": table}, "pos_embed", (3, 3, 3), (4, 4, 4), "test")
    # an official sin-cos table resampled to its own grid size is itself
    real = sincos_3d(12, 4, 2)[None]
    assert torch.equal(resample_positions({"p": real}, "p", (2, 4, 4), (2, 4, 4), "t")["p"], real)


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_cooldown_to_more_frames_and_pixels_starts_where_the_short_stage_ended(tmp_path, pos_embed):
    from vjepa.api import load

    stage1 = tmp_path / "stage1"
    train(debug_cfg(stage1, "optim.steps=2", f"model.pos_embed={pos_embed}"))
    bigger = ["data.num_frames=16", "data.crop_size=48", "data.synthetic.num_frames=16", "data.synthetic.size=48"]
    train(debug_cfg(tmp_path / "stage2", "optim.steps=1", f"model.pos_embed={pos_embed}",
                    f"model.init_from={stage1}", *bigger, *FROZEN))
    state = load_checkpoint(tmp_path / "stage2" / "latest.pt")
    if pos_embed == "sincos":
        assert state["encoder"]["pos_embed"].shape == (1, 8 * 6 * 6, 64)
        assert state["predictor"]["predictor_pos_embed"].shape == (1, 8 * 6 * 6, 32)
    else:
        assert "pos_embed" not in state["encoder"]
    clip = torch.randn(2, 3, 16, 48, 48)
    short, long = load(stage1, device="cpu"), load(tmp_path / "stage2", device="cpu")
    assert long.num_frames == 16 and long.img_size == 48
    # at step 0 the cooled-down model computes what the short-clip model computes on the larger clip
    assert torch.allclose(short(clip), long(clip), atol=1e-5)


def test_which_init_refuses_a_start_file_that_changed_or_went(source_run, tmp_path):
    """`vjepa.load(run, which="init")` of an init_from run reads the recorded file, checked by its sha256."""
    import shutil

    from vjepa.api import load

    start = tmp_path / "start"
    shutil.copytree(source_run, start)
    run = tmp_path / "run"
    train(debug_cfg(run, "optim.steps=1", f"model.init_from={start}"))
    load(run, which="init", device="cpu")  # the file as recorded: fine
    state = load_checkpoint(start / "latest.pt")
    state["target_encoder"]["norm.bias"] += 1.0
    torch.save(state, start / "latest.pt")
    with pytest.raises(CheckpointError, match="initial weights are unknown now: .*the file changed"):
        load(run, which="init", device="cpu")
    shutil.rmtree(start)
    with pytest.raises(CheckpointError, match="initial weights are unknown now: .*no such file"):
        load(run, which="init", device="cpu")



def test_a_preset_name_or_missing_path_is_a_one_line_config_error(tmp_path):
    from vjepa.init_from import prepare_init

    for value, why in (("debug", "a preset name, which has no weights"), (str(tmp_path / "nope.pt"), "no such file")):
        with pytest.raises(ConfigError, match=f"model.init_from=.*{why}.*it takes a checkpoint or weights") as err:
            prepare_init(apply_overrides(preset("debug"), [f"model.init_from={value}"]))
        assert "\n" not in str(err.value) and value in str(err.value)


def test_one_resolver_for_the_start_file_run_directory_and_hugging_face_folder(source_run, tmp_path):
    from vjepa.formats import checkpoint_path
    from vjepa.init_from import weights_file

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "vjepa2"}))
    (hf / "model.safetensors").write_bytes(b"")
    for source, expected in ((source_run, source_run / "latest.pt"), (hf, hf / "model.safetensors"),
                             (source_run / "latest.pt", source_run / "latest.pt")):
        assert weights_file(source) == checkpoint_path(source) == expected
    (hf / "config.json").unlink()  # not a Hugging Face folder any more: a folder without weights
    with pytest.raises(ConfigError, match="without latest.pt.*it takes a checkpoint"):
        weights_file(hf)


def vjepa2_file(path, tokens=10):
    """A released-layout V-JEPA 2 checkpoint at ViT-Ti width (192, 3 heads, official): RoPE, 12 predictor
    heads, an unused sin-cos table in each network, `tokens` mask tokens (released files: 10)."""
    from vjepa.models.factory import build_encoder, token_grid
    from vjepa.models.predictor import build_predictor

    cfg = debug_cfg(path.parent, "model.embed_dim=192", "model.num_heads=3", "model.depth=1", "model.pos_embed=rope",
                    "model.uniform_power=false", "model.predictor_embed_dim=96", "model.predictor_num_heads=12",
                    "model.predictor_depth=1")
    torch.manual_seed(3)
    encoder, predictor = build_encoder(cfg), build_predictor(cfg.model, tokens, token_grid(cfg))
    for token in predictor.mask_tokens:  # tell the tokens apart (they start at zero)
        torch.nn.init.normal_(token)
    num = 4 * 4 * 4  # 8 frames x 32 px, tubelet 2, patch 8

    def wrapped(state, table, width):
        return {f"module.backbone.{k}": v for k, v in {**state, table: torch.zeros(1, num, width)}.items()}

    enc = wrapped(encoder.state_dict(), "pos_embed", 192)
    torch.save({"encoder": enc, "target_encoder": enc, "epoch": 1,
                "predictor": wrapped(predictor.state_dict(), "predictor_pos_embed", 96)}, path)
    return path, {k: v.clone() for k, v in predictor.state_dict().items()}


@pytest.mark.parametrize("by", ["generator", "clip_length"])
def test_a_vjepa2_file_keeps_its_ten_mask_tokens_saves_resumes_and_loads(tmp_path, by):
    from vjepa.api import export_hf, load

    file, predictor = vjepa2_file(tmp_path / "v2.pt")
    args = [f"model.init_from={file}", "model.init_from_arch=true", f"model.predictor_mask_token={by}",
            "optim.warmup_steps=0"]
    train(debug_cfg(tmp_path / "run", "optim.steps=1", "run.checkpoint_every=1", *args))
    state = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert state["config"]["model"]["predictor_num_mask_tokens"] == 10
    used = 1 if by == "clip_length" else 2  # token 0, or one per generator; the rest stay as loaded
    moved = [not torch.equal(state["predictor"][f"mask_tokens.{i}"], predictor[f"mask_tokens.{i}"]) for i in range(10)]
    assert moved == [True] * used + [False] * (10 - used)
    train(debug_cfg(tmp_path / "run", "optim.steps=2", *args))  # resumes: the file is not read again
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 2
    assert len(load(tmp_path / "run", device="cpu").predictor.mask_tokens) == 10
    # the same weights as a Hugging Face folder
    hf = export_hf(file, tmp_path / "hf")
    train(debug_cfg(tmp_path / "from_hf", "optim.steps=1", *args[1:], f"model.init_from={hf}"))
    assert len(load_checkpoint(tmp_path / "from_hf" / "latest.pt")["predictor"]) == len(state["predictor"])


def test_a_mask_token_count_that_differs_is_named_and_too_few_refused(tmp_path):
    file, _ = vjepa2_file(tmp_path / "v2.pt")
    arch = ["model.embed_dim=192", "model.num_heads=3", "model.depth=1", "model.pos_embed=rope",
            "model.uniform_power=false", "model.predictor_embed_dim=96", "model.predictor_num_heads=12",
            "model.predictor_depth=1"]
    with pytest.raises(CheckpointError, match=r"\[predictor\] does not match the model: the architectures differ: "
                                              r"model\.predictor_num_mask_tokens: file 10, config 2; unexpected"):
        train(debug_cfg(tmp_path / "a", f"model.init_from={file}", *arch))
    train(debug_cfg(tmp_path / "b", "optim.steps=1", f"model.init_from={file}", *arch,
                    "model.predictor_num_mask_tokens=10"))  # naming the count is enough
    with pytest.raises(ConfigError, match=r"predictor_num_mask_tokens=1 is fewer than the 2 mask generators .*\(0: one"):
        train(debug_cfg(tmp_path / "c", "model.predictor_num_mask_tokens=1"))
    copied = apply_overrides(preset("debug"), ["model.predictor_num_mask_tokens=1", f"model.init_from={file}",
                                               "model.init_from_arch=true"])  # as if init_from_arch had copied 1
    with pytest.raises(ConfigError, match=r"fewer than the 2 .* \(taken from .*v2\.pt by model\.init_from_arch=true"):
        validate(copied)


def test_a_mismatch_error_puts_the_architecture_first_and_caps_the_key_lists(source_run, tmp_path):
    with pytest.raises(CheckpointError) as err:
        train(debug_cfg(tmp_path / "a", "model.embed_dim=32", "model.depth=3", f"model.init_from={source_run}"))
    message = str(err.value)
    assert message.index("the architectures differ: model.embed_dim: file 64, config 32; model.depth: file 2, "
                         "config 3") < message.index("missing keys") < message.index("shape mismatches")
    assert re.search(r"missing keys: (blocks\.2\.[^,]+, ){4}blocks\.2\.[^,]+ \.\.\. and \d+ more;", message)
    assert len(message) < 1000 and "\n" not in message


def test_with_init_from_arch_on_the_error_never_suggests_it(source_run, tmp_path):
    # pixel targets give the predictor another output width: a key init_from_arch does not copy
    with pytest.raises(CheckpointError, match=r"predictor_proj\.weight") as err:
        train(debug_cfg(tmp_path, "objective.kind=pixel", f"model.init_from={source_run}", "model.init_from_arch=true"))
    assert "set model.init_from_arch" not in str(err.value) and "took the architecture from the file" in str(err.value)


def test_a_safetensors_export_of_a_vjepa2_file_keeps_and_reloads_its_ten_mask_tokens(tmp_path):
    from vjepa.api import export, load

    file, predictor = vjepa2_file(tmp_path / "v2.pt")
    exported = export(file, tmp_path / "v2.safetensors", with_predictor=True)  # its config: 10 tokens
    assert len(load(exported, device="cpu").predictor.mask_tokens) == 10
    train(debug_cfg(tmp_path / "run", "optim.steps=1", f"model.init_from={exported}", "model.init_from_arch=true",
                    *FROZEN))
    assert torch.equal(load_checkpoint(tmp_path / "run" / "latest.pt")["predictor"]["mask_tokens.9"],
                       predictor["mask_tokens.9"])
