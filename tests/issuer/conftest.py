"""Fixtures of the issuer service tests: every library test runs on SQLite and on PostgreSQL.

* ``db_backend`` – "sqlite" or "postgres" (PostgreSQL skipped when unreachable, see tests/dbutil.py).
* ``engine``     – an engine on a migrated, empty database: a fresh SQLite file, or (to keep the
  PostgreSQL runs fast) one schema of this session's database migrated once and truncated after
  each test. Pooled for the concurrent-redemption races.
* ``sessions``   – a sessionmaker on ``engine`` (what the issuer library takes).
* ``master_key`` – a fresh random master key.
* ``issuer_env`` – ``chain_env`` (eth-tester and anvil) plus the issuer's registry and address.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from chain.registry import Registry
from issuer.secrets_store import MasterKey
from issuer.storage.db import session_factory, upgrade
from tests import dbutil
from tests.chainkit import ChainEnv

#: Enough connections for the 16-thread redemption races.
POOL = {"pool_size": 24, "max_overflow": 8}


@pytest.fixture(scope="session")
def issuer_pg_migrated_url(pg_database_url: str) -> Iterator[str]:
    url = dbutil.create_schema(pg_database_url, prefix="issuer")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture
def engine(db_backend: str, request: pytest.FixtureRequest, tmp_path, sqlite_template) -> Iterator[sa.Engine]:
    pg_url = None if db_backend == "sqlite" else request.getfixturevalue("issuer_pg_migrated_url")
    with dbutil.backend_engine(lambda: dbutil.sqlite_engine_from(sqlite_template, tmp_path / "cardproof.db", **POOL),
                               pg_url, **POOL) as eng:
        yield eng


@pytest.fixture
def sessions(engine: sa.Engine):
    return session_factory(engine)


@pytest.fixture
def sqlite_sessions(tmp_path, sqlite_template) -> Iterator:
    """SQLite only, for tests where the backend does not matter (the chain does)."""
    eng = dbutil.sqlite_engine_from(sqlite_template, tmp_path / "cardproof-sqlite.db", **POOL)
    try:
        yield session_factory(eng)
    finally:
        eng.dispose()


@pytest.fixture
def master_key() -> MasterKey:
    return MasterKey.generate()


@dataclass
class IssuerEnv:
    chain: ChainEnv
    registry: Registry
    address: str

    @property
    def backend(self) -> str:
        return self.chain.backend


@pytest.fixture
def issuer_env(chain_env: ChainEnv) -> IssuerEnv:
    registry = chain_env.registry("issuer")
    registry.client._next_nonce = None
    return IssuerEnv(chain_env, registry, chain_env.address("issuer"))
