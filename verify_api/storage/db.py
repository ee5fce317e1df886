"""The public database: engine, sessions and migrations (``verify_api/migrations``).

The engine plumbing (SQLite pragmas, PostgreSQL through psycopg 3, serialized Alembic upgrades) is the
secret-free ``issuer.storage.db``; only the URL and the migrations are the public side's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from issuer.storage import db as _db

if TYPE_CHECKING:  # pragma: no cover
    from chain.settings import Settings

__all__ = ["PUBLIC_MIGRATIONS_DIR", "open_public_database", "upgrade_public"]

PUBLIC_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def upgrade_public(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    _db.upgrade(engine_or_url, revision, migrations=PUBLIC_MIGRATIONS_DIR)


def open_public_database(settings: Settings | None = None, *, url: str | URL | None = None
                         ) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and sessions of the public database (``CARDPROOF_PUBLIC_DATABASE_URL``, else ``public.db`` in
    the home folder), migrated to head."""
    if url is None:
        if settings is None:
            from chain.settings import get_settings

            settings = get_settings()
        url = settings.effective_public_database_url
    # No pre-ping: on the cold lookup path it is one more round trip per request (about 40 % of a PostgreSQL
    # lookup, scripts/bench_api). Instead connections are recycled, and a checkout listener (installed with the
    # error handlers, verify_api/errors.py) drops a pooled connection whose socket the server has closed.
    # A pool as large as the concurrency a worker sees (its thread pool): with SQLAlchemy's default of 5 (+10
    # overflow), every request beyond the fifth opened and closed a connection of its own (a PostgreSQL backend
    # forked per request under load: found by watching pg_stat_activity during scripts/bench_api).
    return _db.open_database(url=url, migrations=PUBLIC_MIGRATIONS_DIR,
                             engine_kwargs={"pool_pre_ping": False, "pool_recycle": 300, "pool_size": 40,
                                            "max_overflow": 10})
