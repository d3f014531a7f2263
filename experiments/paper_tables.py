"""The paper's ablation tables in miniature, on the built-in synthetic set.

Trains each variant for the same number of steps at the same batch size (same encoder, data,
masks and schedules), probes every checkpoint with frozen-feature probes, and writes a Markdown
table (with the paper's ViT-L numbers beside ours), PNG plots of probe accuracy vs pretraining
steps, and every measurement as JSON. Motion classes play the role of SSv2, appearance (shape)
classes the role of K400.

    python experiments/paper_tables.py --quick                       # smoke test, ~2 min on a CPU
    python experiments/paper_tables.py --preset demo --steps 1500 --seeds 0 1 --out runs/paper_tables
    python experiments/paper_tables.py --variants jepa pixel --probe-epochs 100

Variants: jepa (feature prediction, multi-block masks), pixel (normalised-pixel regression, same
masks, no EMA target), tube (random tubes, 90%), causal (multi-block context from the first
`mask.causal_context_frames` frames only), random (the pretraining runs' own initial weights, no
training), supervised (encoder + attentive head trained end to end on motion labels: the ceiling).
"Equal compute" means equal steps x batch: pixel runs skip the target encoder and supervised runs
the predictor, so they do somewhat less arithmetic per step.

Re-running with the same --out resumes: finished runs are not retrained and finished probes are
read back from results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vjepa.checkpoint import load_checkpoint
from vjepa.config import Config, apply_overrides, preset
from vjepa.data.synthetic import MOTION_CLASSES, MOTION_TYPES
from vjepa.eval import (
    FeatureCache,
    direction_given_type,
    load_frozen,
    make_probe_config,
    probe_encoder,
)
from vjepa.models.factory import initial_encoder
from vjepa.precision import freeze
from vjepa.train import train

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "jepa": ("V-JEPA: feature prediction, multi-block", ["objective.kind=jepa", "mask.kind=multiblock"]),
    "pixel": ("pixel reconstruction, multi-block", ["objective.kind=pixel", "mask.kind=multiblock"]),
    "tube": ("V-JEPA, random-tube masking (0.9)", ["objective.kind=jepa", "mask.kind=tube"]),
    "causal": ("V-JEPA, causal multi-block", ["objective.kind=jepa", "mask.kind=causal"]),
    "random": ("random init (no pretraining)", []),
    "supervised": ("supervised on motion labels (ceiling)", []),
}
TASKS = ("motion", "appearance")  # SSv2 role, K400 role
ROLE = {"motion": "SSv2", "appearance": "K400"}

# The paper's frozen-evaluation numbers (ViT-L/16, attentive probe), Bardes et al. 2024.
PAPER = {
    "objective": {
        "jepa": {"K400": 73.7, "SSv2": 66.2, "IN1K": 74.8},
        "pixel": {"K400": 68.6, "SSv2": 66.0, "IN1K": 73.3},
    },
    "masking": {
        "jepa": {"K400": 72.9, "SSv2": 67.4},
        "tube": {"K400": 51.5, "SSv2": 46.4},
        "causal": {"K400": "61.3 (6 fr) / 71.9 (12 fr)", "SSv2": "49.8 (6 fr) / 63.6 (12 fr)"},
    },
    "pooling": {"attentive": {"K400": 80.8, "SSv2": 69.5}, "linear": {"K400": 63.5, "SSv2": 53.4}},
    "low_shot_5pct": {"K400": 67.0, "SSv2": 54.0},  # ViT-H/16, the paper's 5%-label table
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", help="starting preset (demo: the CPU demo, 12,000 steps per variant; see --steps)")
    p.add_argument("--steps", type=int, default=0, help="pretraining steps per variant (0: the preset's)")
    p.add_argument(
        "--out", default="runs/paper_tables", help="output folder (runs, results.json, tables, plots)"
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one pretraining run per seed and variant"
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--checkpoints", type=int, default=4, help="probed points along training (incl. the end)")
    p.add_argument("--probe-epochs", type=int, default=0, help="probe epochs (0: ProbeConfig default)")
    p.add_argument("--max-train-clips", type=int, default=0, help="probe training clips (0: all)")
    p.add_argument("--low-shot", type=float, default=0.05, help="label fraction of the low-shot probes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument(
        "--quick", action="store_true", help="tiny smoke test: debug preset, a few steps and epochs"
    )
    p.add_argument("overrides", nargs="*", help="config overrides for every variant, e.g. data.batch_size=8")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.steps = "debug", args.steps or 6
        args.probe_epochs, args.checkpoints = args.probe_epochs or 3, min(args.checkpoints, 2)
    return args


# ---------------------------------------------------------------------------------------------
# pretraining


def base_config(args: argparse.Namespace, seed: int) -> Config:
    """The shared config: preset + overrides, with steps, seed and checkpoint spacing set."""
    cfg = apply_overrides(preset(args.preset), args.overrides)
    if args.steps:
        cfg.optim.steps = args.steps
        cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, max(1, args.steps // 10))
    cfg.run.seed = seed
    cfg.run.keep_every = max(1, cfg.optim.steps // max(1, args.checkpoints))
    cfg.run.checkpoint_every = min(cfg.run.checkpoint_every, cfg.run.keep_every)
    cfg.run.progress, cfg.run.probe_after = False, False
    if args.threads:
        cfg.run.threads = args.threads
    return cfg


def variant_config(args: argparse.Namespace, variant: str, seed: int) -> Config:
    """The config of one variant's run, writing to <out>/runs/<variant>_s<seed>."""
    cfg = apply_overrides(base_config(args, seed), VARIANTS[variant][1])
    cfg.run.out_dir = str(Path(args.out) / "runs" / f"{variant}_s{seed}")
    return cfg


