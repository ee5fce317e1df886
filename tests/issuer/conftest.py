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

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from chain.registry import Registry
from issuer.secrets_store import MasterKey
from issuer.storage.db import make_engine, session_factory, upgrade
from tests import dbutil
from tests.chainkit import ChainEnv
from tests.issuer.helpers import all_tables

#: Enough connections for the 16-thread redemption races.
POOL = {"pool_size": 24, "max_overflow": 8}


@pytest.fixture(scope="session")
def issuer_pg_database_url() -> Iterator[str]:
    base = dbutil.postgres_base_url()
    if base is None:
        pytest.skip(dbutil.postgres_skip_reason())
    url = dbutil.create_database(base, prefix="cardproof_issuer")
    yield url
    dbutil.drop_database(url, base)


@pytest.fixture(scope="session")
def issuer_pg_migrated_url(issuer_pg_database_url: str) -> Iterator[str]:
    url = dbutil.create_schema(issuer_pg_database_url, prefix="issuer")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


def _empty_all(eng: sa.Engine) -> None:
    """DELETE every row (children first): much faster than TRUNCATE for the few rows a test leaves."""
    with eng.begin() as conn:
        for table in reversed(all_tables()):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database migrated to head once; tests get a copy (migrating costs ~50 ms)."""
    path = tmp_path_factory.mktemp("issuer-db") / "template.db"
    eng = make_engine(dbutil.sqlite_url(path))
    upgrade(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


def _sqlite_engine(template: Path, path: Path) -> sa.Engine:
    shutil.copyfile(template, path)
    eng = make_engine(dbutil.sqlite_url(path), **POOL)
    upgrade(eng)  # a no-op at head: one query
    return eng


@pytest.fixture
def engine(db_backend: str, request: pytest.FixtureRequest, tmp_path, sqlite_template) -> Iterator[sa.Engine]:
    if db_backend == "sqlite":
        eng = _sqlite_engine(sqlite_template, tmp_path / "cardproof.db")
        try:
            yield eng
        finally:
            eng.dispose()
        return
    url = request.getfixturevalue("issuer_pg_migrated_url")
    eng = make_engine(url, **POOL)
    try:
        yield eng
    finally:
        try:
            _empty_all(eng)
        finally:
            eng.dispose()


@pytest.fixture
def sessions(engine: sa.Engine):
    return session_factory(engine)


@pytest.fixture
def sqlite_sessions(tmp_path, sqlite_template) -> Iterator:
    """SQLite only, for tests where the backend does not matter (the chain does)."""
    eng = _sqlite_engine(sqlite_template, tmp_path / "cardproof-sqlite.db")
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
