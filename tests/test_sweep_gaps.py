"""Gaps a `mutmut` sweep of jepa.py and masks/ found: mutants no test noticed (docs/testing.md).

Each test names the mutant it kills. Models are seeded and tiny (the debug preset).
"""

import dataclasses

import pytest
import torch

from jepa_utils import sharpen
from vjepa.config import MaskConfig, OptimConfig, preset
from vjepa.jepa import (
    JEPA,
    StepOptions,
    ema_momentum,
    learning_rate,
    pixel_targets,
    prediction_loss,
    sample_losses,
    schedule_length,
    variance_penalty,
    weight_decay,
)
from vjepa.masks import MaskBatch, num_generators, target_masks
from vjepa.masks.collate import mask_to_indices
from vjepa.masks.step import masks_for_step
from vjepa.models.factory import token_grid
from vjepa.models.vit import gather_tokens


def sharpened_model(seed: int = 0, **objective):
    """A debug JEPA whose attention matters: at init attention barely moves the features, so a
    padding slot that is attended to would hide below any tolerance. Mask tokens are non-zero."""
    cfg = preset("debug")
    cfg.run.dtype = "fp32"
    cfg.objective = dataclasses.replace(cfg.objective, **objective)  # a misspelled key is a TypeError
    torch.manual_seed(seed)
    model = JEPA(cfg, 2).eval()
    sharpen(model)
    return cfg, model


def clip(cfg, b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, generator=g)


def padded_masks(cfg, model, b: int, step: int = 3):
    grid = token_grid(cfg)
    masks = masks_for_step(cfg, grid, b, step=step)
    assert all(m.context_valid is not None and m.target_valid is not None for m in masks)
    return grid, masks


def row(m: MaskBatch, i: int) -> MaskBatch:
    """Sample i of a padded MaskBatch, padding removed."""
    return MaskBatch(m.context_idx[i:i + 1, m.context_valid[i]], m.target_idx[i:i + 1, m.target_valid[i]])


# ---------------------------------------------------------------------------------------------
# losses


def test_loss_of_non_zero_predictions_by_hand():
    """Mutants: |pred + target| for |pred - target|; prediction_loss defaulting to L2."""
    pred = torch.tensor([[[1.0, 2.0], [0.5, 0.5]]])
    target = torch.tensor([[[2.0, 0.0], [0.5, 1.5]]])
    # |diff| = [[1, 2], [0, 1]]: token means 1.5 and 0.5
    assert sample_losses(pred, target, None).tolist() == [1.0]
    assert prediction_loss(pred, target, None).item() == pytest.approx(1.0)  # default exponent: L1
    assert prediction_loss(pred, target, None, 2.0).item() == pytest.approx((2.5 + 0.5) / 2)


