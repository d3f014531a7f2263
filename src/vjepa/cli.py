"""`vjepa` command line: thin subcommands over the library functions.

    vjepa pretrain [--preset demo] [--config my.yaml] [section.key=value ...]
    vjepa config demo > my.yaml
    vjepa probe RUN_DIR_OR_CHECKPOINT --task motion
    vjepa eval RUN_DIR_OR_CHECKPOINT
    vjepa prepare data.source=csv data.path=videos.csv --out cache/
    vjepa embed VIDEO_OR_DIR_OR_CSV --checkpoint CKPT -o features.safetensors
    torchrun --nproc_per_node 8 -m vjepa embed ...      (one share of the files per GPU)
    vjepa classify VIDEO_OR_DIR_OR_CSV --probe probe.safetensors [--checkpoint CKPT] [--top-k 5]
    vjepa classify VIDEO_OR_DIR_OR_CSV --probe FINETUNE_RUN_DIR   # its fine-tuned encoder and head
    vjepa visualize pca|masks|curves ...
    vjepa bench [--preset demo]
    vjepa finetune ENCODER [--data videos/] [--preset k400|ssv2] [--from scratch]

Each subcommand is registered by one `_add_*` function; errors the user can fix (bad config,
missing file) print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from vjepa.config import (
    ENCODER_NETWORKS,
    PRESETS,
    ConfigError,
    VJEPAWarning,
    apply_overrides,
    check_device,
    check_output_path,
    load_yaml,
    preset,
    to_yaml,
)

# the devices an inference command takes (`vjepa.api.load` moves the encoder with torch's `.to`)
INFERENCE_DEVICES = "auto, cpu, cuda, cuda:N or mps"
# errors the user can act on, printed as one line (exit status 2) instead of a traceback
USER_ERRORS = ("CheckpointError", "TrainingDiverged", "DecodeError", "StorageError", "RunDirLocked")


def build_config(args: argparse.Namespace):
    """Preset (or YAML file) plus dotted overrides -> Config."""
    cfg = load_yaml(args.config, base=preset(args.preset)) if args.config else preset(args.preset)
    return apply_overrides(cfg, args.overrides)


def _config_args(parser: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    parser.add_argument("--preset", default=default_preset, choices=list(PRESETS), help="starting preset")
    parser.add_argument("--config", help="YAML file applied on top of the preset")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")


def _pretrain(args: argparse.Namespace) -> int:
    from vjepa.jepa import final_effective_rank_ok
    from vjepa.train import train

    cfg = build_config(args)
    summary = train(cfg)
    if summary.get("rank", 0) != 0:  # under torchrun only rank 0 reports (its figures are global)
        return 0
    if cfg.run.probe_after:
        summary["probe"] = _probe_after(cfg)
    print(json.dumps(summary, indent=2))
    if "effective_rank_end" in summary and not final_effective_rank_ok(summary):  # none measured: no warning
        print("warning: effective rank fell below a quarter of its start: see metrics.jsonl", file=sys.stderr)
    return 0


def _probe_after(cfg) -> dict:
    """Frozen motion probe of the run just trained and of its own random init (built-in data only).

    Both encoders get the same quick protocol (`run.probe_after_clips` training clips, the val
    split, probe seed 0), so the printed gain is what this run's pretraining bought on motion. The
    probe needs the built-in set's motion labels and val split; on other data it is skipped with
    the command to run instead. A probe that fails reports why without hiding the summary of the
    training that already finished.
    """
    try:
        from vjepa.eval import default_tasks, describe, describe_classes, quick_probe
    except ImportError as err:  # a broken install: say what failed, keep the training summary
        return {"skipped": f"the evaluation module did not import: {err}"}
    if "motion" not in default_tasks(cfg):
        return {"skipped": f"the after-training probe uses the built-in set's motion labels; for data.source="
                           f"{cfg.data.source} run `vjepa probe {cfg.run.out_dir} --task label` (labelled videos; "
                           "data.path may hold {split} for the train/val/test lists)"}
    results = _quick_probes(cfg, quick_probe, describe)
    if "init" not in results:  # a probe failed: its message (and the trained encoder's score, if any)
        return results
    return _report_gain(results["target_encoder"], results["init"], describe_classes)


def _quick_probes(cfg, quick_probe, describe) -> dict:
    """The quick motion probe's results of the trained target encoder and of its init, by network;
    after a failure, {"failed": why} or the trained encoder's top-1 and {"init_failed": why}."""
    results = {}
    for which in ("target_encoder", "init"):
        try:
            results[which] = quick_probe(cfg.run.out_dir, which=which, max_train_clips=cfg.run.probe_after_clips,
                                         verbose=False)
        except (ValueError, RuntimeError) as err:  # ConfigError, DataError: ValueErrors; CheckpointError: RuntimeError
            print(f"warning: the after-training probe failed: {err}", file=sys.stderr)
            if not results:
                return {"failed": str(err)}
            print(describe(results["target_encoder"]))  # keep the trained encoder's score
            return {"target_encoder": results["target_encoder"]["top1"], "init_failed": str(err)}
    return results


