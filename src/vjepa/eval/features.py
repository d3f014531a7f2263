"""Frozen-encoder features: the one container (`Features`), its file format, and how to fill it.

`extract_features` runs an encoder over a dataset of view stacks (every probe on one encoder reads
the result); `embed_files` runs it over many video files, one row per sliding window. Both return
`Features`, and `save_features` / `load_features` write and read them: a `.safetensors` file, or a
`.npy` array with a `.json` index beside it, which `load_features(..., mmap=True)` maps from disk
instead of reading (a token cache larger than RAM stays usable).

Shape legend: M rows (clips or windows), V = S*C views per row (segment-major), N tokens per
view (1 once pooled), D width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vjepa.precision import autocast

SYNTHETIC_TASKS = ("motion", "appearance")


@dataclass
class Features:
    """Frozen-encoder token features of many clips (one split, or one set of files).

    Attributes:
        tokens: [M, V, N, D] (bf16, fp16 or fp32), V = num_segments * num_crops, segment-major;
            N = 1 for pooled features.
        labels: task name -> int64 [M] (motion, appearance on the built-in set; `label` for real
            video, -1 where a row has none).
        num_segments: S.
        num_crops: C.
        class_names: names of the `label` classes (index = label) where the data knows them.
        paths: the file each row came from (one per row; empty when the data has no files).
        window_start: int64 [M], each row's first source frame (sliding windows), or None.
        failures: (path, error) of every file that was skipped.
        metadata: string facts (checkpoint, which, pooled, frames, frame_step, grid, ...).
    """

    tokens: torch.Tensor
    labels: dict[str, torch.Tensor]
    num_segments: int = 1
    num_crops: int = 1
    class_names: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    window_start: torch.Tensor | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, index: torch.Tensor) -> Features:
        """The features, labels and paths of rows `index` [M'] only (copied; all rows in order: self,
        so a memory-mapped cache is not read into memory)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        if len(index) == len(self) and torch.equal(index, torch.arange(len(self))):
            return self
        paths = [self.paths[i] for i in index.tolist()] if self.paths else []
        starts = None if self.window_start is None else self.window_start[index]
        return dataclasses.replace(self, tokens=self.tokens[index], labels={k: v[index] for k, v in self.labels.items()},
                                   paths=paths, window_start=starts)

    @property
    def video_index(self) -> torch.Tensor:
        """int64 [M]: each row's file as an index into `videos` (rows of one file share it)."""
        order = {path: k for k, path in enumerate(dict.fromkeys(self.paths))}
        return torch.tensor([order[p] for p in self.paths], dtype=torch.int64)

    @property
    def videos(self) -> list[str]:
        """The distinct files the rows came from, in first-seen order."""
        return list(dict.fromkeys(self.paths))


# ---------------------------------------------------------------------------------------------
# the file format


def _index(features: Features) -> dict[str, Any]:
    """Everything but the tokens, as JSON-ready values (the .json side file / safetensors metadata)."""
    return {"num_segments": features.num_segments, "num_crops": features.num_crops,
            "class_names": features.class_names, "paths": features.paths,
            "failures": [list(f) for f in features.failures], "metadata": features.metadata}


def save_features(path: str | Path, features: Features, dtype: str | None = None) -> list[Path]:
    """Write features as one .safetensors file, or as .npy tokens with a .json index beside them.

    .safetensors tensors: `tokens`, `labels.<task>`, `window_start`; metadata `index` (JSON of the
    other fields). .npy: the tokens array (bf16 stored as its raw 16 bits, dtype in the index) and
    `<name>.json` with the labels and the other fields; `load_features(mmap=True)` maps it.

    Args:
        path: output file, ending in .safetensors or .npy.
        features: what `extract_features` or `embed_files` returned.
        dtype: "float32", "float16" or "bfloat16" for the stored tokens (default: as they are).

    Returns:
        The files written.
    """
    from vjepa.checkpoint import atomic_write

    path = Path(path)
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise ValueError(f"dtype={dtype!r}; choose float32, float16 or bfloat16")
    tokens = features.tokens.to(getattr(torch, dtype)) if dtype else features.tokens
    columns = dict(features.labels) if features.window_start is None else {
        **features.labels, "window_start": features.window_start}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {"tokens": tokens.contiguous(), **{f"labels.{k}": v.contiguous() for k, v in columns.items()}}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"index": json.dumps(_index(features))}))
        return [path]
    if path.suffix == ".npy":
        index = {**_index(features), "dtype": str(tokens.dtype).removeprefix("torch."),
                 "labels": {k: v.tolist() for k, v in columns.items()}}
        atomic_write(path, lambda tmp: _write_npy(tmp, tokens))
        side = path.with_suffix(".json")
        atomic_write(side, lambda tmp: Path(tmp).write_text(json.dumps(index) + "\n"))
        return [path, side]
    raise ValueError(f"{path}: a feature file must end in .safetensors or .npy")


