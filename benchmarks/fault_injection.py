"""Inject the faults of docs/reliability.md into tiny debug-preset runs and print what happens.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py [--keep DIR]

Each fault runs in a fresh folder (a temporary one unless --keep) and prints one block: the fault,
what vjepa answered (exit status and its one-line message), and the check that the work survived.
The disk-full fault is simulated (a patched writer raising ENOSPC: filling a real disk needs root);
every other fault is real: a diverging learning rate, a NaN checkpoint, `kill -9` during a save,
SIGTERM from outside, two processes on one run directory, bad files. Takes about a minute on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vjepa.checkpoint import CheckpointError, load_checkpoint, nonfinite_tensors, save_checkpoint
from vjepa.cli import main

TREE_AVI = Path("/usr/share/doc/opencv-doc/examples/data/tree.avi")
DEBUG = ["--preset", "debug", "run.progress=false"]


def cli(*args: str) -> tuple[int, str]:
    """Run `vjepa ARGS` in this process: (exit status, last line of stdout on success, else of stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(args))
    text = out.getvalue() if code == 0 else err.getvalue()  # a summary on success, the error otherwise
    lines = [line for line in text.splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def spawn(*args: str, **kwargs) -> subprocess.Popen:
    """`python -m vjepa ARGS` as a child process (stderr captured)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vjepa", *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, **kwargs)


def report(number: int, fault: str, outcome: str, check: str) -> None:
    print(f"[{number:2d}] fault:   {fault}\n     answer:  {outcome}\n     check:   {check}\n", flush=True)


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def finite_text(path: Path) -> str:
    if not path.exists():
        return f"{path.name}: none written"
    state = torch.load(path, weights_only=True)
    bad = nonfinite_tensors(state)
    return f"{path.name} holds step {state['step']}, {sum(n for _, n in bad)} non-finite values"


def nan_run(root: Path, n: int) -> None:
    run = root / "nan"
    code, line = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.lr=50", "run.checkpoint_every=1")
    report(n, "a diverging run: optim.lr=50 run.checkpoint_every=1", f"exit {code}: {line}", finite_text(run / "latest.pt"))


def nan_checkpoint(root: Path, n: int) -> None:
    run = root / "poisoned"
    cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=2")
    state = load_checkpoint(run / "latest.pt")
    for network in ("encoder", "target_encoder"):
        state[network]["blocks.0.attn.qkv.weight"][:3] = float("nan")
    save_checkpoint(run / "latest.pt", state)
    code, line = cli("embed", str(TREE_AVI), "--checkpoint", str(run), "-o", str(root / "features.npy"))
    report(n, "embed with a checkpoint holding NaN weights", f"exit {code}: {line}",
           f"features written: {(root / 'features.npy').exists()}")


def shorter_steps(root: Path, n: int) -> None:
    run = root / "finished"
    cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=4")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".lock"}
    code, line = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=2")
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".lock"}
    report(n, "resume a 4-step run with optim.steps=2", f"exit {code}: {line}", f"run directory unchanged: {before == after}")


def disk_full(root: Path, n: int) -> None:
    run = root / "full"
    cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=2")
    real = torch.save

    def no_space(state, path):
        Path(path).write_bytes(b"\0" * 4096)  # part of the file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.save = no_space
    try:
        code, line = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=4")
    finally:
        torch.save = real
    temps = [p.name for p in run.glob(".*.tmp")]
    report(n, "disk full while saving (simulated: the writer raises ENOSPC)", f"exit {code}: {line}",
           f"{finite_text(run / 'latest.pt')}; temp files left: {temps or 'none'}")


def umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def killed_save(root: Path, n: int) -> None:
    run = root / "killed"
    code = ("import os, signal, sys, torch\nfrom vjepa.checkpoint import save_checkpoint\n"
            "def dying(state, tmp):\n    open(tmp, 'wb').write(b'x' * 100000)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "torch.save = dying\nsave_checkpoint(sys.argv[1], {'step': 1})\n")
    done = subprocess.run([sys.executable, "-c", code, str(run / "latest.pt")], check=False)
    left = [p.name for p in run.glob(".*.tmp")]
    status, _ = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=2")
    report(n, "kill -9 during a checkpoint save", f"killed with status {done.returncode}, left {left}; "
           f"next start exit {status}", f"temp files after the next start: {[p.name for p in run.glob('.*.tmp')] or 'none'}; "
           f"latest.pt mode {oct((run / 'latest.pt').stat().st_mode & 0o777)} under umask {oct(umask())}")


def bad_settings(root: Path, n: int) -> None:
    for setting in ("data.batch_size=0", "run.checkpoint_every=0", "model.num_heads=0", "optim.ema=[2,3]",
                    "run.device=potato", "run.device=cuda"):
        code, line = cli("pretrain", *DEBUG, f"run.out_dir={root / 'bad'}", setting)
        report(n, f"pretrain {setting}", f"exit {code}: {line}", f"run dir created: {(root / 'bad').exists()}")
    code, line = cli("embed", str(TREE_AVI), "--checkpoint", "debug", "--device", "potato", "-o", "x.npy")
    report(n, "embed --device potato", f"exit {code}: {line}", "-")


def empty_class(root: Path, n: int) -> None:
    import warnings

    from video_utils import write_index_video
    from vjepa.config import DataConfig
    from vjepa.data import build_dataset

    data = root / "classes"
    for split, names in (("train", "abc"), ("test", "ac")):
        for name in names:
            (data / split / name).mkdir(parents=True)
            write_index_video(data / split / name / "v.mp4", num_frames=8)
    (data / "test" / "b").mkdir()
    cfg = DataConfig(source="folder", path=str(data), num_frames=4, frame_step=1, crop_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = {Path(r.path).parent.name: r.label for r in build_dataset(cfg, "test", train=False).records}
    train_labels = {Path(r.path).parent.name: r.label for r in build_dataset(cfg, "train", train=False).records}
    report(n, "class folder b empty in the test split", f"warning: {caught[0].message if caught else 'none'}",
           f"train labels {train_labels}, test labels {labels}")


def two_runs(root: Path, n: int) -> None:
    run = root / "shared"
    first = spawn("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=100000")
    while not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    code, line = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=100000")
    first.send_signal(signal.SIGKILL)
    first.wait()
    status, _ = cli("pretrain", *DEBUG, f"run.out_dir={run}", "optim.steps=3")
    report(n, f"a second run on the run directory of live process {first.pid}", f"exit {code}: {line}",
           f"after that process was killed (-9), the next start took the lock over: exit {status}")


def sigterm(root: Path, n: int) -> None:
    run, full = root / "preempted", root / "uninterrupted"
    steps = ["optim.steps=60", "run.log_every=1", "run.checkpoint_every=1000"]
    child = spawn("pretrain", *DEBUG, f"run.out_dir={run}", *steps)
    while not (run / "metrics.jsonl").exists() or len(losses(run)) < 5:
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    said = [line for line in err.splitlines() if "SIGTERM" in line]
    saved = load_checkpoint(run / "latest.pt")["step"]
    code, _ = cli("pretrain", *DEBUG, f"run.out_dir={run}", *steps)
    cli("pretrain", *DEBUG, f"run.out_dir={full}", *steps)
    a, b = losses(full), losses(run)
    same = all(math.isclose(a[s], b[s], rel_tol=0, abs_tol=0) for s in a) and sorted(a) == sorted(b)
    report(n, "SIGTERM sent from outside mid-run", f"exit {child.returncode}: {said[0] if said else 'nothing said'}",
           f"checkpoint at step {saved}; resumed to the end (exit {code}); 60 per-step losses identical to an "
           f"uninterrupted run: {same}")


def bad_files(root: Path, n: int) -> None:
    csv = root / "latin1.csv"
    csv.write_bytes("vidéo.mp4 0\n".encode("latin-1"))
    code, line = cli("pretrain", *DEBUG, f"run.out_dir={root / 'csv'}", "data.source=csv", f"data.path={csv}")
    report(n, "a Latin-1 (non-UTF-8) CSV list", f"exit {code}: {line}", "-")
    code, line = cli("pretrain", *DEBUG, "--config", str(root))
    report(n, "--config DIRECTORY", f"exit {code}: {line}", "-")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this would have run",))

    torch.save({"encoder": Payload()}, root / "evil.pt")
    try:
        load_checkpoint(root / "evil.pt")
        line = "loaded!"
    except CheckpointError as err:
        line = str(err)
    report(n, "a checkpoint whose pickle calls os.system", line, "nothing was run")


def short_read(root: Path, n: int) -> None:
    import warnings

    (root / "tree.csv").write_text(f"{TREE_AVI} 0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, line = cli("prepare", *DEBUG, "data.source=csv", f"data.path={root / 'tree.csv'}", "--out",
                         str(root / "cache"))
    index = json.loads((root / "cache" / "train" / "index.json").read_text())
    report(n, "prepare tree.avi: its container declares 444 frames, 68 decode", f"exit {code}: {line}",
           f"index.json short_reads: {index['short_reads']}")


FAULTS: list[Callable[[Path, int], None]] = [nan_run, nan_checkpoint, shorter_steps, disk_full, killed_save,
                                             bad_settings, empty_class, two_runs, sigterm, bad_files, short_read]


def run_all(root: Path) -> None:
    """Inject every fault under `root`, printing each outcome."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # video_utils for the class folders
    start = time.perf_counter()
    for number, fault in enumerate(FAULTS, start=1):
        folder = root / fault.__name__
        folder.mkdir(parents=True)
        fault(folder, number)
    print(f"{len(FAULTS)} faults in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="write the runs here instead of a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.keep:
        run_all(Path(args.keep))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_all(Path(tmp))