def _report_gain(target: dict, init: dict, describe_classes) -> dict:
    """Print the trained encoder's and its init's quick-probe top-1 and the gain; return the summary."""
    gain = round(target["top1"] - init["top1"], 1)
    print(f"after-training probe: motion, attentive, {target['num_train']} training clips, top-1 on the "
          f"{target['eval_split']} split ({target['num_test']} clips, chance 12.5%):\n"
          f"  target encoder (trained)   {target['top1']:5.1f}%   {describe_classes(target)}\n"
          f"  its random init            {init['top1']:5.1f}%   {describe_classes(init)}\n"
          f"  pretraining gain           {gain:+5.1f} points")
    return {"task": "motion", "eval_split": target["eval_split"], "num_train": target["num_train"],
            "target_encoder": target["top1"], "init": init["top1"], "gain": gain}


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder (default: demo preset on built-in data)")
    _config_args(p)
    p.set_defaults(func=_pretrain)


def _config(args: argparse.Namespace) -> int:
    from vjepa.config import validate

    if args.name in PRESETS:  # `vjepa config demo64 ...`: the positional form
        if args.preset_flag and args.preset_flag != args.name:
            raise ConfigError(f"two presets given: {args.name} and --preset {args.preset_flag}")
        args.preset = args.name
    elif args.name and "=" not in args.name:
        raise ConfigError(f"unknown preset {args.name!r}; choose from {', '.join(PRESETS)}")
    else:  # `vjepa config --preset demo64 a=1`: the first override landed in `name`
        args.overrides = ([args.name] if args.name else []) + args.overrides
        args.preset = args.preset_flag or "demo"
    sys.stdout.write(to_yaml(validate(build_config(args))))  # a value training would refuse is refused here
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print a preset (with --config and overrides applied) as YAML: a starting "
                                      "point for your own runs")
    p.add_argument("name", nargs="?", help=f"preset name (or --preset): {', '.join(PRESETS)}; default demo")
    p.add_argument("--preset", dest="preset_flag", choices=list(PRESETS), help="starting preset")
    p.add_argument("--config", help="YAML file applied on top of the preset")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")
    p.set_defaults(func=_config)


def _bench(args: argparse.Namespace) -> int:
    from vjepa.bench import benchmark

    flags = [f"run.dtype={args.dtype}", f"run.compile={args.compile}", f"run.threads={args.threads}",
             f"run.activation_checkpointing={args.activation_checkpointing}"]
    flags += [f"data.batch_size={args.batch_size}"] if args.batch_size is not None else []
    args.overrides = flags + args.overrides  # explicit overrides win
    if args.device:
        check_device(args.device, "--device")
    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(f"--steps {args.steps} --warmup {args.warmup}: time at least 1 step after 0 or more warm-up steps")
    if args.json:  # fail now, not after minutes of timing (and leave no empty file behind)
        check_output_path(args.json, "--json")
    report = benchmark(build_config(args), steps=args.steps, warmup=args.warmup, official=args.official_structure,
                       compare_official=args.compare, ablation=args.ablation, device=args.device,
                       official_dtypes=tuple(args.official_dtypes) if args.official_dtypes else None)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time training steps: clips/s, FLOPs, MFU, memory (JSON)")
    _config_args(p)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 where the device has native bf16 (GPU, AVX512-BF16/AMX CPU), else fp32")
    p.add_argument("--batch-size", type=int, default=None, help="clips per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's run.device)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute blocks in backward")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--official-structure", action="store_true",
                      help="time only the official step as its configs run it (fp32, SDPA, truncation)")
    mode.add_argument("--compare", action="store_true",
                      help="time ours and the official step (per --official-dtypes), interleaved")
    mode.add_argument("--ablation", action="store_true", help="official step -> ours, one change at a time")
    p.add_argument("--official-dtypes", nargs="+", default=None, choices=["fp32", "bf16"],
                   help="--compare: the official step's dtypes (default: fp32, plus bf16 where the device has native "
                        "bf16; on an AVX2-only CPU bf16 runs ~10x slower than fp32)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report to this JSON file")
    p.set_defaults(func=_bench)


