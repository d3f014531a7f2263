"""What `vjepa probe` / `vjepa eval` and `quick_probe` call: encoder in, accuracy (and a JSON file) out.

Example:
    >>> result = quick_probe("runs/demo", task="motion")       # ~1-3 min on a laptop CPU
    >>> encoder = vjepa.load("runs/demo", device="cpu")
    >>> probe_encoder(encoder.model, encoder.config, task="appearance", probe="linear", label_fraction=0.05)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vjepa.api import checkpoint_path
from vjepa.checkpoint import load_checkpoint
from vjepa.config import Config, ConfigError, ProbeConfig, to_dict
from vjepa.distributed import resolve_device
from vjepa.eval.cache import FeatureCache, load_frozen, recent_cache
from vjepa.eval.features import SYNTHETIC_TASKS, Features, skip_summary
from vjepa.eval.metrics import describe
from vjepa.eval.probe_train import PROBE_KINDS, make_probe_config, probe_features, validate_probe
from vjepa.eval.progress import with_state_file
from vjepa.eval.stream import probe_streaming
from vjepa.eval.views import check_held_out
from vjepa.precision import freeze


def probe_encoder(
    encoder: nn.Module,
    cfg: Config,
    task: str = "motion",
    probe: str = "attentive",
    label_fraction: float = 1.0,
    probe_cfg: ProbeConfig | None = None,
    cache: FeatureCache | None = None,
    env: Any = None,
    return_probe: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Probe a frozen encoder (trained or random-init) on the run's data; report held-out top-1.

    Unreadable clips are left out of both splits, never replaced by others (`datasets.drop_bad_items`):
    num_train / num_test count the clips used and `skipped` names the others, cached or streaming.

    Args:
        encoder: a `VisionTransformer`; frozen here (eval mode, no gradients), never modified.
        cfg: the Config it was trained with (data and model sections are used).
        task: motion | appearance (built-in set) or label (real video).
        probe: attentive | linear.
        label_fraction: share of training labels used, class-balanced (e.g. 0.05).
        probe_cfg: further settings (epochs, views, eval_split, ...); defaults `ProbeConfig()`.
        cache: a `FeatureCache` of this encoder to reuse across calls (made if None).
        env: under torchrun, the `distributed.DistEnv` (streaming probes only: ranks share the clips).
        return_probe: also return the trained probe (on the CPU), e.g. to save it as a probe file.
        progress: show tqdm bars (stderr) while encoding clips and training the probe.
        **overrides: any `ProbeConfig` field, e.g. epochs=50, num_crops=3.

    Returns:
        dict with task, probe, top1 (percent, on `eval_split`), train_top1, label_fraction, sizes,
        skipped ({split: `features.skip_summary`}), test_paths, seconds (feature_seconds for the
        encoder, probe_seconds for the probe) and the settings; with return_probe, (that dict, the
        trained probe).

    Raises:
        ConfigError: when the data has no split apart from the training one to score (see
            `views.check_held_out`).
    """
    settings = {"kind": probe, "task": task, "label_fraction": label_fraction, **overrides}
    probe_cfg = make_probe_config(probe_cfg, **settings)
    if env is not None and env.distributed and not probe_cfg.streaming:
        raise ConfigError("under torchrun a probe streams (each rank encodes its share): pass --stream")
    check_held_out(cfg, probe_cfg)
    if probe_cfg.streaming:  # no cache: the encoder runs on every batch of every epoch
        out = probe_streaming(freeze(encoder), cfg, probe_cfg, encoder.embed_dim, encoder.num_heads, env,
                              return_probe, progress)
        feature_seconds = 0.0
    else:
        if cache is None:
            cache = FeatureCache(encoder, cfg, probe_cfg, progress)
        cache.probe_cfg = dataclasses.replace(cache.probe_cfg, **_view_settings(probe_cfg))
        before = cache.seconds
        train, test = cache.get("train", train=True), cache.get(probe_cfg.eval_split, train=False)
        out = probe_features(train, test, task, probe_cfg, encoder.embed_dim, encoder.num_heads, return_probe,
                             progress)
        feature_seconds = cache.seconds - before
        extra = {"skipped": {"train": skip_summary(train.failures), probe_cfg.eval_split: skip_summary(test.failures)},
                 "test_paths": list(test.paths)}
        out = ({**out[0], **extra}, out[1]) if return_probe else {**out, **extra}
    result, module = out if return_probe else (out, None)
    result = {"task": task, "probe": probe, "label_fraction": label_fraction, **result,
              "eval_split": probe_cfg.eval_split, "feature_seconds": feature_seconds, "settings": to_dict(probe_cfg)}
    return (result, module) if return_probe else result