def _write_npy(path: str, tokens: torch.Tensor) -> None:
    array = tokens.view(torch.int16).numpy() if tokens.dtype == torch.bfloat16 else tokens.numpy()
    with open(path, "wb") as handle:
        np.save(handle, array)


def load_features(path: str | Path, mmap: bool = False) -> Features:
    """Read a file written by `save_features`.

    Args:
        path: the .safetensors or .npy file.
        mmap: for .npy, map the tokens from disk (copy-on-write) instead of reading them into memory.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            index = json.loads((handle.metadata() or {}).get("index", "{}"))
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
        columns = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("labels.")}
        return _from_index(tensors["tokens"], columns, index)
    if not path.with_suffix(".json").is_file():
        raise ValueError(f"{path}: no feature index {path.with_suffix('.json').name} beside it")
    index = json.loads(path.with_suffix(".json").read_text())
    tokens = torch.from_numpy(np.load(path, mmap_mode="c" if mmap else None))
    if index.get("dtype") == "bfloat16":
        tokens = tokens.view(torch.bfloat16)
    columns = {k: torch.tensor(v, dtype=torch.int64) for k, v in index["labels"].items()}
    return _from_index(tokens, columns, index)


def _from_index(tokens: torch.Tensor, columns: dict[str, torch.Tensor], index: dict[str, Any]) -> Features:
    starts = columns.pop("window_start", None)
    return Features(tokens, columns, int(index.get("num_segments", 1)), int(index.get("num_crops", 1)),
                    list(index.get("class_names", [])), list(index.get("paths", [])), starts,
                    [tuple(f) for f in index.get("failures", [])], dict(index.get("metadata", {})))


def pool_tokens(features: Features, chunk: int = 256) -> Features:
    """Average each view's tokens: [M, V, N, D] -> [M, V, 1, D] (fp32). Exact input for a linear probe.

    Segments all have N tokens, so averaging the pooled views of one crop equals pooling the
    concatenated S*N tokens: attend_across_segments stays exact.
    """
    pooled = torch.cat([features.tokens[i : i + chunk].float().mean(dim=2, keepdim=True)
                        for i in range(0, len(features), chunk)])
    return dataclasses.replace(features, tokens=pooled)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A short hash of every parameter and buffer: names cached features of this exact encoder."""
    digest = hashlib.sha1()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# a dataset of view stacks -> Features


