"""Chain fixtures shared by every contract test: the same tests run on eth-tester and on anvil.

Each backend gets one chain per test session with the registry deployed and a set of funded role
accounts; every test runs between a snapshot and a revert, so tests are isolated and fast.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain import local_node
from chain.client import ChainClient, dev_account_for, http_web3, new_in_process_web3
from chain.deployments import deploy_registry
from chain.registry import Registry

ROLES = ("issuer", "issuer2", "redeemer", "stranger", "buyer", "buyer2", "supplier", "arbiter", "feeto")
FUNDING = 100 * 10**18


@dataclass
class ChainEnv:
    backend: str
    admin: ChainClient
    home: Path
    accounts: dict[str, LocalAccount]
    registry_address: str
    snapshot: Callable[[], Any]
    revert: Callable[[Any], None]
    mine: Callable[[int], None]
    set_next_timestamp: Callable[[int], None]
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, who: str = "admin") -> ChainClient:
        if who == "admin":
            return self.admin
        return self.admin.with_account(self.accounts[who])

    def registry(self, who: str = "admin") -> Registry:
        return Registry(self.client(who), self.registry_address)

    def address(self, who: str) -> str:
        return self.admin.address if who == "admin" else self.accounts[who].address

    def now(self) -> int:
        return int(self.admin.w3.eth.get_block("latest")["timestamp"])


def _role_accounts() -> dict[str, LocalAccount]:
    # Deterministic keys so failures are reproducible.
    return {name: Account.from_key((i + 0x1000).to_bytes(32, "big")) for i, name in enumerate(ROLES)}


def _setup(admin: ChainClient, home: Path) -> tuple[dict[str, LocalAccount], str]:
    accounts = _role_accounts()
    sent = [admin.send_value(acct.address, FUNDING) for acct in accounts.values()]
    for tx in sent:
        admin.wait(tx.tx_hash)
    record, _ = deploy_registry(admin, home)
    registry = Registry(admin, record.address)
    for who in ("issuer", "issuer2", "supplier"):
        registry.grant_issuer(accounts[who].address)
    return accounts, record.address


def eth_tester_env() -> Iterator[ChainEnv]:
    tester, w3 = new_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    with tempfile.TemporaryDirectory(prefix="cardproof-et-") as tmp:
        home = Path(tmp)
        accounts, registry = _setup(admin, home)

        def mine(n: int = 1) -> None:
            tester.mine_blocks(n)

        def set_next_timestamp(ts: int) -> None:
            tester.time_travel(ts)

        yield ChainEnv("eth-tester", admin, home, accounts, registry, tester.take_snapshot,
                       tester.revert_to_snapshot, mine, set_next_timestamp, {"tester": tester})


def anvil_env() -> Iterator[ChainEnv]:
    with tempfile.TemporaryDirectory(prefix="cardproof-anvil-") as tmp:
        home = Path(tmp)
        node = local_node.start(home, port=local_node.free_port())
        try:
            w3 = http_web3(node.url)
            admin = ChainClient(w3, dev_account_for(w3, node.chain_id), backend="anvil", poll_interval=0.01)
            accounts, registry = _setup(admin, home)

            def snapshot() -> Any:
                return w3.provider.make_request("evm_snapshot", [])["result"]

            def revert(snap: Any) -> None:
                assert w3.provider.make_request("evm_revert", [snap])["result"] is True

            def mine(n: int = 1) -> None:
                w3.provider.make_request("anvil_mine", [hex(n)])

            def set_next_timestamp(ts: int) -> None:
                w3.provider.make_request("evm_setNextBlockTimestamp", [ts])
                mine(1)

            yield ChainEnv("anvil", admin, home, accounts, registry, snapshot, revert, mine,
                           set_next_timestamp, {"node": node})
        finally:
            local_node.stop(home)
