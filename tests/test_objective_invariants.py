"""Invariants of the V-JEPA objective that one-line bugs break (see benchmarks/mutation_check.py).

Each test names the bug it guards against. All models are seeded and tiny (the debug preset).
"""

import pytest
import torch
import torch.nn.functional as F

from vjepa.config import preset
from vjepa.jepa import JEPA, StepOptions, official_options, prediction_loss, sample_losses
from vjepa.masks import MaskBatch
from vjepa.masks.step import masks_for_step
from vjepa.models.factory import build_encoder, token_grid
from vjepa.models.vit import gather_tokens


def tiny_model(seed: int = 0, **model_overrides):
    cfg = preset("debug")
    for key, value in model_overrides.items():
        setattr(cfg.model, key, value)
    torch.manual_seed(seed)
    model = JEPA(cfg, 2)
    with torch.no_grad():  # distinct, non-zero mask tokens: zero tokens hide where they are added
        for token in model.predictor.mask_tokens:
            token.normal_()
    return cfg, model.eval()


def clip(cfg, b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, generator=g)


def test_batched_predictor_pass_equals_one_pass_per_generator():
    """Bugs: mask tokens at context positions, one mask token for every generator (batched pass)."""
    cfg, model = tiny_model()
    video = clip(cfg)
    grid = model.encoder.patch_embed.grid(*video.shape[2:])
    masks = masks_for_step(cfg, grid, video.shape[0], step=3)
    assert any(m.target_valid is not None for m in masks)  # rows of unequal length: padding is exercised
    with torch.no_grad():
        contexts = model.contexts(video, masks)
        pred, _, valid = model.predict_batched(contexts, masks, grid)  # [G*B, Kt, D]
        b = video.shape[0]
        for g, (context, m) in enumerate(zip(contexts, masks)):
            alone = model.predictor(context, m.context_idx, m.target_idx, g, m.context_valid, m.target_valid, grid)
            rows = pred[g * b:(g + 1) * b, : alone.shape[1]]
            keep = valid[g * b:(g + 1) * b, : alone.shape[1]]
            assert torch.allclose(rows[keep], alone[keep], atol=1e-5), g
        model.set_options(StepOptions(pack=False))  # contexts padded, one batched predictor pass
        batched = model(video, masks)
        model.set_options(StepOptions(pack=False, batch_generators=False))
        per_generator = model(video, masks)
        model.set_options(StepOptions())  # packed contexts (the default)
        packed = model(video, masks)
        model.set_options(official_options())  # the official structure (SDPA, Conv3d, re-embedding)
        official = model(video, masks)
    assert torch.allclose(batched["generator_losses"], per_generator["generator_losses"], atol=1e-5)
    assert torch.allclose(official["generator_losses"], per_generator["generator_losses"], atol=1e-5)
    assert torch.allclose(packed["generator_losses"], per_generator["generator_losses"], atol=1e-5)
    # the two generators' mask tokens differ, and the predictions show it
    swapped = model.predictor(contexts[0], masks[0].context_idx, masks[0].target_idx, 1,
                              masks[0].context_valid, masks[0].target_valid, grid)
    first = model.predictor(contexts[0], masks[0].context_idx, masks[0].target_idx, 0,
                            masks[0].context_valid, masks[0].target_valid, grid)
    assert (swapped - first).abs().max() > 1e-2


