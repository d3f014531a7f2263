"""Mutation check: does the default (non-slow) test suite fail when V-JEPA breaks?

Each mutation below is one plausible bug, described by *what it changes*: the function (or class)
it lives in, an exact source snippet inside that function and its replacement. The function is
found by searching every module under src/vjepa, so the list survives files moving. For each
mutation the script copies the repository (src, tests, benchmarks, experiments, pyproject.toml;
never .git, .venv or runs) to a scratch directory, applies the change, runs the test files that
should notice it (`pytest -x -q -m "not slow"`) with this interpreter, and records whether the
tests failed (killed) or passed (survived), and how long they took.

A release is ready when the last line reads `N killed, 0 survived`. It is a script to run before a
release, not a CI step (one run is ~10-20 minutes on 2 cores).

    OMP_NUM_THREADS=1 python benchmarks/mutation_check.py            # every mutation
    python benchmarks/mutation_check.py --list                        # names and descriptions
    python benchmarks/mutation_check.py --only loss_per_token --jobs 2

To add a mutation, append a `Mutation` to `MUTATIONS` (see docs/testing.md): name it, say in one
line what bug it models, give the function, the exact snippet(s) and replacement(s), and the test
files that should kill it. Then run `--only NAME` and make sure it is killed for the right reason.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("src", "tests", "benchmarks", "experiments", "pyproject.toml")
IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.pyc", "results", ".pytest_cache")


@dataclass(frozen=True)
class Mutation:
    """One semantic bug: in `function`, replace each `find` snippet (exactly once) by its `replace`.

    Attributes:
        name: short identifier (for --only).
        description: the bug in words.
        function: the def/class whose source holds the snippets (searched for under src/vjepa).
        edits: (find, replace) pairs; every `find` must occur exactly once in the function.
        tests: test files (relative to the repository) that should fail.
    """

    name: str
    description: str
    function: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...] = field(default=())


MUTATIONS: list[Mutation] = [
    # -- the eleven changes of issue 23 ---------------------------------------------------------
    Mutation(
        "ema_formula_flipped", "ema_update keeps (1 - m) of the target and blends in m of the online net",
        "ema_update",
        (("torch._foreach_mul_(target_params, momentum)", "torch._foreach_mul_(target_params, 1.0 - momentum)"),
         ("alpha=1.0 - momentum)", "alpha=momentum)")),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "train_step_one_minus_momentum", "train_step passes 1 - momentum to the EMA update",
        "train_step",
        (("ema_update(jepa.target_encoder, jepa.encoder, momentum)",
          "ema_update(jepa.target_encoder, jepa.encoder, 1.0 - momentum)"),),
        ("tests/test_ema_replay.py", "tests/test_train.py"),
    ),
    Mutation(
        "momentum_of_step_not_step_plus_one", "the loop's k-th EMA update uses the momentum of step k-1",
        "train_step",
        (("momentum = ema_momentum(step + 1, cfg.optim)", "momentum = ema_momentum(step, cfg.optim)"),),
        ("tests/test_ema_replay.py", "tests/test_train.py"),
    ),
    Mutation(
        "targets_not_layer_normed", "regression targets are the raw target-encoder outputs (no LayerNorm)",
        "targets",
        (("return layer_norm_targets(self.target_encoder(video))", "return self.target_encoder(video)"),),
        ("tests/test_jepa.py", "tests/test_objective_invariants.py"),
    ),
    Mutation(
        "loss_per_token", "the loss averages over all valid tokens of the batch instead of per sample",
        "prediction_loss",
        (("return sample_losses(pred, target, valid, exponent).mean()",
          ("per_token = (pred.float() - target.float()).abs().pow(exponent).mean(dim=-1)\n"
           "    return per_token[valid].mean() if valid is not None else per_token.mean()")),),
        ("tests/test_jepa.py", "tests/test_objective_invariants.py"),
    ),
    Mutation(
        "mask_tokens_at_context_positions", "the batched predictor pass adds the mask token at context positions",
        "grid_sequence",
        (("is_target = indices_to_mask(target_idx, target_valid, positions.shape[1])",
          "is_target = indices_to_mask(context_idx, context_valid, positions.shape[1])"),),
        ("tests/test_models.py", "tests/test_objective_invariants.py"),
    ),
    Mutation(
        "context_encoder_sees_every_token", "the context encoder runs on the whole clip, then keeps the context tokens",
        "contexts",
        (("return [self.encoder.encode(tokens, m.context_idx, m.context_valid) for m in masks]",
          "return [gather_tokens(self.encoder.encode(tokens), m.context_idx) for m in masks]"),),
        ("tests/test_objective_invariants.py",),
    ),
    Mutation(
        "non_strict_checkpoint_load", "checkpoint loading ignores missing, unexpected and mis-shaped keys",
        "load_state_strict",
        (("if missing or unexpected or shapes:", "if False:"), ("module.load_state_dict(state, strict=True)", "module.load_state_dict(state, strict=False)")),
        ("tests/test_checkpoint.py", "tests/test_official_keys.py"),
    ),
    Mutation(
        "segments_all_start_at_zero", "multi-view evaluation segments all start at the clip's first frame",
        "segment_starts",
        (("return [round(i * span / (num_segments - 1)) for i in range(num_segments)]",
          "return [0 for i in range(num_segments)]"),),
        ("tests/test_eval.py", "tests/test_multiview_frames.py"),
    ),
    Mutation(
        "synthetic_views_all_from_frame_zero", "every synthetic evaluation view holds the clip's first frames",
        "__getitem__",  # SyntheticViews.__getitem__: the snippet is unique to it
        (("views = [self.transform(frames[s : s + self.length]) for s in self.starts]",
          "views = [self.transform(frames[0 : self.length]) for s in self.starts]"),),
        ("tests/test_eval.py", "tests/test_multiview_frames.py"),
    ),
    Mutation(
        "context_target_swapped_in_collation", "collation returns the target tokens as the context and vice versa",
        "collate_masks",
        (("return MaskBatch(context_idx, target_idx, context_valid, target_valid)",
          "return MaskBatch(target_idx, context_idx, target_valid, context_valid)"),),
        ("tests/test_masks.py",),
    ),
    Mutation(
        "bf16_attention_ignores_padding", "CPU bf16 attention (the matmul path) ignores the padding mask",
        "matmul_attention",
        (("scores = scores.masked_fill(~attn_mask, float(\"-inf\"))", "scores = scores"),),
        ("tests/test_models.py", "tests/test_objective_invariants.py"),
    ),
    # -- further plausible bugs ------------------------------------------------------------------
    Mutation(
        "real_video_segments_all_start_at_zero", "real-video evaluation clips (num_clips > 1) all come from the first segment",
        "_clips_in_segments",
        (("i * segment + (_randint", "0 * segment + (_randint"),),
        ("tests/test_datasets.py", "tests/test_multiview_frames.py"),
    ),
    Mutation(
        "mask_sampler_ignores_generator", "block positions are drawn from the global RNG, not the seeded generator",
        "sample_block_starts",
        (("(num_samples, num_blocks), generator=generator)", "(num_samples, num_blocks))"),),
        ("tests/test_masks.py",),
    ),
    Mutation(
        "masks_ignore_step", "every step's masks are drawn from the same seed (the step is left out)",
        "masks_for_step",
        (("mix_seed(cfg.run.seed, step, 0, 7)", "mix_seed(cfg.run.seed, 0, 0, 7)"),),
        ("tests/test_objective_invariants.py", "tests/test_train.py"),
    ),
    Mutation(
        "predictor_without_positions", "the predictor drops its positional embedding",
        "positions",  # Predictor.positions: every predictor path (padded, batched, packed) reads it
        (("return interpolate_3d(self.predictor_pos_embed, self.grid, grid).to(dtype)",
          "return torch.zeros_like(interpolate_3d(self.predictor_pos_embed, self.grid, grid)).to(dtype)"),),
        ("tests/test_models.py", "tests/test_objective_invariants.py"),
    ),
    Mutation(
        "batched_pass_uses_mask_token_zero", "every generator uses mask token 0 in the batched predictor pass",
        "predict_batched",
        (("mask_index = self.mask_tokens(len(masks), b, context.device)",
          "mask_index = torch.zeros(len(masks) * b, dtype=torch.long, device=context.device)"),),
        ("tests/test_objective_invariants.py",),
    ),
    Mutation(
        "ema_schedule_stops_halfway", "the EMA momentum schedule ends halfway between its start and end values",
        "ema_momentum",
        (("min(step / schedule_length(optim), 1.0)", "min(step / schedule_length(optim), 0.5)"),),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "loss_exponent_ignored", "the loss is always L1, whatever objective.loss_exp says",
        "token_losses",
        ((".abs().pow(exponent)", ".abs().pow(1.0)"),),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "weight_decay_on_1d_params", "LayerNorm weights (1-D, not biases) get weight decay",
        "param_groups",
        (("no_decay = param.ndim == 1 or name.endswith(", "no_decay = name.endswith("),),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "lr_warmup_off_by_one", "the warmup starts one step late (step + 1)",
        "learning_rate",
        (("(optim.lr - optim.start_lr) * step / max(1, optim.warmup_steps)",
          "(optim.lr - optim.start_lr) * (step + 1) / max(1, optim.warmup_steps)"),),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "target_encoder_trainable", "the target encoder is left trainable (requires_grad stays on)",
        "__init__",  # JEPA.__init__: the snippet is unique to it
        (("self.target_encoder.requires_grad_(False)", "self.target_encoder.requires_grad_(True)"),),
        ("tests/test_jepa.py",),
    ),
    Mutation(
        "drop_path_active_in_eval", "stochastic depth keeps dropping residual branches in eval mode",
        "drop_path",
        (("if rate == 0.0 or not training:", "if rate == 0.0:"),),
        ("tests/test_models.py", "tests/test_objective_invariants.py"),
    ),
    Mutation(
        "official_prefix_not_stripped", "official `module.backbone.` prefixes are only stripped once",
        "strip_prefixes",
        (("while name.startswith(WRAPPER_PREFIXES):", "if name.startswith(WRAPPER_PREFIXES):"),),
        ("tests/test_checkpoint.py", "tests/test_official_keys.py"),
    ),
    Mutation(
        "heads_not_read_from_width", "an official checkpoint's attention heads default to 12 whatever its width",
        "_official_num_heads",
        (("heads = num_heads or heads_by_width.get(embed_dim, 0)", "heads = num_heads or 12"),),
        ("tests/test_checkpoint.py", "tests/test_official_keys.py"),
    ),
    Mutation(
        "confusion_transposed", "the evaluation's confusion matrix has predicted classes as rows",
        "confusion_matrix",
        (("index = labels.long() * num_classes + probs.argmax(dim=-1)",
          "index = probs.argmax(dim=-1) * num_classes + labels.long()"),),
        ("tests/test_eval.py", "tests/test_cli_commands.py"),
    ),
    # -- V-JEPA 2 RoPE, probe files and classification (added when those branches merged) -----------
    Mutation(
        "rope_interleaved_frequencies", "RoPE frequencies interleaved per pair instead of tiled (official layout)",
        "_axis_angles",
        (("return torch.cat([angles, angles], dim=-1)", "return angles.repeat_interleave(2, dim=-1)"),),
        ("tests/test_rope.py",),
    ),
    Mutation(
        "rope_time_axis_ignored", "RoPE rotates by row and column only: every frame gets time position 0",
        "grid_positions",
        (("return frame, row, col", "return frame * 0, row, col"),),
        ("tests/test_rope.py",),
    ),
    Mutation(
        "rope_pairs_not_negated", "the pair rotation forgets the sign: (x1, x0) instead of (-x1, x0)",
        "rotate_pairs",
        (("torch.stack((-second, first), dim=-1)", "torch.stack((second, first), dim=-1)"),),
        ("tests/test_rope.py",),
    ),
    Mutation(
        "untrained_probe_saved", "the streaming probe file holds a freshly initialised probe, not the trained one",
        "probe_streaming",
        (("return (result, probe.cpu()) if return_probe else result",
          "return (result, new_probe(probe_cfg, embed_dim, num_heads, num_classes)) if return_probe else result"),),
        ("tests/test_classify.py",),
    ),
    Mutation(
        "test_class_without_training_clips_scored", "a test class with no training clip is silently scored",
        "check_labels",
        (("untrained = sorted(set(test.tolist()) - set(train.tolist()))", "untrained = []"),),
        ("tests/test_eval_stream.py",),
    ),
    # -- found by a mutmut sweep of jepa.py and masks/ (docs/testing.md) ----------------------------
    Mutation(
        "loss_of_sum_not_difference", "the loss compares pred + target instead of pred - target",
        "token_losses",
        (("(pred.float() - target.float())", "(pred.float() + target.float())"),),
        ("tests/test_jepa.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "model_ignores_loss_exp", "the batched pass computes L1 whatever objective.loss_exp says",
        "forward",  # JEPA.forward
        (("losses.append(prediction_loss(p, gather_tokens(targets, idx), valid, self.loss_exp))",
          "losses.append(prediction_loss(p, gather_tokens(targets, idx), valid))"),),
        ("tests/test_jepa.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "regulariser_subtracted", "the variance regulariser is subtracted from the loss",
        "outputs",  # JEPA.outputs
        (("\"loss\": prediction + self.reg_coeff * reg,", "\"loss\": prediction - self.reg_coeff * reg,"),),
        ("tests/test_jepa.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "batched_pass_for_truncated_masks", "the grid-ordered batched pass also runs on truncated masks",
        "forward",  # JEPA.forward
        (("if self.options.batch_generators and self.full_grid:", "if self.options.batch_generators or self.full_grid:"),),
        ("tests/test_jepa.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "context_encoder_ignores_padding", "the context encoder attends to padding slots of its rows",
        "contexts",
        (("self.encoder.encode(tokens, m.context_idx, m.context_valid)", "self.encoder.encode(tokens, m.context_idx, None)"),),
        ("tests/test_objective_invariants.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "per_generator_predictor_ignores_context_padding", "the per-generator predictor call drops context_valid",
        "forward",  # JEPA.forward
        (("pred = self.predictor(context, m.context_idx, m.target_idx, token, m.context_valid, m.target_valid, grid)",
          "pred = self.predictor(context, m.context_idx, m.target_idx, token, None, m.target_valid, grid)"),),
        ("tests/test_objective_invariants.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "tube_sampler_ignores_generator", "tube masks are drawn from the global RNG, not the seeded generator",
        "sample_tube_mask",
        (("torch.rand(batch_size, num_spatial, generator=generator)", "torch.rand(batch_size, num_spatial)"),),
        ("tests/test_masks.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "mask_batch_to_drops_target_valid", "moving (or pinning) a MaskBatch loses its target valid flags",
        "_map",  # MaskBatch._map, behind MaskBatch.to and pin_memory
        (("apply(self.context_valid), apply(self.target_valid))", "apply(self.context_valid), None)"),),
        ("tests/test_masks.py", "tests/test_sweep_gaps.py"),
    ),
    # -- packed contexts (docs/performance.md) -------------------------------------------------------
    Mutation(
        "packed_rows_attend_across", "packed context rows attend to each other (no block-diagonal mask)",
        "attend",  # Segments.attend
        (("return torch.cat([attention_core(qr, kr, vr, None, kernels) for qr, kr, vr in parts], dim=2)",
          "return attention_core(q, k, v, None, kernels)"),),
        ("tests/test_packing.py",),
    ),
    Mutation(
        "packed_loss_ignores_loss_exp", "the packed loss computes L1 whatever objective.loss_exp says",
        "packed_losses",
        (("token_losses(pred, target, self.loss_exp)", "token_losses(pred, target, 1.0)"),),
        ("tests/test_sweep_gaps.py",),
    ),
    Mutation(
        "packed_penalty_biased_variance", "the packed variance penalty divides by n instead of n - 1",
        "packed_losses",
        (("num_rows, denominator - 1)", "num_rows, denominator)"),),
        ("tests/test_packing.py",),
    ),
    Mutation(
        "packed_mask_tokens_at_context_slots", "the packed predictor puts mask tokens at context positions",
        "forward_packed",
        (("is_target[packed.target.slot] = 1.0", "is_target[packed.context.slot] = 1.0"),),
        ("tests/test_packing.py",),
    ),
    Mutation(
        "padded_lengths_unaligned", "padded index rows keep the longest row's length (not a multiple of 8)",
        "mask_to_indices",
        (("length = -(-longest // multiple) * multiple", "length = longest"),),
        ("tests/test_packing.py",),
    ),
    Mutation(
        "pixel_targets_biased_variance", "pixel targets are normalised by the biased variance",
        "pixel_targets",
        (("unbiased=True", "unbiased=False"),),
        ("tests/test_jepa.py", "tests/test_sweep_gaps.py"),
    ),
    Mutation(
        "embed_shares_joined_out_of_order", "rank 0 joins the embedding shares in reverse rank order",
        "join_shares",
        (("for r in range(world_size)]", "for r in reversed(range(world_size))]"),),
        ("tests/test_embed_sharded.py",),
    ),
    Mutation(
        "v2_mask_token_per_generator", "clip_length mode still gives generator g mask token g",
        "mask_tokens",
        (('if self.mask_token_by == "clip_length":', 'if self.mask_token_by == "never":'),),
        ("tests/test_packing.py",),
    ),
    Mutation(
        "loader_masks_of_next_step", "the loader ships the masks of step s + 1 with the clips of step s",
        "StepCollate",
        (("batch.step, self.rank, self.world_size)", "batch.step + 1, self.rank, self.world_size)"),),
        ("tests/test_train.py",),
    ),
    Mutation(
        "device_normalise_wrong_scale", "on-device normalisation forgets that pixels are in [0, 255]",
        "_pixel_stats",
        (("m = torch.tensor(mean, dtype=torch.float32).view(shape) * 255.0", "m = torch.tensor(mean, dtype=torch.float32).view(shape) * 1.0"),),
        ("tests/test_train.py", "tests/test_transforms.py"),
    ),
    Mutation(
        "bench_work_ratio_inverted", "`--compare` reports the official step's work per clip over ours",
        "_official_speedups",
        (("_flops_per_clip(ours) / _flops_per_clip(base)", "_flops_per_clip(base) / _flops_per_clip(ours)"),),
        ("tests/test_bench.py",),
    ),
    # -- the QA walkthrough's fixes ---------------------------------------------------------------
    Mutation(
        "eval_substitutes_bad_clips", "evaluation replaces an unreadable clip by the next good one (a duplicate)",
        "drop_bad_items",
        (("part.substitute = False", "part.substitute = True"),),
        ("tests/test_eval_probe_cli.py",),
    ),
    Mutation(
        "probe_scores_training_clips", "a probe on data without a held-out split is scored on its training clips",
        "check_held_out",
        (("    if shared:", "    if False:"),),
        ("tests/test_eval_probe_cli.py",),
    ),
    Mutation(
        "path_ignored_by_synthetic_source", "data.path without data.source trains on the built-in set silently",
        "_check_data_settings",
        (('if d.source == "synthetic" and d.path.strip():', 'if False:'),),
        ("tests/test_config.py",),
    ),
    Mutation(
        "vjepa2_extra_mask_tokens_trained", "a V-JEPA 2 file's mask tokens no generator uses are trained (decayed)",
        "JEPA",
        (("token.requires_grad_(False)", "token.requires_grad_(True)"),),
        ("tests/test_init_from.py",),
    ),
]


def python_files(root: Path) -> list[Path]:
    return sorted((root / "src" / "vjepa").rglob("*.py"))


def locate(mutation: Mutation, root: Path) -> tuple[Path, str, str]:
    """Find the function holding every snippet; return (file, its source, the mutated source).

    Raises:
        LookupError: no function of that name holds every snippet exactly once, or several do.
    """
    found = []
    for path in python_files(root):
        source = path.read_text()
        if f"def {mutation.function}(" not in source and f"class {mutation.function}" not in source:
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == mutation.function:
                start = sum(len(line) for line in lines[: node.lineno - 1])
                end = sum(len(line) for line in lines[: node.end_lineno])
                body = source[start:end]
                if all(body.count(find) == 1 for find, _ in mutation.edits):
                    for find, replace in mutation.edits:
                        body = body.replace(find, replace)
                    found.append((path, source, source[:start] + body + source[end:]))
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(root)) for p, _, _ in found) or "nowhere"
        raise LookupError(f"{mutation.name}: {len(found)} functions named {mutation.function!r} hold every "
                          f"snippet exactly once ({where}); update the mutation")
    path, source, mutated = found[0]
    compile(mutated, str(path), "exec")  # a mutation that breaks the syntax would be 'killed' for nothing
    return found[0]


def copy_repo(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORE)
        elif src.exists():
            shutil.copy2(src, dest / name)


def run_tests(root: Path, tests: tuple[str, ...], python: str, timeout: float) -> tuple[str, float, str]:
    """Run pytest in `root`; return (outcome "pass" / "fail" / "timeout", seconds, what failed first)."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, "timeout"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode == 0:
        return "pass", time.perf_counter() - t0, lines[-1] if lines else ""
    # pytest's short summary names the first failing test: "FAILED tests/x.py::name - message"
    failed = [line.split(" - ")[0].split(" ", 1)[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return "fail", time.perf_counter() - t0, failed[0] if failed else "\n".join(lines[-15:])


def check(mutation: Mutation, python: str, timeout: float) -> tuple[str, float, str]:
    """Apply `mutation` in a scratch copy and run its tests: ("killed" / "survived", seconds, the
    first failing test or pytest's last line)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutation.name}_") as tmp:
        root = Path(tmp)
        copy_repo(root)
        path, _, mutated = locate(mutation, root)
        path.write_text(mutated)
        outcome, seconds, detail = run_tests(root, mutation.tests, python, timeout)
    return ("survived" if outcome == "pass" else "killed"), seconds, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run this mutation only (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation's tests (default 600)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest (default: this one)")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the unmutated tests first")
    args = parser.parse_args(argv)

    names = {m.name for m in MUTATIONS}
    if len(names) != len(MUTATIONS):
        raise SystemExit("duplicate mutation names")
    selected = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - names)
        if unknown:
            raise SystemExit(f"unknown mutation(s) {', '.join(unknown)}; see --list")
        selected = [m for m in MUTATIONS if m.name in args.only]
    if args.list:
        for m in selected:
            print(f"{m.name:40s} {m.function:20s} {m.description}  [{', '.join(m.tests)}]")
        return 0
    for m in selected:  # every snippet and test file must still be found before anything runs
        locate(m, ROOT)
        missing = [t for t in m.tests if not (ROOT / t).is_file()]
        if missing:  # pytest would fail on a missing file, and the mutation would count as killed
            raise SystemExit(f"{m.name}: no test file {', '.join(missing)}")

    t_start = time.perf_counter()
    if not args.no_baseline:
        tests = tuple(sorted({t for m in selected for t in m.tests}))
        with tempfile.TemporaryDirectory(prefix="mutant_baseline_") as tmp:
            copy_repo(Path(tmp))
            outcome, seconds, tail = run_tests(Path(tmp), tests, args.python, args.timeout * 2)
        print(f"baseline (no mutation, {len(tests)} test files): {outcome} in {seconds:.0f} s", flush=True)
        if outcome != "pass":
            print(tail)
            raise SystemExit("the unmutated tests fail: fix them before checking mutations")

    def one(m: Mutation) -> tuple[Mutation, str, float, str]:
        return (m, *check(m, args.python, args.timeout))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = []
        for m, status, seconds, detail in pool.map(one, selected):
            print(f"  {status:8s} {seconds:6.0f} s  {m.name}", flush=True)
            results.append((m, status, seconds, detail))

    width = max(len(m.name) for m in selected)
    print()
    print(f"{'mutation':{width}s}  {'result':8s}  {'time':>6s}  what it changes / killed by (first failing test)")
    for m, status, seconds, detail in results:
        print(f"{m.name:{width}s}  {status:8s}  {seconds:5.0f}s  {m.function}: {m.description}")
        print(f"{'':{width}s}  {'':8s}  {'':6s}  {'killed by' if status == 'killed' else 'tests ran'}: {detail}")
    killed = sum(status == "killed" for _, status, _, _ in results)
    survived = len(results) - killed
    print(f"total time {time.perf_counter() - t_start:.0f} s")
    print(f"{killed} killed, {survived} survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