def finished(run_dir: Path, steps: int) -> bool:
    """True when run_dir/latest.pt holds a run that reached `steps`."""
    latest = run_dir / "latest.pt"
    return latest.is_file() and int(load_checkpoint(latest).get("step", -1)) >= steps


def pretrain(cfg: Config, variant: str) -> float:
    """Train one variant (skipped when already finished); returns the seconds it took now."""
    run_dir = Path(cfg.run.out_dir)
    if finished(run_dir, cfg.optim.steps):
        return 0.0
    start = time.perf_counter()
    if variant == "supervised":
        from vjepa.supervised import train_supervised

        train_supervised(cfg, task="motion")
    else:
        train(cfg)
    return time.perf_counter() - start


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every kept step_N.pt and of latest.pt, by step, one path per step."""
    found = {int(p.stem.split("_")[1]): p for p in run_dir.glob("step_*.pt")}
    latest = run_dir / "latest.pt"
    if latest.is_file():
        found.setdefault(int(load_checkpoint(latest)["step"]), latest)
    return sorted(found.items())


# ---------------------------------------------------------------------------------------------
# probing


def probe_plan(final: bool, low_shot: float) -> list[tuple[str, str, float]]:
    """(task, probe, label fraction) to run: the full set at the end, attentive 100% along the way."""
    if not final:
        return [(task, "attentive", 1.0) for task in TASKS]
    return [(t, k, f) for t in TASKS for k in ("attentive", "linear") for f in (1.0, low_shot)]


def probe_point(
    encoder: torch.nn.Module,
    cfg: Config,
    plan: list[tuple[str, str, float]],
    probe_cfg,
    done: dict,
    key: dict,
) -> list[dict[str, Any]]:
    """Run every planned probe not in `done` on one encoder, sharing one feature cache."""
    cache = FeatureCache(encoder, cfg, probe_cfg)
    records = []
    for task, kind, fraction in plan:
        ident = json.dumps({**key, "task": task, "probe": kind, "label_fraction": fraction}, sort_keys=True)
        if ident in done:
            continue
        result = probe_encoder(encoder, cfg, task, kind, fraction, probe_cfg, cache)
        result.pop("settings")
        records.append({**key, **result})
        print(
            f"  {key['variant']:<10} seed {key['seed']} step {key['step']:>5}  {task:<10} {kind:<9} "
            f"{100 * fraction:>3g}%  top-1 {result['top1']:5.1f}",
            flush=True,
        )
    return records


def record_id(record: dict[str, Any]) -> str:
    """The identity of a probe result (variant, seed, step, task, probe, label fraction)."""
    keys = ("variant", "seed", "step", "task", "probe", "label_fraction")
    return json.dumps({k: record[k] for k in keys}, sort_keys=True)


def probe_variant(args, variant: str, seed: int, probe_cfg, results: list[dict]) -> None:
    """Probe every checkpoint of one run (random: the initial weights), appending to `results`."""
    cfg = variant_config(args, "jepa" if variant == "random" else variant, seed)
    done = {record_id(r) for r in results}
    if variant == "random":
        points = [(0, None)]
    else:
        points = checkpoints(Path(cfg.run.out_dir))
    for step, path in points:
        encoder = freeze(initial_encoder(cfg)) if path is None else load_frozen(path)[0]
        plan = probe_plan(final=step == points[-1][0], low_shot=args.low_shot)
        key = {"variant": variant, "seed": seed, "step": step}
        results.extend(probe_point(encoder, cfg, plan, probe_cfg, done, key))
        save_results(args, results)


# ---------------------------------------------------------------------------------------------
# outputs


def results_path(args: argparse.Namespace) -> Path:
    return Path(args.out) / "results.json"


def load_results(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Earlier probe results and run metadata from <out>/results.json (empty if none)."""
    path = results_path(args)
    if not path.is_file():
        return [], {}
    payload = json.loads(path.read_text())
    return payload.get("probes", []), payload.get("runs", {})


