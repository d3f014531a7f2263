"""Checkpoint import: official facebookresearch/jepa files load strictly, bad files fail loudly and safely."""

import copy

import pytest
import torch

from vjepa.api import load
from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.config import preset
from vjepa.formats import infer_clip_size, infer_model_config, split_networks, strip_prefixes
from vjepa.models.factory import build_encoder
from vjepa.models.pos_embed import sincos_3d
from vjepa.models.predictor import build_predictor


def tiny_cfg(embed_dim=192, heads=3):
    """ViT-tiny width (192, 3 heads: in the official size table), 2 blocks, 8x32x32 clips."""
    cfg = preset("debug")
    cfg.model.embed_dim, cfg.model.num_heads, cfg.model.depth = embed_dim, heads, 2
    cfg.model.predictor_embed_dim, cfg.model.predictor_depth = 48, 1
    return cfg


def official_checkpoint(cfg, seed=0):
    """An official-format dict: networks under module.backbone., plus opt/scaler/epoch as app/vjepa saves."""
    torch.manual_seed(seed)
    encoder = build_encoder(cfg)
    target = copy.deepcopy(encoder)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.01 * torch.randn_like(p))  # EMA weights differ from the online encoder's
    predictor = build_predictor(cfg.model, 2, encoder.grid)
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(predictor.parameters()), lr=1e-4)
    encoder(torch.randn(1, 3, 8, 32, 32)).sum().backward()
    opt.step()

    def wrapped(module):
        return {f"module.backbone.{k}": v for k, v in module.state_dict().items()}

    state = {
        "encoder": wrapped(encoder), "predictor": wrapped(predictor), "target_encoder": wrapped(target),
        "opt": opt.state_dict(), "scaler": None, "epoch": 3, "loss": 0.42, "batch_size": 4,
        "world_size": 1, "lr": 1e-4,
    }
    return state, encoder, target, predictor


def test_official_checkpoint_round_trip_is_strict_and_exact(tmp_path):
    cfg = tiny_cfg()
    state, encoder, target, predictor = official_checkpoint(cfg)
    path = tmp_path / "vitt.pth.tar"
    torch.save(state, path)
    clip = torch.randn(2, 3, 8, 32, 32)
    loaded = load(path, device="cpu")  # architecture inferred from the tensor shapes alone
    assert loaded.which == "target_encoder" and loaded.model.num_heads == 3 and len(loaded.model.blocks) == 2
    assert (loaded.num_frames, loaded.img_size) == (8, 32)
    assert torch.equal(loaded(clip), target.eval()(clip))
    online = load(path, which="encoder", device="cpu")
    assert torch.equal(online(clip), encoder.eval()(clip))
    assert not torch.equal(online(clip), loaded(clip))
    context_idx, target_idx = torch.arange(40)[None], torch.arange(40, 64)[None]
    context = loaded(clip[:1])[:, :40]
    expected = predictor.eval()(context, context_idx, target_idx, mask_index=1)
    assert torch.equal(loaded.predictor(context, context_idx, target_idx, mask_index=1), expected)


def test_prefixes_are_stripped_in_any_order():
    weights = torch.zeros(1)
    state = {"module.backbone.a": weights, "backbone.module.b": weights, "_orig_mod.c": weights, "d": weights}
    assert sorted(strip_prefixes(state)) == ["a", "b", "c", "d"]
    with pytest.raises(CheckpointError, match="both become"):
        strip_prefixes({"module.a": weights, "a": weights})
    assert set(split_networks({"pos_embed": weights})) == {"encoder"}  # a bare state dict
    with pytest.raises(CheckpointError, match="no network weights"):
        split_networks({"epoch": 3})


def test_clip_size_is_read_off_the_sincos_table():
    # 1 x 8 x 8, 4 x 4 x 4 and 16 x 2 x 2 grids all have 64 tokens: only the table's values tell
    for uniform_power in (True, False):
        table = sincos_3d(96, 4, 4, uniform_power)[None]
        assert infer_clip_size(table, tubelet=2, patch=8) == (8, 32, uniform_power)
    learned = torch.randn(1, 128, 96)  # no sin-cos table: 16 frames (the official length) when possible
    assert infer_clip_size(learned, tubelet=2, patch=8) == (16, 32, None)
    assert infer_clip_size(learned, tubelet=2, patch=8, num_frames=4) == (4, 64, None)
    with pytest.raises(CheckpointError, match="possible clips: 4x64x64, 16x32x32, 64x16x16, 256x8x8"):
        infer_clip_size(learned, tubelet=2, patch=8, img_size=48)


def test_unknown_width_needs_num_heads(tmp_path):
    cfg = tiny_cfg(embed_dim=64, heads=2)
    state, _, target, _ = official_checkpoint(cfg)
    networks = split_networks(state)
    with pytest.raises(CheckpointError, match="embed_dim 64 is not an official ViT width.*pass num_heads"):
        infer_model_config(networks)
    path = tmp_path / "odd.pth.tar"
    torch.save(state, path)
    loaded = load(path, device="cpu", num_heads=2)
    clip = torch.randn(1, 3, 8, 32, 32)
    assert torch.equal(loaded(clip), target.eval()(clip))


def test_key_mismatch_error_lists_every_key(tmp_path):
    state, *_ = official_checkpoint(tiny_cfg())
    for weights in (state["target_encoder"], state["encoder"]):  # alike, so the networks agree
        del weights["module.backbone.blocks.1.mlp.fc2.bias"]
        weights["module.backbone.blocks.1.attn.q_norm.weight"] = torch.ones(64)
        weights["module.backbone.norm.weight"] = torch.ones(7)
    path = tmp_path / "broken.pth.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load(path, device="cpu")
    message = str(error.value)
    assert "[target_encoder]" in message
    assert "missing keys: blocks.1.mlp.fc2.bias" in message
    assert "unexpected keys: blocks.1.attn.q_norm.weight" in message
    assert "norm.weight: checkpoint (7,) vs model (192,)" in message


class Payload:
    """Pickles as a call to open(marker, "w"): loading it with plain pickle creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    cfg = tiny_cfg()
    state, *_ = official_checkpoint(cfg)
    marker = tmp_path / "pwned"
    state["target_encoder"]["module.backbone.evil"] = Payload(marker)
    path = tmp_path / "evil.pth.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load(path, device="cpu")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    control = tmp_path / "control.pth.tar"
    torch.save({"x": Payload(tmp_path / "ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "ran").exists()
