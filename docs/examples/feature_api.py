"""The feature-level API of docs/evaluation.md: encode once, then study many probes on subsets.

    python docs/examples/feature_api.py /tmp/probe_data/kinetics
"""

from __future__ import annotations

import sys

import torch

import vjepa
from vjepa.eval import (
    extract_features,
    load_features,
    make_probe_config,
    probe_data_config,
    probe_features,
    save_features,
    view_dataset,
)

data = sys.argv[1] if len(sys.argv) > 1 else "/tmp/probe_data/kinetics"
encoder = vjepa.load("debug", device="cpu")  # or a run directory / checkpoint / official .pth.tar
probe_cfg = make_probe_config(data=f"{data}/{{split}}.csv", task="label", frames_per_segment=16, frame_step=4,
                              num_segments=2, num_crops=3, attend_across_segments=True, epochs=20, batch_size=4)
print(probe_data_config(encoder.config, probe_cfg).source, "clips of", probe_cfg.frames_per_segment, "frames")

# 1. encode each split once: tokens [M, V, N, D] with labels and paths (train: one centre crop per segment)
train = extract_features(encoder.model, view_dataset(encoder.config, probe_cfg, "train", 1), num_segments=2)
test = extract_features(encoder.model, view_dataset(encoder.config, probe_cfg, "test", 3), num_segments=2,
                        num_crops=3)
print("train", tuple(train.tokens.shape), "test", tuple(test.tokens.shape))

# 2. keep them: .npy tokens + .json index, read back memory-mapped
save_features("/tmp/probe_data/train_features.npy", train)
train = load_features("/tmp/probe_data/train_features.npy", mmap=True)

# 3. many probes on the same tokens: all clips, then two clips per class, then a linear probe
full = probe_features(train, test, "label", probe_cfg, encoder.embed_dim, encoder.model.num_heads)
two_per_class = torch.cat([(train.labels["label"] == k).nonzero()[:2, 0] for k in range(3)])
few = train.subset(two_per_class)
small = probe_features(few, test, "label", probe_cfg, encoder.embed_dim, encoder.model.num_heads)
linear = probe_features(train, test, "label", make_probe_config(probe_cfg, kind="linear"), encoder.embed_dim,
                        encoder.model.num_heads)
print(f"attentive, {full['num_train']} clips: top-1 {full['top1']:.1f}%")
print(f"attentive, {small['num_train']} clips: top-1 {small['top1']:.1f}%  ({few.videos[:2]} ...)")
print(f"linear,    {linear['num_train']} clips: top-1 {linear['top1']:.1f}%")