def _prepare(args: argparse.Namespace) -> int:
    from vjepa.data.prepare import prepare_main

    cfg = build_config(args)
    for line in prepare_main(cfg.data, args.out, args.split):
        print(line)
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode a video dataset once into a fast uint8 cache")
    _config_args(p)
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--split", nargs="+", default=["train"], help="splits to cache")
    p.set_defaults(func=_prepare)


def _probe_config(args: argparse.Namespace):
    """A ProbeConfig from the shared `probe` / `eval` flags."""
    from vjepa.eval import make_probe_config, probe_preset

    if args.device:
        check_device(args.device, "--device", INFERENCE_DEVICES)
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "num_segments": args.segments,
                "num_crops": args.crops, "attend_across_segments": args.attend_across_segments,
                "frames_per_segment": args.frames, "resize_ratio": args.resize_ratio, "encoder": args.which,
                "max_train_clips": args.max_train_clips, "eval_split": args.eval_split,
                "cache_dir": args.cache_dir, "device": args.device, "seed": args.seed, "data": args.data,
                "source": args.source, "frame_step": args.frame_step, "fps": args.fps, "streaming": args.stream,
                "num_workers": args.workers, "folds": args.folds, "group_by": args.group_by,
                "checkpoint_every": args.checkpoint_every, "depth": args.depth, "variant": args.variant}
    chosen = {k: v for k, v in settings.items() if v is not None}
    return make_probe_config(**({**probe_preset(args.preset), **chosen} if args.preset else chosen))


def _probe_args(p: argparse.ArgumentParser) -> None:
    """The options `probe` and `eval` share, in help order."""
    _probe_input_args(p)
    _probe_training_args(p)
    _probe_view_args(p)
    _probe_run_args(p)


def _probe_input_args(p: argparse.ArgumentParser) -> None:
    """What to probe and on which data: the checkpoint, the labelled data, the protocol preset and clip sampling."""
    p.add_argument("path", help="run directory (uses latest.pt), checkpoint, export, official .pth.tar, or a "
                                "preset name (random init)")
    p.add_argument("--data", help="labelled data to probe on: a CSV (`path label` lines), class folders, ...; "
                                  "a folder with train/ and test/ (or train.csv, test.csv), or {split} in the path "
                                  "(default: the run's data)")
    p.add_argument("--source", choices=["csv", "folder", "frames", "tiff", "cache", "images"],
                   help="what --data holds (default: guessed; class folders of still images need `images`)")
    p.add_argument("--preset", choices=["k400", "ssv2", "in1k"],
                   help="the paper's protocol: k400 16x8x3, ssv2 16x2x3, in1k images (flags given override it)")
    p.add_argument("--frame-step", type=int, help="the probe's source frames between clip frames (default 4; "
                                                   "not the run's data.frame_step)")
    p.add_argument("--fps", type=float, help="sample clips at this frame rate instead of --frame-step")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="run the encoder on every batch (memory bounded by the batch; augmented training clips) "
                        "instead of caching tokens (presets stream)")
    p.add_argument("--workers", type=int, help="DataLoader workers decoding clips (default 0)")


