"""Errors of the issuer service, and the one handler that turns every exception into a JSON error body.

Every error body is ``{"error": {"code": "...", "message": "..."}}`` with a stable ``code``. What a client
sends never causes a 500: malformed input is 422, bad credentials 401, a card of another issuer or a wrong
code 403, an unknown card 404, an already redeemed card 409, a revoked one 410; the chain being unreachable
is 503. Only a bug is ``internal`` (500), and messages never hold a code or a key.

Outages are 503 with a stable code and a ``Retry-After``: ``database_unavailable`` (the database cannot be
reached) and ``rate_limiter_unavailable`` (Redis is configured but does not answer: redemption fails closed,
see ``issuer.service.ratelimit``). Each outage is logged once when it starts and once when it ends
(:class:`Outage`), never once per request; :func:`watch_database` notices the end from the engine itself.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from chain import errors as chain_errors
from chain.errors import CardproofError
from issuer.storage.outages import Outage, database_error_types, is_database_outage, unwatch_database
from issuer.storage.outages import watch_database as _watch
from issuer.core.errors import CoreError, InvalidSerial

log = logging.getLogger("cardproof.issuer.service")

__all__ = ["DB_RETRY_AFTER", "DatabaseUnavailable", "Outage", "RateLimited", "RateLimiterUnavailable",
           "ServiceError", "database_error_types", "error_body", "install_error_handlers", "is_database_outage",
           "status_and_code", "unwatch_database", "watch_database"]

#: Retry-After (seconds) of a 503 database_unavailable.
DB_RETRY_AFTER = 5


class ServiceError(CardproofError):
    """An error the service answers with ``status`` and a stable ``code``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # type: ignore[misc]  # per instance
        self.headers = headers or {}


class RateLimited(ServiceError):
    def __init__(self, retry_after: float, what: str) -> None:
        secs = max(1, math.ceil(retry_after))
        super().__init__(429, "rate_limited", f"too many {what}; retry in {secs} s", {"Retry-After": str(secs)})


class DatabaseUnavailable(ServiceError):
    def __init__(self, retry_after: int = DB_RETRY_AFTER) -> None:
        super().__init__(503, "database_unavailable", "the database is unavailable; retry later",
                         {"Retry-After": str(retry_after)})


class RateLimiterUnavailable(ServiceError):
    """Redis (rate limits and single-use nonces) is configured but does not answer: redemption is refused."""

    def __init__(self, retry_after: float = 1.0) -> None:
        secs = max(1, math.ceil(retry_after))
        super().__init__(503, "rate_limiter_unavailable",
                         "rate limits and nonces cannot be checked (Redis unavailable); retry later",
                         {"Retry-After": str(secs)})


def watch_database(engine: Engine, outage: Outage) -> list[tuple[str, Any]]:
    """Follow ``engine``'s health into ``outage``; the listeners, for :func:`unwatch_database`. (The supplier's
    PostgreSQL engine pre-pings, so a restart between two requests costs no request.)"""
    return _watch(engine, outage)[1]


# Chain errors by meaning for an HTTP client (issuer.redemption turns the card's own reverts into issuer errors).
_CHAIN_STATUS: list[tuple[type[BaseException], int]] = [
    (chain_errors.CardAlreadyRedeemed, 409),
    (chain_errors.CardRevoked, 410),
    (chain_errors.BatchAlreadyRevoked, 410),
    (chain_errors.BatchNotAnchored, 409),
    (chain_errors.CardIndexOutOfRange, 404),
    (chain_errors.ChainUnreachable, 503),
    # The account's nonce sequence was busy or its store unreachable: nothing was sent, try again.
    (chain_errors.NonceError, 503),
    (chain_errors.NonceLockTimeout, 503),
    (chain_errors.NonceStoreUnavailable, 503),
    (chain_errors.NoChainRunning, 503),
    (chain_errors.NotDeployed, 503),
    (chain_errors.ConfigError, 503),
    (chain_errors.AccountError, 503),
    (chain_errors.TransactionTimeout, 504),
    (chain_errors.ChainError, 502),  # the service's account may not redeem this batch, other reverts
]


def status_and_code(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, stable code) of a cardproof error."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.code
    if isinstance(exc, InvalidSerial):
        return 422, "invalid_serial"
    code = getattr(exc, "code", None)
    code = code if isinstance(code, str) and code not in ("error", "chain_error") else "error"
    if isinstance(exc, CoreError):
        return 422, code
    for cls, status in _CHAIN_STATUS:
        if isinstance(exc, cls):
            return status, code
    hint = getattr(exc, "http_status", None)
    return (hint if isinstance(hint, int) and 400 <= hint <= 599 else 400), code


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:  # pydantic's messages name fields and constraints, never the input
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return _one_line("; ".join(parts) or "invalid request")


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, DatabaseUnavailable) or is_database_outage(exc):
            outage = getattr(request.app.state, "database_outage", None)
            if outage is not None:
                outage.failed(exc)  # one log line per outage, not one per request
            err = exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable()
            return JSONResponse(error_body(err.code, str(err)), status_code=err.status, headers=dict(err.headers))
        if isinstance(exc, RateLimiterUnavailable):  # logged once per outage by the limiter
            return JSONResponse(error_body(exc.code, str(exc)), status_code=exc.status, headers=dict(exc.headers))
        if isinstance(exc, RequestValidationError):
            status, code, message = 422, "invalid_request", _validation_message(exc)
        elif isinstance(exc, StarletteHTTPException) and exc.status_code == 400:  # an unparsable body
            status, code, message = 422, "invalid_request", "the request body is malformed"
        elif isinstance(exc, StarletteHTTPException):
            status = exc.status_code
            code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
            message = _one_line(exc.detail) if exc.detail else code.replace("_", " ")
            headers = dict(exc.headers or {})
        elif isinstance(exc, (CardproofError, CoreError)):
            (status, code), message = status_and_code(exc), _one_line(exc)
            if isinstance(exc, ServiceError):
                headers = dict(exc.headers)
            if status >= 500:
                log.warning("%s %s -> %s %s: %s", request.method, request.url.path, status, code, message)
        else:
            log.exception("internal error on %s %s", request.method, request.url.path)
            status, code, message = 500, "internal", "internal error"
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    # Database errors get handlers of their own: the handler of Exception runs in Starlette's outermost
    # middleware, which re-raises after answering (a traceback per request, and the connection dropped).
    for exc_type in (RequestValidationError, StarletteHTTPException, CardproofError, CoreError,
                     *database_error_types(), Exception):
        app.add_exception_handler(exc_type, handle)
