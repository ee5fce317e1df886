"""Webhooks: the supplier's node and service tell the supplier's own systems (an ERP) what happened.

Configuration (the environment wins over the file):

* ``CARDPROOF_WEBHOOK_URLS`` – comma-separated URLs each event is posted to;
* ``CARDPROOF_WEBHOOK_SECRET`` – the HMAC key of the signatures (required when URLs are set: nothing is sent
  unsigned; events are kept and go out once a secret is configured);
* or the node's TOML file (``CARDPROOF_NODE_CONFIG``, else ``$CARDPROOF_HOME/node.toml``), table ``[webhooks]`` with ``urls = [...]`` (or one
  comma-separated string) and ``secret = "..."``.

Emitting
    :func:`emit` (``emit(sessions, kind, payload)``) stores an event (``webhook_events``: id ``evt_...``, kind,
    payload JSON, created_at) and one delivery per configured URL (``webhook_deliveries``) in one transaction,
    then wakes the sender. Kinds used: ``order.delivered``, ``order.published``, ``order.out_of_stock``,
    ``order.failed``, ``stock.low``, ``mint_job.done``, ``mint_job.failed``. A payload never holds a code or a
    secret: keys named like one (code, codes, secret, key, password, token, blob) are refused
    (:class:`UnsafePayload`).

Sending
    :class:`WebhookSender` (a thread started by ``cardproof issuer serve``) posts each due delivery as JSON
    ``{"id": "evt_...", "kind": ..., "created_at": ISO 8601, "data": payload}`` with headers
    ``X-Cardproof-Event`` (the kind), ``X-Cardproof-Delivery`` (the delivery id), ``X-Cardproof-Timestamp``
    (unix seconds) and ``X-Cardproof-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``.
    A 2xx answer delivers it; anything else (another status, a timeout, a refused connection) is retried after
    1 s, 2 s, 4 s, ... (doubling, at most 1 h); after 20 attempts the delivery is ``dead``, until replayed
    (``POST /v1/erp/webhooks/{id}/replay`` or :func:`replay`). Several service processes may run senders: a
    delivery is claimed (leased) before it is sent. The same event can arrive twice (a crash between the answer
    and its record): receivers de-duplicate on ``X-Cardproof-Delivery`` or the event id.

Receiving
    :func:`verify_signature` ``(secret, timestamp, body, header, tolerance=300)`` checks a request: the
    timestamp header, the raw body bytes and the signature header, within ``tolerance`` seconds of now::

        ok = verify_signature(secret, request.headers["X-Cardproof-Timestamp"], raw_body,
                              request.headers["X-Cardproof-Signature"])
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from issuer.storage.models import WebhookDelivery, WebhookEvent

log = logging.getLogger("cardproof.issuer.webhooks")

__all__ = ["BASE_DELAY", "MAX_ATTEMPTS", "MAX_DELAY", "EVENT_KINDS", "UnsafePayload", "WebhookConfig",
           "WebhookSender", "backoff", "delivery_json", "emit", "hook", "list_deliveries", "load_node_config", "replay",
           "sign", "verify_signature", "wake"]

EVENT_KINDS = ("order.delivered", "order.published", "order.out_of_stock", "order.failed", "stock.low",
               "mint_job.done", "mint_job.failed")
BASE_DELAY = 1.0
MAX_DELAY = 3600.0
MAX_ATTEMPTS = 20
#: Seconds a sender holds a claimed delivery before another may send it.
LEASE_SECONDS = 120.0
#: Timeout of one POST.
SEND_TIMEOUT = 10.0

_FORBIDDEN_KEYS = {"code", "codes", "secret", "secrets", "key", "password", "token", "blob", "master_key",
                   "private_key", "seal_key", "opening"}


class UnsafePayload(ValueError):
    """A webhook payload with a field that may hold a code or a secret."""


# --------------------------------------------------------------------------- configuration


def load_node_config(path: str | os.PathLike[str] | None = None,
                     home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The node's TOML file (``issuer.node.config``): ``path``, else ``CARDPROOF_NODE_CONFIG``, else
    ``$CARDPROOF_HOME/node.toml`` when present (``home``); {} when there is none."""
    name = path if path is not None else os.environ.get("CARDPROOF_NODE_CONFIG")
    if not name and home is not None and (Path(home) / "node.toml").is_file():
        name = Path(home) / "node.toml"
    if not name:
        return {}
    p = Path(name).expanduser()
    if not p.is_file():
        log.warning("CARDPROOF_NODE_CONFIG names no file (%s)", p)
        return {}
    with p.open("rb") as fh:
        return tomllib.load(fh)


def _split(urls: Any) -> tuple[str, ...]:
    if urls is None:
        return ()
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    return tuple(u.strip() for u in items if isinstance(u, str) and u.strip())