LAYOUTS = {  # the three ways JEPA.forward lays a pad-collated step out
    "packed": StepOptions(),
    "batched": StepOptions(pack=False),
    "per_generator": StepOptions(pack=False, batch_generators=False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_model_loss_uses_the_configured_exponent_and_regulariser(layout):
    """Mutants: forward drops `loss_exp`; reg_coeff ignored, subtracted or scaled; the variance
    penalty of the wrong tensor. The loss is rebuilt by hand from the model's own predictions."""
    cfg, model = sharpened_model(loss_exp=2.0, reg_coeff=0.5)
    model.set_options(LAYOUTS[layout])
    video = clip(cfg)
    grid, masks = padded_masks(cfg, model, video.shape[0])
    with torch.no_grad():
        out = model(video, masks)
        targets = model.targets(video)
        losses, penalties = [], []
        for g, (context, m) in enumerate(zip(model.contexts(video, masks), masks)):
            pred = model.predictor(context, m.context_idx, m.target_idx, g, m.context_valid, m.target_valid, grid)
            diff = (pred - gather_tokens(targets, m.target_idx)).pow(2).mean(-1)  # [B, Kt]
            w = m.target_valid.float()
            losses.append(((diff * w).sum(1) / w.sum(1)).mean())
            penalties.append(variance_penalty(pred, m.target_valid))
    assert torch.allclose(out["generator_losses"], torch.stack(losses), atol=1e-5)
    expected = torch.stack(losses).mean() + 0.5 * torch.stack(penalties).mean()
    assert torch.stack(penalties).mean() > 1e-3  # the regulariser contributes
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_truncate_collation_never_takes_the_batched_full_grid_pass():
    """Mutant: `BATCH_GENERATORS or full_grid`: truncated masks do not partition the grid, so the
    grid-ordered batched pass would be wrong for them."""
    cfg, model = sharpened_model()
    cfg.mask.collate = "truncate"
    model.full_grid = False
    video = clip(cfg)
    grid = model.encoder.patch_embed.grid(*video.shape[2:])
    masks = masks_for_step(cfg, grid, video.shape[0], step=3)
    with torch.no_grad():
        batched = model(video, masks)["generator_losses"]
        model.set_options(StepOptions(batch_generators=False))
        per_generator = model(video, masks)["generator_losses"]
    assert torch.allclose(batched, per_generator, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# padding: every padded path equals the same sample without padding


@pytest.mark.parametrize("reembed", [False, True])
def test_padded_contexts_equal_each_sample_alone(reembed):
    """Mutants: the context encoder (either structure) drops `context_valid`."""
    cfg, model = sharpened_model()
    model.set_options(StepOptions(reembed_per_generator=reembed))
    video = clip(cfg)
    _, masks = padded_masks(cfg, model, video.shape[0])
    with torch.no_grad():
        contexts = model.contexts(video, masks)
        for g, m in enumerate(masks):
            for i in range(video.shape[0]):
                alone = model.contexts(video[i:i + 1], [row(m, i)])[0]
                assert torch.allclose(contexts[g][i, m.context_valid[i]], alone[0], atol=1e-4), (g, i)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_padded_predictions_equal_each_sample_alone(layout):
    """Mutants: the per-generator predictor call drops `context_valid` or `target_valid`."""
    cfg, model = sharpened_model()
    model.set_options(LAYOUTS[layout])
    video = clip(cfg)
    _, masks = padded_masks(cfg, model, video.shape[0])
    with torch.no_grad():
        whole = model(video, masks)["generator_losses"]
        alone = torch.stack([model(video[i:i + 1], [row(m, i) for m in masks])["generator_losses"]
                             for i in range(video.shape[0])])
    assert torch.allclose(whole, alone.mean(0), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# targets and masks


def test_pixel_targets_have_unit_unbiased_std_per_tubelet():
    """Mutants: biased variance, multiplying by the std instead of dividing, a wrong epsilon."""
    torch.manual_seed(0)
    video = torch.rand(2, 3, 4, 16, 16) * 7 + 3
    t = pixel_targets(video, 2, 8)  # [B, N, 3*2*8*8]
    assert torch.allclose(t.std(dim=-1, unbiased=True), torch.ones(t.shape[:2]), atol=1e-4)
    assert torch.allclose(t.mean(dim=-1), torch.zeros(t.shape[:2]), atol=1e-5)


def test_mask_batch_to_keeps_every_field():
    """Mutant: `MaskBatch.to` drops the valid flags."""
    m = MaskBatch(torch.tensor([[0, 1]]), torch.tensor([[2, 2]]), torch.tensor([[True, True]]),
                  torch.tensor([[True, False]]))
    moved = m.to("cpu")
    for name in ("context_idx", "target_idx", "context_valid", "target_valid"):
        assert torch.equal(getattr(moved, name), getattr(m, name)), name


def test_an_empty_mask_row_is_refused():
    """Mutant: the empty-row check removed (a sample with no token would index garbage)."""
    mask = torch.tensor([[True, False, True], [False, False, False]])
    with pytest.raises(ValueError, match="at least one token"):
        mask_to_indices(mask)


def test_tube_masks_are_a_pure_function_of_the_generator_and_work_for_one_clip():
    """Mutants: the tube sampler draws from the global RNG; batch size 1 refused; tube counts two
    generators."""
    cfg = MaskConfig(kind="tube")
    assert num_generators(cfg) == 1
    grid = (4, 4, 4)
    a = target_masks(cfg, grid, 3, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    b = target_masks(cfg, grid, 3, torch.Generator().manual_seed(5))
    c = target_masks(cfg, grid, 3, torch.Generator().manual_seed(6))
    assert len(a) == 1 and torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    one = target_masks(MaskConfig(), grid, 1, torch.Generator().manual_seed(0))  # multiblock, B = 1
    assert len(one) == 2 and all(m.shape == (1, 64) for m in one)


def test_schedules_midway_and_past_their_end():
    """Mutants: warmup arithmetic (sign, `*` for `/`, `lr + start_lr`), `step * length` for
    `step / length`, schedules not clamped past their end, a 2-step minimum schedule length."""
    o = OptimConfig(steps=1000, warmup_steps=100, schedule_scale=1.0, start_lr=1e-4, lr=5e-4, final_lr=1e-6,
                    weight_decay=0.04, final_weight_decay=0.4, ema=(0.998, 1.0))
    assert learning_rate(25, o) == pytest.approx(1e-4 + 0.25 * 4e-4)
    assert learning_rate(50, o) == pytest.approx(1e-4 + 0.5 * 4e-4)
    assert learning_rate(3000, o) == pytest.approx(o.final_lr)  # clamped past the end
    assert weight_decay(500, o) == pytest.approx(0.22)  # cosine midpoint
    assert weight_decay(3000, o) == pytest.approx(0.4)
    assert ema_momentum(500, o) == pytest.approx(0.999)
    assert ema_momentum(3000, o) == pytest.approx(1.0)
    assert schedule_length(OptimConfig(steps=1, schedule_scale=1.0)) == 1


def test_variance_penalty_with_padding_equals_each_sample_alone():
    """Mutants in the padded branch of the variance regulariser: `* count` for `/ count`, `** 3`,
    `count + 1`, `count - 2`, `pred + mean`. Padding slots hold huge values that must not count."""
    torch.manual_seed(0)
    pred = torch.randn(2, 6, 4) * 0.5 + 0.3
    valid = torch.tensor([[True, True, True, True, False, False], [True] * 6])
    pred[0, 4:] = 100.0
    got = variance_penalty(pred, valid)
    per_sample = [torch.relu(1 - (pred[i, valid[i]].var(dim=0) + 1e-4).sqrt()) for i in range(2)]  # [D] each
    assert got.item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-5)
    assert got.item() > 0.1  # the penalty is active here (std below 1)