RUNS: dict[str, dict] = {}


def save_results(args: argparse.Namespace, results: list[dict]) -> None:
    """Write every probe result and run record so far (an interrupted run keeps its work).

    Merges with what is on disk first, so several processes with disjoint --variants can share one
    --out (e.g. one per core); `results` and RUNS gain the other processes' records.
    """
    disk_results, disk_runs = load_results(args)
    mine = {record_id(r) for r in results}
    results.extend(r for r in disk_results if record_id(r) not in mine)
    owned = {f"{variant}_s{seed}" for variant in args.variants for seed in args.seeds}
    for name, info in disk_runs.items():
        if name not in owned or name not in RUNS:  # another process's run: its file copy is newer
            RUNS[name] = info
    meta = {
        "command": " ".join(sys.argv),
        "preset": args.preset,
        "steps": args.steps,
        "seeds": args.seeds,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    payload = {"meta": meta, "runs": RUNS, "probes": results}
    path = results_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)  # atomic: a reader never sees half a file


def final_step(results: list[dict], variant: str, seed: int) -> int | None:
    steps = [r["step"] for r in results if r["variant"] == variant and r["seed"] == seed]
    return max(steps) if steps else None


def final_records(
    results: list[dict], variant: str, task: str, probe: str = "attentive", fraction: float = 1.0
) -> list[dict]:
    """The probe results of `variant` at each seed's final step (one per seed)."""
    return [
        r
        for r in results
        if r["variant"] == variant
        and r["task"] == task
        and r["probe"] == probe
        and r["label_fraction"] == fraction
        and r["step"] == final_step(results, variant, r["seed"])
    ]


def score(
    results: list[dict], variant: str, task: str, probe: str = "attentive", fraction: float = 1.0
) -> str:
    """Mean (± std over seeds) top-1 at each seed's final step, as table text; '-' when missing."""
    return mean_std([r["top1"] for r in final_records(results, variant, task, probe, fraction)])