@pytest.mark.parametrize("full_grid", [False, True])
def test_predictor_predictions_depend_on_the_target_position(full_grid):
    """Bug: the predictor loses its positional embedding (every target slot then gets the same query)."""
    cfg, model = tiny_model()
    n = token_grid(cfg)
    n = n[0] * n[1] * n[2]
    context_idx = torch.arange(0, n // 2)[None]
    target_idx = torch.arange(n // 2, n)[None]
    context = torch.randn(1, n // 2, cfg.model.embed_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = model.predictor(context, context_idx, target_idx, 0, full_grid=full_grid)  # [1, Kt, D]
    spread = (pred - pred.mean(dim=1, keepdim=True)).abs().max()
    assert spread > 1e-2


def test_context_features_never_see_target_pixels():
    """Bug: the context encoder runs its blocks over the whole clip and then keeps the context tokens.

    Tokens are ordered (t, h, w): with the first half of the grid as context, frames past the middle
    belong to target tokens only, and changing them must leave every context feature unchanged.
    """
    cfg, model = tiny_model()
    video = clip(cfg, b=2)
    grid = model.encoder.patch_embed.grid(*video.shape[2:])
    n = grid[0] * grid[1] * grid[2]
    half = torch.arange(n).expand(2, n)
    masks = [MaskBatch(half[:, : n // 2], half[:, n // 2:])]
    changed = video.clone()
    changed[:, :, cfg.data.num_frames // 2:] = torch.randn_like(changed[:, :, cfg.data.num_frames // 2:]) * 3
    with torch.no_grad():
        before = model.contexts(video, masks)[0]
        after = model.contexts(changed, masks)[0]
        whole_before = model.encoder(video)  # the full-clip encoder does see them (the test can tell)
        whole_after = model.encoder(changed)
    assert torch.allclose(before, after, atol=1e-6)
    assert (gather_tokens(whole_before - whole_after, masks[0].context_idx)).abs().max() > 1e-2


def test_targets_are_layer_normed_even_with_a_non_identity_final_norm():
    """Bug: targets skip the LayerNorm. At init the encoder's final LayerNorm already gives each token
    zero mean and unit std, so the test gives that norm a scale and a shift the targets must drop."""
    cfg, model = tiny_model()
    with torch.no_grad():
        model.target_encoder.norm.weight.uniform_(2.0, 4.0)
        model.target_encoder.norm.bias.uniform_(0.5, 1.5)
        video = clip(cfg, b=2)
        raw = model.target_encoder(video)
        targets = model.targets(video)
    assert raw.mean(dim=-1).abs().min() > 0.3  # the raw outputs are visibly not normalised
    assert torch.allclose(targets, F.layer_norm(raw, raw.shape[-1:]), atol=1e-5)
    assert torch.allclose(targets.mean(dim=-1), torch.zeros(targets.shape[:2]), atol=1e-5)
    assert torch.allclose(targets.std(dim=-1, unbiased=False), torch.ones(targets.shape[:2]), atol=1e-3)


def test_loss_weighs_every_sample_equally_whatever_its_valid_count():
    """Bug: the loss is a mean over the batch's valid tokens (long rows weigh more), not over samples.

    Sample 0 has two valid tokens with errors 1 and 3 (mean 2); sample 1 one valid token with error 6
    (mean 6); padding slots carry errors that must be ignored. Per sample: (2 + 6) / 2 = 4; per
    token it would be (1 + 3 + 6) / 3 = 3.33.
    """
    pred = torch.zeros(2, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [50.0, 50.0]],
                           [[6.0, 6.0], [70.0, 70.0], [80.0, 80.0]]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    assert sample_losses(pred, target, valid).tolist() == [2.0, 6.0]
    assert prediction_loss(pred, target, valid, 1.0).item() == pytest.approx(4.0)
    # L2: sample 0 (1 + 9) / 2 = 5, sample 1 36: mean 20.5
    assert prediction_loss(pred, target, valid, 2.0).item() == pytest.approx(20.5)


def test_jepa_loss_is_the_mean_of_per_sample_losses():
    """The same property through the model: the batch loss equals the mean of the one-clip losses."""
    cfg, model = tiny_model()
    video = clip(cfg, b=3)
    grid = model.encoder.patch_embed.grid(*video.shape[2:])
    masks = masks_for_step(cfg, grid, 3, step=1)
    with torch.no_grad():
        whole = model(video, masks)["generator_losses"]
        rows = []
        for i in range(3):
            one = []
            for m in masks:
                keep = slice(None) if m.target_valid is None else m.target_valid[i]
                ckeep = slice(None) if m.context_valid is None else m.context_valid[i]
                one.append(MaskBatch(m.context_idx[i:i + 1, ckeep], m.target_idx[i:i + 1, keep]))
            rows.append(model(video[i:i + 1], one)["generator_losses"])
    assert torch.allclose(whole, torch.stack(rows).mean(dim=0), atol=1e-5)


def test_padding_slots_are_ignored_under_cpu_bf16_autocast():
    """Bug: CPU bf16 attention (its own code path) ignores the padding mask.

    Two clips keep 20 and 32 tokens; clip 0's row is padded to 32 with real (other) tokens marked
    invalid. Its features must match those of clip 0 encoded alone, under bf16 autocast as training
    runs on a CPU.
    """
    cfg = preset("debug")
    torch.manual_seed(0)
    encoder = build_encoder(cfg).eval()
    with torch.no_grad():  # at init attention barely moves features; make it matter (a leak then shows)
        for block in encoder.blocks:
            block.attn.proj.weight.mul_(10)
            block.attn.qkv.weight.mul_(3)
    video = clip(cfg, b=2)
    short, long_ = torch.arange(0, 40, 2), torch.arange(32)
    padding = torch.arange(1, 24, 2)  # 12 other tokens in the padding slots: attending to them would show
    keep = torch.stack([torch.cat([short, padding]), long_])  # [2, 32]
    valid = torch.stack([torch.arange(32) < 20, torch.ones(32, dtype=torch.bool)])
    with torch.no_grad():
        fp32 = encoder(video[:1], short[None])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            padded = encoder(video, keep, valid).float()
            alone0 = encoder(video[:1], short[None]).float()
            alone1 = encoder(video[1:], long_[None]).float()
            unmasked = encoder(video, keep).float()  # what ignoring the mask would give
    assert (alone0 - fp32).abs().max() > 1e-3  # bf16 really ran (its rounding shows)
    tol = 1e-2  # measured: 0 (the rows are computed alike); bf16 rounding of features is ~1e-2
    assert (padded[0, :20] - alone0[0]).abs().max() < tol
    assert (padded[1] - alone1[0]).abs().max() < tol
    assert (unmasked[0, :20] - alone0[0]).abs().max() > 10 * tol  # the test can see a leak (measured 0.33)


def test_drop_path_is_off_in_eval_mode():
    """Bug: stochastic depth keeps dropping branches in eval mode (features would be random)."""
    cfg = preset("debug")
    cfg.model.drop_path = 0.5
    torch.manual_seed(0)
    encoder = build_encoder(cfg)
    video = clip(cfg, b=4)
    with torch.no_grad():
        encoder.eval()
        first, second = encoder(video), encoder(video)
        encoder.train()
        torch.manual_seed(1)
        trained = encoder(video)
    assert torch.equal(first, second)
    assert (trained - first).abs().max() > 1e-2  # in training it does drop


def test_masks_change_from_step_to_step_and_repeat_for_a_step():
    """Bug: the mask seed leaves the step out (every step would hide the same tokens)."""
    cfg = preset("debug")
    grid = (4, 4, 4)
    a = masks_for_step(cfg, grid, 4, step=5)
    again = masks_for_step(cfg, grid, 4, step=5)
    b = masks_for_step(cfg, grid, 4, step=6)
    assert all(torch.equal(x.target_idx, y.target_idx) for x, y in zip(a, again))
    assert any(x.target_idx.shape != y.target_idx.shape or not torch.equal(x.target_idx, y.target_idx)
               for x, y in zip(a, b))
