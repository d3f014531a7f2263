"""The token-feature cache of one frozen encoder: each split encoded once per view layout.

Shape legend: M clips, V views per clip, N tokens per view, D width.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from vjepa.api import checkpoint_path, load
from vjepa.config import Config, ProbeConfig
from vjepa.distributed import resolve_device
from vjepa.eval.features import Features, encoder_fingerprint, extract_features, load_features
from vjepa.eval.views import dataset_fingerprint, frames_per_segment, view_dataset
from vjepa.precision import freeze, resolve_dtype

# bumped when what a cache file holds changes: 2 = one row per readable clip (unreadable ones dropped, listed
# in `failures`); version 1 files may hold a substitute's duplicate row for each unreadable clip
CACHE_FORMAT = 2


class FeatureCache:
    """Token features of one frozen encoder, computed once per split and view layout.

    Training splits are viewed through the centre crop only (C = 1), evaluation splits through
    `probe_cfg.num_crops` crops; both through `probe_cfg.num_segments` segments. Without
    `probe_cfg.cache_dir` the features stay in memory (small sets). With it they are written there
    batch by batch as a .npy file and read back memory-mapped, so a cache larger than RAM works;
    the file is named by a hash of the encoder's weights, of the clips' content (file names, sizes
    and modification times, labels) and of the sampling, so a later process (or a cross-validation
    fold over the same clips) reuses it, and changed clips or settings never do.

    Args:
        encoder: the frozen encoder.
        cfg: the run's Config (data and model sections).
        probe_cfg: view layout, sampling, batch size, dtype, max_train_clips, cache_dir, device.
        progress: show tqdm bars while extracting.
    """

    def __init__(
        self, encoder: nn.Module, cfg: Config, probe_cfg: ProbeConfig | None = None, progress: bool = False
    ):
        self.encoder, self.cfg = freeze(encoder), cfg
        self.probe_cfg = probe_cfg or ProbeConfig()
        self.progress = progress
        self.seconds = 0.0  # time spent running the encoder
        self._store: dict[tuple, Features] = {}
        self._fingerprint: str | None = None

    def _key(self, split: str, train: bool) -> tuple:
        p = self.probe_cfg
        crops = 1 if train else p.num_crops
        limit = p.max_train_clips if train else 0
        return (split, p.num_segments, crops, frames_per_segment(self.cfg, p), p.resize_ratio, limit, p.frame_step,
                p.fps, p.data, p.source, p.feature_dtype)

    def _path(self, key: tuple, dataset: Dataset) -> Path | None:
        if not self.probe_cfg.cache_dir:
            return None
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.encoder)
        pixels = (self.cfg.data.crop_size, self.cfg.data.mean, self.cfg.data.std)
        # CACHE_FORMAT: files written before unreadable clips were dropped (not replaced) must not be reused
        content = hashlib.sha1(json.dumps([dataset_fingerprint(dataset), key[1:], pixels, CACHE_FORMAT]).encode())
        content = content.hexdigest()[:12]
        split, segments, crops, frames = key[:4]
        return Path(self.probe_cfg.cache_dir) / f"{self._fingerprint}-{content}_{split}_s{segments}c{crops}f{frames}.npy"

    def get(self, split: str, train: bool) -> Features:
        """Features of `split` (train=True: centre crop, at most max_train_clips clips)."""
        key = self._key(split, train)
        if key not in self._store:
            dataset = self._dataset(key)
            path = self._path(key, dataset)
            if path is not None and path.is_file() and path.with_suffix(".json").is_file():
                self._store[key] = load_features(path, mmap=True)
            else:
                self._store[key] = self._extract(key, dataset, path)
        return self._store[key]

    def _dataset(self, key: tuple) -> Dataset:
        split, crops, limit = key[0], key[2], key[5]
        dataset = view_dataset(self.cfg, self.probe_cfg, split, crops)
        return Subset(dataset, range(limit)) if limit and limit < len(dataset) else dataset

    def _extract(self, key: tuple, dataset: Dataset, path: Path | None) -> Features:
        p = self.probe_cfg
        start = time.perf_counter()
        store = torch.bfloat16 if p.feature_dtype == "bf16" else torch.float32
        features = extract_features(self.encoder, dataset, key[1], key[2], p.feature_batch_size,
                                    resolve_device(p.device), resolve_dtype(self.cfg.run.dtype, resolve_device(p.device)) == "bf16", store,
                                    p.num_workers, self.progress, out=path)
        self.seconds += time.perf_counter() - start
        return features


_RECENT: dict[tuple, FeatureCache] = {}


def recent_cache(path: str | Path, which: str = "target_encoder") -> FeatureCache:
    """The feature cache of the checkpoint `quick_probe` saw last, kept while that file is unchanged.

    So `quick_probe(run, "motion")` then `quick_probe(run, "appearance")` runs the encoder once.
    Only the most recent checkpoint's features are kept in memory.
    """
    checkpoint = checkpoint_path(path)
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns, which)
    if key not in _RECENT:
        _RECENT.clear()
        encoder, cfg = load_frozen(checkpoint, which)
        _RECENT[key] = FeatureCache(encoder, cfg)
    return _RECENT[key]


def load_frozen(path: str | Path, which: str = "target_encoder", device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """(frozen encoder model, its Config) of anything `vjepa.load` reads, as a probe wants it.

    Checkpoints without a target encoder (pixel objective, supervised baseline) quietly give
    their encoder: probing those runs is expected.
    """
    encoder = load(path, which, device, with_predictor=False, warn_fallback=False)
    return freeze(encoder.model), encoder.config
