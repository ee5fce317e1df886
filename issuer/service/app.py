"""The issuer service: ``create_app()`` builds the FastAPI application.

Nothing is built at import time: the database engine, the master key, the limiter and (lazily, at the
first redemption or readiness check) the chain connection are made in the lifespan, from ``settings``
(or the environment) and whatever ``deps`` the caller hands in.

    uvicorn --factory issuer.service.app:create_app      # or: cardproof issuer serve
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from chain.registry import Registry
from chain.settings import Settings, get_settings
from issuer.secrets_store import MasterKey
from issuer.service.config import ServiceSettings, get_service_settings
from issuer.service.errors import (
    Outage,
    RateLimited,
    install_error_handlers,
    unwatch_database,
    watch_database,
)
from issuer.service.ratelimit import Limiter, make_limiter

log = logging.getLogger("cardproof.issuer.service")

__all__ = ["ServiceDeps", "create_app"]

DESCRIPTION = """\
The supplier's own service: its redeemers redeem its cards here, exactly once, in its database and on
chain. Authenticate with an API key (`Authorization: Bearer cpk_...`, from `cardproof issuer api-key
create`) or an EIP-191 signed request (`X-Cardproof-Address`, `-Timestamp`, `-Nonce`, `-Signature`;
see `issuer/service/auth.py`).

Errors are JSON `{"error": {"code", "message"}}` with a stable `code`.

The supplier's ERP API (`/v1/erp/*`: stock, mint jobs, orders, revocations, webhook deliveries) needs an ERP API
key (`cardproof issuer api-key create --role erp`). Requests that create something need an `Idempotency-Key`
header: the same key and body within 24 hours get the first answer again (200, `Idempotent-Replayed: true`),
another body 422 `idempotency_conflict`. Webhooks (`CARDPROOF_WEBHOOK_URLS`, `CARDPROOF_WEBHOOK_SECRET`) are
signed: `X-Cardproof-Signature: sha256=hex(HMAC-SHA256(secret, "{X-Cardproof-Timestamp}.{body}"))`; see
`issuer.webhooks.verify_signature`.
"""


@dataclass
class ServiceDeps:
    """What the routes need. ``create_app(deps=ServiceDeps(...))`` lets tests hand in ready parts (sessions,
    a registry on an in-process chain, a limiter); what is left out is built from the settings."""

    settings: Settings | None = None
    service: ServiceSettings | None = None
    sessions: sessionmaker[Session] | None = None
    master_key: MasterKey | None = None
    #: The registry, whose client's account (the issuer) sends the redemptions; or a function connecting to it.
    registry: Registry | Callable[[], Registry] | None = None
    limiter: Limiter | None = None
    #: Where and how webhooks go (``issuer.webhooks``); None: from the environment / CARDPROOF_NODE_CONFIG.
    webhooks: Any = None
    #: Keyword arguments of the webhook sender (``issuer.webhooks.WebhookSender``: base_delay, poll, ...);
    #: ``{"enabled": False}`` runs none.
    webhook_sender: dict[str, Any] = field(default_factory=dict)
    #: Run the ERP's mint jobs in this process (``issuer.mint_jobs``).
    mint_jobs: bool = True
    _owned: list[Any] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self) -> ServiceDeps:
        if self.settings is None:
            self.settings = get_settings()
        if self.service is None:
            self.service = get_service_settings()
        if self.sessions is None:
            from issuer.storage.db import open_database

            engine, self.sessions = open_database(self.settings)
            self._owned.append(engine)
        if self.master_key is None:
            from issuer.secrets_store import load_master_key

            self.master_key = load_master_key(self.settings, create=False)  # never a fresh key: nothing would open
        if self.registry is None:
            self.registry = self._connect
        if self.limiter is None:
            self.limiter = make_limiter(self.settings.redis_url)
            self._owned.append(self.limiter)
        if self.webhooks is None:
            from issuer.webhooks import WebhookConfig

            self.webhooks = WebhookConfig.load(home=self.settings.home)
        return self

    def emit(self, kind: str, payload: dict[str, Any]) -> str:
        """Store a webhook event (``issuer.webhooks.emit``) with this service's configuration."""
        from issuer.webhooks import emit

        return emit(self.sessions, kind, payload, config=self.webhooks)

    def _connect(self) -> Registry:
        from chain.client import connect
        from chain.deployments import REGISTRY, find

        client = connect(self.settings, timeout=self.service.rpc_timeout)
        return Registry(client, self.service.registry_address or find(client, self.settings.home, REGISTRY).address)

    def acting_registry(self) -> Registry:
        """The registry (connected at the first call; a failed connection is tried again next time)."""
        reg = self.registry
        if isinstance(reg, Registry):
            return reg
        with self._lock:
            if not isinstance(self.registry, Registry):
                self.registry = reg()
            return self.registry

    def rate_limit(self, scope: str, key: str, rate_name: str) -> None:
        wait = self.limiter.hit(f"{scope}:{key}", self.service.rate(rate_name))
        if wait > 0:
            raise RateLimited(wait, f"{scope} requests")

    def engine(self) -> Engine | None:
        """The engine behind ``sessions`` (None if they are not bound to one)."""
        bind = getattr(self.sessions, "kw", {}).get("bind")
        return bind if isinstance(bind, Engine) else None

    def close(self) -> None:
        for thing in self._owned:
            try:
                (getattr(thing, "dispose", None) or thing.close)()
            except Exception:  # noqa: BLE001
                log.debug("closing %r failed", thing)


