"""Fixtures of the settlement tests (orders CLI, event indexer, order API).

* ``cli``       – runs ``cardproof`` through ``cardproof.console.main`` on a fresh in-process chain
  (CARDPROOF_RPC_URL=eth-tester) with a temporary CARDPROOF_HOME.
* ``sessions``  – a migrated, empty public database (the indexer writes there): SQLite, and PostgreSQL when
  reachable (``db_backend``).
* ``world``     – ``chain_env`` (eth-tester and anvil) with the escrow test world of tests/escrow/world.py,
  deployed once per backend for this package and reverted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chain.artifacts import load_artifact
from verify_api.indexer import Followed, Indexer
from issuer.storage.db import make_engine, session_factory
from verify_api.storage.db import upgrade_public
from tests import dbutil
from tests.chainkit import ChainEnv
from tests.escrow.world import World, worlds_on_session_chains
from tests.clikit import Cli, in_process_cli

# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Iterator[Cli]:
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


# ---------------------------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def orders_pg_url(pg_database_url) -> Iterator[str]:
    url = dbutil.create_schema(pg_database_url, prefix="orders")
    upgrade_public(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture(scope="session")
def public_sqlite_template(tmp_path_factory):
    """An empty public database (verify_api/migrations) migrated to head, to copy."""
    path = tmp_path_factory.mktemp("public-db-template") / "template.db"
    eng = make_engine(dbutil.sqlite_url(path))
    upgrade_public(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


def _public_sqlite_engine(template, path):
    import shutil

    shutil.copyfile(template, path)
    eng = make_engine(dbutil.sqlite_url(path))
    upgrade_public(eng)
    return eng


def _delete_public_rows(engine) -> None:
    """DELETE every row of every public table, children first (``dbutil.delete_all_rows`` knows the
    supplier's tables only)."""
    from verify_api.storage.models import import_all_models

    with engine.begin() as conn:
        for table in reversed(import_all_models().sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def sessions(db_backend, request, tmp_path, public_sqlite_template):
    if db_backend == "sqlite":
        eng = _public_sqlite_engine(public_sqlite_template, tmp_path / "index.db")
        try:
            yield session_factory(eng)
        finally:
            eng.dispose()
        return
    eng = make_engine(request.getfixturevalue("orders_pg_url"))
    try:
        yield session_factory(eng)
    finally:
        _delete_public_rows(eng)
        eng.dispose()


@pytest.fixture
def sqlite_sessions(tmp_path, public_sqlite_template):
    eng = _public_sqlite_engine(public_sqlite_template, tmp_path / "index-sqlite.db")
    try:
        yield session_factory(eng)
    finally:
        eng.dispose()


# ---------------------------------------------------------------------------------------------- chains

WORLD_KEY = "orders_world"


@pytest.fixture(scope="package")
def _orders_worlds(request) -> Iterator[None]:
    """The escrow world on both session chains, deployed once for this package."""
    yield from worlds_on_session_chains(request, WORLD_KEY)


@pytest.fixture
def world(_orders_worlds, chain_env: ChainEnv) -> World:
    return World.of(chain_env, WORLD_KEY)


def followed(env: ChainEnv, escrow: str) -> list[Followed]:
    """The registry and the world's escrow, followed from the first block after the world's deployment
    (eth-tester's get_logs is slow over the deployment blocks; the tests' events all come later)."""
    start = env.extra[WORLD_KEY]["block"] + 1
    return [Followed("CardRegistry", env.registry_address, load_artifact("CardRegistry").abi, start),
            Followed("CardEscrow", escrow, load_artifact("CardEscrow").abi, start)]


def make_indexer(world: World, sessions, **kw) -> Indexer:
    return Indexer(world.env.admin, sessions, followed(world.env, world.escrow_address), **kw)
