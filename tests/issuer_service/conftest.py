"""The supplier's world for the issuer service tests, on SQLite and PostgreSQL, on the in-process chain and
on anvil: an issuer database, a master key, the registry on the chain, a minted and anchored batch whose
codes the test knows, and the service (``issuer.service.app``) in process or on a live uvicorn.

* ``engine`` / ``sessions`` – a migrated, empty database (a fresh SQLite file, or one PostgreSQL schema
  migrated once per session and emptied after each test), pooled for the concurrent redemptions.
* ``world``  – :class:`SupplierWorld` (chain state reverted after each test by ``chain_env``).
* ``client`` – a TestClient on the service (lifespan run); ``live`` – the service on a real uvicorn.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chain.registry import Registry
from chain.settings import Settings, get_settings
from issuer.anchoring import anchor_batch
from issuer.core.serial import format_serial, parse_serial
from issuer.secrets_store import MasterKey
from issuer.service.app import ServiceDeps, create_app
from issuer.service.auth import create_api_key
from issuer.service.config import ServiceSettings
from issuer.service.ratelimit import MemoryLimiter
from tests.netkit import LiveServer, free_port  # noqa: F401 - re-exported for the service tests
from issuer.storage.db import session_factory, upgrade
from tests import dbutil
from tests.chainkit import ChainEnv
from tests.issuer.helpers import cards_of, mint

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette suggests httpx2 for its TestClient; httpx is what we have
    from starlette.testclient import TestClient

POOL = {"pool_size": 24, "max_overflow": 8}
GENEROUS = {"redeem_rate": "100000/minute", "redeem_rate_serial": "100000/minute"}


@pytest.fixture(scope="session")
def service_pg_migrated_url(pg_database_url: str) -> Iterator[str]:
    url = dbutil.create_schema(pg_database_url, prefix="isvc")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture
def engine(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path, sqlite_template) -> Iterator[sa.Engine]:
    pg_url = None if db_backend == "sqlite" else request.getfixturevalue("service_pg_migrated_url")
    with dbutil.backend_engine(lambda: dbutil.sqlite_engine_from(sqlite_template, tmp_path / "cardproof.db", **POOL),
                               pg_url, **POOL) as eng:
        yield eng


@pytest.fixture
def sessions(engine: sa.Engine):
    return session_factory(engine)


@dataclass
class SupplierWorld:
    chain: ChainEnv
    settings: Settings
    sessions: Any
    master_key: MasterKey
    registry: Registry  # acting as the issuer
    issuer: str
    batch_id: str
    #: (display serial, code, index) of the anchored batch's cards
    cards: list[tuple[str, str, int]]
    _used: set[str] = field(default_factory=set)

    def card(self) -> tuple[str, str]:
        """A card of the anchored batch that this test has not used yet: (serial, code)."""
        for serial, code, _index in self.cards:
            if serial not in self._used:
                self._used.add(serial)
                return serial, code
        raise RuntimeError("no unused card left")

    def index_of(self, serial: str) -> int:
        return next(i for s, _c, i in self.cards if s == serial)

    def is_redeemed_on_chain(self, serial: str) -> bool:
        return self.registry.is_redeemed(bytes.fromhex(self.batch_id[2:]), self.index_of(serial))

    def api_key(self, issuer: str | None = None, label: str = "till") -> str:
        with self.sessions.begin() as s:
            key, _row = create_api_key(s, issuer or self.issuer, label)
        return key

    def deps(self, registry: Any = None, **service: Any) -> ServiceDeps:
        return ServiceDeps(settings=self.settings, service=ServiceSettings(**{**GENEROUS, **service}),
                           sessions=self.sessions, master_key=self.master_key,
                           registry=registry if registry is not None else self.registry, limiter=MemoryLimiter())

    def app(self, registry: Any = None, **service: Any):
        return create_app(self.settings, deps=self.deps(registry, **service))


def minted_cards(sessions, master_key: MasterKey, batch_id: str) -> list[tuple[str, str, int]]:
    return [(format_serial(parse_serial(c["serial"])), c["code"], c["index"])
            for c in cards_of(sessions, master_key, batch_id)]


@pytest.fixture
def world(chain_env: ChainEnv, sessions, tmp_path: Path) -> SupplierWorld:
    registry = chain_env.registry("issuer")
    registry.client._next_nonce = None
    issuer = chain_env.address("issuer")
    master_key = MasterKey.generate()
    res = mint(sessions, master_key, issuer, count=12)
    anchor_batch(sessions, registry, res.batch_id)
    settings = get_settings(home=tmp_path / "home", database_url="sqlite:///unused-deps-are-given.db",
                            redis_url=None)
    return SupplierWorld(chain_env, settings, sessions, master_key, registry, issuer, res.batch_id,
                         minted_cards(sessions, master_key, res.batch_id))


@pytest.fixture
def client(world: SupplierWorld) -> Iterator[TestClient]:
    with TestClient(world.app(), base_url="http://testserver") as c:
        yield c




@pytest.fixture
def live(world: SupplierWorld) -> Iterator[LiveServer]:
    with LiveServer(world.app()) as server:
        yield server
