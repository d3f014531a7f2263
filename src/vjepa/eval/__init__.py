"""Frozen evaluation: clip -> frozen encoder -> token features -> probe -> top-1.

Modules, in the order the data flows:
    views        multi-view evaluation datasets (S temporal segments x C spatial crops per clip)
    features     the `Features` container and file format; `extract_features`, `embed_files`
    cache        `FeatureCache`: each split encoded once per encoder and view layout
    probe_train  probe training on features (low-shot subsets, AdamW, warmup-cosine) and `predict`
    metrics      multi-view aggregation, top-1, confusion, class names, summaries
    run          `probe_encoder`, `quick_probe`, `evaluate_encoder` and the CLI's entry points

Every public name is importable from `vjepa.eval` itself.
"""

from vjepa.eval.cache import FeatureCache, load_frozen, recent_cache
from vjepa.eval.features import (
    SYNTHETIC_TASKS,
    Features,
    embed_files,
    encoder_fingerprint,
    extract_features,
    list_videos,
    load_features,
    pool_tokens,
    save_features,
)
from vjepa.eval.metrics import (
    aggregate_views,
    class_names,
    confusion_matrix,
    describe,
    describe_classes,
    direction_given_type,
    format_table,
    per_class_top1,
    top1,
)
from vjepa.eval.probe_train import (
    PROBE_KINDS,
    balanced_subset,
    make_probe_config,
    predict,
    probe_features,
    probe_inputs,
    probe_lr,
    probe_optimizer,
    train_probe,
    validate_probe,
)
from vjepa.eval.run import (
    QUICK_EVAL_SPLIT,
    QUICK_TRAIN_CLIPS,
    checkpoint_step,
    default_tasks,
    evaluate_checkpoint,
    evaluate_encoder,
    probe_checkpoint,
    probe_encoder,
    quick_probe,
    write_json,
)
from vjepa.eval.views import SyntheticViews, frames_per_segment, image_clip, segment_starts, view_dataset

__all__ = [
    "PROBE_KINDS",
    "QUICK_EVAL_SPLIT",
    "QUICK_TRAIN_CLIPS",
    "SYNTHETIC_TASKS",
    "FeatureCache",
    "Features",
    "SyntheticViews",
    "aggregate_views",
    "balanced_subset",
    "checkpoint_step",
    "class_names",
    "confusion_matrix",
    "default_tasks",
    "describe",
    "describe_classes",
    "direction_given_type",
    "embed_files",
    "encoder_fingerprint",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "extract_features",
    "format_table",
    "frames_per_segment",
    "image_clip",
    "list_videos",
    "load_features",
    "load_frozen",
    "make_probe_config",
    "per_class_top1",
    "pool_tokens",
    "predict",
    "probe_checkpoint",
    "probe_encoder",
    "probe_features",
    "probe_inputs",
    "probe_lr",
    "probe_optimizer",
    "quick_probe",
    "recent_cache",
    "save_features",
    "segment_starts",
    "top1",
    "train_probe",
    "validate_probe",
    "view_dataset",
    "write_json",
]
