"""Presentation helpers shared by every cardproof CLI command: JSON output and quiet-when-piped progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

err_console = Console(stderr=True)


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "hex"):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit_json(obj: Any) -> None:
    """Print one JSON object or array on stdout."""
    sys.stdout.write(json.dumps(obj, default=_default, sort_keys=True) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """A human line on stdout."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class _NullProgress:
    def advance(self, n: int = 1) -> None:  # noqa: D102 - no-op
        pass

    def update(self, completed: int) -> None:  # noqa: D102 - no-op
        pass


class _RichProgress:
    def __init__(self, progress: Progress, task: Any) -> None:
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._t, n)

    def update(self, completed: int) -> None:
        self._p.update(self._t, completed=completed)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on an interactive terminal (stderr); nothing when output is piped."""
    if not err_console.is_terminal:
        yield _NullProgress()
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as p:
        yield _RichProgress(p, p.add_task(description, total=total))