def _batch_labels(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    keys = [k for k in (*SYNTHETIC_TASKS, "label") if k in batch]
    return {k: torch.as_tensor(batch[k]).long() for k in keys}


def skipped_records(dataset: Dataset) -> list[tuple[str, str]]:
    """(path, reason) of every record a dataset skipped as unreadable so far, in record order: the
    form of `Features.failures` (what `embed_files` reports too). Reads the datasets' shared skip
    logs, so what DataLoader workers met is included; a `Subset` reports only its own records and a
    mixture those of all its parts."""
    from vjepa.data.decode import REASONS

    base, rows = (dataset.dataset, set(dataset.indices)) if isinstance(dataset, Subset) else (dataset, None)
    parts = getattr(base, "datasets", None)
    if parts:  # a mixture: its parts in order (an evaluation mixture concatenates them)
        return [failure for part in parts for failure in skipped_records(part)]
    skips, records = getattr(base, "skips", None), getattr(base, "records", None)
    if skips is None or records is None:
        return []
    return [(str(records[i].path), REASONS[int(skips.status[i]) - 1]) for i in skips.status.nonzero().flatten().tolist()
            if rows is None or i in rows]


def skip_summary(failures: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """What a probe reports of one split's skipped files: {"skipped": {reason: files},
    "skipped_files": [paths]} (the `skipped` entry of a probe's result, cached or streaming)."""
    counts: dict[str, int] = {}
    for _, reason in failures:
        counts[reason] = counts.get(reason, 0) + 1
    return {"skipped": counts, "skipped_files": [path for path, _ in failures]}


def _dataset_facts(dataset: Dataset) -> tuple[list[str], list[str]]:
    """(class names, one path per item) where the dataset knows them (class folders, lists)."""
    base, rows = (dataset.dataset, list(dataset.indices)) if isinstance(dataset, Subset) else (dataset, None)
    names = [str(name) for name in getattr(base, "classes", [])]
    records = getattr(base, "records", None)
    if not records:
        return names, []
    rows = range(len(records)) if rows is None else rows
    return names, [str(records[i].path) for i in rows]


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    num_segments: int = 1,
    num_crops: int = 1,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    bf16: bool = True,
    store_dtype: torch.dtype = torch.bfloat16,
    num_workers: int = 0,
    progress: bool = False,
    out: str | Path | None = None,
) -> Features:
    """Run the frozen encoder once over a dataset of view stacks and keep every token.

    Args:
        encoder: a `VisionTransformer` (put in eval mode here; its weights are not touched).
        dataset: items with `video` [V, 3, F, h, w] (or [3, F, h, w] for V = 1) and int labels.
        num_segments, num_crops: the view layout, V = S * C.
        batch_size: clips per encoder call (times V views).
        device: where the encoder runs; features are stored on the CPU.
        bf16: bf16 autocast for the encoder (CPU or CUDA).
        store_dtype: dtype of the stored tokens (bf16 halves the memory).
        num_workers: DataLoader workers rendering / decoding clips.
        progress: show a tqdm bar.
        out: a .npy path: the tokens are written there batch by batch (never all in memory) with
            the rest beside it as .json, and returned memory-mapped; None keeps them in memory.

    Returns:
        `Features` with tokens [M, V, N, D]; class names and per-clip paths where the dataset has them.
        Items the dataset returns as None (unreadable files of an evaluation dataset, see
        `datasets.drop_bad_items`) have no row: M counts the clips encoded, and `failures` names
        the skipped files with their reason.

    Raises:
        DataError: when the dataset is empty or every one of its items was skipped.
    """
    from vjepa.data.datasets import DataError, all_skipped_error

    device = torch.device(device)
    tokens, labels, array, kept, filled = None, {}, None, [], 0
    for rows, batch, batch_labels in encode_batches(encoder, dataset, batch_size, device, bf16, num_workers,
                                                    progress):
        if batch is None:  # every item of this batch was dropped
            continue
        batch = batch.to("cpu", store_dtype)
        if tokens is None:
            tokens, array = _token_store((len(dataset), *batch.shape[1:]), store_dtype, out)
        tokens[filled : filled + len(batch)] = batch  # rows packed in order: dropped items leave no gap
        filled += len(batch)
        kept.append(rows)
        for key, value in batch_labels.items():
            labels.setdefault(key, []).append(value)
    failures = skipped_records(dataset)
    if tokens is None:
        raise all_skipped_error(len(dataset), skip_summary(failures)["skipped"]) if failures else DataError(
            "cannot extract features of an empty dataset")
    kept = torch.cat(kept)
    names, paths = _dataset_facts(dataset)
    paths = [paths[i] for i in kept.tolist()] if paths else []
    if out is None:
        tokens = tokens[: len(kept)]  # a view: the rows of dropped clips stay unused, nothing is copied
        return Features(tokens, {k: torch.cat(v) for k, v in labels.items()}, num_segments, num_crops, names, paths,
                        failures=failures)
    array.flush()
    del array, tokens
    features = Features(torch.empty(0), {k: torch.cat(v) for k, v in labels.items()}, num_segments, num_crops,
                        names, paths, failures=failures)
    _finish_npy(Path(out), features, len(kept))
    return load_features(out, mmap=True)


def _token_store(shape: tuple[int, ...], dtype: torch.dtype, out: str | Path | None):
    """(tokens tensor to fill, its .npy memmap or None): in memory, or a file-backed array at `out`."""
    if out is None:
        return torch.empty(shape, dtype=dtype), None
    partial = Path(out).with_suffix(".partial.npy")
    partial.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.int16 if dtype == torch.bfloat16 else np.float32,
                                      shape=shape)
    tokens = torch.from_numpy(array)
    return (tokens.view(torch.bfloat16) if dtype == torch.bfloat16 else tokens), array


