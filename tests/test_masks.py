"""Tests for vjepa.masks: coverage, determinism, statistics, collation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vjepa.config import MaskConfig, MaskGeneratorConfig
from vjepa.masks import (
    MaskBatch,
    indices_to_mask,
    mask_to_indices,
    sample_block_size,
    sample_masks,
    sample_multiblock_mask,
    sample_tube_mask,
    target_masks,
)

GRID = (8, 14, 14)  # 16 frames / tubelet 2, 224 px / patch 16
NUM_TOKENS = 8 * 14 * 14


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _as_masks(batch: MaskBatch, num_tokens: int = NUM_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    context = indices_to_mask(batch.context_idx, batch.context_valid, num_tokens)
    target = indices_to_mask(batch.target_idx, batch.target_valid, num_tokens)
    return context, target


def _hidden_fractions(cfg: MaskConfig, num_batches: int, batch_size: int = 8) -> list[float]:
    g = _gen(1)
    per_generator: list[list[torch.Tensor]] = []
    for _ in range(num_batches):
        for i, mask in enumerate(target_masks(cfg, GRID, batch_size, g)):
            if i == len(per_generator):
                per_generator.append([])
            per_generator[i].append(mask.float().mean(dim=1))
    return [torch.cat(f).mean().item() for f in per_generator]


@pytest.mark.parametrize("kind", ["multiblock", "tube", "causal"])
def test_pad_mode_partitions_the_grid(kind: str) -> None:
    cfg = MaskConfig(kind=kind, collate="pad")
    batches = sample_masks(cfg, GRID, 16, _gen())
    assert len(batches) == (1 if kind == "tube" else len(cfg.generators))
    for batch in batches:
        for idx in (batch.context_idx, batch.target_idx):
            assert idx.dtype == torch.long and idx.shape[0] == 16
            assert int(idx.min()) >= 0 and int(idx.max()) < NUM_TOKENS
            assert bool((idx[:, 1:] >= idx[:, :-1]).all())  # sorted (padding repeats the last index)
        context, target = _as_masks(batch)
        assert not bool((context & target).any())
        assert bool((context | target).all())
        assert bool(context.any(dim=1).all()) and bool(target.any(dim=1).all())


def test_pad_mode_valid_slots_are_strictly_sorted_and_padding_repeats_a_valid_index() -> None:
    batch = sample_masks(MaskConfig(), GRID, 16, _gen())[0]
    for idx, valid in ((batch.context_idx, batch.context_valid), (batch.target_idx, batch.target_valid)):
        assert valid is not None and valid.dtype == torch.bool and valid.shape == idx.shape
        for row, row_valid in zip(idx, valid):
            real = row[row_valid]
            assert bool((real[1:] > real[:-1]).all())
            assert bool(torch.isin(row[~row_valid], real).all())


def test_truncate_mode_matches_official_collation() -> None:
    cfg = MaskConfig(collate="truncate")
    padded = sample_masks(dataclasses.replace(cfg, collate="pad"), GRID, 16, _gen())
    truncated = sample_masks(cfg, GRID, 16, _gen())
    for pad, cut in zip(padded, truncated):
        assert cut.context_valid is None and cut.target_valid is None
        num_context = int(pad.context_valid.sum(dim=1).min())
        num_target = int(pad.target_valid.sum(dim=1).min())
        assert cut.context_idx.shape == (16, num_context)
        assert cut.target_idx.shape == (16, num_target)
        # the earliest (smallest) indices of every row survive
        assert torch.equal(cut.context_idx, pad.context_idx[:, :num_context])
        assert torch.equal(cut.target_idx, pad.target_idx[:, :num_target])


def test_same_seed_same_masks_different_seed_different_masks() -> None:
    cfg = MaskConfig()
    first = sample_masks(cfg, GRID, 8, _gen(3))
    again = sample_masks(cfg, GRID, 8, _gen(3))
    other = sample_masks(cfg, GRID, 8, _gen(4))
    for a, b in zip(first, again):
        assert torch.equal(a.context_idx, b.context_idx) and torch.equal(a.target_idx, b.target_idx)
    assert any(
        a.target_idx.shape != c.target_idx.shape or not torch.equal(a.target_idx, c.target_idx)
        for a, c in zip(first, other)
    )


@pytest.mark.parametrize("spec", MaskConfig().generators, ids=["short", "long"])
def test_every_position_is_maskable(spec: MaskGeneratorConfig) -> None:
    g = _gen(5)
    hits = torch.zeros(NUM_TOKENS, dtype=torch.long)
    for _ in range(40):
        hits += sample_multiblock_mask(spec, GRID, 16, g).sum(dim=0)  # [N]
    assert bool((hits > 0).all()), "some grid positions were never hidden"


def test_context_visibility_short_everywhere_long_never_at_the_centre() -> None:
    short, long = MaskConfig().generators
    g = _gen(7)
    seen_short = sum((~sample_multiblock_mask(short, GRID, 16, g)).sum(dim=0) for _ in range(40))
    seen_long = sum((~sample_multiblock_mask(long, GRID, 16, g)).sum(dim=0) for _ in range(40))
    assert bool((seen_short > 0).all())
    # long-range blocks are at least 10x10 on 14x14, so every block covers rows/cols 4..9: the
    # central 6x6 is never context (true of the official sampler as well)
    never = (seen_long == 0).view(GRID)
    centre = torch.zeros(GRID, dtype=torch.bool)
    centre[:, 4:10, 4:10] = True
    assert bool(never[centre].all())
    assert int(never.sum()) < 2 * int(centre.sum())


def test_edge_positions_are_hit_by_blocks_that_touch_the_border() -> None:
    spec = MaskGeneratorConfig(num_blocks=1, spatial_scale=(0.15, 0.15), aspect_ratio=(1.0, 1.0))
    g = _gen(6)
    t, h, w = sample_block_size(spec, GRID, g)
    target = torch.cat([sample_multiblock_mask(spec, GRID, 64, g) for _ in range(20)])
    spatial = target.view(-1, *GRID).any(dim=1)  # [B, H, W]
    assert bool(spatial[:, -1, :].any()) and bool(spatial[:, :, -1].any())
    assert (t, h, w) == (8, 5, 5)


def test_paper_statistics_match_the_official_sampler() -> None:
    short, long = _hidden_fractions(MaskConfig(), num_batches=150)
    assert abs(short - 0.62) < 0.03, short
    assert abs(long - 0.81) < 0.03, long


def test_block_size_follows_the_official_formula() -> None:
    spec = MaskGeneratorConfig(num_blocks=2, spatial_scale=(0.7, 0.7), aspect_ratio=(1.5, 1.5))
    assert sample_block_size(spec, GRID, _gen()) == (8, 14, 10)  # num=137: h=round(14.3), w=round(9.6)
    spec = MaskGeneratorConfig(temporal_scale=(0.5, 0.5), spatial_scale=(0.15, 0.15), aspect_ratio=(1, 1))
    assert sample_block_size(spec, GRID, _gen()) == (4, 5, 5)  # num=29


def test_tube_hides_ninety_percent_of_positions_through_all_time() -> None:
    target = sample_tube_mask(0.9, GRID, 32, _gen()).view(32, 8, 14 * 14)  # [B, T, H*W]
    assert bool((target == target[:, :1]).all()), "tube mask varies over time"
    assert bool((target[:, 0].sum(dim=1) == 196 - int(196 * (1 - 0.9))).all())
    assert target.float().mean().item() == pytest.approx(0.9, abs=0.01)
    batch = sample_masks(MaskConfig(kind="tube"), GRID, 4, _gen())[0]
    assert batch.context_valid is None and batch.target_valid is None  # equal counts: no padding
    assert not torch.equal(target[0], target[1])


def test_causal_context_lies_in_the_first_time_steps() -> None:
    cfg = MaskConfig(kind="causal", causal_context_frames=6)
    for batch in sample_masks(cfg, GRID, 16, _gen()):
        context, target = _as_masks(batch)
        steps = torch.arange(NUM_TOKENS) // (14 * 14)  # [N] time step of each token
        assert bool((steps[None, :].expand_as(context)[context] < 3).all())
        assert bool(target[:, steps >= 3].all())
    assert sample_masks(cfg, GRID, 2, _gen(), tubelet_size=3)[0].context_idx.max() < 2 * 196


def test_mask_to_indices_pads_with_the_last_valid_index() -> None:
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    idx, valid = mask_to_indices(mask, "pad", multiple=1)
    assert idx.tolist() == [[0, 2, 3], [1, 1, 1]]
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    idx, valid = mask_to_indices(mask, "pad")  # rounded up to 8 slots (more than the 4 grid tokens)
    assert idx.tolist() == [[0, 2, 3] + [3] * 5, [1] * 8] and valid.sum(1).tolist() == [3, 1]
    idx, valid = mask_to_indices(mask, "truncate")
    assert idx.tolist() == [[0], [1]] and valid is None
    assert torch.equal(indices_to_mask(*mask_to_indices(mask, "pad"), num_tokens=4), mask)


def test_mask_batch_to_moves_every_tensor() -> None:
    batch = sample_masks(MaskConfig(), GRID, 2, _gen())[0].to("cpu")
    assert batch.context_idx.device.type == "cpu" and batch.context_valid is not None


def test_invalid_settings_raise() -> None:
    with pytest.raises(ValueError):
        mask_to_indices(torch.ones(2, 4, dtype=torch.bool), "drop")
    with pytest.raises(ValueError):
        sample_tube_mask(1.0, GRID, 2, _gen())
    whole = MaskGeneratorConfig(num_blocks=1, spatial_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0))
    with pytest.raises(ValueError):
        sample_multiblock_mask(whole, GRID, 2, _gen())
    with pytest.raises(ValueError):
        sample_masks(MaskConfig(kind="random"), GRID, 2, _gen())
