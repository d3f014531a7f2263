"""Frozen evaluation: clip -> frozen encoder -> token features -> probe -> top-1.

Modules, in the order the data flows:
    views        multi-view evaluation datasets (S temporal segments x C spatial crops per clip)
    features     the `Features` container and file format; `extract_features`, `embed_files`
    cache        `FeatureCache`: each split encoded once per encoder and view layout
    probe_train  probe training on features (low-shot subsets, AdamW, warmup-cosine) and `predict`
    stream       streaming probes: the encoder runs on every batch (memory bounded by the batch)
    presets      the paper's protocols (k400, ssv2, in1k) as probe settings
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
    skip_summary,
    skipped_records,
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
from vjepa.eval.presets import PROBE_PRESETS, probe_preset
from vjepa.eval.probe_train import (
    PROBE_KINDS,
    align_labels,
    balanced_subset,
    check_labels,
    make_probe_config,
    predict,
    predict_tokens,
    probe_features,
    probe_inputs,
    probe_lr,
    probe_optimizer,
    probe_step,
    train_probe,
    validate_probe,
)
from vjepa.eval.run import (
    QUICK_EVAL_SPLIT,
    QUICK_TRAIN_CLIPS,
    checkpoint_step,
    cross_validate,
    default_tasks,
    evaluate_checkpoint,
    evaluate_encoder,
    fold_index,
    probe_checkpoint,
    probe_encoder,
    quick_probe,
    write_json,
)
from vjepa.eval.stream import predict_streaming, probe_streaming, train_probe_streaming
from vjepa.eval.views import (
    SyntheticViews,
    check_held_out,
    dataset_labels,
    frames_per_segment,
    probe_data_config,
    segment_starts,
    view_dataset,
)

__all__ = [
    "PROBE_KINDS",
    "PROBE_PRESETS",
    "QUICK_EVAL_SPLIT",
    "QUICK_TRAIN_CLIPS",
    "SYNTHETIC_TASKS",
    "FeatureCache",
    "Features",
    "SyntheticViews",
    "aggregate_views",
    "align_labels",
    "balanced_subset",
    "check_held_out",
    "check_labels",
    "checkpoint_step",
    "class_names",
    "confusion_matrix",
    "cross_validate",
    "dataset_labels",
    "default_tasks",
    "describe",
    "describe_classes",
    "direction_given_type",
    "embed_files",
    "encoder_fingerprint",
    "evaluate_checkpoint",
    "evaluate_encoder",
    "extract_features",
    "fold_index",
    "format_table",
    "frames_per_segment",
    "list_videos",
    "load_features",
    "load_frozen",
    "make_probe_config",
    "per_class_top1",
    "pool_tokens",
    "predict",
    "predict_streaming",
    "predict_tokens",
    "probe_checkpoint",
    "probe_data_config",
    "probe_encoder",
    "probe_features",
    "probe_inputs",
    "probe_lr",
    "probe_optimizer",
    "probe_preset",
    "probe_step",
    "probe_streaming",
    "quick_probe",
    "recent_cache",
    "save_features",
    "segment_starts",
    "skip_summary",
    "skipped_records",
    "top1",
    "train_probe",
    "train_probe_streaming",
    "validate_probe",
    "view_dataset",
    "write_json",
]