def _reconciler(deps: ServiceDeps) -> Any:
    """The background `reconcile --all` of this service (issuer.service.reconciler)."""
    from issuer.reconcile import reconcile
    from issuer.service.reconciler import Reconciler

    def run() -> Any:
        return reconcile(deps.sessions, deps.acting_registry())

    return Reconciler(run, deps.service.reconcile_interval, deps.settings.home / "locks" / "reconcile.lock")


def _webhook_sender(deps: ServiceDeps) -> Any:
    """The sender of webhook deliveries (``issuer.webhooks``), which also forgets expired idempotency keys."""
    from issuer import idempotency
    from issuer.webhooks import WebhookSender

    options = {k: v for k, v in deps.webhook_sender.items() if k != "enabled"}
    if not deps.webhook_sender.get("enabled", True):
        return None
    return WebhookSender(deps.sessions, deps.webhooks,
                         housekeeping=[lambda: idempotency.purge_expired(deps.sessions)], **options).start()


def _mint_jobs(deps: ServiceDeps) -> Any:
    from issuer.mint_jobs import MintJobRunner

    if not deps.mint_jobs:
        return None
    return MintJobRunner(deps.sessions, deps.master_key, deps.acting_registry, emit=deps.emit).adopt_orphans().start()


def create_app(settings: Settings | None = None, *, deps: ServiceDeps | None = None) -> FastAPI:
    deps = deps if deps is not None else ServiceDeps()
    if settings is not None and deps.settings is None:
        deps.settings = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(deps.resolve)
        app.state.deps = deps
        # Database outages: 503 database_unavailable, one log line when one starts and one when it ends.
        app.state.database_outage = Outage("database", "answering 503 database_unavailable")
        engine = deps.engine()
        listeners = watch_database(engine, app.state.database_outage) if engine is not None else []
        app.state.reconciler = _reconciler(deps).start()
        # The ERP API's background work: webhook deliveries, mint jobs (nothing waits for a person).
        app.state.webhook_sender = await run_in_threadpool(_webhook_sender, deps)
        app.state.mint_jobs = await run_in_threadpool(_mint_jobs, deps)
        try:
            yield
        finally:
            for worker in (app.state.mint_jobs, app.state.webhook_sender):
                if worker is not None:
                    await run_in_threadpool(worker.stop)
            app.state.reconciler.stop()
            if listeners:
                unwatch_database(engine, listeners)
            await run_in_threadpool(deps.close)

    # /docs loads its files from this service (fastapi-offline's), never from a CDN; no /redoc (its logo is on a CDN).
    app = FastAPIOffline(title="cardproof issuer service", version="1.0", description=DESCRIPTION, lifespan=lifespan,
                         redirect_slashes=False, redoc_url=None)
    install_error_handlers(app)
    from issuer.service import erp, routes

    app.include_router(routes.router)
    app.include_router(erp.router)
    return app
