"""Background work on a fixed rhythm: heartbeats, node polls, reconciliation, lifecycle passes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval` seconds in a daemon thread between `start` and `stop`. An error
    is logged and the next round tries again: reconciliation repairs what one round missed."""

    def __init__(
        self, name: str, work: Callable[[], None], interval: float, *, wait_first: bool = False
    ) -> None:
        self.name, self.work, self.interval, self.wait_first = name, work, interval, wait_first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        if self.wait_first:
            self._stop.wait(self.interval)
        while not self._stop.is_set():
            try:
                self.work()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", self.name, self.interval)
            self._stop.wait(self.interval)