def _probe_training_args(p: argparse.ArgumentParser) -> None:
    """How the probe trains: cross-validation, checkpointing, epochs, batch, learning rate and its shape."""
    p.add_argument("--folds", type=int, help="K-fold cross-validation on the train split instead of scoring "
                                             "--eval-split (video-wise)")
    p.add_argument("--group-by", choices=["file", "folder"],
                   help="cross-validation groups: each file, or each folder's clips together")
    p.add_argument("--checkpoint-every", type=int,
                   help="save the probe's training state every N steps beside the JSON (<output>.state.pt); "
                        "rerunning the same command resumes from it exactly")
    p.add_argument("--epochs", type=int, help="probe epochs on cached features (default 100)")
    p.add_argument("--batch-size", type=int, help="probe batch size (default 16)")
    p.add_argument("--lr", type=float, help="probe peak learning rate (default 1e-3)")
    p.add_argument("--depth", type=int, help="attentive probe blocks (default 1; V-JEPA 2 uses 4 with --variant vjepa2)")
    p.add_argument("--variant", choices=["vjepa1", "vjepa2"],
                   help="extra blocks on the query after cross-attention (vjepa1, default) or on the tokens before")


def _probe_view_args(p: argparse.ArgumentParser) -> None:
    """The test-time views: segments, crops, frames per segment and resizing."""
    p.add_argument("--segments", type=int, help="temporal segments per clip (default 1)")
    p.add_argument("--crops", type=int, choices=[1, 3], help="spatial crops per segment at test time")
    p.add_argument("--attend-across-segments", action="store_true", default=None,
                   help="one probe reads all segments' tokens at once")
    p.add_argument("--frames", type=int, help="frames per segment (default: the run's data.num_frames)")
    p.add_argument("--resize-ratio", type=float, help="short side = crop * ratio before cropping (default 1)")


def _probe_run_args(p: argparse.ArgumentParser) -> None:
    """The encoder network, data limits, feature cache, device, seed, output file and config overrides."""
    p.add_argument("--which", choices=ENCODER_NETWORKS, help="network to probe")
    p.add_argument("--max-train-clips", type=int, help="use at most this many training clips (0: all)")
    p.add_argument("--eval-split", help="split to score (default test)")
    p.add_argument("--cache-dir", help="write token features here (.npy, memory-mapped; keyed by the clips' "
                                       "content and sampling) and reuse them in later probes")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int, help="probe seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--output", help="JSON file to write (default: beside the checkpoint, i.e. inside a run "
                                    "directory; the working directory for a preset name); the path is printed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (encoding clips, probe epochs)")
    p.add_argument("overrides", nargs="*", help="run-config changes, e.g. data.source=csv data.path=list.csv")


def _probe(args: argparse.Namespace) -> int:
    import torch

    from vjepa.eval import describe, describe_classes, probe_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    probe_cfg = _probe_config(args)
    probe_cfg.task = args.task or ("" if not args.preset else probe_cfg.task)  # "": the data's default task
    probe_cfg.kind = args.probe or probe_cfg.kind
    probe_cfg.label_fraction = args.label_fraction
    save = False if args.no_save_probe else (args.save_probe or True)
    result = probe_checkpoint(args.path, probe_cfg, args.overrides, args.output, save, progress=not args.no_progress)
    if "output" not in result:  # under torchrun only rank 0 reports
        return 0
    print(describe(result))
    if result.get("per_class_top1"):
        print(describe_classes(result))
    for split, skipped in result.get("skipped", {}).items():
        for path in skipped["skipped_files"]:
            print(f"skipped {path} ({split} split; unreadable or too short, see the warnings)", file=sys.stderr)
    print(f"wrote {result['output']}")
    if "probe_file" in result:
        print(f"wrote {result['probe_file']} (the trained probe: `vjepa classify VIDEO --probe` it)")
    return 0


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="train a probe on a frozen encoder; print top-1 on the test split")
    p.add_argument("--task", choices=["motion", "appearance", "label"],
                   help="motion (SSv2 role) / appearance (K400 role) on built-in data; label on real video "
                        "(default: label with --data or on a run's real data, else motion)")
    p.add_argument("--probe", choices=["attentive", "linear"], help="default attentive")
    p.add_argument("--label-fraction", type=float, default=1.0, help="class-balanced share of labels, e.g. 0.05")
    p.add_argument("--save-probe", help="probe file to write (default: beside the JSON, .safetensors)")
    p.add_argument("--no-save-probe", action="store_true", help="do not keep the trained probe")
    _probe_args(p)
    p.set_defaults(func=_probe)


