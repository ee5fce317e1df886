"""The indexer against a dedicated anvil reorganised with ``anvil_reorg`` (shallow and deeper than the kept
block window), the background thread of ``cardproof serve``, and ``cardproof index``."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa
from eth_account import Account

from chain import local_node
from chain.client import ChainClient, dev_account_for, http_web3, shared_in_process_web3
from chain.escrow import Escrow, faucet
from chain.platform import deploy_platform
from chain.registry import Registry
from chain.settings import get_settings
from verify_api.indexer import Indexer, IndexerThread, followed_contracts
from verify_api.storage.index_models import ChainEventRow, IndexCursor

DAY = 86_400


def events(sessions, name: str | None = None) -> list[ChainEventRow]:
    with sessions() as s:
        q = sa.select(ChainEventRow).order_by(ChainEventRow.block_number, ChainEventRow.log_index)
        if name:
            q = q.where(ChainEventRow.event == name)
        return list(s.execute(q).scalars())


@pytest.fixture(scope="module")
def anvil(tmp_path_factory):
    """An anvil of its own (its reorgs must not disturb the shared session chain) with the platform."""
    home = tmp_path_factory.mktemp("reorg-anvil")
    node = local_node.start(home, port=local_node.free_port())
    try:
        w3 = http_web3(node.url)
        admin = ChainClient(w3, dev_account_for(w3, node.chain_id), backend="anvil", poll_interval=0.01)
        platform = deploy_platform(admin, home)
        registry = Registry(admin, platform.registry.address)
        registry.grant_issuer(admin.address)
        # A product exists once a batch of it is anchored: product 1, which the orders below buy.
        registry.anchor_batch(bytes.fromhex(admin.address[2:]) + b"\x01" * 12, b"\x42" * 32, 1, b"\0" * 32)
        faucet(admin, platform.stablecoin.address, admin.address, 10**12)
        Escrow(admin, platform.escrow.address).approve(platform.stablecoin.address)
        yield admin, home, platform
    finally:
        local_node.stop(home)


def _reorg(admin: ChainClient, depth: int, txs: list | None = None) -> None:
    resp = admin.w3.provider.make_request("anvil_reorg", [depth, txs or []])
    assert "error" not in resp, resp


def _open(admin: ChainClient, platform, quantity: int) -> int:
    escrow = Escrow(admin, platform.escrow.address)
    now = int(admin.w3.eth.get_block("latest")["timestamp"])
    admin._next_nonce = None
    return escrow.open_order(admin.address, 1, quantity, platform.stablecoin.address, 1_000_000, now + DAY, 3600)


@pytest.mark.anvil
def test_anvil_reorg_rolls_back_and_reindexes(anvil, sqlite_sessions):
    admin, home, platform = anvil
    contracts = followed_contracts(admin, home)
    assert [c.name for c in contracts] == ["CardRegistry", "CardEscrow"]
    indexer = Indexer(admin, sqlite_sessions, contracts, keep=4)
    indexer.run_once()
    kept = {(r.tx_hash, r.log_index) for r in events(sqlite_sessions)}
    assert any(r.event == "TokenAllowed" for r in events(sqlite_sessions))

    # A shallow reorg: the block of the order is replaced by one holding another account's transaction.
    stranger = Account.create()
    admin.wait(admin.send_value(stranger.address, 10**18).tx_hash)
    orphan = _open(admin, platform, 3)
    assert indexer.run_once().events == 1
    registry = Registry(admin.with_account(stranger), platform.registry.address)
    tx = registry.fn.setRedeemer(admin.address, False).build_transaction(
        {"from": stranger.address, "nonce": 0, "gas": 100_000, "chainId": admin.chain_id,
         "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
    raw = stranger.sign_transaction(tx).raw_transaction.to_0x_hex()
    _reorg(admin, 1, [[raw, 0]])
    report = indexer.run_once()
    assert report.reorg is not None and report.reorg.removed_events == 1
    assert [e.event for e in events(sqlite_sessions, "OrderOpened")] == []
    assert [json.loads(e.args)["issuer"] for e in events(sqlite_sessions, "RedeemerSet")] == [stranger.address]
    assert Escrow(admin, platform.escrow.address).order(orphan).exists is False

    # Deeper than the 4 kept block hashes: everything is dropped and indexed again from the start.
    for q in (1, 2, 3):
        _open(admin, platform, q)
    admin.w3.provider.make_request("anvil_mine", ["0x3"])
    indexer.run_once()
    assert len(events(sqlite_sessions, "OrderOpened")) == 3
    _reorg(admin, 7)
    report = indexer.run_once()
    assert report.reorg is not None and report.reorg.ancestor == min(c.from_block for c in contracts) - 1
    assert events(sqlite_sessions, "OrderOpened") == []
    assert kept <= {(r.tx_hash, r.log_index) for r in events(sqlite_sessions)}
    with sqlite_sessions() as s:
        cur = s.get(IndexCursor, admin.chain_id)
    assert cur.block_number == admin.block_number()
    assert cur.block_hash == admin.w3.eth.get_block("latest")["hash"].to_0x_hex()


# ---------------------------------------------------------------------------------------------- in-process


def _wait(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _cursor(sessions, chain_id):
    with sessions() as s:
        row = s.get(IndexCursor, chain_id)
        return None if row is None else row.block_number


def test_background_thread_survives_missing_deployments(cli, sqlite_sessions):
    """Under `cardproof serve`: nothing deployed is no failure (retried); the registry alone is indexed while
    there is no escrow; the escrow is picked up once deployed."""
    from chain.deployments import deploy_registry

    settings = get_settings()
    thread = IndexerThread(settings, interval=0.05, sessions=sqlite_sessions, refresh_every=0.1).start()
    try:
        time.sleep(0.2)
        assert thread.alive and thread.reports == 0
        _, w3 = shared_in_process_web3()
        admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
        deploy_registry(admin, settings.home)
        _wait(lambda: thread.reports > 0 and _cursor(sqlite_sessions, admin.chain_id) == admin.block_number())
        assert {e.contract for e in events(sqlite_sessions)} == {"CardRegistry"}
        platform = deploy_platform(admin, settings.home)
        _wait(lambda: any(e.contract == "CardEscrow" for e in events(sqlite_sessions)))
        _wait(lambda: _cursor(sqlite_sessions, admin.chain_id) == admin.block_number())
        assert {e.address for e in events(sqlite_sessions)} == {platform.registry.address, platform.escrow.address}
    finally:
        thread.stop()
    assert not thread.alive


def test_serve_runs_the_indexer_next_to_the_api(cli, monkeypatch):
    import uvicorn

    cli.ok("deploy")
    seen: dict = {}

    def fake_run(*args, **kwargs):
        alive = [t for t in threading.enumerate() if t.name == "cardproof-indexer"]
        seen["alive"] = bool(alive)
        from verify_api.storage.db import open_public_database

        _engine, sessions = open_public_database(get_settings())  # the indexer writes to the public database
        _, w3 = shared_in_process_web3()
        _wait(lambda: _cursor(sessions, w3.eth.chain_id) == w3.eth.block_number)
        seen["indexed"] = len(events(sessions))
        _engine.dispose()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    r = cli.ok("serve", "--index-interval", "0.05", "--port", "8999")
    assert "cardproof API on" in r.out
    assert seen["alive"] and seen["indexed"] > 0
    _wait(lambda: not any(t.name == "cardproof-indexer" for t in threading.enumerate()), timeout=5)


def test_index_command(cli):
    cli.ok("deploy")
    first = cli.ok("index", "--once", "--json").json
    assert first["events"] > 0 and first["cursor"] == first["head"] and first["reorg"] is None
    again = cli.ok("index", "--once", "--json").json
    assert again["events"] == 0 and again["indexed"] is None
    _, w3 = shared_in_process_web3()
    w3.provider.ethereum_tester.mine_blocks(3)
    lagging = cli.ok("index", "--once", "--confirmations", "2", "--json").json
    assert lagging["target"] == lagging["head"] - 2 == lagging["cursor"]
    human = cli.ok("index", "--once", "--confirmations", "0")
    assert human.out.startswith(f"chain {w3.eth.chain_id}: ")


def test_index_command_without_deployment_is_one_line(cli):
    cli.fails("index", "--once", match="not deployed")


def test_index_respects_cardproof_confirmations(cli, monkeypatch):
    cli.ok("deploy")
    monkeypatch.setenv("CARDPROOF_CONFIRMATIONS", "2")
    report = cli.ok("index", "--once", "--json").json
    assert report["target"] == report["head"] - 2 == report["cursor"]
