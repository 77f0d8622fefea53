"""Named places where a process may be killed on purpose, so tests can prove that a crash exactly
there is repaired (record, then ask). Off unless the configuration names a directory: then, when a
file named after the point exists in it, the process removes the file (so it dies there once) and
SIGKILLs itself, as the kernel's OOM killer or a power cut would end it, with no cleanup."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

_directory: Path | None = None


def configure(directory: str) -> None:
    global _directory
    _directory = Path(directory) if directory else None


def reached(point: str) -> None:
    if _directory is None:
        return
    armed = _directory / point
    try:
        armed.unlink()
    except FileNotFoundError:
        return
    log.warning("crash point %s reached: killing myself (pid %d)", point, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