def _finish_npy(path: Path, features: Features, rows: int) -> None:
    """Move the filled .partial.npy into place (its first `rows` rows: the clips encoded) and write
    its .json index (labels, layout, paths, failures)."""
    import os

    partial = path.with_suffix(".partial.npy")
    filled = np.load(partial, mmap_mode="r")
    if rows < len(filled):  # skipped clips: copy the rows kept into a file of the right length, in chunks
        shorter = np.lib.format.open_memmap(path.with_suffix(".short.npy"), mode="w+", dtype=filled.dtype,
                                            shape=(rows, *filled.shape[1:]))
        for start in range(0, rows, 256):
            shorter[start : start + 256] = filled[start : min(start + 256, rows)]
        shorter.flush()
        del shorter
        os.replace(path.with_suffix(".short.npy"), partial)
    dtype = "bfloat16" if filled.dtype == np.int16 else str(filled.dtype)
    del filled
    index = {**_index(features), "dtype": dtype, "labels": {k: v.tolist() for k, v in features.labels.items()}}
    os.replace(partial, path)
    path.with_suffix(".json").write_text(json.dumps(index) + "\n")


def encode_batches(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    bf16: bool = True,
    num_workers: int = 0,
    progress: bool = False,
    order: list[int] | None = None,
    keep: tuple[str, ...] = (),
    batches: list[list[int]] | None = None,
):
    """Yield (rows, tokens [b, V, N, D] on `device`, labels) for each batch of a view dataset.

    The encoder runs frozen, without gradients, under bf16 autocast when `bf16`; only one batch of
    clips and tokens is alive at a time, so memory does not grow with the dataset. `order` lists
    the items to visit (default: all, in order), or `batches` the item indices of every batch;
    `keep` names further item keys (e.g. "path") passed through with the labels.

    `rows` (int64 [b]) are the dataset positions of the items encoded. An item the dataset returns
    as None (an unreadable file an evaluation dataset drops, see `datasets.drop_bad_items`) is left
    out, never replaced; a batch of only such items yields (empty rows, None, {}).
    """
    from tqdm.auto import tqdm

    encoder.eval().to(device)
    # explicit batches (a rank's shares of the global batches), or `order` (the item indices to
    # visit: a shuffled epoch is exactly the permutation the caller drew, whatever the worker count)
    if batches is None:
        order = list(range(len(dataset))) if order is None else list(order)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate_kept)
    for index, (present, batch) in zip(batches, tqdm(loader, desc="features", unit="batch", disable=not progress,
                                                      leave=False)):
        rows = torch.tensor([i for i, here in zip(index, present) if here], dtype=torch.int64)
        if batch is None:
            yield rows, None, {}
            continue
        video = batch["video"]
        video = video.unsqueeze(1) if video.ndim == 5 else video  # [b, V, 3, F, h, w]
        b, v = video.shape[:2]
        with torch.no_grad(), autocast(device, bf16):
            out = encoder(video.flatten(0, 1).to(device))  # [b*V, N, D]
        labels = {**_batch_labels(batch), **{k: batch[k] for k in keep if k in batch}}
        yield rows, out.view(b, v, *out.shape[1:]), labels


def _collate_kept(items: list[Any]) -> tuple[list[bool], dict[str, Any] | None]:
    """(which items are present, the batch of those: `collate_clips`, None if none is)."""
    from vjepa.data.datasets import collate_clips

    return [item is not None for item in items], collate_clips(items)


# ---------------------------------------------------------------------------------------------
# many video files -> Features, one row per window


def list_videos(source: str | Path) -> list[tuple[str, int]]:
    """(path, label) of every video named by `source`.

    `source` is a video file (or frame folder / TIFF stack), a list file (.csv/.txt, one `path
    [label]` per line, as the official code reads), or a folder scanned for video files (labels
    from sub-folder names, see `vjepa.data.datasets.scan_folder`).
    """
    from vjepa.data.datasets import DataError, read_csv_list, scan_folder
    from vjepa.data.decode import IMAGE_EXTENSIONS

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        return [(r.path, r.label) for r in read_csv_list(path)]
    if path.is_dir() and not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in path.iterdir() if f.is_file()):
        records, _, _ = scan_folder(path, "folder")
        if not records:
            raise DataError(f"no video files found under {path}")
        return [(r.path, r.label) for r in records]
    return [(str(path), -1)]


