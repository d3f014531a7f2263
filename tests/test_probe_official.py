"""The attentive probe against the official one: an independent forward written from the official code's
math (facebookresearch/jepa and facebookresearch/vjepa2 `attentive_pooler.py` + `modules.py`), random
weights in the official state-dict layout, official checkpoint files, and our probe files."""

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa.checkpoint import CheckpointError
from vjepa.classify import ViewProtocol, load_probe, save_trained_probe
from vjepa.config import ProbeConfig, preset
from vjepa.models.probe import AttentiveClassifier

D, HEADS, CLASSES = 48, 3, 7


def official_layout(depth: int, variant: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official AttentiveClassifier(embed_dim=D, num_heads=HEADS, depth, num_classes)."""
    shapes = {"pooler.query_tokens": (1, 1, D)}

    def linear(prefix, out, inp):
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (out, inp), (out,)

    def norm(prefix):
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (D,), (D,)

    cross = "pooler.cross_attention_block"
    norm(f"{cross}.norm1")
    linear(f"{cross}.xattn.q", D, D)
    linear(f"{cross}.xattn.kv", 2 * D, D)
    if (
        variant == "vjepa1"
    ):  # jepa's CrossAttention builds proj (its forward skips it); vjepa2 comments it out
        linear(f"{cross}.xattn.proj", D, D)
    norm(f"{cross}.norm2")
    linear(f"{cross}.mlp.fc1", 4 * D, D)
    linear(f"{cross}.mlp.fc2", D, 4 * D)
    for i in range(depth - 1):
        block = f"pooler.blocks.{i}"
        norm(f"{block}.norm1")
        linear(f"{block}.attn.qkv", 3 * D, D)
        linear(f"{block}.attn.proj", D, D)
        norm(f"{block}.norm2")
        linear(f"{block}.mlp.fc1", 4 * D, D)
        linear(f"{block}.mlp.fc2", D, 4 * D)
    linear("linear", CLASSES, D)
    return shapes


def random_state(
    depth: int, variant: str, seed: int = 0, query_scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Random weights in the official layout: Linear weights ~ N(0, 1/fan_in), norms near 1, biases ~ 0.1."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(depth, variant).items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith("query_tokens"):
            state[key] = query_scale * noise
        elif ".norm" in key and key.endswith(".weight"):
            state[key] = 1.0 + 0.2 * noise
        elif key.endswith(".weight"):
            state[key] = noise / math.sqrt(shape[1])
        else:
            state[key] = 0.1 * noise
    return state


def reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor, variant: str) -> torch.Tensor:
    """The official forward, in float64 plain ops: tokens [B, L, D] -> logits [B, K]."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    head_dim = D // HEADS

    def linear(t, prefix):
        return t @ s[f"{prefix}.weight"].T + s[f"{prefix}.bias"]

    def layer_norm(t, prefix):  # nn.LayerNorm's default eps
        return F.layer_norm(t, (D,), s[f"{prefix}.weight"], s[f"{prefix}.bias"], eps=1e-5)

    def mlp(t, prefix):
        return linear(F.gelu(linear(t, f"{prefix}.fc1")), f"{prefix}.fc2")

    def heads(t):  # [B, n, D] -> [B, h, n, d]
        return t.reshape(t.shape[0], t.shape[1], HEADS, head_dim).transpose(1, 2)

    def attend(q, k, v):  # [B, h, n, d] x [B, h, L, d] -> [B, n, D]
        weights = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(dim=-1)
        return (weights @ v).transpose(1, 2).reshape(q.shape[0], q.shape[2], D)

    def self_block(t, prefix):  # modules.Block: pre-norm attention (with proj) and MLP
        qkv = linear(layer_norm(t, f"{prefix}.norm1"), f"{prefix}.attn.qkv")
        q, k, v = (heads(part) for part in qkv.chunk(3, dim=-1))
        t = t + linear(attend(q, k, v), f"{prefix}.attn.proj")
        return t + mlp(layer_norm(t, f"{prefix}.norm2"), f"{prefix}.mlp")

    def cross_block(q, tokens):  # modules.CrossAttentionBlock; CrossAttention returns before any proj
        prefix = "pooler.cross_attention_block"
        kv = linear(layer_norm(tokens, f"{prefix}.norm1"), f"{prefix}.xattn.kv")
        k, v = (heads(part) for part in kv.chunk(2, dim=-1))
        q = q + attend(heads(linear(q, f"{prefix}.xattn.q")), k, v)
        return q + mlp(layer_norm(q, f"{prefix}.norm2"), f"{prefix}.mlp")

    depth = 1 + len({k.split(".")[2] for k in s if k.startswith("pooler.blocks.")})
    if variant == "vjepa2":  # AttentivePooler.forward (vjepa2): blocks on the tokens first
        for i in range(depth - 1):
            x = self_block(x, f"pooler.blocks.{i}")
    query = s["pooler.query_tokens"].repeat(len(x), 1, 1)
    query = cross_block(query, x)
    if variant == "vjepa1":  # AttentivePooler.forward (jepa): blocks on the query after
        for i in range(depth - 1):
            query = self_block(query, f"pooler.blocks.{i}")
    return linear(query.squeeze(1), "linear")


def ours(state: dict[str, torch.Tensor], depth: int, variant: str) -> AttentiveClassifier:
    probe = AttentiveClassifier(D, HEADS, CLASSES, depth=depth, variant=variant)
    probe.load_state_dict(state, strict=True)
    return probe.eval()


CASES = [(1, "vjepa1"), (2, "vjepa1"), (1, "vjepa2"), (4, "vjepa2")]


@pytest.mark.parametrize("depth,variant", CASES)
def test_state_dict_keys_are_the_official_layout(depth, variant):
    ours_keys = {
        k: tuple(v.shape)
        for k, v in AttentiveClassifier(D, HEADS, CLASSES, depth, variant=variant).state_dict().items()
    }
    assert ours_keys == official_layout(depth, variant)


@pytest.mark.parametrize("scale", [1.0, 0.01])  # small tokens: the LayerNorm eps (1e-5, not 1e-6) matters
@pytest.mark.parametrize("depth,variant", CASES)
def test_logits_match_the_official_forward(depth, variant, scale):
    state = random_state(depth, variant, query_scale=scale)
    x = scale * torch.randn(3, 37, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = ours(state, depth, variant)(x)
    expected = reference_logits(state, x, variant)
    assert expected.abs().max() > 0.1  # non-trivial logits
    assert (logits.double() - expected).abs().max() < 1e-5


def test_vjepa1_output_projection_is_stored_but_not_applied():
    state = random_state(1, "vjepa1")
    x = torch.randn(2, 11, D)
    before = ours(state, 1, "vjepa1")(x)
    state["pooler.cross_attention_block.xattn.proj.weight"] = torch.randn(D, D)
    assert torch.equal(ours(state, 1, "vjepa1")(x), before)


def test_official_init():
    torch.manual_seed(0)
    wide = 96
    v2 = AttentiveClassifier(wide, 4, 5, depth=4, variant="vjepa2")
    v1 = AttentiveClassifier(wide, 4, 5, depth=2, variant="vjepa1")
    norms = [m for p in (v1, v2) for m in p.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    # residual projections / sqrt(2 * layer), layers numbered as each official version does
    std = lambda t: t.std().item()
    assert std(v2.pooler.cross_attention_block.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(6), rel=0.05)
    assert std(v2.pooler.blocks[0].attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2), rel=0.05)
    assert std(v2.pooler.blocks[2].mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(6), rel=0.05)
    assert std(v1.pooler.cross_attention_block.mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(2), rel=0.05)
    assert std(v1.pooler.blocks[0].mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(4), rel=0.05)
    # the head keeps nn.Linear's default init (the official classifier never re-initialises it)
    bound = 1 / math.sqrt(wide)
    assert v2.linear.bias.abs().max() > 0 and v2.linear.weight.abs().max() <= bound


# ---------------------------------------------------------------------------------------------
# files


def official_file(tmp_path, layout: str, states: list[dict[str, torch.Tensor]]):
    """An evaluation checkpoint as the official code saves it (DDP-wrapped probes)."""
    wrapped = [{f"module.{k}": v for k, v in state.items()} for state in states]
    if layout == "jepa":
        payload = {
            "classifier": wrapped[0],
            "opt": {},
            "scaler": None,
            "epoch": 20,
            "batch_size": 4,
            "world_size": 8,
            "lr": 1e-3,
        }
        path = tmp_path / "jepa-k400-probe.pth.tar"
    else:
        payload = {
            "classifiers": wrapped,
            "opt": [{} for _ in states],
            "scaler": None,
            "epoch": 20,
            "batch_size": 4,
            "world_size": 8,
        }
        path = tmp_path / "ssv2-vitl-16x2x3.pt"
    torch.save(payload, path)
    return path


def test_official_jepa_checkpoint_loads_strictly(tmp_path):
    state = random_state(1, "vjepa1")
    path = official_file(tmp_path, "jepa", [state])
    probe = load_probe(path, num_heads=HEADS)
    assert (probe.spec["variant"], probe.spec["depth"], probe.spec["num_classes"]) == ("vjepa1", 1, CLASSES)
    x = torch.randn(2, 19, D)
    assert (probe.module(x).double() - reference_logits(state, x, "vjepa1")).abs().max() < 1e-5
    assert probe.protocol.resize_ratio == pytest.approx(256 / 224)  # the official eval transform


def test_official_vjepa2_checkpoint_picks_its_head(tmp_path):
    states = [random_state(4, "vjepa2", seed=s) for s in (0, 1)]
    path = official_file(tmp_path, "vjepa2", states)
    probe = load_probe(path, num_heads=HEADS, head=1, class_names=[f"c{k}" for k in range(CLASSES)])
    assert (probe.spec["variant"], probe.spec["depth"]) == ("vjepa2", 4)
    x = torch.randn(2, 19, D)
    assert (probe.module(x).double() - reference_logits(states[1], x, "vjepa2")).abs().max() < 1e-5
    assert probe.predict_tokens(x).labels[0].startswith("c")
    with pytest.raises(CheckpointError, match="head=2 is out of range"):
        load_probe(path, num_heads=HEADS, head=2)


def test_mismatched_official_checkpoint_names_file_and_keys(tmp_path):
    state = random_state(1, "vjepa1")
    del state["pooler.cross_attention_block.mlp.fc1.bias"]
    state["pooler.cross_attention_block.extra"] = torch.zeros(3)
    path = official_file(tmp_path, "jepa", [state])
    with pytest.raises(CheckpointError) as err:
        load_probe(path, num_heads=HEADS)
    message = str(err.value)
    assert str(path) in message and "missing keys: pooler.cross_attention_block.mlp.fc1.bias" in message
    assert "unexpected keys: pooler.cross_attention_block.extra" in message
    torch.save({"encoder": {}}, tmp_path / "not_a_probe.pt")
    with pytest.raises(CheckpointError, match="not_a_probe.pt: no probe weights"):
        load_probe(tmp_path / "not_a_probe.pt")


@pytest.mark.parametrize("depth,variant", [(1, "vjepa1"), (4, "vjepa2")])
def test_probe_file_round_trip_gives_identical_logits(tmp_path, depth, variant):
    cfg = preset("debug")
    cfg.model.embed_dim = D
    module = ours(random_state(depth, variant), depth, variant)
    probe_cfg = ProbeConfig(
        task="label", depth=depth, variant=variant, num_segments=2, num_crops=3, attend_across_segments=True
    )
    names = [f"class {k}" for k in range(CLASSES)]
    path = save_trained_probe(
        tmp_path / "p.safetensors",
        module,
        probe_cfg,
        cfg,
        {"source": str(tmp_path / "gone.pt"), "which": "target_encoder"},
        names,
        HEADS,
    )
    loaded = load_probe(path)  # its encoder file is gone: a probe without encoder
    assert loaded.encoder is None and loaded.class_names == names
    assert loaded.protocol == ViewProtocol(
        frames_per_segment=cfg.data.num_frames,
        num_segments=2,
        num_crops=3,
        attend_across_segments=True,
        frame_step=1,
        crop_size=cfg.data.crop_size,
        resize_ratio=1.0,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        allow_clip_overlap=True,  # the evaluation's segments overlap where a video is short
    )
    x = torch.randn(4, 13, D)
    assert torch.equal(loaded.module(x), module(x))
    with pytest.raises(ValueError, match="pass encoder="):
        loaded.predict(torch.randn(1, 3, 4, 16, 16))