def _eval(args: argparse.Namespace) -> int:
    import torch

    from vjepa.eval import evaluate_checkpoint, format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    results = evaluate_checkpoint(args.path, _probe_config(args), tuple(args.label_fractions), args.overrides,
                                  args.output, progress=not args.no_progress)
    print(format_table(results))
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="the standard probes (tasks x attentive/linear) on one run; prints a table")
    p.add_argument("--label-fractions", type=float, nargs="+", default=[1.0], help="e.g. 1.0 0.05")
    _probe_args(p)
    p.set_defaults(func=_eval)


def _encoder_args(p: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    """Flags shared by the commands that load an encoder (see `vjepa.api.load`)."""
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="run dir, .pt, .safetensors export, official .pth.tar, or a preset name (random init)")
    p.add_argument("--which", default="target_encoder", choices=ENCODER_NETWORKS)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--num-heads", type=int, help="official checkpoints of an unofficial width: attention heads")
    p.add_argument("--num-frames", type=int, help="official checkpoints: clip length trained at, if shapes can't tell")
    p.add_argument("--img-size", type=int, help="official checkpoints: frame side trained at, if shapes can't tell")
    p.add_argument("--pos-embed", choices=["sincos", "rope"],
                   help="official checkpoints: V-JEPA 1 (sincos) or 2 (rope), if the file can't tell (docs/vjepa2.md)")


def _load_encoder(args: argparse.Namespace):
    from vjepa.api import load

    check_device(args.device, "--device", INFERENCE_DEVICES)
    return load(args.checkpoint, args.which, args.device, num_frames=args.num_frames, img_size=args.img_size,
                num_heads=args.num_heads, with_predictor=False, precision=args.precision, pos_embed=args.pos_embed)


# ranks that finish their share early wait for the slowest at a barrier: allow a long wait
EMBED_TIMEOUT_S = 6 * 3600


def _embed(args: argparse.Namespace) -> int:
    from vjepa import distributed
    from vjepa.eval import embed_files, list_videos
    from vjepa.eval.shard import join_shares, share

    check_device(args.device, "--device", INFERENCE_DEVICES)
    env = distributed.DistEnv()
    if distributed.torchrun_env()[1] > 1:  # torchrun: one share of the files per rank and device
        env = distributed.setup(args.device, timeout_s=EMBED_TIMEOUT_S)
        args.device = str(env.device)
    encoder = _load_encoder(args)
    videos = list_videos(args.input)
    result = embed_files(encoder, share(videos, env.rank, env.world_size), args.pooled, args.batch_size,
                         args.frames, args.frame_step, args.stride, progress=not args.no_progress and env.rank == 0)
    if env.world_size > 1:
        result = join_shares(result, args.output, env.rank, env.world_size)
        distributed.teardown(env)
        if result is None:  # not rank 0: rank 0 reports and writes
            return 0
    return _report_embedded(args, result, len(videos))


def _report_embedded(args: argparse.Namespace, result, num_videos: int) -> int:
    from vjepa.eval import save_features

    for path, error in result.failures:
        print(f"skipped {path}: {error}", file=sys.stderr)
    if not result.videos:
        print(f"vjepa embed: error: none of the {num_videos} videos could be embedded", file=sys.stderr)
        return 1
    written = save_features(args.output, result, args.dtype)
    print(f"embedded {len(result.videos)} of {num_videos} videos: {len(result)} windows, tokens "
          f"{tuple(result.tokens.shape)} -> {', '.join(str(w) for w in written)}"
          + (f" ({len(result.failures)} skipped, listed above)" if result.failures else ""))
    return 0


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="features of videos (a file, a folder or a CSV list) -> .safetensors/.npy")
    p.add_argument("input", help="video file, folder of videos, or CSV/TXT list (`path [label]` per line)")
    _encoder_args(p)
    p.add_argument("-o", "--output", required=True, help="features.safetensors or features.npy (+ features.json)")
    p.add_argument("--pooled", action="store_true", help="one vector per window (mean over tokens)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--frames", type=int, help="frames per window (default: the model's)")
    p.add_argument("--frame-step", type=int, help="source frames between window frames (default: the run's)")
    p.add_argument("--stride", type=int, help="source frames between window starts (default: no overlap)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored feature type")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)