@dataclass(frozen=True)
class WebhookConfig:
    urls: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, config_path: str | None = None,
             home: str | os.PathLike[str] | None = None) -> WebhookConfig:
        env = os.environ if environ is None else environ
        path = config_path if config_path is not None else env.get("CARDPROOF_NODE_CONFIG")
        if not path and home is not None and (Path(home) / "node.toml").is_file():
            path = str(Path(home) / "node.toml")
        table = load_node_config(path) if path else {}
        hooks = table.get("webhooks", {}) if isinstance(table.get("webhooks"), dict) else {}
        urls = _split(env["CARDPROOF_WEBHOOK_URLS"]) if env.get("CARDPROOF_WEBHOOK_URLS") else _split(hooks.get("urls"))
        secret = env.get("CARDPROOF_WEBHOOK_SECRET") or hooks.get("secret") or None
        for u in urls:
            if not (u.startswith("http://") or u.startswith("https://")):
                raise ValueError("webhook URLs must be http:// or https:// URLs")
        return cls(urls, str(secret) if secret else None)


# --------------------------------------------------------------------------- signatures


def sign(secret: str | bytes, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=`` + hex HMAC-SHA256(secret, f"{timestamp}.{body}")."""
    key = secret.encode() if isinstance(secret, str) else secret
    raw = body.encode() if isinstance(body, str) else body
    return "sha256=" + hmac.new(key, str(timestamp).encode() + b"." + raw, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, timestamp: int | str, body: bytes | str, header: str | None,
                     tolerance: float = 300, now: float | None = None) -> bool:
    """Whether ``header`` (X-Cardproof-Signature) signs ``body`` at ``timestamp`` (X-Cardproof-Timestamp) with
    ``secret``, and the timestamp is within ``tolerance`` seconds of now (replays of old requests fail)."""
    if not header or not secret:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header.strip())


# --------------------------------------------------------------------------- emitting

_wake = threading.Event()


def wake() -> None:
    """Wake the senders of this process (a delivery is due)."""
    _wake.set()


def _check_payload(value: Any, where: str = "data") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in _FORBIDDEN_KEYS:
                raise UnsafePayload(f"a webhook payload may not hold {where}.{k} (codes and secrets never leave)")
            _check_payload(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_payload(v, where)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def emit(sessions: sessionmaker[Session] | Session, kind: str, payload: dict[str, Any], *,
         config: WebhookConfig | None = None) -> str:
    """Store event ``kind`` with ``payload`` and a delivery to each configured URL; its id (``evt_...``).

    ``sessions``: a sessionmaker (committed here), or a Session (the caller commits: the event goes out only with
    the caller's transaction). The sender of this process is woken."""
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise ValueError("an event kind is a string of 1-64 characters")
    _check_payload(payload)
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    cfg = config if config is not None else WebhookConfig.load()
    event_id = "evt_" + uuid.uuid4().hex

    def add(session: Session) -> None:
        now = _now()
        ev = WebhookEvent(event_id=event_id, kind=kind, payload=text, created_at=now)
        session.add(ev)
        session.flush()
        for url in cfg.urls:
            session.add(WebhookDelivery(event_pk=ev.id, url=url, state="pending", attempts=0, next_attempt_at=now,
                                        created_at=now, updated_at=now))
        session.flush()

    if isinstance(sessions, Session):
        add(sessions)
    else:
        with sessions.begin() as session:
            add(session)
    log.info("webhook event %s (%s) for %d URL(s)", event_id, kind, len(cfg.urls))
    wake()
    return event_id


def hook(sessions: sessionmaker[Session], config: WebhookConfig | None = None,
         home: str | os.PathLike[str] | None = None) -> Callable[[str, dict[str, Any]], str]:
    """An ``on_event(kind, payload)`` for the node (``issuer.node.events``): each event becomes a webhook event
    (:func:`emit`), with the configuration read once, now."""
    cfg = config if config is not None else WebhookConfig.load(home=home)

    def on_event(kind: str, payload: dict[str, Any]) -> str:
        return emit(sessions, kind, payload, config=cfg)

    return on_event


def event_body(event: WebhookEvent) -> bytes:
    return json.dumps({"id": event.event_id, "kind": event.kind, "created_at": event.created_at.isoformat(),
                       "data": json.loads(event.payload)}, separators=(",", ":")).encode()


def backoff(attempts: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, 2 base, 4 base, ... at most ``cap``."""
    return min(cap, base * (2 ** max(0, min(attempts - 1, 40))))


def delivery_json(d: WebhookDelivery, event: WebhookEvent | None = None) -> dict[str, Any]:
    ev = event if event is not None else d.event
    return {"id": d.id, "event_id": ev.event_id, "kind": ev.kind, "url": d.url, "state": d.state,
            "attempts": d.attempts, "next_attempt_at": d.next_attempt_at.isoformat() if d.state == "pending" else None,
            "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None, "last_status": d.last_status,
            "last_error": d.last_error, "created_at": d.created_at.isoformat()}


def list_deliveries(session: Session, state: str | None = None, limit: int = 100,
                    after: int | None = None) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    """Deliveries by id; ``state``: pending, delivered, dead, or failed (dead, or pending after a failed try)."""
    q = select(WebhookDelivery, WebhookEvent).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_pk)
    if state == "failed":
        q = q.where((WebhookDelivery.state == "dead")
                    | ((WebhookDelivery.state == "pending") & (WebhookDelivery.attempts > 0)))
    elif state:
        q = q.where(WebhookDelivery.state == state)
    if after is not None:
        q = q.where(WebhookDelivery.id > after)
    return [(d, e) for d, e in session.execute(q.order_by(WebhookDelivery.id).limit(limit))]


def replay(sessions: sessionmaker[Session], delivery_id: int) -> dict[str, Any] | None:
    """Send a delivery again now (dead, delivered or pending), with a fresh count of attempts: its JSON
    (:func:`delivery_json`), or None if there is no such delivery."""
    with sessions.begin() as session:
        d = session.get(WebhookDelivery, delivery_id)
        if d is None:
            return None
        d.state, d.attempts, d.next_attempt_at, d.delivered_at = "pending", 0, _now(), None
        session.flush()
        out = delivery_json(d)
    wake()
    return out


# --------------------------------------------------------------------------- sending


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    import httpx

    r = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    return r.status_code


class WebhookSender:
    """Posts due deliveries until stopped (:meth:`start` / :meth:`stop`); :meth:`run_once` sends what is due."""

    def __init__(self, sessions: sessionmaker[Session], config: WebhookConfig | None = None, *,
                 base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY, max_attempts: int = MAX_ATTEMPTS,
                 poll: float = 1.0, timeout: float = SEND_TIMEOUT,
                 post: Callable[[str, bytes, dict[str, str], float], int] = _post,
                 housekeeping: Iterable[Callable[[], Any]] = ()) -> None:
        self.sessions = sessions
        self.config = config if config is not None else WebhookConfig.load()
        self.base_delay, self.max_delay, self.max_attempts = base_delay, max_delay, max_attempts
        self.poll, self.timeout, self._post = poll, timeout, post
        self.housekeeping = list(housekeeping)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._last_housekeeping = 0.0

    def start(self) -> WebhookSender:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cardproof-webhooks", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        _wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                sent = self.run_once()
                self._housekeep()
                failing = False
            except Exception as exc:  # noqa: BLE001 - the database may be down: try again later (logged once)
                if not failing:
                    log.warning("webhook sender: %s (trying again)", type(exc).__name__)
                failing = True
                sent = 0
            if sent:
                continue
            _wake.wait(self.poll)
            _wake.clear()

    def _housekeep(self) -> None:
        if time.monotonic() - self._last_housekeeping < 3600 or not self.housekeeping:
            return
        self._last_housekeeping = time.monotonic()
        for job in self.housekeeping:
            try:
                job()
            except Exception as exc:  # noqa: BLE001
                log.warning("webhook sender housekeeping: %s", type(exc).__name__)

    def _claim(self, limit: int = 20) -> list[tuple[int, str, bytes, str]]:
        """Lease up to ``limit`` due deliveries: (id, url, body, kind)."""
        now = _now()
        out = []
        with self.sessions() as session:
            due = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)).all()
            for did, nxt in due:
                took = session.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == did, WebhookDelivery.state == "pending",
                    WebhookDelivery.next_attempt_at == nxt).values(
                    next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS)))
                session.commit()
                if took.rowcount != 1:
                    continue  # another sender took it
                d = session.get(WebhookDelivery, did)
                out.append((did, d.url, event_body(d.event), d.event.kind))
        return out

    def run_once(self) -> int:
        """Send every due delivery once; how many were tried."""
        if not self.config.secret:
            pending = 0
            if self.config.urls and not self._warned:
                with self.sessions() as session:
                    pending = session.scalar(select(func.count()).select_from(WebhookDelivery)
                                             .where(WebhookDelivery.state == "pending")) or 0
                log.error("webhook URLs are configured but no CARDPROOF_WEBHOOK_SECRET: nothing is sent "
                          "(%d deliveries wait)", pending)
                self._warned = True
            return 0
        batch = self._claim()
        for did, url, body, kind in batch:
            self._send(did, url, body, kind)
        return len(batch)

    def _send(self, did: int, url: str, body: bytes, kind: str) -> None:
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "cardproof-webhooks/1",
                   "X-Cardproof-Event": kind, "X-Cardproof-Delivery": str(did), "X-Cardproof-Timestamp": str(ts),
                   "X-Cardproof-Signature": sign(self.config.secret, ts, body)}
        status, error = None, None
        try:
            status = self._post(url, body, headers, self.timeout)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - any failure to reach the receiver is retried
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        now = _now()
        with self.sessions.begin() as session:
            d = session.get(WebhookDelivery, did)
            if d is None or d.state != "pending":
                return
            d.attempts += 1
            d.last_status = status
            if error is None:
                d.state, d.delivered_at, d.last_error = "delivered", now, None
                log.info("webhook delivery %d (%s) delivered", did, kind)
            else:
                d.last_error = error
                if d.attempts >= self.max_attempts:
                    d.state = "dead"
                    log.warning("webhook delivery %d (%s) is dead after %d attempts: %s", did, kind, d.attempts,
                                error)
                else:
                    d.next_attempt_at = now + dt.timedelta(
                        seconds=backoff(d.attempts, self.base_delay, self.max_delay))
                    log.info("webhook delivery %d (%s) failed (%s); attempt %d", did, kind, error, d.attempts)