def mean_std(values: list[float]) -> str:
    """'m' for one value, 'm ± s' (sample std) for several, '-' for none."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f} ± {std:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def objective_table(results: list[dict]) -> list[str]:
    rows = [
        [
            VARIANTS[v][0],
            score(results, v, "motion"),
            f"{PAPER['objective'][v]['SSv2']}",
            score(results, v, "appearance"),
            f"{PAPER['objective'][v]['K400']}",
            f"{PAPER['objective'][v]['IN1K']}",
        ]
        for v in ("jepa", "pixel")
    ]
    return table(
        ["objective", "ours: motion", "paper: SSv2", "ours: appearance", "paper: K400", "paper: IN1K"], rows
    )


def masking_table(results: list[dict], context_frames: int) -> list[str]:
    names = {
        **{v: VARIANTS[v][0] for v in VARIANTS},
        "causal": f"V-JEPA, causal multi-block ({context_frames} context frames)",
    }
    rows = [
        [
            names[v],
            score(results, v, "motion"),
            f"{PAPER['masking'][v]['SSv2']}",
            score(results, v, "appearance"),
            f"{PAPER['masking'][v]['K400']}",
        ]
        for v in ("jepa", "tube", "causal")
    ]
    return table(["masking", "ours: motion", "paper: SSv2", "ours: appearance", "paper: K400"], rows)


# the built-in motion classes by kind: translations are solved by random features, rotation
# direction by no encoder measured, grow / shrink is where pretraining shows (README, per class)
MOTION_GROUPS = {
    "translations (4)": [*MOTION_TYPES["horizontal"], *MOTION_TYPES["vertical"]],
    "rotations (2)": list(MOTION_TYPES["rotation"]),
    "grow / shrink (2)": list(MOTION_TYPES["scale"]),
}


def motion_types_table(results: list[dict], variants: list[str]) -> list[str]:
    """Final attentive motion probes by class kind: the mean per-class top-1 of each group, and the
    direction given the type (rotation, scale) from the confusion matrix. Variants whose records
    predate per-class results are left out; no rows gives no table."""
    rows = []
    for v in variants:
        records = [r for r in final_records(results, v, "motion") if "confusion" in r]
        if not records:
            continue
        cells = [VARIANTS[v][0], mean_std([r["top1"] for r in records])]
        for names in MOTION_GROUPS.values():
            index = [MOTION_CLASSES.index(n) for n in names]
            groups = [[r["per_class_top1"][k] for k in index if r["per_class_top1"][k] is not None] for r in records]
            cells.append(mean_std([sum(g) / len(g) for g in groups if g]))
        for kind in ("rotation", "scale"):
            directions = [direction_given_type(r["confusion"])[kind] for r in records]
            cells.append(mean_std([d for d in directions if d is not None]))
        rows.append(cells)
    if not rows:
        return []
    header = ["encoder (attentive, 100% labels)", "all 8", *MOTION_GROUPS, "rotation direction", "grow vs shrink"]
    return table(header, rows)


def pooling_table(results: list[dict], variants: list[str]) -> list[str]:
    rows = [
        [
            VARIANTS[v][0],
            score(results, v, "motion", "attentive"),
            score(results, v, "motion", "linear"),
            score(results, v, "appearance", "attentive"),
            score(results, v, "appearance", "linear"),
        ]
        for v in variants
    ]
    p = PAPER["pooling"]
    rows.append(
        [
            "paper, V-JEPA ViT-L/16 (SSv2 / K400)",
            f"{p['attentive']['SSv2']}",
            f"{p['linear']['SSv2']}",
            f"{p['attentive']['K400']}",
            f"{p['linear']['K400']}",
        ]
    )
    return table(
        [
            "encoder",
            "motion: attentive",
            "motion: avg-pool linear",
            "appearance: attentive",
            "appearance: avg-pool linear",
        ],
        rows,
    )


def low_shot_table(results: list[dict], variants: list[str], fraction: float) -> list[str]:
    pct = f"{100 * fraction:g}%"
    rows = [
        [
            VARIANTS[v][0],
            score(results, v, "motion"),
            score(results, v, "motion", fraction=fraction),
            score(results, v, "appearance"),
            score(results, v, "appearance", fraction=fraction),
        ]
        for v in variants
    ]
    p = PAPER["low_shot_5pct"]
    rows.append(["paper, V-JEPA ViT-H/16 (SSv2 / K400), 5%", "", f"{p['SSv2']}", "", f"{p['K400']}"])
    return table(
        ["encoder (attentive probe)", "motion 100%", f"motion {pct}", "appearance 100%", f"appearance {pct}"],
        rows,
    )


def markdown(args: argparse.Namespace, results: list[dict]) -> str:
    """The whole report: setup, the four comparisons, run times."""
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in results)]
    seeds = sorted({r["seed"] for r in results})
    cfg = base_config(args, seeds[0] if seeds else 0)
    title = (
        f"# The paper's tables in miniature ({args.preset} preset, {cfg.optim.steps} steps, "
        f"batch {cfg.data.batch_size}, seeds {', '.join(map(str, seeds))})"
    )
    intro = (
        "Top-1 (%) of frozen-encoder probes on the synthetic test split (chance: motion 12.5, appearance "
        "16.7). Motion stands in for SSv2, appearance for K400; the paper's numbers are ViT-L/16 on the "
        "real datasets, so compare trends, not values. Attentive probe, 100% labels unless stated. "
        "A value with ± is the mean ± std over that variant's seeds, one without it a single seed "
        f"(seeds per variant: {seeds_per_variant(results)})."
    )
    lines = [
        title,
        "",
        intro,
        "",
        "## Feature vs pixel prediction",
        "",
        *objective_table(results),
        "",
        "## Masking strategy",
        "",
        *masking_table(results, cfg.mask.causal_context_frames),
        "",
        "## Attentive probe vs average pooling + linear",
        "",
        *pooling_table(results, variants),
        "",
        f"## {100 * args.low_shot:g}% vs 100% of the labels (class-balanced)",
        "",
        *low_shot_table(results, variants, args.low_shot),
        "",
        *motion_types_section(results, variants),
        "## Run times",
        "",
        *times_table(),
        "",
        f"Command: `{' '.join(sys.argv)}`",
    ]
    return "\n".join(lines) + "\n"


def motion_types_section(results: list[dict], variants: list[str]) -> list[str]:
    """The motion-by-kind table with its heading and legend, or nothing without per-class results."""
    rows = motion_types_table(results, variants)
    if not rows:
        return []
    legend = (
        "Groups: mean per-class top-1 over the group's classes. Direction columns: of the clips of that "
        "motion type the probe put in one of the type's two classes, the share with the right direction "
        "(chance 50)."
    )
    return ["## Motion by class kind", "", legend, "", *rows, ""]


def seeds_per_variant(results: list[dict]) -> str:
    """'jepa 0, 1, 2; pixel 0; ...' in VARIANTS order."""
    parts = []
    for variant in VARIANTS:
        seeds = sorted({r["seed"] for r in results if r["variant"] == variant})
        if seeds:
            parts.append(f"{variant} {', '.join(map(str, seeds))}")
    return "; ".join(parts)


def times_table() -> list[str]:
    rows = [
        [name, f"{info.get('train_seconds', 0):.0f}", f"{info.get('probe_seconds', 0):.0f}"]
        for name, info in sorted(RUNS.items())
    ]
    return table(["run", "pretraining (s)", "feature extraction + probes (s)"], rows)


def plot(args: argparse.Namespace, results: list[dict]) -> Path | None:
    """accuracy_vs_steps.png: attentive-probe top-1 vs pretraining step per variant, one panel per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task in zip(axes, TASKS):
        for variant in VARIANTS:
            curve = mean_curve(results, variant, task)
            if variant == "random" and curve:
                ax.axhline(curve[0][1], color="grey", ls="--", label=VARIANTS[variant][0])
            elif curve:
                ax.plot(*zip(*curve), marker="o", label=VARIANTS[variant][0])
        ax.set(
            title=f"{task} ({ROLE[task]} role), attentive probe",
            xlabel="pretraining step",
            ylabel="top-1 (%)",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(args.out) / "accuracy_vs_steps.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mean_curve(results: list[dict], variant: str, task: str) -> list[tuple[int, float]]:
    """(step, mean top-1 over seeds) of the attentive 100% probes of one variant, by step.

    Every trained variant starts from the random-init weights, so its curve begins with that result at step 0.
    """
    sources = {variant, "random"}
    by_step: dict[int, list[float]] = {}
    for r in results:
        if (
            r["variant"] in sources
            and r["task"] == task
            and r["probe"] == "attentive"
            and r["label_fraction"] == 1.0
        ):
            by_step.setdefault(r["step"], []).append(r["top1"])
    return [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Train, probe, and write results.json, paper_tables.md and accuracy_vs_steps.png under --out."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results, runs = load_results(args)
    RUNS.update(runs)
    overrides = {"epochs": args.probe_epochs} if args.probe_epochs else {}
    probe_cfg = make_probe_config(max_train_clips=args.max_train_clips, **overrides)
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}_s{seed}"
            info = RUNS.setdefault(name, {"variant": variant, "seed": seed})
            if variant != "random":
                print(f"pretraining {name} ...", flush=True)
                info["train_seconds"] = info.get("train_seconds", 0.0) + pretrain(
                    variant_config(args, variant, seed), variant
                )
            start = time.perf_counter()
            probe_variant(args, variant, seed, probe_cfg, results)
            info["probe_seconds"] = info.get("probe_seconds", 0.0) + time.perf_counter() - start
            info["probe_settings"] = dataclasses.asdict(probe_cfg)
            save_results(args, results)
    save_results(args, results)  # picks up results of processes sharing --out
    report = markdown(args, results)
    (Path(args.out) / "paper_tables.md").write_text(report)
    figure = plot(args, results)
    print(report)
    print(
        f"wrote {results_path(args)}, {Path(args.out) / 'paper_tables.md'}"
        + (f", {figure}" if figure else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
