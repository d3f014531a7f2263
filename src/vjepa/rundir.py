"""The run directory: its lock (one live run per `run.out_dir`), its config.yaml, and SIGTERM handling."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vjepa.checkpoint import atomic_write
from vjepa.config import Config, to_yaml


class RunDirLocked(RuntimeError):
    """Another live process is training in the same run directory; the message names its pid."""


def write_config(cfg: Config, out_dir: Path) -> None:
    """Write the resolved config to `out_dir/config.yaml` atomically (a full disk leaves the old one)."""
    atomic_write(out_dir / "config.yaml", lambda tmp: Path(tmp).write_text(to_yaml(cfg)))


def announce_resume(out_dir: Path, start: int, steps: int) -> None:
    """Tell the user (stderr) that a run continues from a checkpoint; nothing for a fresh run.
    Otherwise only the progress bar's count would show that this run is not new."""
    if start:
        print(f"vjepa: resuming {out_dir} from step {start} of {steps} (latest.pt)", file=sys.stderr)


@contextmanager
def run_dir_lock(out_dir: Path, is_main: bool) -> Iterator[None]:
    """Create `out_dir` and hold its `RunLock` for the block, on rank 0 (the only writer).

    Taken before any file in the directory is read or cleaned; released however the block ends.
    """
    lock = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out_dir).acquire()
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory: `out_dir/.lock`, holding the owner's pid.

    On POSIX an `flock` on the file (the kernel drops it when the process dies, however it dies);
    elsewhere the file's existence plus a liveness check of the pid in it. A lock file left by a
    dead process is taken over.

    Raises:
        RunDirLocked: naming the directory and the live holder's pid.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self._fd: int | None = None

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def _refuse(self) -> None:
        holder = self._holder()
        who = f"process {holder}" if holder else "another process"
        raise RunDirLocked(
            f"{self.path.parent} is in use by {who} (lock {self.path}): two runs in one run.out_dir would "
            "overwrite each other's checkpoints and log every step twice. Wait for it, stop it, or pick "
            "another run.out_dir"
        )

    def acquire(self) -> RunLock:
        """Take the lock (RunDirLocked if a live process holds it)."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): trust a pid file whose process is alive
            holder = self._holder()
            if holder and holder != os.getpid() and _pid_alive(holder):
                self._refuse()
            self.path.write_text(f"{os.getpid()}\n")
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                self._refuse()
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its pid is stale and the next run takes it over)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class StopRequest:
    """Turns SIGTERM into a flag the loop checks at every step boundary (main thread only).

    The previous handler is restored on exit, so library callers keep their own signal handling.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        """Catch SIGTERM from now on (signals can only be caught in the main thread)."""
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def restore(self) -> None:
        """Put back the handler that was there before `install`."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
