"""Background work on a fixed rhythm: heartbeats, node polls, reconciliation, lifecycle passes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval` seconds in a daemon thread between `start` and `stop`, and at once
    after `wake()` (a pushed change). An error is logged and the next round tries again:
    reconciliation repairs what one round missed. Rounds never overlap."""

    def __init__(
        self, name: str, work: Callable[[], None], interval: float, *, wait_first: bool = False
    ) -> None:
        self.name, self.work, self.interval, self.wait_first = name, work, interval, wait_first
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Run the next round now (or right after the one running)."""
        self._wake.set()

    def _run(self) -> None:
        if self.wait_first:
            self._pause()
        while not self._stop.is_set():
            try:
                self.work()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", self.name, self.interval)
            self._pause()

    def _pause(self) -> None:
        self._wake.wait(self.interval)
        self._wake.clear()
