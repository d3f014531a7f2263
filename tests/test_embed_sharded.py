"""`vjepa embed` under torchrun: each rank embeds a share of the files, rank 0 joins them."""

import os
import socket

import numpy as np
import pytest
import torch

from vjepa.config import apply_overrides, preset, to_dict
from vjepa.eval import load_features
from vjepa.eval.features import Features
from vjepa.eval.shard import concat_features, share
from vjepa.models.factory import build_encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shares_are_contiguous_balanced_and_cover_the_items(world_size):
    for n in range(9):
        items = list(range(n))
        shares = [share(items, r, world_size) for r in range(world_size)]
        assert [x for s in shares for x in s] == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="rank 4 outside a world of 4"):
        share([1, 2], 4, 4)


def test_parts_made_differently_are_refused():
    part = Features(torch.zeros(2, 1, 4, 8), {"label": torch.zeros(2, dtype=torch.int64)}, paths=["a", "a"],
                    metadata={"pooled": "false"})
    assert len(concat_features([part, part])) == 4
    other = Features(torch.zeros(1, 1, 4, 8), {"label": torch.zeros(1, dtype=torch.int64)}, paths=["b"],
                     metadata={"pooled": "true"})
    with pytest.raises(ValueError, match="part 1 was not made like part 0"):
        concat_features([part, other])


def _embed_rank(rank, world_size, port, argv):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from vjepa.cli import main

    assert main(argv) == 0


def test_two_ranks_write_what_one_process_writes(tmp_path, capsys):
    import torch.multiprocessing as mp

    from vjepa.cli import main
    from vjepa.data.synthetic import render_clip, write_mp4

    cfg = apply_overrides(preset("debug"), ["run.dtype=fp32"])
    torch.manual_seed(0)
    weights = tmp_path / "enc.pt"
    torch.save({"encoder": build_encoder(cfg).state_dict(), "config": to_dict(cfg)}, weights)
    lines = []
    for i in range(5):  # 5 files, one corrupt: shares of 3 and 2, the bad one in rank 1's
        path = tmp_path / f"v{i}.mp4"
        if i == 3:
            path.write_bytes(b"\x00not a video" * 50)
        else:
            frames = render_clip(cfg.data.synthetic, "train", i)[0]  # [8, 32, 32, 3]
            write_mp4(np.resize(frames, (8 + 8 * i, *frames.shape[1:])), path)  # 1 to 5 windows
        lines.append(f"{path} {i}")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    args = ["embed", str(listing), "--checkpoint", str(weights), "--no-progress", "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "one.safetensors")]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_embed_rank, args=(2, port, [*args, "-o", str(tmp_path / "two.safetensors")]), nprocs=2, join=True)
    one, two = load_features(tmp_path / "one.safetensors"), load_features(tmp_path / "two.safetensors")
    assert two.paths == one.paths and len(set(one.paths)) == 4
    assert torch.equal(two.window_start, one.window_start) and torch.equal(two.labels["label"], one.labels["label"])
    assert [p for p, _ in two.failures] == [str(tmp_path / "v3.mp4")] == [p for p, _ in one.failures]
    assert torch.allclose(two.tokens, one.tokens, atol=1e-5) and two.metadata == one.metadata
    assert sorted(p.name for p in tmp_path.glob("two*")) == ["two.safetensors"]  # the shares are gone
