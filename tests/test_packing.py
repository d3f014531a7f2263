"""Packed variable-length contexts: the same losses and gradients as the padded paths, valid tokens only."""

import pytest
import torch

from jepa_utils import sharpen
from vjepa.config import preset
from vjepa.jepa import JEPA, StepOptions
from vjepa.masks import MaskBatch, pack_masks
from vjepa.masks.collate import mask_to_indices
from vjepa.masks.step import masks_for_step
from vjepa.models.vit import Kernels, Segments, attention_core, round_up

PADDED = StepOptions(pack=False)  # contexts padded to the batch's longest row, batched predictor


def sharpened(pos_embed: str, reg_coeff: float = 0.0, seed: int = 0):
    """A debug JEPA (fp32) whose attention matters: attending to a padding slot, or across rows of
    a packed sequence, moves the loss well beyond float tolerance. Mask tokens are non-zero."""
    cfg = preset("debug")
    cfg.run.dtype, cfg.model.pos_embed, cfg.objective.reg_coeff = "fp32", pos_embed, reg_coeff
    torch.manual_seed(seed)
    model = JEPA(cfg, 2)
    sharpen(model)
    return cfg, model


def batch(cfg, model, b: int = 4, step: int = 3):
    g = torch.Generator().manual_seed(1)
    video = torch.randn(b, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, generator=g)
    grid = model.encoder.patch_embed.grid(*video.shape[2:])
    masks = masks_for_step(cfg, grid, b, step=step)
    assert any(m.context_valid is not None for m in masks)  # rows of unequal length: padding exercised
    return video, masks


