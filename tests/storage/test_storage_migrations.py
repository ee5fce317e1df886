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


# --- the public service's database: its own migrations (verify_api/migrations) ------------------------

from issuer.storage import models as issuer_models  # noqa: E402
from verify_api.storage import db as public_db  # noqa: E402
from verify_api.storage.models import PublicBase  # noqa: E402
from verify_api.storage.models import import_all_models as import_public_models  # noqa: E402

PUBLIC_TABLES = {"pub_batches", "pub_cards", "pub_tiles", "pub_meta"}
PUBLIC_METADATA = import_public_models()
#: The public side's tables that left the supplier's database (0003_two_sides).
MOVED = {"api_scans", "api_card_stats", "chain_events", "indexed_blocks", "index_cursors"}


def _public_upgrade(engine_or_url, revision="head"):
    public_db.upgrade_public(engine_or_url, revision)


def test_public_migrations_match_models(public_engine):
    assert _diff(public_engine, PUBLIC_METADATA) == []
    names = set(sa.inspect(public_engine).get_table_names())
    assert PUBLIC_TABLES | MOVED <= names
    assert names - set(PUBLIC_METADATA.tables) == {"alembic_version"}
    assert current_revision(public_engine) == head_revision(public_db.PUBLIC_MIGRATIONS_DIR)


def test_the_two_databases_share_no_table():
    """The supplier's database (secrets) and the public one (no secret) hold disjoint tables."""
    supplier = set(ALL_METADATA.tables)
    public = set(PUBLIC_METADATA.tables)
    assert not supplier & public
    assert not supplier & MOVED and MOVED <= public
    assert {"issuers", "batches", "cards", "tree_chunks"} <= supplier
    assert issuer_models.Base.metadata is not PublicBase.metadata


def test_supplier_migrations_drop_the_public_tables(engine):
    """0003_two_sides drops the public tables from a supplier's database of 0002 and adds batches.code_form;
    going back restores them."""
    downgrade(engine, "0002_index")
    assert MOVED <= set(sa.inspect(engine).get_table_names())
    assert "code_form" not in {c["name"] for c in sa.inspect(engine).get_columns("batches")}
    upgrade(engine)
    names = set(sa.inspect(engine).get_table_names())
    assert not names & (MOVED | PUBLIC_TABLES)
    assert "code_form" in {c["name"] for c in sa.inspect(engine).get_columns("batches")}
    assert _diff(engine) == []


def test_public_comparison_is_not_vacuous(public_engine):
    md = sa.MetaData(naming_convention=PublicBase.metadata.naming_convention)
    for table in PUBLIC_METADATA.sorted_tables:
        table.to_metadata(md)
    md.tables["pub_cards"].append_column(sa.Column("extra", sa.Integer))
    sa.Index("ix_pub_batches_sku", md.tables["pub_batches"].c.sku)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(public_engine, md)}
    assert {"add_column", "add_index"} <= kinds


def test_public_upgrade_idempotent_downgrade_and_again(public_engine):
    head = head_revision(public_db.PUBLIC_MIGRATIONS_DIR)
    assert head != head_revision()  # its own history, not the supplier's
    _public_upgrade(public_engine)  # no-op
    downgrade(public_engine, "base", migrations=public_db.PUBLIC_MIGRATIONS_DIR)
    assert set(sa.inspect(public_engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(public_engine) is None
    _public_upgrade(public_engine)
    assert current_revision(public_engine) == head
    assert _diff(public_engine, PUBLIC_METADATA) == []


def test_public_concurrent_first_upgrades(db_url):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run():
        eng = make_engine(db_url)
        try:
            barrier.wait()
            _public_upgrade(eng)
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
        assert current_revision(eng) == head_revision(public_db.PUBLIC_MIGRATIONS_DIR)
        assert _diff(eng, PUBLIC_METADATA) == []
    finally:
        eng.dispose()


def test_open_public_database_default_and_url(tmp_path, monkeypatch):
    monkeypatch.delenv("CARDPROOF_PUBLIC_DATABASE_URL", raising=False)
    monkeypatch.delenv("CARDPROOF_DATABASE_URL", raising=False)
    home = tmp_path / "h"
    engine, Session = public_db.open_public_database(get_settings(home=home))
    try:
        assert (home / "public.db").exists() and not (home / "cardproof.db").exists()
        assert PUBLIC_TABLES <= set(sa.inspect(engine).get_table_names())
        with Session() as s:
            assert s.execute(sa.text("SELECT count(*) FROM pub_batches")).scalar() == 0
    finally:
        engine.dispose()
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("CARDPROOF_PUBLIC_DATABASE_URL", f"sqlite:///{other}")
    engine, _ = public_db.open_public_database(get_settings(home=home))
    engine.dispose()
    assert other.exists()


def test_open_public_database_postgres(pg_database_url):
    from tests import dbutil

    url = dbutil.create_schema(pg_database_url, prefix="pubopen")
    try:
        engine, _ = public_db.open_public_database(url=url.replace("postgresql+psycopg://", "postgresql://"))
        try:
            assert engine.dialect.driver == "psycopg"
            assert current_revision(engine) == head_revision(public_db.PUBLIC_MIGRATIONS_DIR)
            assert _diff(engine, PUBLIC_METADATA) == []
        finally:
            engine.dispose()
    finally:
        dbutil.drop_schema(url)


def test_public_migrations_dir_exists():
    assert (public_db.PUBLIC_MIGRATIONS_DIR / "env.py").is_file()
    assert public_db.PUBLIC_MIGRATIONS_DIR != dbmod.MIGRATIONS_DIR
