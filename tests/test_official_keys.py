"""Our import against an independent description of the official V-JEPA 1 ViT-L/16 checkpoint.

tests/fixtures/official_vitl16_keys.json lists every tensor name and shape of an official
facebookresearch/jepa pretraining checkpoint (encoder, predictor, target_encoder, all under
`module.backbone.`), written from the official code by tests/fixtures/make_official_vitl16_keys.py,
not from this package. No weights: the full-size check builds models with meta-device parameters, and the
file that goes through `vjepa.load` keeps the first blocks only, with every tensor a broadcast
constant (one stored number per key), so the test stays fast and small.
"""

import json
from pathlib import Path

import pytest
import torch

from vjepa.api import load
from vjepa.checkpoint import CheckpointError, load_state_strict
from vjepa.formats import infer_model_config, split_networks, strip_prefixes
from vjepa.models.factory import build_encoder
from vjepa.models.pos_embed import sincos_3d
from vjepa.models.predictor import build_predictor

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "official_vitl16_keys.json").read_text())
ARCH = FIXTURE["architecture"]
NETWORKS = ("encoder", "predictor", "target_encoder")
GRID = (ARCH["num_frames"] // ARCH["tubelet_size"], ARCH["crop_size"] // ARCH["patch_size"],
        ARCH["crop_size"] // ARCH["patch_size"])


def position_table(dim: int) -> torch.Tensor:
    """The fixed sin-cos table an official run stores (uniform_power, as configs/pretrain/vitl16.yaml)."""
    return sincos_3d(dim, GRID[1], GRID[0], True)[None]


def fake_tensor(name: str, shape: list[int], value: float, device: str) -> torch.Tensor:
    if name.endswith("pos_embed"):  # the import reads the clip size off the table's values
        return position_table(shape[-1])  # real values even on meta (the CPU table is small)
    if device == "meta":
        return torch.empty(shape, device="meta")
    return torch.full((1,) * len(shape), value).expand(shape)  # one stored number


def official_state(device: str = "meta", depth: int | None = None, pred_depth: int | None = None) -> dict:
    """An official-layout checkpoint dict from the fixture (optionally only the first blocks).

    Off the meta device every tensor is constant: network n, key i holds 1000 * n + i (so a
    mix-up of keys or networks shows in the loaded values).
    """
    state = {"opt": {}, "scaler": None, "epoch": 300, "loss": 0.1, "batch_size": 24, "world_size": 128, "lr": 6e-4}
    for n, network in enumerate(NETWORKS):
        keys = {}
        for i, (name, shape) in enumerate(FIXTURE[network].items()):
            block = name.split("blocks.")[1].split(".")[0] if "blocks." in name else None
            limit = pred_depth if "predictor_blocks." in name else depth
            if block is not None and limit is not None and int(block) >= limit:
                continue
            keys[name] = fake_tensor(name, shape, 1000.0 * n + i, device)
        state[network] = keys
    return state


@pytest.fixture
def meta_parameters(monkeypatch):
    """Modules built inside the test keep their parameters on the meta device (no memory, no init
    cost: a ViT-L is 300M parameters); buffers such as the position tables stay real."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", on_meta)


def shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_fixture_is_the_official_layout():
    assert set(FIXTURE["top_level_keys"]) >= set(NETWORKS)
    for network in NETWORKS:
        assert all(k.startswith("module.backbone.") for k in FIXTURE[network])
    assert len(FIXTURE["encoder"]) == 3 + 12 * ARCH["depth"] + 2  # pos, patch w/b, 12 per block, norm
    assert FIXTURE["encoder"]["module.backbone.patch_embed.proj.weight"] == [1024, 3, 2, 16, 16]
    assert FIXTURE["predictor"]["module.backbone.predictor_pos_embed"] == [1, 1568, 384]


def test_full_vitl16_key_set_and_shapes_are_exactly_our_models(meta_parameters):
    """Shapes alone give the architecture, and our ViT-L and predictor (built on the meta device)
    have exactly the fixture's keys with its shapes; loading is strict and accepts them."""
    state = official_state("meta")
    networks = split_networks(state)
    assert set(networks) == set(NETWORKS)
    cfg = infer_model_config(networks)
    m = cfg.model
    assert (m.embed_dim, m.depth, m.num_heads, m.mlp_ratio) == (1024, 24, 16, 4.0)
    assert (m.patch_size, m.tubelet_size, m.in_chans) == (16, 2, 3)
    assert (m.num_frames, m.img_size, cfg.data.num_frames, cfg.data.crop_size) == (16, 224, 16, 224)
    assert (m.predictor_embed_dim, m.predictor_depth, m.uniform_power) == (384, 12, True)
    encoder = build_encoder(cfg)
    predictor = build_predictor(m, ARCH["num_mask_tokens"], encoder.grid)
    assert encoder.blocks[0].attn.qkv.weight.is_meta
    assert encoder.grid == GRID
    for name, module in (("encoder", encoder), ("target_encoder", encoder), ("predictor", predictor)):
        expected = {k.removeprefix("module.backbone."): tuple(v) for k, v in FIXTURE[name].items()}
        assert shapes(module.state_dict()) == expected, name
        assert shapes(networks[name]) == expected, name
        load_state_strict(module, networks[name], name)  # strict: no missing, unexpected or mis-shaped key


@pytest.mark.parametrize("drop", ["module.backbone.norm.bias", "module.backbone.blocks.0.attn.qkv.bias"])
def test_a_missing_official_key_is_named(drop, meta_parameters):
    state = official_state("meta")
    del state["target_encoder"][drop]
    networks = split_networks(state)
    # the shape inference already compares the two encoders; the strict load is the last line of defence
    with pytest.raises(CheckpointError, match=drop.removeprefix("module.backbone.").replace(".", r"\.")):
        infer_model_config(networks)
    del networks["encoder"]
    encoder = build_encoder(infer_model_config(networks))  # a 16 x 224 x 224 clip
    with pytest.raises(CheckpointError, match=drop.removeprefix("module.backbone.").replace(".", r"\.")):
        load_state_strict(encoder, networks["target_encoder"], "target_encoder")


def test_official_file_of_the_first_blocks_loads_with_every_tensor_in_place(tmp_path):
    """A ViT-L/16 checkpoint cut to 1 encoder block and 1 predictor block goes through `vjepa.load`
    from disk: the architecture comes from the shapes and every tensor lands under its own name."""
    state = official_state("cpu", depth=1, pred_depth=1)
    path = tmp_path / "vitl16-cut.pth.tar"
    torch.save(state, path)
    assert path.stat().st_size < 30_000_000  # broadcast constants: the position tables dominate
    encoder = load(path, device="cpu")
    m = encoder.config.model
    assert (m.embed_dim, m.depth, m.num_heads, m.patch_size, m.tubelet_size) == (1024, 1, 16, 16, 2)
    assert (encoder.num_frames, encoder.img_size, encoder.which) == (16, 224, "target_encoder")
    for name, module in (("target_encoder", encoder.model), ("predictor", encoder.predictor)):
        wanted = strip_prefixes(state[name])
        got = module.state_dict()
        assert got.keys() == wanted.keys(), name
        for key, value in wanted.items():
            assert torch.equal(got[key], value), (name, key)
    key = "blocks.0.mlp.fc2.weight"  # the target's weights, not the online encoder's
    assert not torch.equal(encoder.model.state_dict()[key], strip_prefixes(state["encoder"])[key])
    with torch.no_grad():  # the cut model runs (on one tubelet: its positions are interpolated)
        features = encoder(torch.zeros(1, 3, 2, 16, 16))
    assert features.shape == (1, 1, 1024) and torch.isfinite(features).all()
