"""Errors of the API and the one place that turns exceptions into JSON error bodies.

Every error body is ``{"error": {"code": "...", "message": "..."}}`` with a stable ``code``.
Bad input never reaches the 500 handler: malformed serials, codes, ids and addresses are 422,
unknown things 404, conflicts 409; only a bug is ``internal``.

The database being unreachable is not a bug: it is ``503 database_unavailable`` with a ``Retry-After``, on
every endpoint, and :class:`Outage` logs one line when it starts and one when it ends, never one per request.
:func:`watch_database` (installed at startup by :func:`install_error_handlers`) notices the end from the
engine itself: the first new connection or successful statement after the outage.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from chain import errors as chain_errors
from chain.errors import CardproofError
from issuer.storage.outages import Outage, database_error_types, is_database_outage
from issuer.storage.outages import watch_database as _watch
from issuer.core.errors import CoreError, InvalidSerial
from verify_api.jsonresp import JSONResponse

log = logging.getLogger("cardproof.api")

__all__ = [
    "DB_RETRY_AFTER",
    "ApiError",
    "DatabaseUnavailable",
    "Outage",
    "RateLimited",
    "VerificationMismatch",
    "database_outage",
    "engine_of",
    "error_body",
    "error_code",
    "http_status",
    "install_error_handlers",
    "is_database_outage",
    "watch_database",
]

#: Retry-After (seconds) of a 503 database_unavailable.
DB_RETRY_AFTER = 5


class ApiError(CardproofError):
    """An error the API answers with ``status`` and a stable ``code``."""

    code = "api_error"

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # type: ignore[misc]  # per instance
        self.message = message
        self.headers = headers or {}


class RateLimited(ApiError):
    def __init__(self, retry_after: float, what: str = "requests") -> None:
        secs = max(1, int(retry_after + 0.999))
        super().__init__(429, "rate_limited", f"too many {what}; retry in {secs} s",
                         headers={"Retry-After": str(secs)})


class DatabaseUnavailable(ApiError):
    def __init__(self, retry_after: int = DB_RETRY_AFTER) -> None:
        super().__init__(503, "database_unavailable", "the database is unavailable; retry later",
                         headers={"Retry-After": str(retry_after)})


_outages: weakref.WeakKeyDictionary[Engine, Outage] = weakref.WeakKeyDictionary()
_outages_lock = threading.Lock()


def engine_of(deps: Any) -> Engine | None:
    """The engine of an app's ``deps`` (its ``engine``, else its sessionmaker's bind)."""
    engine = getattr(deps, "engine", None)
    if isinstance(engine, Engine):
        return engine
    sessions = getattr(deps, "sessions", None)
    bind = getattr(sessions, "kw", {}).get("bind") if sessions is not None else None
    return bind if isinstance(bind, Engine) else None


def database_outage(engine: Engine | None) -> Outage:
    """The outage state of ``engine``'s database (watched from the first call on: :func:`watch_database`)."""
    if engine is None:
        return _unwatched
    found = _outages.get(engine)
    if found is None:
        with _outages_lock:
            found = _outages.get(engine)
            if found is None:
                found = _outages[engine] = watch_database(engine)
    return found


_unwatched = Outage("database", "answering 503 database_unavailable", log)


def watch_database(engine: Engine, outage: Outage | None = None) -> Outage:
    """:func:`issuer.storage.outages.watch_database` (the public engine has no pre-ping: a pooled connection the
    server closed is dropped at checkout, so a PostgreSQL restart costs no failed request)."""
    return _watch(engine, outage or Outage("database", "answering 503 database_unavailable", log))[0]


class VerificationMismatch(CardproofError):
    """The independent verifier found a claim of the API that the chain does not confirm."""

    code = "verification_mismatch"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def error_code(exc: BaseException) -> str:
    """The stable code: the class's own ``code``, else its snake_case name."""
    if isinstance(exc, ApiError):
        return exc.code
    if isinstance(exc, InvalidSerial):
        return "invalid_serial"
    for cls in type(exc).__mro__:
        if "code" in cls.__dict__ and isinstance(cls.__dict__["code"], str):
            if cls is CardproofError or cls.__dict__["code"] in ("error", "chain_error"):
                break
            return cls.__dict__["code"]
        if cls is CardproofError:
            break
    return _snake(type(exc).__name__)