def _view_settings(probe_cfg: ProbeConfig) -> dict[str, Any]:
    """The ProbeConfig fields that decide which features a cache holds."""
    keys = ("num_segments", "num_crops", "frames_per_segment", "resize_ratio", "max_train_clips",
            "feature_batch_size", "feature_dtype", "cache_dir", "device", "frame_step", "fps", "source", "data",
            "num_workers")
    return {k: getattr(probe_cfg, k) for k in keys}


# quick_probe's protocol (also used by benchmarks that probe a random-init baseline beside it)
QUICK_TRAIN_CLIPS = 1024
QUICK_EVAL_SPLIT = "val"


def quick_probe(
    run_dir: str | Path,
    task: str | None = None,
    epochs: int = 100,
    probe: str = "attentive",
    max_train_clips: int = QUICK_TRAIN_CLIPS,
    eval_split: str = QUICK_EVAL_SPLIT,
    which: str = "target_encoder",
    threads: int = 0,
    verbose: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Probe a finished run fast: a train subset, the val split, one view per clip.

    `demo64` on one busy CPU core: ~70 s to encode 1024 + 256 clips (once per checkpoint: later
    calls on the same file reuse the features, see `recent_cache`), then ~60 s per attentive probe
    and a few seconds per linear one; `demo` (32 px) with 4096 clips: ~100 s per encoder in all. For reported numbers use `probe_encoder` / `vjepa probe`
    (all training clips, the test split).

    Args:
        run_dir: run directory or checkpoint file.
        task: motion | appearance on the built-in set, label on the run's own labelled video
            (default: the first the run's data offers, as `vjepa probe` picks).
        epochs: probe epochs on cached features.
        probe: attentive | linear.
        max_train_clips: training clips used (0: all).
        eval_split: split scored (val by default, leaving test for final numbers).
        which: checkpoint network to probe (target_encoder, encoder, or init: the run's own random init).
        threads: torch threads (0: leave as is).
        verbose: print a one-line summary.
        **overrides: any `ProbeConfig` field.

    Returns:
        `probe_encoder`'s dict plus `checkpoint` and `step`.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    cache = recent_cache(run_dir, which)
    task = task or default_tasks(cache.cfg)[0]
    result = probe_encoder(cache.encoder, cache.cfg, task, probe, cache=cache, epochs=epochs,
                           max_train_clips=max_train_clips, eval_split=eval_split, **overrides)
    result.update(checkpoint=str(checkpoint_path(run_dir)), step=_probed_step(run_dir, which))
    if verbose:
        print(describe(result))
    return result




def checkpoint_step(path: str | Path) -> int | None:
    """The training step stored in a checkpoint (None if it has none)."""
    step = load_checkpoint(checkpoint_path(path)).get("step")
    return None if step is None else int(step)



# ---------------------------------------------------------------------------------------------
# the standard set and its outputs


def evaluate_encoder(
    encoder: nn.Module,
    cfg: Config,
    probe_cfg: ProbeConfig | None = None,
    tasks: tuple[str, ...] = SYNTHETIC_TASKS,
    kinds: tuple[str, ...] = PROBE_KINDS,
    label_fractions: tuple[float, ...] = (1.0,),
    verbose: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every (task, probe kind, label fraction) combination on one shared feature cache (`progress`:
    tqdm bars while encoding and training)."""
    probe_cfg = validate_probe(copy.deepcopy(probe_cfg or ProbeConfig()))
    cache = FeatureCache(encoder, cfg, probe_cfg, progress)
    results = []
    for task in tasks:
        for kind in kinds:
            for fraction in label_fractions:
                results.append(probe_encoder(encoder, cfg, task, kind, fraction, probe_cfg, cache,
                                             progress=progress))
                if verbose:
                    print(describe(results[-1]), flush=True)
    return results




def write_json(path: str | Path, payload: Any) -> Path:
    """Write `payload` as indented JSON (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# what the `vjepa probe` / `vjepa eval` commands call


def default_tasks(cfg: Config) -> tuple[str, ...]:
    """motion and appearance on the built-in set; the dataset's `label` otherwise."""
    return SYNTHETIC_TASKS if cfg.data.source == "synthetic" else ("label",)


def _result_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():  # a preset name: the working directory
        return Path.cwd()
    return path if path.is_dir() else path.parent


def _file_suffix(probe_cfg: ProbeConfig) -> str:
    """"" for the target encoder scored on test with its preset's views (1 x 1 without one);
    "_<split>", "_<network>" and "_<S>seg<C>crop" otherwise, so those probes keep their own
    result files."""
    from vjepa.eval.presets import PROBE_PRESETS

    split = "" if probe_cfg.eval_split == "test" else f"_{probe_cfg.eval_split}"
    network = "" if probe_cfg.encoder == "target_encoder" else f"_{probe_cfg.encoder}"
    preset = PROBE_PRESETS.get(probe_cfg.preset, {})
    views = (probe_cfg.num_segments, probe_cfg.num_crops)
    usual = (preset.get("num_segments", 1), preset.get("num_crops", 1))
    return split + network + ("" if views == usual else f"_{views[0]}seg{views[1]}crop")


def _probed_step(path: str | Path, which: str) -> int | None:
    """The training step of the weights probed: 0 for a run's init, else the checkpoint's step."""
    from vjepa.config import PRESETS

    if which == "init":
        return 0
    return None if str(path) in PRESETS and not Path(path).exists() else checkpoint_step(path)


def probe_checkpoint(
    path: str | Path,
    probe_cfg: ProbeConfig,
    overrides: list[str] = (),
    output: str | Path | None = None,
    save_probe: str | Path | bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint's encoder, run one probe (or `probe_cfg.folds` of them), write the JSON result
    and the trained probe.

    Args:
        path: run directory, checkpoint file, export, official checkpoint, or a preset name (random init).
        probe_cfg: the probe (kind, task, label_fraction, epochs, views, data, sampling, eval_split, ...);
            task "" picks the data's default (label on real data, motion on the built-in set).
        overrides: `section.key=value` changes to the run's Config (e.g. data.source=csv data.path=...).
        output: JSON path (default: beside the checkpoint, i.e. inside a run directory, or in the
            working directory for a preset: probe_<task>_<kind>_<labels>[_<preset>][_<data>].json, with
            `_<split>` when not scoring the test split, `_encoder` / `_init` when probing that network,
            `_<K>fold` for cross-validation; `step` is 0 for an init).
        save_probe: where to write the trained probe (a `vjepa.classify` probe file: weights, view
            protocol, class names, encoder record); True: beside the JSON, `.safetensors` for `.json`;
            False: not. Cross-validation trains K probes and saves none.
        progress: tqdm bars (stderr) while encoding and training (rank 0 only under torchrun).

    Returns:
        The result, with `output` the JSON file written and `probe_file` the probe file (if saved).
    """
    from vjepa import distributed
    from vjepa.config import apply_overrides

    validate_probe(probe_cfg)
    env = distributed.setup(probe_cfg.device)  # one process unless launched by torchrun
    encoder, cfg = load_frozen(path, probe_cfg.encoder, env.device)
    _broadcast(encoder, env)
    cfg = apply_overrides(cfg, list(overrides))
    probe_cfg = dataclasses.replace(probe_cfg, task=probe_cfg.task or _default_task(cfg, probe_cfg))
    output = output or _result_dir(path) / _probe_file_name(probe_cfg)
    probe_cfg = with_state_file(probe_cfg, output)  # every rank resumes from it; rank 0 writes it
    progress = progress and env.is_main
    try:
        with _sampling_hint(probe_cfg):
            if probe_cfg.folds:
                result = cross_validate(encoder, cfg, probe_cfg, progress)
            else:
                result, module = probe_encoder(encoder, cfg, probe_cfg.task, probe_cfg.kind,
                                               probe_cfg.label_fraction, probe_cfg, env=env, return_probe=True,
                                               progress=progress)
    finally:
        distributed.teardown(env)
    result.update(checkpoint=_source_name(path), step=_probed_step(path, probe_cfg.encoder))
    if env.is_main:  # one JSON, one state file, one probe file: rank 0 writes
        if save_probe and not probe_cfg.folds:
            result["probe_file"] = str(_save_probe(path, output, save_probe, module, encoder, cfg, probe_cfg, result))
        result["output"] = str(write_json(output, result))
    return result


def _save_probe(path: str | Path, output: str | Path, save_probe: str | Path | bool, module: nn.Module,
                encoder: nn.Module, cfg: Config, probe_cfg: ProbeConfig, result: dict[str, Any]) -> Path:
    """Write the trained probe as a probe file recording the encoder it reads (absolute path, network,
    fingerprint), so `vjepa classify --probe FILE` finds it from any directory."""
    from vjepa.classify import save_trained_probe
    from vjepa.eval.features import encoder_fingerprint

    probe_file = Path(output).with_suffix(".safetensors") if save_probe is True else Path(save_probe)
    source = result["checkpoint"]
    record = {"source": str(Path(source).resolve()) if Path(source).exists() else source,
              "which": probe_cfg.encoder, "fingerprint": encoder_fingerprint(encoder)}
    return save_trained_probe(probe_file, module, probe_cfg, cfg, record, result["class_names"], result["num_heads"],
                              result)


def _broadcast(encoder: nn.Module, env: Any) -> None:
    """Rank 0's weights on every rank (a preset name draws a new random encoder in each process)."""
    if env.distributed:
        import torch.distributed as dist

        for tensor in encoder.state_dict().values():
            dist.broadcast(tensor, src=0)


def _default_task(cfg: Config, probe_cfg: ProbeConfig) -> str:
    return "label" if probe_cfg.data or probe_cfg.source else default_tasks(cfg)[0]


def _probe_file_name(probe_cfg: ProbeConfig) -> str:
    extra = "".join(f"_{part}" for part in (probe_cfg.preset, _data_name(probe_cfg.data)) if part)
    folds = f"_{probe_cfg.folds}fold" if probe_cfg.folds else ""
    return (f"probe_{probe_cfg.task}_{probe_cfg.kind}_{100 * probe_cfg.label_fraction:g}pct{extra}{folds}"
            f"{_file_suffix(probe_cfg)}.json")


def _data_name(data: str) -> str:
    """A short file-name part for a data path: its last name without {split} or extension, or the
    folder's name when nothing else is left (`videos/{split}.csv` -> `videos`, `lists/k400_{split}.csv`
    -> `k400`, `clips/` -> `clips`)."""
    parts = [p for p in Path(data).parts if p not in ("", "/", ".", "..")]
    for number, part in enumerate(reversed(parts)):
        name = (Path(part).stem if number == 0 else part).replace("{split}", "").strip("_-. ")
        if name:
            return name
    return ""


def _source_name(path: str | Path) -> str:
    from vjepa.config import PRESETS

    return str(path) if str(path) in PRESETS and not Path(path).exists() else str(checkpoint_path(path))


@contextlib.contextmanager
def _sampling_hint(probe_cfg: ProbeConfig):
    """Re-raise 'every video was skipped ... too_short' naming the probe settings that decide clip
    length (and --source images when image folders were read as video frames)."""
    from vjepa.data.datasets import DataError, guess_source

    try:
        yield
    except DataError as err:
        if "too_short" not in str(err):
            raise
        frames = probe_cfg.frames_per_segment or "the encoder's num_frames"
        images = ""
        if not probe_cfg.source and probe_cfg.data and guess_source(probe_cfg.data) == "frames":
            images = ". If the folders hold still pictures, not the frames of videos, pass --source images"
        raise DataError(f"{str(err).splitlines()[-1]}. The probe samples clips of {frames} frames "
                        f"{probe_cfg.frame_step} apart (probe.frame_step; --frame-step): lower --frame-step "
                        f"or --frames, or pass --fps, to fit your clips{images}") from None


def fold_top1(features: Features, held_out: torch.Tensor, encoder: nn.Module, probe_cfg: ProbeConfig,
              progress: bool = False) -> float:
    """Top-1 of a probe trained on the rows not `held_out` (bool [M]) and scored on those that are."""
    test, train = held_out.nonzero().flatten(), (~held_out).nonzero().flatten()
    result = probe_features(features.subset(train), features.subset(test), probe_cfg.task, probe_cfg,
                            encoder.embed_dim, encoder.num_heads, progress=progress)
    return result["top1"]


def cross_validate(encoder: nn.Module, cfg: Config, probe_cfg: ProbeConfig, progress: bool = False) -> dict[str, Any]:
    """K-fold cross-validation on the train split, video-wise: each clip's group (its file, or its
    folder with `--group-by folder`) falls in one fold. The clips are encoded once (through the
    feature cache, so repeated calls on the same clips reuse it); every fold trains and scores a probe.

    Returns:
        top1 (mean over folds), top1_std, fold_top1 (each fold's), num_train / num_test (clips in
        all folds; unreadable clips are left out and listed under `skipped`), folds, and the settings.
    """
    probe_cfg = dataclasses.replace(probe_cfg, checkpoint_every=0, state_file="")  # K probes: no shared state file
    cache = FeatureCache(encoder, cfg, dataclasses.replace(probe_cfg, max_train_clips=0), progress)
    features = cache.get("train", train=False)  # every crop and segment: folds train and score on them
    folds = fold_index(features.paths or [str(i) for i in range(len(features))], probe_cfg.folds, probe_cfg.seed,
                       probe_cfg.group_by)
    scores = [fold_top1(features, folds == held, encoder, probe_cfg, progress) for held in range(probe_cfg.folds)]
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    return {"task": probe_cfg.task, "probe": probe_cfg.kind, "label_fraction": probe_cfg.label_fraction,
            "top1": mean, "top1_std": std, "fold_top1": scores, "folds": probe_cfg.folds, "eval_split": "train",
            "num_train": len(features), "num_test": len(features), "train_top1": None,
            "skipped": {"train": skip_summary(features.failures)}, "feature_seconds": cache.seconds,
            "settings": to_dict(probe_cfg)}


def fold_index(paths: list[str], folds: int, seed: int = 0, group_by: str = "file") -> torch.Tensor:
    """int64 [M]: the fold of each clip, groups (files, or parent folders) dealt round-robin in a
    seeded order, so clips of one group never sit on both sides of a split.

    Raises:
        ConfigError: when there are fewer groups than folds.
    """
    from vjepa.config import ConfigError

    keys = [str(Path(p).parent) if group_by == "folder" else p for p in paths]
    groups = sorted(set(keys))
    if len(groups) < folds:
        raise ConfigError(f"--folds {folds} needs at least {folds} groups ({group_by}s); the train split has "
                          f"{len(groups)}")
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {groups[g]: k % folds for k, g in enumerate(order)}
    return torch.tensor([fold_of[key] for key in keys], dtype=torch.int64)


def evaluate_checkpoint(
    path: str | Path,
    probe_cfg: ProbeConfig,
    label_fractions: tuple[float, ...] = (1.0,),
    overrides: list[str] = (),
    output: str | Path | None = None,
    verbose: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The standard set on one checkpoint: every task x (attentive, linear) x label fraction.

    Writes all results to `output` (default: <run dir>/eval.json, suffixed like `probe_checkpoint`'s
    files for another split or network) and returns them; `progress`: tqdm bars while encoding and training.
    """
    from vjepa.config import apply_overrides

    encoder, cfg = load_frozen(path, probe_cfg.encoder, resolve_device(probe_cfg.device))
    cfg = apply_overrides(cfg, list(overrides))
    tasks = ("label",) if probe_cfg.data or probe_cfg.source else default_tasks(cfg)
    results = evaluate_encoder(encoder, cfg, probe_cfg, tasks, PROBE_KINDS, label_fractions, verbose, progress)
    step = _probed_step(path, probe_cfg.encoder)
    for r in results:
        r.update(checkpoint=_source_name(path), step=step)
    write_json(output or _result_dir(path) / f"eval{_file_suffix(probe_cfg)}.json", results)
    return results
