"""Fixtures of the input and display tests (issue 12): the console on a fresh in-process chain.

* ``cli``     – runs ``cardproof`` through ``cardproof.console.main`` (CARDPROOF_RPC_URL=eth-tester), temporary home.
* ``market``  – ``cli`` after ``cardproof deploy``: the dev account is an issuer with one anchored batch of
  GAME-10 (10.00 USD, so the product exists), and a buyer (``BUYER_KEY``) holds ether and 100 test dollars.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account

from chain.client import ChainClient, dev_account_for, shared_in_process_web3
from chain.escrow import Escrow
from tests.clikit import Cli, in_process_cli

BUYER_KEY = "0x" + "b1" * 32


@dataclass
class Market:
    cli: Cli
    admin: ChainClient  # deployer, issuer and supplier
    buyer: str
    escrow: Escrow
    tester: object

    def now(self) -> int:
        return int(self.admin.w3.eth.get_block("latest")["timestamp"])

    def block(self) -> int:
        return int(self.admin.w3.eth.block_number)

    def as_buyer(self, *args: object):
        self.cli.act_as(BUYER_KEY)
        try:
            return self.cli(*args)
        finally:
            self.cli.act_as(None)

    def open_order(self, *extra: str) -> dict:
        r = self.as_buyer("order", "open", "--supplier", self.admin.address, "--sku", "GAME-10", "--face-value",
                          "10.00", "--currency", "USD", "--quantity", "1", "--unit-price", "9.50", *extra, "--json")
        assert r.rc == 0, r
        return r.json


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Iterator[Cli]:
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


@pytest.fixture
def market(cli) -> Market:
    cli.ok("deploy")
    tester, w3 = shared_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    cli.ok("issuer", "add", "--name", "Acme", "--address", admin.address)
    buyer = Account.from_key(BUYER_KEY).address
    admin.wait(admin.send_value(buyer, 10**19).tx_hash)
    cli.ok("faucet", buyer, "100")
    minted = cli.ok("mint", "--sku", "GAME-10", "--face-value", "10.00", "--currency", "USD", "--count", "4",
                    "--json").json
    cli.ok("anchor", minted["batch_id"])
    admin._next_nonce = None
    return Market(cli, admin, buyer, Escrow.deployed(admin, cli.home), tester)