# Chain errors by meaning for an HTTP client.
_CHAIN_STATUS: list[tuple[type[BaseException], int]] = [
    (chain_errors.CardAlreadyRedeemed, 409),
    (chain_errors.CardRevoked, 410),
    (chain_errors.BatchAlreadyRevoked, 410),
    (chain_errors.BatchNotAnchored, 409),
    (chain_errors.CardIndexOutOfRange, 404),
    (chain_errors.NotBatchRedeemer, 502),
    (chain_errors.NotBatchIssuer, 502),
    (chain_errors.ContractRevert, 502),
    (chain_errors.ChainUnreachable, 503),
    (chain_errors.NoChainRunning, 503),
    (chain_errors.NotDeployed, 503),
    (chain_errors.ConfigError, 503),
    (chain_errors.AccountError, 503),
    (chain_errors.TransactionTimeout, 504),
    (chain_errors.ChainError, 502),
]


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, CoreError):
        return 422
    for cls, status in _CHAIN_STATUS:
        if isinstance(exc, cls):
            return status
    hint = getattr(exc, "http_status", None)
    if isinstance(hint, int) and 400 <= hint <= 599:
        return hint
    if isinstance(exc, CardproofError):
        return 400
    return 500


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The JSON error answer for any exception (the one handler of every error type, and of the card route's fast
    path, verify_api.fastpath)."""
    headers: dict[str, str] = {}
    if isinstance(exc, DatabaseUnavailable) or is_database_outage(exc):
        # One log line per outage (Outage), not one per request.
        database_outage(engine_of(getattr(request.app.state, "deps", None))).failed(exc)
        err = exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable()
        return JSONResponse(error_body(err.code, err.message), status_code=err.status, headers=dict(err.headers))
    if isinstance(exc, RequestValidationError):
        status, code, message = 422, "invalid_request", _validation_message(exc)
    elif isinstance(exc, StarletteHTTPException) and exc.status_code == 400:
        # FastAPI's "error parsing the body": malformed input like any other.
        status, code, message = 422, "invalid_request", _one_line(exc.detail or "the request body is malformed")
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            status, "http_error")
        message = _one_line(exc.detail) if exc.detail else code.replace("_", " ")
        headers = dict(exc.headers or {})
    elif isinstance(exc, (CardproofError, CoreError)):
        status, code, message = http_status(exc), error_code(exc), _one_line(exc)
        if isinstance(exc, ApiError):
            headers = dict(exc.headers)
        if status >= 500:
            log.warning("%s %s -> %s %s: %s", request.method, request.url.path, status, code, message)
    else:
        log.exception("internal error on %s %s", request.method, request.url.path)
        status, code, message = 500, "internal", "internal error"
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """One handler for every error: CardproofError/CoreError by type, validation 422, HTTP errors, bugs 500."""
    _watch_on_startup(app)
    # Database errors get handlers of their own: a handler for Exception runs in Starlette's outermost
    # middleware, which re-raises after answering (a traceback per request, and the connection dropped).
    for exc_type in database_error_types():
        app.add_exception_handler(exc_type, error_response)
    app.add_exception_handler(RequestValidationError, error_response)
    app.add_exception_handler(StarletteHTTPException, error_response)
    app.add_exception_handler(CardproofError, error_response)
    app.add_exception_handler(CoreError, error_response)
    app.add_exception_handler(Exception, error_response)


def _watch_on_startup(app: FastAPI) -> None:
    """Watch the app's database from startup on (not only from its first failure): see :func:`watch_database`."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any):
        async with inner(a) as state:
            try:
                database_outage(engine_of(getattr(a.state, "deps", None)))
            except Exception:
                log.debug("cannot watch the database", exc_info=True)
            yield state

    app.router.lifespan_context = lifespan