def loss_and_grads(model, video, masks):
    model.zero_grad(set_to_none=True)
    out = model(video, masks)
    out["loss"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
@pytest.mark.parametrize("reg_coeff", [0.0, 0.3])
def test_packed_and_padded_paths_give_the_same_losses_and_gradients(pos_embed, reg_coeff):
    cfg, model = sharpened(pos_embed, reg_coeff)
    video, masks = batch(cfg, model)
    assert model.options.pack  # the default
    packed, packed_grads = loss_and_grads(model, video, masks)
    for options in (PADDED, StepOptions(pack=False, batch_generators=False)):
        model.set_options(options)
        padded, padded_grads = loss_and_grads(model, video, masks)
        assert torch.allclose(packed["generator_losses"], padded["generator_losses"], rtol=1e-5, atol=1e-6)
        assert torch.allclose(packed["loss"], padded["loss"], rtol=1e-5, atol=1e-6)
        assert packed_grads.keys() == padded_grads.keys()
        for name, grad in packed_grads.items():
            assert torch.allclose(grad, padded_grads[name], rtol=1e-4, atol=1e-6), name
    if reg_coeff:
        assert packed["loss"] > packed["prediction_loss"] + 1e-3  # the penalty contributes


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_packed_rows_do_not_attend_to_each_other(pos_embed):
    """Each sample's loss from the packed batch equals that sample run alone (no cross-row leak)."""
    cfg, model = sharpened(pos_embed)
    video, masks = batch(cfg, model, b=3)
    with torch.no_grad():
        whole = model(video, masks)["generator_losses"]
        alone = []
        for i in range(3):
            rows = [MaskBatch(row(m.context_idx, m.context_valid, i), row(m.target_idx, m.target_valid, i))
                    for m in masks]
            alone.append(model(video[i:i + 1], rows)["generator_losses"])
    assert torch.allclose(whole, torch.stack(alone).mean(0), rtol=1e-5, atol=1e-6)


def row(idx, valid, i):
    """Sample i's valid indices as a [1, K] batch."""
    return idx[i:i + 1] if valid is None else idx[i:i + 1, valid[i]]


def test_pack_masks_keeps_exactly_the_valid_tokens_in_row_order():
    idx = torch.tensor([[1, 4, 6, 6], [0, 2, 3, 5]])
    valid = torch.tensor([[True, True, True, False], [True] * 4])
    target = torch.tensor([[0, 2, 3, 5, 7], [1, 4, 6, 7, 7]])
    target_valid = torch.tensor([[True] * 5, [True, True, True, True, False]])
    packed = pack_masks([MaskBatch(idx, target, valid, target_valid), MaskBatch(idx[:, :2], target[:, :2])], 8)
    assert packed.context.lengths == [3, 4, 2, 2]
    assert packed.context.idx.tolist() == [1, 4, 6, 0, 2, 3, 5, 1, 4, 0, 2]
    assert packed.context.rows.tolist() == [0] * 3 + [1] * 4 + [2] * 2 + [3] * 2
    assert packed.context.source.tolist()[3:5] == [8 + 0, 8 + 2]  # sample 1 of the clip batch
    assert packed.context.slot.tolist()[7:9] == [2 * 8 + 1, 2 * 8 + 4]  # row 2 = generator 1, sample 0
    assert packed.target.lengths == [5, 4, 2, 2]
    assert packed.mask_index.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("kind", ["loop", "padded", "nested"])
def test_segment_attention_kernels_equal_each_row_alone(kind):
    torch.manual_seed(0)
    lengths = [5, 9, 3, 12]
    q, k, v = (torch.randn(1, 2, sum(lengths), 8) for _ in range(3))
    kernels = Kernels(packed_attention=kind)
    out = Segments(lengths).attend(q, k, v, kernels)
    expected = torch.cat([attention_core(*(x.split(lengths, 2)[r] for x in (q, k, v)), None, kernels)
                          for r in range(len(lengths))], dim=2)
    assert out.shape == q.shape
    assert torch.allclose(out, expected, atol=1e-5)


def test_padded_lengths_are_multiples_of_8():
    """Issue 25 item 1: where rows are padded, lengths are rounded up to a multiple of 8 (an SDPA
    attention bias under inductor must be aligned to 8), with the extra slots marked invalid."""
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[0, :21], mask[1, :13], mask[2, 5:9] = True, True, True
    idx, valid = mask_to_indices(mask, "pad")
    assert idx.shape[1] == 24 == round_up(21) and valid.sum(1).tolist() == [21, 13, 4]
    assert idx[0, 21:].tolist() == [20, 20, 20]  # padding repeats the row's last index
    even = torch.zeros(2, 64, dtype=torch.bool)
    even[:, :21] = True
    idx, valid = mask_to_indices(even, "pad")
    assert idx.shape[1] == 21 and valid is None  # nothing padded, so no attention mask to align


def test_compiled_runs_keep_the_padded_layout():
    """Packed rows change length every step, which would re-trace compiled blocks."""
    cfg = preset("debug")
    assert JEPA(cfg, 2).options.pack
    cfg.run.compile = True
    assert not JEPA(cfg, 2).options.pack and JEPA(cfg, 2).options.batch_generators


def token_grads(model, video, masks):
    _, grads = loss_and_grads(model, video, masks)
    zero = torch.zeros(1)
    return [grads.get(f"predictor.mask_tokens.{i}", zero).abs().sum().item() for i in range(2)]


@pytest.mark.parametrize("options", [StepOptions(), PADDED, StepOptions(pack=False, batch_generators=False)])
def test_predictor_mask_token_follows_the_generator_or_the_clip_length(options):
    """generator: each generator trains its own token; clip_length (V-JEPA 2, one clip length):
    every generator uses token 0 and token 1 gets no gradient, in every step layout."""
    cfg, model = sharpened("rope")
    model.set_options(options)
    video, masks = batch(cfg, model)
    assert all(g > 0 for g in token_grads(model, video, masks))
    model.mask_token_by = "clip_length"
    first, second = token_grads(model, video, masks)
    assert first > 0 and second == 0
    assert preset("vitl16_v2").model.predictor_mask_token == "clip_length"
