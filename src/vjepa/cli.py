"""`vjepa` command line: thin subcommands over the library functions.

    vjepa pretrain [--preset demo] [--config my.yaml] [section.key=value ...]
    vjepa config demo > my.yaml
    vjepa probe RUN_DIR_OR_CHECKPOINT --task motion
    vjepa eval RUN_DIR_OR_CHECKPOINT
    vjepa prepare data.source=csv data.path=videos.csv --out cache/
    vjepa embed VIDEO_OR_DIR_OR_CSV --checkpoint CKPT -o features.safetensors
    vjepa visualize pca|masks|curves ...
    vjepa bench [--preset demo]

Each subcommand is registered by one `_add_*` function; errors the user can fix (bad config,
missing file) print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from vjepa.config import PRESETS, ConfigError, apply_overrides, load_yaml, preset, to_yaml


def build_config(args: argparse.Namespace):
    """Preset (or YAML file) plus dotted overrides -> Config."""
    cfg = load_yaml(args.config, base=preset(args.preset)) if args.config else preset(args.preset)
    return apply_overrides(cfg, args.overrides)


def _config_args(parser: argparse.ArgumentParser, default_preset: str = "demo") -> None:
    parser.add_argument("--preset", default=default_preset, choices=list(PRESETS), help="starting preset")
    parser.add_argument("--config", help="YAML file applied on top of the preset")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")


def _pretrain(args: argparse.Namespace) -> int:
    from vjepa.train import final_effective_rank_ok, train

    cfg = build_config(args)
    summary = train(cfg)
    if cfg.run.probe_after and summary.get("rank", 0) == 0:
        summary["probe"] = _probe_after(cfg)
    print(json.dumps(summary, indent=2))
    if not final_effective_rank_ok(summary):
        print("warning: effective rank fell below a quarter of its start: see metrics.jsonl", file=sys.stderr)
    return 0


def _probe_after(cfg) -> dict:
    """Short frozen motion probe of the run just trained, if the evaluation module is present."""
    try:
        from vjepa.evaluate import quick_probe
    except ImportError:
        return {"skipped": "evaluation module not available"}
    return quick_probe(cfg.run.out_dir)


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder (default: demo preset on built-in data)")
    _config_args(p)
    p.set_defaults(func=_pretrain)


def _config(args: argparse.Namespace) -> int:
    cfg = apply_overrides(preset(args.name), args.overrides)
    sys.stdout.write(to_yaml(cfg))
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print a preset as YAML (a starting point for your own runs)")
    p.add_argument("name", nargs="?", default="demo", choices=list(PRESETS))
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_config)


REGISTRY = [_add_pretrain, _add_config]


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="vjepa", description="V-JEPA video representation learning")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in REGISTRY:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vjepa` console script."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConfigError, FileNotFoundError) as err:
        print(f"vjepa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if type(err).__name__ in ("CheckpointError", "TrainingDiverged", "DataError"):
            print(f"vjepa {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