def embed_files(
    encoder: Any,
    videos: Sequence[tuple[str, int]] | Sequence[str],
    pooled: bool = False,
    batch_size: int = 8,
    window: int | None = None,
    frame_step: int | None = None,
    stride: int | None = None,
    progress: bool = True,
) -> Features:
    """Embed many videos, batching windows across files; a bad file is skipped, never fatal.

    Args:
        encoder: a `vjepa.encoder.Encoder` (from `vjepa.load`).
        videos: paths, or (path, label) pairs (see `list_videos`).
        pooled, batch_size, window, frame_step, stride: as in `Encoder.embed`.
        progress: show a tqdm bar over the videos.

    Returns:
        `Features` with one row per window: tokens [R, 1, N, D] ([R, 1, 1, D] pooled), labels
        `label` [R], `paths` and `window_start` per row; `failures` names each skipped file and why.
    """
    from tqdm import tqdm

    items = [(str(v), -1) if isinstance(v, (str, Path)) else (str(v[0]), int(v[1])) for v in videos]
    rows: dict[int, list[tuple[int, torch.Tensor]]] = {}  # video -> [(start, features)]
    failures: dict[int, str] = {}
    pending: list[tuple[int, int, torch.Tensor]] = []  # (video, start, clip)
    for number, (path, _) in enumerate(tqdm(items, desc="embed", unit="video", disable=not progress)):
        error = _queue_windows(encoder, path, number, pending, rows, batch_size, pooled, (window, frame_step, stride))
        if error:
            failures[number] = error
    _flush(encoder, pending, rows, pooled)
    return _window_features(encoder, items, rows, failures, pooled, window, frame_step)


def _queue_windows(encoder: Any, path: str, number: int, pending: list, rows: dict, batch_size: int, pooled: bool,
                   sampling: tuple) -> str | None:
    """Queue one video's windows (encoding full batches); the error message if decoding failed."""
    clips = encoder.iter_clips(path, *sampling, chunk=batch_size)
    while True:
        try:
            item = next(clips, None)
        except Exception as err:  # noqa: BLE001 (decoders raise many types; the file is skipped)
            pending[:] = [p for p in pending if p[0] != number]
            rows.pop(number, None)
            return f"{type(err).__name__}: {err}"
        if item is None:
            return None
        pending.append((number, *item))
        if len(pending) == batch_size:
            _flush(encoder, pending, rows, pooled)


def _flush(encoder: Any, pending: list, rows: dict, pooled: bool) -> None:
    if pending:
        features = encoder._features(torch.stack([clip for _, _, clip in pending]), pooled)
        for (video, start, _), row in zip(pending, features):
            rows.setdefault(video, []).append((start, row))
        pending.clear()


def _window_features(
    encoder: Any,
    items: list[tuple[str, int]],
    rows: dict[int, list[tuple[int, torch.Tensor]]],
    failures: dict[int, str],
    pooled: bool,
    window: int | None,
    frame_step: int | None,
) -> Features:
    """Gather the per-video rows of `embed_files` into one `Features` (videos in input order)."""
    kept = [n for n in range(len(items)) if n in rows and n not in failures]
    window, frame_step = window or encoder.num_frames, frame_step or encoder.frame_step
    grid = encoder.grid(window)
    shape = (1, 1 if pooled else int(np.prod(grid)), encoder.embed_dim)
    tokens = [row.reshape(shape) for n in kept for _, row in rows[n]]
    return Features(
        tokens=torch.stack(tokens) if tokens else torch.zeros((0, *shape)),
        labels={"label": torch.tensor([items[n][1] for n in kept for _ in rows[n]], dtype=torch.int64)},
        paths=[items[n][0] for n in kept for _ in rows[n]],
        window_start=torch.tensor([start for n in kept for start, _ in rows[n]], dtype=torch.int64),
        failures=[(items[n][0], failures[n]) for n in sorted(failures)],
        metadata=_embed_metadata(encoder, pooled, window, frame_step, grid),
    )


def _embed_metadata(encoder: Any, pooled: bool, window: int, frame_step: int, grid: tuple) -> dict[str, str]:
    """The facts an embedding file records: where the encoder came from and how clips were cut."""
    return {"checkpoint": encoder.source, "which": encoder.which, "pooled": str(pooled).lower(),
            "num_frames": str(window), "frame_step": str(frame_step), "img_size": str(encoder.img_size),
            "grid": json.dumps(grid)}
