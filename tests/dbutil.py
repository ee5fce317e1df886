"""Database helpers shared by test folders: ``from tests import dbutil``.

PostgreSQL for tests:

* ``CARDPROOF_TEST_POSTGRES_URL`` if set (any SQLAlchemy/psycopg URL pointing at
  an existing database the test user may ``CREATE DATABASE`` from);
* else ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` if a connection
  succeeds within 2 s;
* else PostgreSQL tests are skipped with :func:`postgres_skip_reason`.

Each test session works in a database of its own (:func:`create_database`,
dropped ``WITH (FORCE)`` by :func:`drop_database`), and each test may take a
schema of its own in it (:func:`create_schema` returns a URL whose connections
use that schema through ``search_path``).

``tests/conftest.py`` holds the fixtures built on these that every folder shares (``db_backend``,
``pg_database_url``, ``sqlite_template``, ``public_sqlite_template``); ``tests/storage/conftest.py`` shows per-folder ones.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Iterator

ENV_URL = "CARDPROOF_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 2

__all__ = [
    "ENV_URL",
    "DEFAULT_URL",
    "postgres_base_url",
    "postgres_skip_reason",
    "create_database",
    "drop_database",
    "fresh_postgres_database",
    "create_schema",
    "drop_schema",
    "fresh_postgres_schema",
    "sqlite_url",
    "migrated_sqlite_template",
    "sqlite_engine_from",
    "delete_all_rows",
]


def _sa_url(url: str):
    from sqlalchemy.engine import make_url

    text = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if text.startswith(prefix):
            text = "postgresql+psycopg://" + text[len(prefix):]
    return make_url(text)


def _libpq_conninfo(url: str) -> str:
    """psycopg conninfo for a SQLAlchemy URL (driver suffix removed)."""
    u = _sa_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def _connect(url: str, *, autocommit: bool = True):
    import psycopg

    return psycopg.connect(
        _libpq_conninfo(url), connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit
    )


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    explicit = os.environ.get(ENV_URL, "").strip()
    url = explicit or DEFAULT_URL
    try:
        import psycopg  # noqa: F401
    except ImportError:  # pragma: no cover
        return None, "psycopg is not installed"
    try:
        with _connect(url) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        where = ENV_URL if explicit else _sa_url(url).render_as_string(hide_password=True)
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        return None, f"PostgreSQL not reachable at {where}: {first}"
    return str(_sa_url(url).render_as_string(hide_password=False)), ""


def postgres_base_url() -> str | None:
    """URL of a reachable PostgreSQL database to create test databases from, or None."""
    return _probe()[0]


def postgres_skip_reason() -> str:
    """Why PostgreSQL tests are skipped ("" when PostgreSQL is reachable)."""
    reason = _probe()[1]
    if reason:
        return reason + f" (set {ENV_URL} to a PostgreSQL URL to run these tests)"
    return ""


def create_database(base_url: str | None = None, prefix: str = "cardproof_t") -> str:
    """Create an empty database next to ``base_url``'s; returns its SQLAlchemy URL."""
    base = base_url or postgres_base_url()
    if base is None:
        raise RuntimeError(postgres_skip_reason())
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _connect(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _sa_url(base).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, base_url: str | None = None) -> None:
    """Drop the database of ``url`` (``WITH (FORCE)``: closes its connections)."""
    base = base_url or postgres_base_url()
    name = _sa_url(url).database
    if base is None or not name:
        return
    with _connect(base) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_postgres_database(base_url: str | None = None, prefix: str = "cardproof_t") -> Iterator[str]:
    url = create_database(base_url, prefix)
    try:
        yield url
    finally:
        drop_database(url, base_url)


def create_schema(db_url: str, prefix: str = "t") -> str:
    """Create a schema in ``db_url``'s database; returns a URL whose sessions use it.

    The URL carries ``options=-csearch_path=<schema>``, so tables (and Alembic's
    version table) are created and found in that schema.
    """
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with _connect(db_url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    u = _sa_url(db_url)
    query = dict(u.query)
    query["options"] = f"-csearch_path={schema}"
    return u.set(query=query).render_as_string(hide_password=False)


def drop_schema(url: str) -> None:
    u = _sa_url(url)
    options = u.query.get("options", "")
    if isinstance(options, tuple):
        options = options[0]
    prefix = "-csearch_path="
    if not options.startswith(prefix):
        return
    schema = options[len(prefix):]
    base = u.difference_update_query(["options"]).render_as_string(hide_password=False)
    with _connect(base) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def fresh_postgres_schema(db_url: str) -> Iterator[str]:
    url = create_schema(db_url)
    try:
        yield url
    finally:
        drop_schema(url)


def sqlite_url(path: os.PathLike[str] | str) -> str:
    return f"sqlite:///{os.fspath(path)}"


# --------------------------------------------------------------------------- migrated databases


def migrated_sqlite_template(directory: os.PathLike[str] | str, *, public: bool = False) -> "os.PathLike[str]":
    """An empty SQLite database migrated to head, for tests to copy (migrating costs ~50 ms, a copy less):
    the supplier's (``issuer/migrations``), or with ``public=True`` the public service's
    (``verify_api/migrations``)."""
    from pathlib import Path

    from issuer.storage.db import make_engine

    path = Path(directory) / ("public-template.db" if public else "template.db")
    eng = make_engine(sqlite_url(path))
    _upgrade(eng, public)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


def _upgrade(engine, public: bool) -> None:
    if public:
        from verify_api.storage.db import upgrade_public

        upgrade_public(engine)
    else:
        from issuer.storage.db import upgrade

        upgrade(engine)


def sqlite_engine_from(template: os.PathLike[str] | str, path: os.PathLike[str] | str, *, public: bool = False,
                       **engine_kw):
    """An engine on a copy of `template` at `path` (the upgrade is a one-query no-op at head)."""
    import shutil

    from issuer.storage.db import make_engine

    shutil.copyfile(template, path)
    eng = make_engine(sqlite_url(path), **engine_kw)
    _upgrade(eng, public)
    return eng


def delete_all_rows(engine, *, public: bool = False) -> None:
    """DELETE every row of every migrated table (the supplier's, or with ``public=True`` the public
    service's), children first: much faster than TRUNCATE for the few rows a test leaves."""
    if public:
        from verify_api.storage.models import import_all_models
    else:
        from issuer.storage.models import import_all_models

    with engine.begin() as conn:
        for table in reversed(import_all_models().sorted_tables):
            conn.execute(table.delete())


@contextlib.contextmanager
def backend_engine(make_sqlite, pg_url: str | None, **engine_kw) -> Iterator:
    """A test's engine: a fresh SQLite one (``make_sqlite()``) when ``pg_url`` is None, else one on that shared,
    migrated PostgreSQL schema, whose rows are deleted afterwards. Disposed either way."""
    from issuer.storage.db import make_engine

    eng = make_sqlite() if pg_url is None else make_engine(pg_url, **engine_kw)
    try:
        yield eng
    finally:
        try:
            if pg_url is not None:
                delete_all_rows(eng)
        finally:
            eng.dispose()
