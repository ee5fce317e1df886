"""Fixtures of the storage tests: the same tests run on SQLite and PostgreSQL.

* ``backend``  – "sqlite" or "postgres" (PostgreSQL skipped when unreachable).
* ``db_url``   – an *empty* database: a temporary SQLite file, or a fresh schema
  in this session's PostgreSQL database.  For migration tests.
* ``engine``   – an engine on a database migrated to head and empty of rows: a
  temporary SQLite file, or (to keep PostgreSQL tests fast) one schema migrated
  once per session and truncated after each test.
* ``Session``  – a sessionmaker on ``engine``.
* ``public_engine`` – the same as ``engine`` for the public service's database (``verify_api/migrations``).
"""

from __future__ import annotations

import pytest

from issuer.storage.db import make_engine, session_factory, upgrade
from tests import dbutil
from verify_api.storage.db import upgrade_public

#: Enough connections for the 20-thread redemption race.
POOL = {"pool_size": 25, "max_overflow": 5}


@pytest.fixture(scope="session")
def pg_migrated_url(pg_database_url):
    """A schema of the session database migrated to head, shared by tests."""
    url = dbutil.create_schema(pg_database_url, prefix="shared")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture
def backend(db_backend):
    return db_backend


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


@pytest.fixture
def engine(backend, request, tmp_path):
    def fresh_sqlite():
        eng = make_engine(dbutil.sqlite_url(tmp_path / "cardproof.db"), **POOL)
        upgrade(eng)
        return eng

    pg_url = None if backend == "sqlite" else request.getfixturevalue("pg_migrated_url")
    with dbutil.backend_engine(fresh_sqlite, pg_url, **POOL) as eng:
        yield eng


@pytest.fixture
def Session(engine):  # noqa: N802 - a class-like factory
    return session_factory(engine)


@pytest.fixture(scope="session")
def pg_public_migrated_url(pg_database_url):
    """A schema of the session database migrated to the public head, shared by tests."""
    url = dbutil.create_schema(pg_database_url, prefix="public")
    upgrade_public(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture
def public_engine(backend, request, tmp_path):
    if backend == "sqlite":
        eng = make_engine(dbutil.sqlite_url(tmp_path / "public.db"), **POOL)
        upgrade_public(eng)
        try:
            yield eng
        finally:
            eng.dispose()
        return
    eng = make_engine(request.getfixturevalue("pg_public_migrated_url"), **POOL)
    try:
        yield eng
    finally:
        try:
            dbutil.delete_all_rows(eng, public=True)
        finally:
            eng.dispose()
