"""Encoder, predictor, position tables: shapes, official key names, padding invariance, gradients."""

import math

import pytest
import torch

from vjepa.config import ModelConfig
from vjepa.models.patch_embed import PatchEmbed3D
from vjepa.models.pos_embed import interpolate_3d, sincos_1d, sincos_3d
from vjepa.models.predictor import Predictor
from vjepa.models.vit import VisionTransformer

TINY = {"img_size": 32, "patch_size": 8, "num_frames": 4, "embed_dim": 48, "depth": 2, "num_heads": 3}


def tiny_encoder(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ModelConfig(**{**TINY, **kw}))


def test_sincos_1d_matches_formula():
    pos = torch.tensor([0.0, 3.0])
    table = sincos_1d(8, pos)
    omega = [1 / 10000 ** (i / 4) for i in range(4)]
    expected = [[math.sin(p * w) for w in omega] + [math.cos(p * w) for w in omega] for p in (0.0, 3.0)]
    assert torch.allclose(table, torch.tensor(expected, dtype=torch.float64))


def test_sincos_3d_layout_time_height_width():
    dim, size, depth = 20, 3, 2  # uniform power: 2*ceil(20/6) = 8 columns per axis, cut to 20
    table = sincos_3d(dim, size, depth).reshape(depth, size, size, dim)
    assert table.shape[-1] == dim
    # the first 8 columns depend on time only, the next 8 on height only, the rest on width only
    assert torch.allclose(table[:, :1, :1, :8].expand(depth, size, size, 8), table[..., :8])
    assert torch.allclose(table[:1, :, :1, 8:16].expand(depth, size, size, 8), table[..., 8:16])
    assert torch.allclose(table[:1, :1, :, 16:].expand(depth, size, size, 4), table[..., 16:])
    assert not torch.allclose(table[0, 0, 0], table[1, 0, 0])


def test_interpolation_identity_and_resize():
    table = sincos_3d(12, 4, 2)[None]
    assert torch.equal(interpolate_3d(table, (2, 4, 4), (2, 4, 4)), table)
    assert interpolate_3d(table, (2, 4, 4), (4, 6, 6)).shape == (1, 4 * 36, 12)


def test_patch_embed_equals_conv3d():
    embed = PatchEmbed3D(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=16)
    x = torch.randn(2, 3, 4, 8, 8)
    reference = embed.proj(x).flatten(2).transpose(1, 2)
    assert torch.allclose(embed(x), reference, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        embed(torch.randn(1, 3, 3, 8, 8))


def test_encoder_shapes_and_keep_idx():
    enc = tiny_encoder()
    x = torch.randn(2, 3, 4, 32, 32)
    assert enc(x).shape == (2, 2 * 4 * 4, 48)
    keep = torch.tensor([[0, 3, 5], [1, 2, 31]])
    assert enc(x, keep).shape == (2, 3, 48)


def test_encoder_other_clip_size_interpolates_positions():
    enc = tiny_encoder()
    assert enc(torch.randn(1, 3, 8, 48, 48)).shape == (1, 4 * 6 * 6, 48)


def test_official_state_dict_keys():
    enc = tiny_encoder()
    keys = set(enc.state_dict())
    for k in ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias",
              "blocks.1.norm1.weight", "blocks.1.attn.qkv.weight", "blocks.1.attn.qkv.bias",
              "blocks.1.attn.proj.weight", "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.bias"]:
        assert k in keys, k
    pred = Predictor((2, 4, 4), 48, 24, depth=2, num_heads=3, num_mask_tokens=2)
    pkeys = set(pred.state_dict())
    for k in ["predictor_embed.weight", "mask_tokens.0", "mask_tokens.1", "predictor_pos_embed",
              "predictor_blocks.1.attn.qkv.weight", "predictor_norm.weight", "predictor_proj.bias"]:
        assert k in pkeys, k
    assert all(torch.count_nonzero(t) == 0 for t in pred.mask_tokens)  # zero-initialised


