"""Fixtures of the operator console tests (`cardproof admin ...`, `cardproof issuer remove`, role errors).

* ``cli``      – runs ``cardproof`` through ``cardproof.console.main`` on a fresh in-process chain
  (CARDPROOF_RPC_URL=eth-tester) with a temporary CARDPROOF_HOME (tests/clikit.py).
* ``deployed`` – ``cli`` after ``cardproof deploy``: the deployer (admin of both contracts, first arbiter), a
  funded stranger account holding no role, and helpers to act as it and to see that nothing was sent.
* ``supplier_sessions`` – the supplier's database, migrated and empty: SQLite, and PostgreSQL (``db_backend``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account

from chain.client import ChainClient, dev_account_for, shared_in_process_web3
from chain.escrow import Escrow
from chain.registry import Registry
from issuer.storage.db import session_factory, upgrade
from tests import dbutil
from tests.clikit import Cli, in_process_cli

STRANGER_KEY = "0x" + "5a" * 32


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Iterator[Cli]:
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


@dataclass
class Deployed:
    cli: Cli
    admin: ChainClient  # the deployer: admin of the registry and of the escrow, first arbiter
    stranger: str  # funded, holds no role
    registry: Registry
    escrow: Escrow
    coin: str

    def block(self) -> int:
        return self.admin.block_number()

    def as_stranger(self, *args: Any, match: str | None = None) -> Any:
        """Run a command as the stranger; it must fail with one line (and send nothing)."""
        before = self.block()
        self.cli.act_as(STRANGER_KEY)
        try:
            failed = self.cli.fails(*args, match=match)
        finally:
            self.cli.act_as(None)
        assert self.block() == before, "a refused command sent a transaction"
        return failed


@pytest.fixture
def deployed(cli: Cli) -> Deployed:
    out = cli.ok("deploy", "--json").json
    _, w3 = shared_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    assert out["deployer"] == admin.address
    stranger = Account.from_key(STRANGER_KEY).address
    admin.wait(admin.send_value(stranger, 10**19).tx_hash)  # eth-tester refuses even calls from empty accounts
    return Deployed(cli, admin, stranger, Registry.deployed(admin, cli.home), Escrow.deployed(admin, cli.home),
                    out["stablecoin"]["address"])


@pytest.fixture(scope="session")
def admin_pg_url(pg_database_url: str) -> Iterator[str]:
    url = dbutil.create_schema(pg_database_url, prefix="admin")
    upgrade(url)
    yield url
    dbutil.drop_schema(url)


@pytest.fixture
def supplier_sessions(db_backend, request, tmp_path, sqlite_template) -> Iterator[Any]:
    pg_url = None if db_backend == "sqlite" else request.getfixturevalue("admin_pg_url")
    with dbutil.backend_engine(lambda: dbutil.sqlite_engine_from(sqlite_template, tmp_path / "cardproof.db"),
                               pg_url) as engine:
        yield session_factory(engine)
