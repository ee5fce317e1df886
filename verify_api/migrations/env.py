"""Alembic environment of the public database (verify_api.storage).

Used programmatically through :func:`issuer.storage.db.upgrade` (no alembic.ini):
the caller passes an open connection in ``config.attributes["connection"]``, or a
URL in the ``sqlalchemy.url`` main option (that is what the ``alembic`` command
line does given a config with ``script_location`` = this folder).
"""

from __future__ import annotations

from alembic import context

from verify_api.storage.models import import_all_models

config = context.config
# Tables of every public model module.
target_metadata = import_all_models()


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=False,
    )


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from issuer.storage.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
