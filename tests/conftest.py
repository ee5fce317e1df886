"""Shared fixtures.

* ``chain_env``        – runs a test once on the in-process chain and once on anvil.
* ``db_backend``       – "sqlite" or "postgres" (PostgreSQL skipped when unreachable, see tests/dbutil.py).
* ``pg_database_url``  – a PostgreSQL database for this test session (folders take schemas in it).
* ``sqlite_template``  – an empty SQLite database migrated to head, to copy.
* ``public_sqlite_template`` – the same for the public service's database (``verify_api/migrations``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import dbutil
from tests.chainkit import ChainEnv, anvil_env, eth_tester_env

BACKENDS = ("eth-tester", "anvil")


@pytest.fixture(scope="session")
def _eth_tester_session() -> Iterator[ChainEnv]:
    yield from eth_tester_env()


@pytest.fixture(scope="session")
def _anvil_session() -> Iterator[ChainEnv]:
    yield from anvil_env()


@pytest.fixture(params=BACKENDS)
def chain_env(request: pytest.FixtureRequest) -> Iterator[ChainEnv]:
    """A chain with the registry deployed and funded role accounts; state is reverted after the test."""
    env: ChainEnv = request.getfixturevalue(
        "_eth_tester_session" if request.param == "eth-tester" else "_anvil_session"
    )
    snap = env.snapshot()
    # Nonces cached by clients must not outlive the revert.
    env.admin._next_nonce = None
    try:
        yield env
    finally:
        env.revert(snap)
        env.admin._next_nonce = None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A PostgreSQL database created for this test session, dropped at its end."""
    base = dbutil.postgres_base_url()
    if base is None:
        pytest.skip(dbutil.postgres_skip_reason())
    url = dbutil.create_database(base)
    yield url
    dbutil.drop_database(url, base)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dbutil.migrated_sqlite_template(tmp_path_factory.mktemp("db-template"))


@pytest.fixture(scope="session")
def public_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dbutil.migrated_sqlite_template(tmp_path_factory.mktemp("public-db-template"), public=True)
