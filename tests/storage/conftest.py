"""Fixtures of the storage tests: the same tests run on SQLite and PostgreSQL.

* ``backend``  – "sqlite" or "postgres" (PostgreSQL skipped when unreachable).
* ``db_url``   – an *empty* database: a temporary SQLite file, or a fresh schema
  in this session's PostgreSQL database.  For migration tests.
* ``engine``   – an engine on a database migrated to head and empty of rows: a
  temporary SQLite file, or (to keep PostgreSQL tests fast) one schema migrated
  once per session and truncated after each test.
* ``Session``  – a sessionmaker on ``engine``.
"""

from __future__ import annotations

import pytest

from issuer.storage.db import make_engine, session_factory, upgrade
from issuer.storage.models import import_all_models
from tests import dbutil

#: Enough connections for the 20-thread redemption race.
POOL = {"pool_size": 25, "max_overflow": 5}


@pytest.fixture(scope="session")
def pg_database_url():
    """A PostgreSQL database created for this test session, dropped at its end."""
    base = dbutil.postgres_base_url()
    if base is None:
        pytest.skip(dbutil.postgres_skip_reason())
    url = dbutil.create_database(base)
    yield url
    dbutil.drop_database(url, base)


@pytest.fixture(scope="session")
def pg_migrated_url(pg_database_url):
    """A schema of the session database migrated to head, shared by tests."""
    url = dbutil.create_schema(pg_database_url, prefix="shared")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request):
    return request.param


@pytest.fixture
def db_url(backend, request, tmp_path):
    if backend == "sqlite":
        yield dbutil.sqlite_url(tmp_path / "cardproof.db")
        return
    url = dbutil.create_schema(request.getfixturevalue("pg_database_url"))
    try:
        yield url
    finally:
        dbutil.drop_schema(url)


def _empty_all_tables(url: str) -> None:
    # DELETE, not TRUNCATE: TRUNCATE swaps files and costs ~0.3 s per call even on
    # empty tables; tests leave few rows (the bulk-insert speed test uses a schema of its own).
    eng = make_engine(url)
    try:
        with eng.begin() as conn:
            for table in reversed(import_all_models().sorted_tables):
                conn.execute(table.delete())
    finally:
        eng.dispose()


@pytest.fixture
def engine(backend, request, tmp_path):
    if backend == "sqlite":
        eng = make_engine(dbutil.sqlite_url(tmp_path / "cardproof.db"), **POOL)
        upgrade(eng)
        try:
            yield eng
        finally:
            eng.dispose()
        return
    url = request.getfixturevalue("pg_migrated_url")
    eng = make_engine(url, **POOL)
    try:
        yield eng
    finally:
        eng.dispose()
        _empty_all_tables(url)


@pytest.fixture
def Session(engine):  # noqa: N802 - a class-like factory
    return session_factory(engine)
