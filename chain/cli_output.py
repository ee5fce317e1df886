"""Presentation helpers shared by every cardproof CLI command: JSON output and quiet-when-piped progress.

``--json`` prints one JSON value on stdout (:func:`emit_json`), errors included: :func:`emit_error` prints
``{"error": {"code": "...", "message": "..."}}``, the ``code`` a stable snake_case name of the error
(:func:`error_code`). One shape per concept across commands: a token amount is :func:`amount_json` (what
``chain.escrow_view.TokenMeta.money`` prints); counts are plain ints.
"""

from __future__ import annotations

import json
import re
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


_json_emitted = False


def emit_json(obj: Any) -> None:
    """Print one JSON object or array on stdout."""
    global _json_emitted
    sys.stdout.write(json.dumps(obj, default=_default, sort_keys=True) + "\n")
    sys.stdout.flush()
    _json_emitted = True


def reset_json_emitted() -> None:
    """Forget that a command printed JSON (the console calls it before each command)."""
    global _json_emitted
    _json_emitted = False


def json_was_emitted() -> bool:
    """Whether the running command printed a JSON value already (a report before its error, say)."""
    return _json_emitted


def snake_case(name: str) -> str:
    """``OrderNotFound`` -> ``order_not_found``; ``NoSuchOption`` -> ``no_such_option``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def error_code(exc: BaseException) -> str:
    """The stable machine-readable code of an error: its ``code`` (every CardproofError has one), else its class
    name in snake_case (the core's errors: ``invalid_serial``; click's: ``no_such_option``, ``bad_parameter``)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9_]*", code):
        return code
    return snake_case(type(exc).__name__)


def emit_error(code: str, message: str) -> None:
    """The error of a ``--json`` command, as one JSON object on stdout."""
    emit_json({"error": {"code": code, "message": message}})


def amount_json(units: int, decimals: int, *, symbol: str | None = None, currency: str | None = None
                ) -> dict[str, Any]:
    """One shape for every amount and face value, the one the escrow commands print (``TokenMeta.money``):
    ``{"amount": "25.00", "units": "2500", "symbol": "tUSD"}`` (or ``"currency": "USD"`` for a face value).
    ``amount`` is for people, ``units`` the exact integer of the smallest unit as a decimal string (token amounts
    pass 2**53, which JSON readers in JavaScript would round)."""
    from chain.escrow_view import format_amount  # "9.50": every significant digit, at least two decimals

    out: dict[str, Any] = {"amount": format_amount(int(units), int(decimals)), "units": str(int(units))}
    if symbol is not None:
        out["symbol"] = symbol
    if currency is not None:
        out["currency"] = currency
    return out


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
