"""Idempotency keys of the requests that create something (``POST /v1/erp/mint-jobs``, ``/v1/erp/revocations``).

A client sends ``Idempotency-Key: <1-255 printable ASCII characters>`` with the request. The first request with a
key claims it (a row of ``idempotency_keys``: the API key's id, the method and path, the key and the SHA-256 of the
request's canonical JSON body); its answer is stored with it. Then, for 24 hours (:data:`TTL`):

* the same key with the same body gets the stored answer again (nothing is done twice);
* the same key with another body is refused: 422 ``idempotency_conflict``;
* the same key while the first request is still being answered (a concurrent duplicate): the second waits for the
  first's answer (the unique index lets only one claim the key), up to :data:`WAIT_SECONDS`, then answers 409
  ``idempotency_in_progress`` (retry later with the same key).

Answers with a 4xx status are stored like successes; a 5xx answer or an unexpected error releases the key (the
request may be retried with it). A claim left by a process that died is taken over after :data:`STALE_AFTER`.
After 24 hours a key is forgotten (:func:`purge_expired`) and may be used again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from issuer.storage.models import IdempotencyKey

__all__ = ["STALE_AFTER", "TTL", "WAIT_SECONDS", "Claim", "IdempotencyConflict", "IdempotencyInProgress",
           "InvalidIdempotencyKey", "check_key", "claim", "complete", "purge_expired", "release", "request_hash",
           "run_once"]

#: How long a key is remembered.
TTL = dt.timedelta(hours=24)
#: How long a duplicate waits for the first request's answer.
WAIT_SECONDS = 30.0
#: A claim without an answer this old was left by a process that died: the next request with the key takes it.
STALE_AFTER = dt.timedelta(minutes=10)

_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyError(Exception):
    status = 422
    code = "idempotency_error"


class InvalidIdempotencyKey(IdempotencyError):
    status = 422
    code = "invalid_idempotency_key"


class IdempotencyConflict(IdempotencyError):
    status = 422
    code = "idempotency_conflict"


class IdempotencyInProgress(IdempotencyError):
    status = 409
    code = "idempotency_in_progress"


@dataclass(frozen=True)
class Claim:
    """Either a fresh claim (``replay`` False: do the work, then :func:`complete`) or a stored answer."""

    row_id: int
    replay: bool
    status: int | None = None
    body: Any = None


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise InvalidIdempotencyKey("this request needs an Idempotency-Key header")
    key = key.strip()
    if not _KEY_RE.match(key):
        raise InvalidIdempotencyKey("the Idempotency-Key must be 1-255 printable ASCII characters without spaces")
    return key


def request_hash(body: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a request body (key order and spacing do not matter)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def claim(sessions: sessionmaker[Session], api_key_id: str, method: str, path: str, key: str, body_hash: str, *,
          wait: float = WAIT_SECONDS, poll: float = 0.05) -> Claim:
    """Claim ``key`` for this request, or get the answer stored with it (see the module's doc)."""
    key = check_key(key)
    deadline = time.monotonic() + wait
    while True:
        with sessions() as session:
            row = session.scalars(select(IdempotencyKey).where(
                IdempotencyKey.api_key_id == api_key_id, IdempotencyKey.method == method,
                IdempotencyKey.path == path, IdempotencyKey.key == key)).one_or_none()
            if row is not None and row.created_at < _now() - TTL:  # expired: forget it
                session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row.id))
                session.commit()
                row = None
            if row is None:
                fresh = IdempotencyKey(key=key, api_key_id=api_key_id, method=method, path=path,
                                       request_hash=body_hash, created_at=_now())
                session.add(fresh)
                try:
                    session.commit()
                except IntegrityError:  # a concurrent duplicate claimed it first: wait for its answer
                    session.rollback()
                    continue
                return Claim(fresh.id, replay=False)
            if row.request_hash != body_hash:
                raise IdempotencyConflict("this Idempotency-Key was used with another request body")
            if row.status is not None:
                return Claim(row.id, replay=True, status=row.status,
                             body=json.loads(row.response_body) if row.response_body else None)
            if row.created_at < _now() - STALE_AFTER:  # its process died: take the claim over
                took = session.execute(update(IdempotencyKey).where(
                    IdempotencyKey.id == row.id, IdempotencyKey.status.is_(None),
                    IdempotencyKey.created_at == row.created_at).values(created_at=_now()))
                session.commit()
                if took.rowcount == 1:
                    return Claim(row.id, replay=False)
                continue
        if time.monotonic() >= deadline:
            raise IdempotencyInProgress("a request with this Idempotency-Key is still being answered; retry later")
        time.sleep(poll)


def complete(sessions: sessionmaker[Session], row_id: int, status: int, body: Any) -> None:
    with sessions.begin() as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.id == row_id).values(
            status=status, response_body=json.dumps(body, separators=(",", ":")), completed_at=_now()))


def release(sessions: sessionmaker[Session], row_id: int) -> None:
    """Forget an unanswered claim (the request failed in a way worth retrying)."""
    with sessions.begin() as session:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id, IdempotencyKey.status.is_(None)))


def purge_expired(sessions: sessionmaker[Session], now: dt.datetime | None = None) -> int:
    with sessions.begin() as session:
        res = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < (now or _now()) - TTL))
        return res.rowcount or 0


def run_once(sessions: sessionmaker[Session], api_key_id: str, method: str, path: str, key: str | None, body: Any,
             work: Callable[[], tuple[int, Any]], status_of: Callable[[BaseException], int | None] = lambda e: None,
             error_body: Callable[[BaseException], Any] = lambda e: None, *,
             wait: float = WAIT_SECONDS) -> tuple[int, Any, bool]:
    """Do ``work`` (returning (status, JSON body)) once per key: (status, body, replayed).

    An exception from ``work`` whose ``status_of`` is a 4xx is stored (``error_body`` of it) and raised again; any
    other releases the key and is raised again. A replay of a stored error raises :class:`StoredError`."""
    c = claim(sessions, api_key_id, method, path, check_key(key), request_hash(body), wait=wait)
    if c.replay:
        if c.status is not None and c.status >= 400:
            raise StoredError(c.status, c.body)
        return c.status or 200, c.body, True
    try:
        status, out = work()
    except BaseException as exc:
        st = status_of(exc)
        if st is not None and 400 <= st < 500:
            complete(sessions, c.row_id, st, error_body(exc))
        else:
            release(sessions, c.row_id)
        raise
    complete(sessions, c.row_id, status, out)
    return status, out, False


class StoredError(Exception):
    """The stored 4xx answer of an earlier request with the same key."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"stored answer {status}")
        self.status = status
        self.body = body
