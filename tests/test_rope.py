"""3D RoPE (V-JEPA 2): our attention against a reference written here from the official math.

The reference follows facebookresearch/vjepa2 `RoPEAttention` / `rotate_queries_or_keys` step by step
(positions split into frame/row/column ids, per-axis rotation with `.repeat`-tiled sin/cos, channels
past 3s unrotated), independently of `vjepa.models.rope`.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa.config import ConfigError, ModelConfig, apply_overrides, preset, validate
from vjepa.models.predictor import Predictor
from vjepa.models.rope import apply_rope, axis_dim, rope_table
from vjepa.models.vit import Attention, VisionTransformer, gather_tokens


def ref_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Official `rotate_queries_or_keys`: x [B, h, N, D], pos [N] or [B, h, N]."""
    d = x.shape[-1]
    omega = torch.arange(d // 2, dtype=x.dtype) / (d / 2.0)
    omega = 1.0 / 10000**omega
    freq = pos.to(x.dtype)[..., None] * omega  # [..., N, D/2]
    emb_sin, emb_cos = freq.sin(), freq.cos()
    reps = [1] * (freq.dim() - 1) + [2]
    emb_sin, emb_cos = emb_sin.repeat(*reps), emb_cos.repeat(*reps)  # tiled, as released
    y1, y2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    y = torch.stack((-y2, y1), dim=-1).flatten(-2)
    return x * emb_cos + y * emb_sin


def ref_rope_attention(attn: Attention, x: torch.Tensor, ids: torch.Tensor | None, grid) -> torch.Tensor:
    """Official `RoPEAttention.forward` with our module's weights; ids [B, N] (mask) or None (all)."""
    b, n, c = x.shape
    heads = attn.num_heads
    head_dim = c // heads
    qkv = attn.qkv(x).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    _, height, width = grid
    ids = torch.arange(n) if ids is None else ids.unsqueeze(1).repeat(1, heads, 1)
    frame = ids // (height * width)
    row = (ids - height * width * frame) // width
    col = ids - height * width * frame - width * row
    s = 2 * ((head_dim // 3) // 2)
    parts_q, parts_k = [], []
    for i, pos in enumerate((frame, row, col)):
        parts_q.append(ref_rotate(q[..., i * s:(i + 1) * s], pos))
        parts_k.append(ref_rotate(k[..., i * s:(i + 1) * s], pos))
    q = torch.cat(parts_q + [q[..., 3 * s:]], dim=-1)
    k = torch.cat(parts_k + [k[..., 3 * s:]], dim=-1)
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def test_axis_split_matches_official():
    assert axis_dim(64) == 20  # ViT-L/H: 20/20/20, 4 channels unrotated
    assert axis_dim(88) == 28  # ViT-g with 16 heads: 28 x 3, 4 unrotated
    assert axis_dim(32) == 10  # predictor 384/12


def test_frequencies_are_tiled_not_interleaved():
    """Head width 14: 4 channels per axis (frequencies 1 and 1/100), 2 unrotated. A unit vector on
    channel 0 at time 1 becomes (cos 1, sin 0.01, 0, ...): its pair partner uses the *other* frequency."""
    x = torch.zeros(1, 1, 1, 14, dtype=torch.float64)
    x[..., 0] = 1.0
    x[..., 12] = 0.5  # an unrotated channel
    grid = (4, 3, 3)
    idx = torch.tensor([9])  # frame 1, row 0, column 0
    out = apply_rope(x, rope_table(idx, grid, 14, torch.float64))[0, 0, 0]
    assert out[0].item() == pytest.approx(math.cos(1.0))
    assert out[1].item() == pytest.approx(math.sin(0.01))  # interleaved would give sin(1)
    assert out[12].item() == 0.5 and out[2:12].abs().max() == 0


@pytest.mark.parametrize("head_dim", [14, 16, 24])
def test_attention_matches_reference(head_dim):
    torch.manual_seed(0)
    heads = 2
    attn = Attention(head_dim * heads, heads)
    grid = (2, 3, 4)  # not square: the row length must be W'
    x = torch.randn(2, 24, head_dim * heads)
    ours = attn(x, rope=rope_table(torch.arange(24), grid, head_dim, x.dtype))
    assert torch.allclose(ours, ref_rope_attention(attn, x, None, grid), atol=1e-6)
    ids = torch.stack([torch.randperm(24)[:9], torch.randperm(24)[:9]])  # kept tokens, per sample
    kept = gather_tokens(x, ids)
    ours = attn(kept, rope=rope_table(ids, grid, head_dim, x.dtype))
    assert torch.allclose(ours, ref_rope_attention(attn, kept, ids, grid), atol=1e-6)


def ref_encoder(model: VisionTransformer, clip: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    grid = model.patch_embed.grid(*clip.shape[2:])
    x = model.patch_embed(clip)
    if ids is not None:
        x = gather_tokens(x, ids)
    for block in model.blocks:
        x = x + ref_rope_attention(block.attn, block.norm1(x), ids, grid)
        x = x + block.mlp(block.norm2(x))
    return model.norm(x)


def test_encoder_uses_the_inputs_grid():
    torch.manual_seed(0)
    model = VisionTransformer(ModelConfig(img_size=32, patch_size=8, num_frames=4, embed_dim=48, depth=2,
                                          num_heads=3, pos_embed="rope")).eval()
    assert "pos_embed" not in model.state_dict()
    clip = torch.randn(2, 3, 4, 32, 32)
    assert torch.allclose(model(clip), ref_encoder(model, clip, None), atol=1e-5)
    ids = torch.stack([torch.randperm(32)[:11], torch.randperm(32)[:11]])
    assert torch.allclose(model(clip, ids), ref_encoder(model, clip, ids), atol=1e-5)
    other = torch.randn(1, 3, 6, 24, 40)  # another clip size: grid (3, 3, 5), no interpolation table
    assert torch.allclose(model(other), ref_encoder(model, other, None), atol=1e-5)


def test_predictor_uses_the_training_grid():
    """The official predictor decomposes positions on its built grid, whatever the clip's grid."""
    torch.manual_seed(0)
    grid = (2, 4, 4)
    predictor = Predictor(grid, embed_dim=24, predictor_embed_dim=24, depth=1, num_heads=2,
                          pos_embed="rope").eval()
    predictor.mask_tokens[0].data.normal_()
    assert "predictor_pos_embed" not in predictor.state_dict()
    context_idx = torch.tensor([[0, 3, 5, 9, 17, 30]])
    target_idx = torch.tensor([[1, 2, 20, 31]])
    context = torch.randn(1, 6, 24)
    ours = predictor(context, context_idx, target_idx)
    x = torch.cat([predictor.predictor_embed(context), predictor.mask_tokens[0].expand(1, 4, -1)], dim=1)
    ids = torch.cat([context_idx, target_idx], dim=1)
    block = predictor.predictor_blocks[0]
    x = x + ref_rope_attention(block.attn, block.norm1(x), ids, grid)
    x = x + block.mlp(block.norm2(x))
    expected = predictor.predictor_proj(predictor.predictor_norm(x[:, 6:]))
    assert torch.allclose(ours, expected, atol=1e-5)
    # another clip grid changes nothing: positions are still read on the built 4x4 grid
    assert torch.allclose(predictor(context, context_idx, target_idx, grid=(2, 8, 2)), ours, atol=1e-6)
    # the full-grid (pad collation) layout: same predictions when context and targets partition the grid
    perm = torch.randperm(32)[None]
    context_idx, target_idx = perm[:, :12], perm[:, 12:]
    context = torch.randn(1, 12, 24)
    full = predictor(context, context_idx, target_idx, full_grid=True)
    assert torch.allclose(full, predictor(context, context_idx, target_idx), atol=1e-5)


def test_encoder_builds_on_meta_device():
    """ViT-g (V-JEPA 2 release: 1408 wide, 40 deep, 22 heads, MLP 48/11) without allocating memory."""
    with torch.device("meta"):
        model = VisionTransformer(ModelConfig(img_size=256, embed_dim=1408, depth=40, num_heads=22,
                                              mlp_ratio=48 / 11, drop_path=0.1, pos_embed="rope"))
    weights = list(model.parameters())
    assert all(w.device.type == "meta" for w in weights)
    assert model.blocks[0].mlp.fc1.weight.shape == (6144, 1408)
    assert sum(w.numel() for w in weights) == 1_012_173_952
    with torch.device("meta"):  # the sin-cos encoder too
        VisionTransformer(ModelConfig(embed_dim=1408, depth=2, num_heads=16, drop_path=0.1))


def test_rope_config_and_presets():
    cfg = apply_overrides(preset("debug"), ["model.pos_embed=rope"])
    assert validate(cfg).model.pos_embed == "rope"
    with pytest.raises(ConfigError, match="model.pos_embed"):
        validate(apply_overrides(preset("debug"), ["model.pos_embed=alibi"]))
    with pytest.raises(ConfigError, match="at least 6 wide"):
        validate(apply_overrides(preset("debug"), ["model.pos_embed=rope", "model.num_heads=16"]))
    v2 = preset("vitg16_v2").model
    assert (v2.embed_dim, v2.depth, v2.num_heads, v2.pos_embed, v2.img_size) == (1408, 40, 22, "rope", 256)
    assert int(v2.embed_dim * v2.mlp_ratio) == 6144 and v2.predictor_mlp_ratio == 4.0
    assert preset("vitl16_v2").model.predictor_num_heads == 12
    assert preset("vitg16_384_v2").data.crop_size == 384