def _classify(args: argparse.Namespace) -> int:
    from vjepa.classify import classify_videos, describe_prediction, load_probe, write_classification
    from vjepa.eval import list_videos

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: report at least 1 class per video")
    encoder = _load_encoder(args) if args.checkpoint else None
    official = {"head": args.probe_head, **({"num_heads": args.probe_heads} if args.probe_heads else {})}
    probe = load_probe(args.probe, encoder, args.device, args.precision, **official)
    if probe.encoder is None:
        raise ValueError(f"{args.probe} names no encoder that still exists: pass --checkpoint")
    videos = list_videos(args.input)
    out = classify_videos(probe, videos, args.top_k, args.batch_size, progress=not args.no_progress)
    for entry in out["results"]:
        print(describe_prediction(entry))
    for skip in out["skipped"]:
        print(f"skipped {skip['reason']}", file=sys.stderr)
    payload = {"probe": str(args.probe), "checkpoint": probe.encoder.source, "protocol": vars(probe.protocol),
               **out}
    print(f"classified {len(out['results'])} of {len(videos)} videos -> {write_classification(args.output, payload)}"
          + (f" ({len(out['skipped'])} skipped, listed above)" if out["skipped"] else ""))
    return 0 if out["results"] else 1


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="top-k classes of videos with a trained probe (prints, writes JSON)")
    p.add_argument("input", help="video file, folder of videos, or CSV/TXT list (`path [label]` per line)")
    p.add_argument("--probe", required=True,
                   help="probe file from `vjepa probe` (.safetensors), a `vjepa finetune` run (folder or its .pt: "
                        "its encoder and head), an official .pt, or a Hugging Face classifier folder")
    _encoder_args(p, checkpoint_required=False)
    p.add_argument("--top-k", type=int, default=5, help="classes reported per video")
    p.add_argument("-o", "--output", default="classify.json", help="JSON file to write")
    p.add_argument("--batch-size", type=int, default=16, help="views per encoder call")
    p.add_argument("--probe-heads", type=int, help="official probe checkpoints: attention heads (they use 16)")
    p.add_argument("--probe-head", type=int, default=0, help="official vjepa2 checkpoints: which of their probes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_classify)


def _export(args: argparse.Namespace) -> int:
    from vjepa.api import export, export_hf

    if args.format == "hf":
        print(f"wrote {export_hf(args.source, args.output, args.which)}")
    else:
        print(f"wrote {export(args.source, args.output, args.which, args.predictor)}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="one encoder's weights + config -> .safetensors (also converts official)")
    p.add_argument("source", help="run dir, .pt checkpoint, or official .pth.tar")
    p.add_argument("-o", "--output", required=True, help="file to write, e.g. encoder.safetensors")
    p.add_argument("--which", default="target_encoder", choices=["target_encoder", "encoder"])
    p.add_argument("--predictor", action="store_true", help="also store the predictor (keys predictor.*)")
    p.add_argument("--format", default="vjepa", choices=["vjepa", "hf"],
                   help="vjepa: one .safetensors with our config; hf: a transformers VJEPA2Model folder "
                        "(RoPE models with a predictor)")
    p.set_defaults(func=_export)


def _visualize(args: argparse.Namespace) -> int:
    from vjepa import visualize

    if args.kind == "pca":
        path = visualize.pca_figure(_load_encoder(args), args.video, args.output, args.start, args.frame_step,
                                    args.cell)
    elif args.kind == "masks":
        from vjepa.api import load_config

        path = visualize.masks_figure(load_config(args.source), args.output, args.video, args.seed, args.cell)
    else:
        path = visualize.curves_figure(args.run_dir, args.output)
    print(f"wrote {path}")
    return 0


def _add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="PNG/GIF: PCA of patch features, sampled masks, training curves")
    kinds = p.add_subparsers(dest="kind", required=True)
    pca = kinds.add_parser("pca", help="input frames next to the first 3 PCA components of their features")
    pca.add_argument("video", help="video file (one window of it is shown)")
    _encoder_args(pca)
    pca.add_argument("-o", "--output", default="pca.png", help=".png (grid) or .gif (animation)")
    pca.add_argument("--start", type=int, default=0, help="show the first window starting at or after this frame")
    pca.add_argument("--frame-step", type=int, help="source frames between clip frames (default: the run's)")
    pca.add_argument("--cell", type=int, default=128, help="pixels per picture cell")
    masks = kinds.add_parser("masks", help="context (clear) and target (red) tokens of one sample per generator")
    masks.add_argument("source", nargs="?", default="demo", help="run dir, checkpoint or preset (its mask config)")
    masks.add_argument("--video", help="clip to draw on (default: a built-in synthetic clip)")
    masks.add_argument("-o", "--output", default="masks.png", help=".png or .gif")
    masks.add_argument("--seed", type=int, default=0, help="mask sampler seed")
    masks.add_argument("--cell", type=int, default=128, help="pixels per picture cell")
    curves = kinds.add_parser("curves", help="loss, lr, target std and effective rank from metrics.jsonl")
    curves.add_argument("run_dir", help="run directory")
    curves.add_argument("-o", "--output", default="curves.png", help=".png, .pdf or .svg")
    for kind in (pca, masks, curves):
        kind.set_defaults(func=_visualize)


def _finetune(args: argparse.Namespace) -> int:
    from vjepa.finetune import finetune, finetune_config

    cfg, settings = finetune_config(args.encoder, args.overrides, args.preset or "", args.start == "scratch",
                                    args.data or "", args.source or "")
    if args.head:
        settings.head = args.head
    summary = finetune(cfg, settings)
    if summary.get("rank", 0) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _add_finetune(sub) -> None:
    from vjepa.finetune import FINETUNE_PRESETS, HEADS

    p = sub.add_parser("finetune", help="train an encoder and a classification head end to end on labels")
    p.add_argument("encoder", help="where the encoder starts: run directory, checkpoint, export, official or "
                                   "Hugging Face file, or a preset name (with --from scratch)")
    p.add_argument("--data", help="labelled videos: class folders or a CSV (`path label`); {split} allowed. "
                                  "Default: the encoder's data (the built-in set: motion labels)")
    p.add_argument("--source", help="what --data holds (csv, folder, frames, tiff, images; default: guessed)")
    p.add_argument("--preset", choices=list(FINETUNE_PRESETS), default="ssv2",
                   help="fine-tuning recipe (docs/finetune.md); default ssv2: no flips, safe for any labels")
    p.add_argument("--from", dest="start", choices=("weights", "scratch"), default="weights",
                   help="start from the encoder's weights, or from random weights of its architecture")
    p.add_argument("--head", choices=list(HEADS), help="classification head (default attentive)")
    p.add_argument("overrides", nargs="*", help="section.key=value (finetune.key=value for the fine-tune settings)")
    p.set_defaults(func=_finetune)


REGISTRY = [_add_prepare, _add_pretrain, _add_config, _add_bench, _add_probe, _add_eval, _add_embed, _add_classify,
            _add_export, _add_visualize, _add_finetune]


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="vjepa", description="V-JEPA video representation learning")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in REGISTRY:
        add(sub)
    return parser


