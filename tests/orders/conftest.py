"""Fixtures of the settlement tests (orders CLI, event indexer, order API).

* ``cli``       – runs ``cardproof`` through ``verify_api.console.main`` on a fresh in-process chain
  (CARDPROOF_RPC_URL=eth-tester) with a temporary CARDPROOF_HOME.
* ``sessions``  – a migrated, empty database: SQLite, and PostgreSQL when reachable (``db_backend``).
* ``world``     – ``chain_env`` (eth-tester and anvil) with the escrow test world of tests/escrow/world.py,
  deployed once per backend for this package and reverted afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from chain.artifacts import load_artifact
from issuer.indexer import Followed, Indexer
from issuer.storage.db import make_engine, session_factory, upgrade
from issuer.storage.index_models import INDEX_TABLES
from tests import dbutil
from tests.chainkit import ChainEnv
from tests.escrow.world import World, deploy_world
from tests.clikit import Cli, in_process_cli

# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Iterator[Cli]:
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


# ---------------------------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def orders_pg_url() -> Iterator[str]:
    base = dbutil.postgres_base_url()
    if base is None:
        pytest.skip(dbutil.postgres_skip_reason())
    url = dbutil.create_database(base, prefix="cardproof_orders")
    schema_url = dbutil.create_schema(url, prefix="orders")
    upgrade(schema_url)
    yield schema_url
    dbutil.drop_database(url, base)


@pytest.fixture(scope="session")
def orders_sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("orders-db") / "template.db"
    eng = make_engine(dbutil.sqlite_url(path))
    upgrade(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request) -> str:
    return request.param


def _sqlite_sessions(template: Path, path: Path):
    shutil.copyfile(template, path)
    eng = make_engine(dbutil.sqlite_url(path))
    upgrade(eng)
    return eng


@pytest.fixture
def sessions(db_backend, request, tmp_path, orders_sqlite_template):
    if db_backend == "sqlite":
        eng = _sqlite_sessions(orders_sqlite_template, tmp_path / "index.db")
        try:
            yield session_factory(eng)
        finally:
            eng.dispose()
        return
    eng = make_engine(request.getfixturevalue("orders_pg_url"))
    try:
        yield session_factory(eng)
    finally:
        with eng.begin() as conn:
            for name in INDEX_TABLES:
                conn.execute(sa.text(f"DELETE FROM {name}"))
        eng.dispose()


@pytest.fixture
def sqlite_sessions(tmp_path, orders_sqlite_template):
    eng = _sqlite_sessions(orders_sqlite_template, tmp_path / "index-sqlite.db")
    try:
        yield session_factory(eng)
    finally:
        eng.dispose()


# ---------------------------------------------------------------------------------------------- chains

WORLD_KEY = "orders_world"


@pytest.fixture(scope="package")
def _orders_worlds(request) -> Iterator[None]:
    """The escrow world on both session chains, deployed once for this package (before any per-test
    snapshot of ``chain_env``) and reverted at the package's end."""
    deployed: list[tuple[ChainEnv, object]] = []
    try:
        for name in ("_eth_tester_session", "_anvil_session"):
            env: ChainEnv = request.getfixturevalue(name)
            base = env.snapshot()
            deployed.append((env, base))
            env.extra[WORLD_KEY] = {**deploy_world(env), "block": env.admin.block_number()}
            env.admin._next_nonce = None
        yield
    finally:
        for env, base in reversed(deployed):
            env.extra.pop(WORLD_KEY, None)
            env.revert(base)
            env.admin._next_nonce = None


@pytest.fixture
def world(_orders_worlds, chain_env: ChainEnv) -> World:
    info = chain_env.extra[WORLD_KEY]
    return World(chain_env, info["escrow"], dict(info["tokens"]))


def followed(env: ChainEnv, escrow: str) -> list[Followed]:
    """The registry and the world's escrow, followed from the first block after the world's deployment
    (eth-tester's get_logs is slow over the deployment blocks; the tests' events all come later)."""
    start = env.extra[WORLD_KEY]["block"] + 1
    return [Followed("CardRegistry", env.registry_address, load_artifact("CardRegistry").abi, start),
            Followed("CardEscrow", escrow, load_artifact("CardEscrow").abi, start)]


def make_indexer(world: World, sessions, **kw) -> Indexer:
    return Indexer(world.env.admin, sessions, followed(world.env, world.escrow_address), **kw)
