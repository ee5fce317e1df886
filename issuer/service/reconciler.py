"""The supplier's service reconciles its database with the chain by itself, every few minutes.

After a node crash or a reorg, acts the service answered (a redemption that got HTTP 200) may be gone from the
chain; ``cardproof reconcile`` redoes them, and this thread runs it so that nobody has to be woken for it. Only
one process of the service does it at a time (a file lock under ``$CARDPROOF_HOME``), the others skip their turn.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("cardproof.issuer.service.reconciler")

__all__ = ["Reconciler"]


class Reconciler:
    def __init__(self, run: Callable[[], Any], interval: float, lock_path: Path) -> None:
        self._run = run
        self.interval = interval
        self._lock_path = lock_path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Counters, for tests and readiness.
        self.passes = 0
        self.last_report: Any = None
        self.last_error: str | None = None

    def run_once(self) -> bool:
        """One pass if this process gets the lock; False when another process holds it."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                report = self._run()
            except Exception as exc:  # noqa: BLE001 - the chain or the database is down: next time
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                log.warning("reconcile failed: %s", self.last_error)
                return True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self.passes += 1
        self.last_report, self.last_error = report, None
        for f in getattr(report, "findings", []):
            if getattr(f, "status", "ok") != "ok":
                log.warning("reconcile: %s", f.line())
        return True

    def start(self) -> Reconciler:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cardproof-reconciler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
