"""What the routes need, built once per process in the app's lifespan (never at import time).

``create_app(deps=AppDeps(...))`` lets tests and tools hand in ready-made parts (a session factory, a
registry on an in-process chain, a limiter); whatever is left out is built from the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from chain.registry import Registry
from chain.settings import Settings, get_settings
from verify_api.chain_view import ChainView
from verify_api.config import ApiSettings, get_api_settings
from verify_api.errors import RateLimited
from verify_api.ratelimit import Limiter, make_limiter
from verify_api.scans import ScanRecorder
from verify_api.service import CardService

log = logging.getLogger("cardproof.api")

__all__ = ["AppDeps", "ClientInfo", "client_info", "connect_registry", "rate_limit"]


@dataclass
class AppDeps:
    settings: Settings | None = None
    api: ApiSettings | None = None
    engine: Engine | None = None
    #: Sessions of the public database (never the supplier's).
    sessions: sessionmaker[Session] | None = None
    #: The registry (read only), or a function connecting to it.
    registry: Registry | Callable[[], Registry] | None = None
    chain: ChainView | None = None
    limiter: Limiter | None = None
    scans: ScanRecorder | None = None
    service: CardService | None = None
    #: Start the chain poller and the scan writer threads.
    background: bool = True
    _owned: list[Any] = field(default_factory=list, repr=False)

    def resolve(self) -> AppDeps:
        """Fill in every missing part from the settings."""
        if self.settings is None:
            self.settings = get_settings()
        if self.api is None:
            self.api = get_api_settings()
        s, api = self.settings, self.api
        if self.sessions is None:
            from verify_api.storage.db import open_public_database

            self.engine, self.sessions = open_public_database(s)
            self._owned.append(self.engine)
        if self.chain is None:
            reg = self.registry if self.registry is not None else (lambda: connect_registry(s, api))
            self.chain = ChainView(reg, ttl=api.chain_ttl, max_age=api.chain_max_age,
                                   stale_after=api.chain_stale_after)
        if self.limiter is None:
            self.limiter = make_limiter(s.redis_url)
            self._owned.append(self.limiter)
        if self.scans is None:
            from verify_api.storage.repository import get_or_create_secret

            with self.sessions.begin() as session:
                secret = get_or_create_secret(session, "scan-client-secret")
            self.scans = ScanRecorder(self.sessions, secret, enabled=api.record_scans,
                                      flush_interval=api.scan_flush_interval, queue_max=api.scan_queue_max,
                                      retention_days=api.scan_retention_days)
        if self.service is None:
            self.service = CardService(self.sessions, self.chain, self.scans,
                                       cache_ttl=api.card_cache_ttl, cache_size=api.card_cache_size,
                                       public_url=s.public_url, explorer_url=s.explorer_url)
        return self

    def start(self) -> None:
        if self.background:
            self.chain.start()
            self.scans.start()
        else:
            self.chain.poll()

    def close(self) -> None:
        try:
            self.chain.stop()
        finally:
            self.scans.stop()
            for thing in self._owned:
                try:
                    (getattr(thing, "dispose", None) or thing.close)()
                except Exception:  # noqa: BLE001
                    log.debug("closing %r failed", thing)

    def read_registry(self) -> Registry:
        """The registry the service reads (publishing checks dumps against it)."""
        return self.chain._ensure_registry()  # noqa: SLF001


def connect_registry(settings: Settings, api: ApiSettings) -> Registry:
    """The configured chain's registry. Reading needs no account: without one, a throwaway address is used.

    The node's URL is resolved on each call (CARDPROOF_RPC_URL, else the local chain recorded under
    $CARDPROOF_HOME/chain), so the chain view, which calls this again after a few failed polls, finds a
    local chain restarted on another port."""
    from chain.client import connect
    from chain.deployments import REGISTRY, find

    client = connect(settings, read_only=True, timeout=api.rpc_timeout)
    address = api.registry_address or find(client, settings.home, REGISTRY).address
    return Registry(client, address)


@dataclass(frozen=True)
class ClientInfo:
    ip: str
    hash: str
    ua: str
    country: str | None


def client_info(request: Request, deps: AppDeps) -> ClientInfo:
    ip = request.client.host if request.client else "unknown"
    country = None
    headers = request.headers
    if deps.api.trust_proxy:
        fwd = headers.get("x-forwarded-for")
        if fwd:
            ip = fwd.split(",")[0].strip()[:64] or ip
        c = headers.get("cf-ipcountry") or headers.get("x-country")
        if c and len(c) == 2 and c.isalpha():
            country = c.upper()
    from verify_api.scans import ua_family

    return ClientInfo(ip, deps.scans.client(ip), ua_family(headers.get("user-agent")), country)


def rate_limit(deps: AppDeps, scope: str, key: str, rate_name: str) -> None:
    wait = deps.limiter.hit(f"{scope}:{key}", deps.api.rate(rate_name))
    if wait > 0:
        from verify_api.metrics import RATE_LIMITED

        RATE_LIMITED.labels(scope).inc()
        raise RateLimited(wait, "requests" if scope == "lookup" else f"{scope} requests")
