"""A run folder is used by one run at a time, and a new run never silently replaces an old one.

* **Lock.** ``RunFolderLock`` holds an exclusive OS lock (``flock`` on POSIX, ``msvcrt.locking`` on
  Windows) on ``.nexlify.lock`` inside the folder for as long as the run lasts, and writes its PID
  there. A second run on the same folder is refused with that PID. The OS drops the lock when the
  process ends in any way, SIGKILL and power loss included, so a stale lock never blocks anyone:
  the file left behind is simply locked again by the next run.
* **Previous results.** A folder that holds another run's outputs is refused unless the new run
  continues it (``--resume``) or the user asks to replace it (``--overwrite``, which deletes those
  outputs, and only those, once the lock is held, so the folder never mixes two runs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from nexlify.errors import ConfigError

LOCK_FILE = ".nexlify.lock"
# What `nexlify train` writes into a run folder (user files beside them are never touched).
RUN_OUTPUT_PATTERNS = ("*.pth", "training_results.json", "training_summary.txt", "training_report.png",
                       "hardware_profile.json", "tensorboard", "evaluation")


def previous_run_outputs(folder: Path) -> list[Path]:
    """The outputs of an earlier run found in ``folder`` (sorted; empty for a new or empty folder)."""
    if not folder.is_dir():
        return []
    return sorted({p for pattern in RUN_OUTPUT_PATTERNS for p in folder.glob(pattern)})


def check_previous_run(folder: Path, resume: bool, overwrite: bool, flag: str = "--checkpoint-dir") -> None:
    """ConfigError when ``folder`` holds another run's results and the user said neither how to
    continue it nor that it may go."""
    outputs = previous_run_outputs(folder)
    if not outputs or resume or overwrite:
        return
    names = ", ".join(p.name for p in outputs[:3]) + (", ..." if len(outputs) > 3 else "")
    raise ConfigError(
        f"{flag} {folder} already holds a previous run ({names}); continue it with --resume, "
        f"train into another {flag}, or replace it with --overwrite"
    )


def remove_previous_run(folder: Path) -> list[str]:
    """Delete the run outputs in ``folder`` (for ``--overwrite``); returns the names removed."""
    removed = []
    for path in previous_run_outputs(folder):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    return removed


class RunFolderLock:
    """Exclusive lock on a run folder for the life of a ``with`` block (creates the folder)."""

    def __init__(self, folder: str | Path, flag: str = "--checkpoint-dir") -> None:
        self.folder = Path(folder)
        self.flag = flag
        self._fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.flag} {self.folder} cannot be created or written ({exc.strerror or exc}); "
                              "choose a folder you can write to") from None
        if not _try_lock(fd):
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise ConfigError(
                f"{self.flag} {self.folder} is in use by another nexlify run ({who}); wait for it to "
                f"finish, or choose another {self.flag}"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (removing it would race)
            self._fd = None


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
