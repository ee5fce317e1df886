"""Migrations produce exactly the models' schema; engine/database helpers."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chain.settings import get_settings
from issuer.errors import StorageError
from issuer.storage import db as dbmod
from issuer.storage.db import (
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    normalize_url,
    open_database,
    safe_url,
    upgrade,
)
from issuer.storage.models import Base, import_all_models

TABLES = {"issuers", "batches", "cards", "tree_chunks", "deployments", "meta"}
ALL_METADATA = import_all_models()  # the issuer's tables and other packages' on the same Base


def _diff(engine, metadata=ALL_METADATA):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(ctx, metadata)


def test_migrations_match_models(engine):
    assert _diff(engine) == []
    names = set(sa.inspect(engine).get_table_names())
    assert TABLES <= names
    assert names - set(ALL_METADATA.tables) == {"alembic_version"}


def test_comparison_is_not_vacuous(engine):
    # The same comparison notices a model that drifted from the migrations.
    md = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in ALL_METADATA.sorted_tables:
        table.to_metadata(md)
    md.tables["cards"].append_column(sa.Column("extra", sa.Integer))
    sa.Index("ix_batches_sku", md.tables["batches"].c.sku)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(engine, md)}
    assert {"add_column", "add_index"} <= kinds


def test_upgrade_idempotent_downgrade_and_again(engine):
    assert current_revision(engine) == head_revision()
    upgrade(engine)  # no-op
    downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(engine) is None
    upgrade(engine)
    assert _diff(engine) == []


def test_concurrent_first_upgrades(db_url):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run():
        eng = make_engine(db_url)
        try:
            barrier.wait()
            upgrade(eng)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    eng = make_engine(db_url)
    try:
        assert current_revision(eng) == head_revision()
        assert _diff(eng) == []
    finally:
        eng.dispose()


def test_upgrade_from_url(db_url):
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        assert current_revision(eng) == head_revision()
    finally:
        eng.dispose()


def test_normalize_url():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    assert "pw" not in safe_url("postgresql://u:pw@h/db")
    with pytest.raises(StorageError) as ei:
        normalize_url("not a url with password hunter2")
    assert "hunter2" not in str(ei.value)


def test_sqlite_connection_pragmas(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        eng.dispose()


def test_open_database_creates_folder_and_migrates(tmp_path, monkeypatch):
    monkeypatch.delenv("CARDPROOF_DATABASE_URL", raising=False)
    home = tmp_path / "a" / "b"
    settings = get_settings(home=home)
    engine, Session = open_database(settings)
    try:
        assert (home / "cardproof.db").exists()
        assert TABLES <= set(sa.inspect(engine).get_table_names())
        with Session() as s:
            assert s.execute(sa.text("SELECT count(*) FROM batches")).scalar() == 0
    finally:
        engine.dispose()
    # second open: already at head, nothing to do
    engine, _ = open_database(settings)
    engine.dispose()


def test_open_database_postgres(pg_database_url):
    settings = get_settings(database_url=pg_database_url.replace("postgresql+psycopg://", "postgresql://"))
    engine, Session = open_database(settings)
    try:
        assert engine.dialect.driver == "psycopg"
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_unreachable_database_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError) as ei:
        upgrade("postgresql://nobody:topsecret@127.0.0.1:1/none?connect_timeout=1")
    assert "topsecret" not in str(ei.value)
    assert "\n" not in str(ei.value)


def test_migrations_dir_exists():
    assert (dbmod.MIGRATIONS_DIR / "env.py").is_file()
    assert (dbmod.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