def quiet_openmp_threads() -> None:
    """Let idle OpenMP threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a policy.

    By default OpenMP threads spin while they wait for work; with another process on the machine
    the spinning threads steal its cores and both crawl (issue 24: demo64 bf16 with one busy
    neighbour, 2 threads: 2.5 clips/s by default, 4.55 with PASSIVE, 4.9 with 1 thread). The
    policy is read once, when the OpenMP runtime starts (at `import torch`), so it is set here,
    before any subcommand imports torch; once torch is imported it is left alone.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def one_line_warnings() -> None:
    """Print the library's own warnings (skipped videos, empty classes, ...) as one line each,
    `vjepa: Category: message`, without the source line Python adds under a warning; other
    libraries' warnings keep Python's format."""
    default = warnings.formatwarning
    if getattr(default, "one_line", False):  # installed already (main() called again in one process)
        return

    def formatted(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, VJEPAWarning):
            return f"vjepa: {category.__name__}: {message}\n"
        return default(message, category, filename, lineno, line)

    formatted.one_line = True
    warnings.formatwarning = formatted


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vjepa` console script."""
    quiet_openmp_threads()
    one_line_warnings()
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (`pretrain --preset demo a=1 --config f b=2`);
    # argparse stops collecting a positional list at the first option, so collect the rest here
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args) or 0
    except (ConfigError, FileNotFoundError, ValueError) as err:  # DataError is a ValueError
        print(f"vjepa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if type(err).__name__ == "TrainingInterrupted":  # SIGTERM: saved; non-zero so a scheduler requeues
            return err.exit_code
        if type(err).__name__ in USER_ERRORS:
            print(f"vjepa {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
