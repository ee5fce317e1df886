"""Fixtures of the supplier's node tests (issuer/node/).

* ``node_chain`` – an anvil of this package's own with the escrow test world (tests/escrow/world.py) deployed once;
  every test runs between a snapshot and a revert of it.
* ``sw``         – the sealed-delivery world (tests/orders/sealedkit.py) on it: the supplier's SQLite database and
  master key, the public service's app on a loopback port (it takes sealed deliveries only if the chain agrees).
* ``make_node``  – a :class:`issuer.node.SupplierNode` of the supplier in this process, its events recorded.
* ``private_sw`` – the same world on an anvil of the test's own (``anvil_reorg`` must not touch the shared one).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from issuer.node import NodeConfig, SupplierNode
from issuer.storage.db import make_engine, session_factory
from tests import dbutil
from tests.chainkit import ChainEnv, anvil_env
from tests.escrow.world import World, deploy_world
from tests.netkit import LiveServer
from tests.orders.sealedkit import SealedWorld, make_sealed_world, public_app

WORLD_KEY = "node_world"


def _with_world(env: ChainEnv) -> ChainEnv:
    env.extra[WORLD_KEY] = {**deploy_world(env), "block": env.admin.block_number()}
    env.admin._next_nonce = None
    return env


@pytest.fixture(scope="package")
def node_chain() -> Iterator[ChainEnv]:
    gen = anvil_env()
    env = next(gen)
    try:
        yield _with_world(env)
    finally:
        gen.close()


def _public_sessions(template: Path, path: Path) -> Any:
    shutil.copyfile(template, path)
    return session_factory(make_engine(dbutil.sqlite_url(path)))


def _sealed_world(env: ChainEnv, tmp_path: Path, sqlite_template: Path, public_template: Path) -> Iterator[SealedWorld]:
    world = World.of(env, WORLD_KEY)
    public_db = tmp_path / "public.db"
    sw = make_sealed_world(world, tmp_path, _public_sessions(public_template, public_db), public_db, sqlite_template)
    with LiveServer(public_app(sw)) as server:
        sw.server = server
        yield sw
    sw.sessions.kw["bind"].dispose()
    sw.public_sessions.kw["bind"].dispose()


@pytest.fixture
def sw(node_chain, tmp_path, sqlite_template, public_sqlite_template) -> Iterator[SealedWorld]:
    snap = node_chain.snapshot()
    node_chain.admin._next_nonce = None
    try:
        yield from _sealed_world(node_chain, tmp_path, sqlite_template, public_sqlite_template)
    finally:
        node_chain.revert(snap)
        node_chain.admin._next_nonce = None


@pytest.fixture
def private_sw(tmp_path, sqlite_template, public_sqlite_template) -> Iterator[SealedWorld]:
    gen = anvil_env()
    env = _with_world(next(gen))
    try:
        yield from _sealed_world(env, tmp_path, sqlite_template, public_sqlite_template)
    finally:
        gen.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, payload))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.events if k == kind]


@pytest.fixture
def make_node():  # noqa: ANN201
    made: list[SupplierNode] = []

    def make(s: SealedWorld, **config: Any) -> tuple[SupplierNode, Recorder]:
        rec = Recorder()
        cfg = NodeConfig(**{"public_urls": (s.url,), "poll_interval": 0.1, "workers": 16, "low_stock": 0,
                            "reorg_depth": 12, **config})
        runtime = SimpleNamespace(sessions=s.sessions, master_key=s.master_key)
        node = SupplierNode(runtime, s.escrow("supplier"), s.registry("supplier"), cfg, on_event=rec)
        made.append(node)
        return node, rec

    yield make
    for node in made:
        node.stop()


def open_orders(sw: SealedWorld, product_id: int, quantities: list[int], **kw: Any) -> list[int]:
    out = []
    for i, q in enumerate(quantities):
        out.append(sw.open(product_id, q, who=("buyer", "buyer2")[i % 2], **kw))
    return out


def delivered_cards(sw: SealedWorld, order_ids: list[int]) -> dict[int, tuple[str, set[int]]]:
    """Per order: the batch and card indices the escrow holds delivered."""
    escrow = sw.escrow()
    out = {}
    for oid in order_ids:
        batch_id, ranges = escrow.delivery(oid)
        out[oid] = ("0x" + batch_id.hex(), {i for r in ranges for i in range(r.start, r.start + r.length)})
    return out


def assert_disjoint(cards: dict[int, tuple[str, set[int]]]) -> None:
    seen: dict[tuple[str, int], int] = {}
    for oid, (batch, indices) in cards.items():
        for i in indices:
            assert (batch, i) not in seen, f"card {i} of {batch} in orders {seen[(batch, i)]} and {oid}"
            seen[(batch, i)] = oid


def tag() -> str:
    return secrets.token_hex(3).upper()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_sw(request, node_chain, tmp_path, sqlite_template, public_sqlite_template) -> Iterator[SealedWorld]:
    """``sw`` with the supplier's database on SQLite, then on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sw")
        return
    from issuer.storage.db import upgrade

    url = dbutil.create_schema(request.getfixturevalue("pg_database_url"), prefix="node")
    upgrade(url)
    snap = node_chain.snapshot()
    node_chain.admin._next_nonce = None
    try:
        for s in _sealed_world(node_chain, tmp_path, sqlite_template, public_sqlite_template):
            s.sessions.kw["bind"].dispose()
            s.sessions = session_factory(make_engine(url))
            yield s
    finally:
        node_chain.revert(snap)
        node_chain.admin._next_nonce = None
        dbutil.drop_schema(url)
