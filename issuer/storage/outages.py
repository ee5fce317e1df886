"""Database (and other dependency) outages, for the HTTP services of both sides: no table, no key, no code.

An :class:`Outage` logs one line when a dependency stops answering and one when it answers again, however many
requests fail meanwhile. :func:`watch_database` follows an engine's health through SQLAlchemy's events, and
:func:`is_database_outage` tells an outage (a refused or lost connection, an exhausted pool, a locked SQLite
file: answered 503) from a bug.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["Outage", "database_error_types", "is_database_outage", "unwatch_database", "watch_database"]

log = logging.getLogger("cardproof.storage")


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


class Outage:
    """The state of one dependency (the database, Redis): one log line when an outage starts, one when it ends.

    ``failed()`` and ``ok()`` are cheap and thread-safe; ``ok()`` costs one attribute read while all is well.
    """

    def __init__(self, what: str, consequence: str, logger: logging.Logger | None = None) -> None:
        self.what = what
        self.log = logger or log
        self.consequence = consequence
        self.down_since: float | None = None
        self.refused = 0
        self.outages = 0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException | str | None = None, *, refused: bool = True) -> None:
        """Record a failure (and, with ``refused``, one request refused because of it)."""
        with self._lock:
            if refused:
                self.refused += 1
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.outages += 1
        self.log.error("%s unavailable (%s); %s until it answers again", self.what, _reason(exc), self.consequence)

    def ok(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            took, refused = time.monotonic() - self.down_since, self.refused
            self.down_since, self.refused = None, 0
        self.log.warning("%s available again after %.1f s (%d request%s refused meanwhile)", self.what, took,
                         refused, "" if refused == 1 else "s")


def _reason(exc: BaseException | str | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, str):
        return exc
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return _one_line(f"{type(orig).__name__}: {first}" if first else type(orig).__name__, 200)


_DB_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)


def database_error_types() -> tuple[type[BaseException], ...]:
    """SQLAlchemy's errors and the drivers' own (raised unwrapped by ``engine.raw_connection()``)."""
    import sqlite3

    types: list[type[BaseException]] = [sa_exc.SQLAlchemyError, sqlite3.Error]
    try:
        import psycopg

        types.append(psycopg.Error)
    except ImportError:  # pragma: no cover - SQLite only
        pass
    return tuple(types)


def is_database_outage(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it wraps) says the database cannot be reached or used right now: a lost or
    refused connection, an exhausted pool, a locked SQLite file. Not a bug, and not the client's fault."""
    seen = 0
    while exc is not None and seen < 6:
        if isinstance(exc, _DB_ERRORS):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        mod = type(exc).__module__ or ""
        if (mod.startswith("psycopg") or mod == "sqlite3") and type(exc).__name__ in ("OperationalError",
                                                                                     "InterfaceError"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def watch_database(engine: Engine, outage: Outage | None = None) -> tuple[Outage, list[tuple[str, Any]]]:
    """Follow ``engine``'s health: its failures start an outage, its first new connection or successful
    statement ends it. Without pre-ping (the public engine), a pooled connection the server has closed (a
    PostgreSQL restart) is noticed at checkout by a zero-timeout poll of its socket, no round trip, and replaced
    before use, so a restart costs no failed request."""
    outage = outage or Outage("database", "answering 503 database_unavailable")

    def on_error(context: Any) -> None:
        if context.is_disconnect or is_database_outage(context.original_exception):
            outage.failed(context.original_exception, refused=False)

    def on_success(*_args: Any) -> None:
        outage.ok()

    listeners: list[tuple[str, Any]] = [("handle_error", on_error), ("connect", on_success),
                                        ("after_cursor_execute", on_success)]
    if engine.dialect.name == "postgresql" and not getattr(engine.pool, "_pre_ping", False):
        listeners.append(("checkout", _closed_by_server))
    for name, fn in listeners:
        event.listen(engine, name, fn)
    return outage, listeners


def unwatch_database(engine: Engine, listeners: list[tuple[str, Any]]) -> None:
    for name, fn in listeners:
        try:
            event.remove(engine, name, fn)
        except Exception:  # noqa: BLE001 - never fail a shutdown over monitoring
            log.debug("cannot remove the database listener %s", name)


def _closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection whose socket is readable while idle: the server closed it (or sent its
    farewell, e.g. "terminating connection due to administrator command"). The pool then opens a new one."""
    try:
        fd = dbapi_connection.fileno()
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return
    except Exception:  # noqa: BLE001 - a closed psycopg connection raises its own OperationalError
        raise sa_exc.DisconnectionError("connection closed") from None
    if readable:
        raise sa_exc.DisconnectionError("the server closed this pooled connection")


