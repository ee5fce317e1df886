"""Engines, migrations and sessions of the issuer database.

* :func:`make_engine` – SQLite (WAL, ``busy_timeout`` 30 s, foreign keys on) or
  PostgreSQL through psycopg 3 (``postgresql://`` is rewritten to
  ``postgresql+psycopg://``).
* :func:`upgrade` – applies the Alembic migrations of ``issuer/migrations``
  programmatically (no ``alembic.ini``); a no-op costing one small query when the
  database is already at head; concurrent callers are serialized (SQLite
  ``BEGIN IMMEDIATE``, PostgreSQL advisory lock).
* :func:`open_database` – what applications call: engine + sessionmaker for the
  configured database, migrated.

SQLite transactions: the pysqlite driver's default transaction handling is kept
on purpose: it opens a transaction only at the first write (``BEGIN`` before
INSERT/UPDATE/DELETE), so reads done earlier in a session do not pin an old WAL
snapshot, and a later conditional UPDATE (e.g. ``mark_card_redeemed``) waits for
the write lock (``busy_timeout``) and then sees the latest committed data instead
of failing with ``SQLITE_BUSY_SNAPSHOT``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from issuer.errors import StorageError

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config

    from chain.settings import Settings

__all__ = [
    "MIGRATIONS_DIR",
    "SQLITE_BUSY_TIMEOUT_MS",
    "normalize_url",
    "safe_url",
    "make_engine",
    "alembic_config",
    "head_revision",
    "current_revision",
    "upgrade",
    "downgrade",
    "session_factory",
    "open_database",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds to open a PostgreSQL connection before giving up (libpq ``connect_timeout``).
PG_CONNECT_TIMEOUT_S = 5
#: Page cache per SQLite connection (negative = KiB): big bulk inserts into the
#: random-keyed unique indexes (serial, fingerprint) stay fast.
SQLITE_CACHE_KIB = 65_536
#: pg_advisory_xact_lock key serializing concurrent migrations ("cardprf" in ASCII).
_PG_MIGRATION_LOCK = 0x63617264707266

_POSTGRES_SCHEME = re.compile(r"^(postgres|postgresql)(\+psycopg)?://", re.IGNORECASE)


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` / ``postgres://`` use psycopg 3."""
    if isinstance(url, URL):
        if url.drivername in ("postgresql", "postgres"):
            return url.set(drivername="postgresql+psycopg")
        return url
    text = url.strip()
    text = _POSTGRES_SCHEME.sub("postgresql+psycopg://", text, count=1)
    try:
        return make_url(text)
    except Exception:  # sqlalchemy.exc.ArgumentError; never echo a URL with a password
        raise StorageError("the database URL is not valid") from None


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, fit for messages and logs."""
    try:
        return normalize_url(url).render_as_string(hide_password=True)
    except StorageError:
        return "<invalid URL>"


def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(db)


def _enable_wal(cur: Any) -> None:
    """Switch the database to WAL (persistent; a no-op once done).

    The switch takes an exclusive lock and SQLite may report "database is locked"
    at once, without waiting on ``busy_timeout``, when several connections race to
    do it on a new file: retry for up to the busy timeout.
    """
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any, *, memory: bool) -> None:
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if not memory:
            _enable_wal(cur)
            # Durable at every checkpoint, not every commit; safe with WAL.
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    finally:
        cur.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` set up for cardproof (see the module docstring)."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = sa.create_engine(u, connect_args=connect_args, **kwargs)
        memory = _sqlite_file(u) is None
        event.listen(
            engine,
            "connect",
            functools.partial(_on_sqlite_connect, memory=memory),
        )
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        # A host that does not answer costs a request at most this, not the TCP stack's minutes.
        connect_args = dict(kwargs.pop("connect_args", {}))
        if "connect_timeout" not in u.query:
            connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        return sa.create_engine(u, connect_args=connect_args, **kwargs)
    return sa.create_engine(u, **kwargs)


# --------------------------------------------------------------------------- migrations


def alembic_config(url: str | URL | None = None, migrations: Path = MIGRATIONS_DIR) -> Config:
    """An Alembic ``Config`` built in code for ``migrations`` (default: ``issuer/migrations``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    if url is not None:
        # ConfigParser interpolation: escape '%' (URL-encoded passwords).
        rendered = normalize_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


@functools.lru_cache(maxsize=4)
def head_revision(migrations: Path = MIGRATIONS_DIR) -> str:
    """The newest migration revision of ``migrations`` (read once per process)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config(migrations=migrations)).get_heads()
    if len(heads) != 1:
        raise StorageError(f"the migrations have {len(heads)} heads; merge them")
    return heads[0]


def current_revision(bind: Engine | Connection) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    return MigrationContext.configure(bind).get_current_revision()


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head", *, migrations: Path = MIGRATIONS_DIR) -> None:
    """Migrate the database to ``revision`` (default: the newest) of ``migrations``.

    Cheap when already up to date: one query on ``alembic_version``.
    """
    from alembic import command

    own = not isinstance(engine_or_url, Engine)
    engine = make_engine(engine_or_url) if own else engine_or_url
    try:
        target = head_revision(migrations) if revision == "head" else revision
        with engine.connect() as conn:
            if current_revision(conn) == target:
                return
            conn.rollback()
            _lock_for_migration(conn)
            cfg = alembic_config(migrations=migrations)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    except StorageError:
        raise
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot migrate the database {safe_url(engine.url)}: {_first_line(exc)}"
        ) from exc
    finally:
        if own:
            engine.dispose()


def downgrade(engine_or_url: Engine | str | URL, revision: str, *, migrations: Path = MIGRATIONS_DIR) -> None:
    """Migrate down to ``revision`` (``"base"`` empties the schema). For tests/tools."""
    from alembic import command

    own = not isinstance(engine_or_url, Engine)
    engine = make_engine(engine_or_url) if own else engine_or_url
    try:
        with engine.connect() as conn:
            _lock_for_migration(conn)
            cfg = alembic_config(migrations=migrations)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()
    finally:
        if own:
            engine.dispose()


def _lock_for_migration(conn: Connection) -> None:
    """Serialize concurrent migrators for the rest of ``conn``'s transaction."""
    name = conn.dialect.name
    if name == "sqlite":
        # Take the write lock now (waits up to busy_timeout); DDL then runs inside
        # this transaction, and a second migrator finds the work done.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__


# --------------------------------------------------------------------------- sessions


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep attribute values after commit (no surprise reloads)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def open_database(settings: Settings | None = None, *, url: str | URL | None = None,
                  migrations: Path = MIGRATIONS_DIR, engine_kwargs: dict[str, Any] | None = None
                  ) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and sessionmaker for the configured database (or ``url``), migrated to the head of
    ``migrations`` (default: the supplier's database and its migrations).

    Creates the SQLite file's folder if needed.
    """
    if url is None:
        if settings is None:
            from chain.settings import get_settings

            settings = get_settings()
        url = settings.effective_database_url
    url = normalize_url(url)
    if url.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path is not None:
            try:
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the database folder {path.parent}: {exc.strerror}"
                ) from None
    engine = make_engine(url, **(engine_kwargs or {}))
    try:
        upgrade(engine, migrations=migrations)
    except BaseException:
        engine.dispose()
        raise
    return engine, session_factory(engine)


def run_alembic_env(target_metadata: sa.MetaData) -> None:
    """The body of a migrations folder's ``env.py`` (the supplier's and the public database's alike).

    Run programmatically through :func:`upgrade` (no alembic.ini): the caller passes an open connection in
    ``config.attributes["connection"]``, or a URL in the ``sqlalchemy.url`` main option (what the ``alembic``
    command line does given a config whose ``script_location`` is the folder)."""
    from alembic import context

    config = context.config

    def configure(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                          transaction_per_migration=False)

    if context.is_offline_mode():
        url = config.get_main_option("sqlalchemy.url")
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                          dialect_opts={"paramstyle": "named"}, render_as_batch=bool(url and url.startswith("sqlite")))
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()