def test_residual_rescaling():
    a, b = tiny_encoder(rescale_residual=True), tiny_encoder(rescale_residual=False)
    w_a, w_b = a.blocks[1].attn.proj.weight, b.blocks[1].attn.proj.weight
    assert torch.allclose(w_a, w_b / math.sqrt(4.0))
    assert torch.allclose(a.blocks[0].mlp.fc2.weight, b.blocks[0].mlp.fc2.weight / math.sqrt(2.0))


def test_padding_slots_do_not_change_real_tokens():
    enc = tiny_encoder().eval()
    x = torch.randn(1, 3, 4, 32, 32)
    real = torch.tensor([[2, 7, 9, 20]])
    padded = torch.tensor([[2, 7, 9, 20, 20, 20]])
    valid = torch.tensor([[True, True, True, True, False, False]])
    out_real = enc(x, real)
    out_pad = enc(x, padded, valid)
    assert torch.allclose(out_pad[:, :4], out_real, atol=1e-5)
    unmasked = enc(x, padded)  # without the valid flags the duplicates would be attended to
    assert not torch.allclose(unmasked[:, :4], out_real, atol=1e-5)


def test_predictor_padding_and_per_sample_mask_token():
    torch.manual_seed(0)
    pred = Predictor((2, 4, 4), 48, 24, depth=2, num_heads=3, num_mask_tokens=2)
    torch.nn.init.normal_(pred.mask_tokens[1])
    ctx = torch.randn(1, 3, 48)
    ctx_idx, tgt_idx = torch.tensor([[0, 1, 2]]), torch.tensor([[5, 6]])
    out = pred(ctx, ctx_idx, tgt_idx, 1)
    tgt_pad = torch.tensor([[5, 6, 6]])
    out_pad = pred(ctx, ctx_idx, tgt_pad, 1, target_valid=torch.tensor([[True, True, False]]))
    assert torch.allclose(out_pad[:, :2], out, atol=1e-5)
    per_sample = pred(ctx, ctx_idx, tgt_idx, torch.tensor([1]))
    assert torch.allclose(per_sample, out, atol=1e-6)
    assert not torch.allclose(pred(ctx, ctx_idx, tgt_idx, 0), out)


def test_build_encoder_and_token_grid_follow_the_configured_clip():
    """One factory: the encoder is built for data.num_frames x data.crop_size^2, and token_grid(cfg)
    is the grid a clip of that size is cut into (the grid masks and the predictor are built for)."""
    from vjepa.config import apply_overrides, preset
    from vjepa.models.factory import build_encoder, token_grid

    cfg = apply_overrides(preset("debug"), ["data.num_frames=6", "data.crop_size=48", "model.freeze_patch_embed=true"])
    encoder = build_encoder(cfg)
    clip = torch.zeros(1, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    assert token_grid(cfg) == encoder.grid == encoder.patch_embed.grid(*clip.shape[2:])
    assert encoder(clip).shape[1] == math.prod(token_grid(cfg)) and encoder.pos_embed.shape[1] == math.prod(token_grid(cfg))
    assert not any(p.requires_grad for p in encoder.patch_embed.parameters())
    assert all(p.requires_grad for p in encoder.blocks.parameters())


@pytest.mark.parametrize("frames, size", [(16, 224), (8, 32)])
def test_every_token_grid_is_clip_grid(frames, size):
    """token_grid(cfg), the encoder's built grid, PatchEmbed3D.grid and Encoder.grid() all come from
    patch_embed.clip_grid, so they agree for the paper's 16x224 clip and a tiny 8x32 one."""
    from vjepa.config import apply_overrides, preset
    from vjepa.encoder import Encoder
    from vjepa.models.factory import build_encoder, token_grid
    from vjepa.models.patch_embed import clip_grid

    cfg = apply_overrides(preset("debug"), [f"data.num_frames={frames}", f"data.crop_size={size}",
                                            "model.patch_size=16", "model.tubelet_size=2"])
    model = build_encoder(cfg)
    expected = (frames // 2, size // 16, size // 16)
    assert clip_grid(frames, size, size, 2, 16) == expected
    assert token_grid(cfg) == model.grid == model.patch_embed.grid(frames, size, size) == expected
    assert Encoder(model, cfg).grid() == expected and Encoder(model, cfg).grid(4) == (2, size // 16, size // 16)
